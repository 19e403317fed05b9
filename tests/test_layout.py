"""The house's rules: which module imports what, and the fixes that came with the rebuild."""
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from backends import Communicator, Tensors
from backends.gloo import local_world_size
from backends.subtask import node_communicator
from ppsdg import coordination, local, parser, privacy, runtime
from ppsdg.errors import FederationError
from ppsdg.job import Job
from ppsdg.models import new_model

ROOT = Path(__file__).resolve().parent.parent


def fresh_python(code: str, *flags: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *flags, "-c", code], capture_output=True, text=True, cwd=ROOT, check=False)


def test_gloo_run_codec_and_data_never_import_vantage6():
    found = fresh_python("import sys, main, train, backends.codec, backends.gloo, ppsdg.data, ppsdg.coordination\n"
                         "print(sorted({m.split('.')[0] for m in sys.modules if m.startswith('vantage6')}))")
    assert (found.returncode, found.stdout.strip()) == (0, "[]"), found.stderr


def test_package_resolves_the_vantage6_entry_points_when_asked():
    found = fresh_python("import ppsdg, ppsdg.algorithm as a\n"
                         "print(ppsdg.central is a.central, ppsdg.partial is a.partial)")
    assert found.stdout.strip() == "True True", found.stderr
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        import ppsdg
        ppsdg.nothing  # noqa: B018


class Scripted(Communicator):
    """A server-side transport whose workers answer with prepared replies."""

    def __init__(self, world_size: int, replies: dict[int, Tensors]) -> None:
        super().__init__(0, world_size)
        self.replies = replies

    def broadcast(self, tensors, src=0, group=None):
        return tensors

    def gather(self, tensors, dst=0, group=None):
        return {rank: reply for rank, reply in self.replies.items() if rank in group}


def test_round_rejects_a_non_finite_or_countless_reply_on_any_transport():
    config = parser.from_mapping({"num_nodes": 4, "min_workers": 1})
    model = new_model(None, config.run.seed)
    good = {name: t + 1 for name, t in model.state_dict().items()}
    poisoned = {**good, "fc2.bias": torch.full((10,), float("nan"))}
    replies = {1: coordination.Reply(good, 30, 0.5, {}).to_message(),
               2: coordination.Reply(poisoned, 30, 0.5, {}).to_message(),
               3: coordination.Reply(good, 30, float("inf"), {}).to_message()}
    test_set = local.Examples(torch.zeros(2, 1, 28, 28), torch.zeros(2, dtype=torch.int64))
    record = coordination.server_round(Scripted(4, replies), model, None, config.run, Job.of_config(config), 1, test_set, None)
    assert [w["rank"] for w in record["workers"]] == [1]
    assert {f["rank"]: f["reason"] for f in record["failed"]} == {
        2: "update rejected: fc2.bias not finite", 3: "update rejected: train_loss not finite"}
    assert all(torch.equal(t, good[name]) for name, t in model.state_dict().items())


@pytest.mark.parametrize("count", [0, -50, 2.5, 1e308])
def test_reply_without_a_sensible_sample_count_is_rejected(count):
    message = coordination.Reply({"w": torch.ones(2)}, 1, 0.0, {}).to_message()
    message[coordination.NUM_SAMPLES] = torch.tensor(count, dtype=torch.float64)
    with pytest.raises(FederationError, match="num_samples .* is not a whole number in 1"):
        coordination.Reply.from_message(message)


@pytest.mark.parametrize("field, value, reason", [
    ("dp_steps", -5, "DP steps"), ("dp_steps", 1e15, "DP steps"), ("dp_noise_multiplier", 0.0, "noise multiplier"),
    ("dp_noise_multiplier", -1.0, "noise multiplier"), ("dp_sample_rate", 5.0, "sample rate"),
    ("dp_sample_rate", -0.1, "sample rate"), ("dp_steps", float("inf"), "not finite")])
def test_a_bad_accountant_entry_is_a_rejected_worker_not_a_stopped_run(field, value, reason):
    config = parser.from_mapping({"num_nodes": 3, "min_workers": 1, "local_dp": True})
    job = Job.of_config(config)
    model = new_model(None, config.run.seed)
    entry = {"dp_noise_multiplier": 1.0, "dp_sample_rate": 0.1, "dp_steps": 10.0}
    replies = {1: coordination.Reply(dict(model.state_dict()), 30, 0.0, entry).to_message(),
               2: coordination.Reply(dict(model.state_dict()), 30, 0.0, {**entry, field: value}).to_message()}
    test_set = local.Examples(torch.zeros(2, 1, 28, 28), torch.zeros(2, dtype=torch.int64))
    ledger = job.dp.ledger()
    record = coordination.server_round(Scripted(3, replies), model, None, config.run, job, 1, test_set, ledger)
    assert [w["rank"] for w in record["workers"]] == [1] and list(ledger.histories) == [1]
    assert reason in record["failed"][0]["reason"] and record["epsilon"] > 0


class ScriptedWithLate(Scripted):
    """Worker 2's reply to an earlier round arrives during this one."""

    def __init__(self, world_size: int, replies: dict[int, Tensors], late: Tensors) -> None:
        super().__init__(world_size, replies)
        self.late = late

    def late_replies(self) -> dict[int, list[Tensors]]:
        return {2: [self.late]}


def test_a_late_release_is_charged_and_not_averaged():
    config = parser.from_mapping({"num_nodes": 3, "min_workers": 1, "local_dp": True})
    job = Job.of_config(config)
    model = new_model(None, config.run.seed)
    entry = {"dp_noise_multiplier": 1.0, "dp_sample_rate": 0.1, "dp_steps": 10.0}
    state = dict(model.state_dict())
    late = coordination.Reply({n: t + 100 for n, t in state.items()}, 30, 0.0, entry).to_message()
    comm = ScriptedWithLate(3, {1: coordination.Reply(state, 30, 0.0, entry).to_message()}, late)
    test_set = local.Examples(torch.zeros(2, 1, 28, 28), torch.zeros(2, dtype=torch.int64))
    ledger = job.dp.ledger()
    record = coordination.server_round(comm, model, None, config.run, job, 2, test_set, ledger)
    one_round = privacy.epsilon([(1.0, 0.1, 10)], config.privacy.delta, config.privacy.accountant)
    assert record["late"] == [{"rank": 2, "replies": 1, "charge": f"charged: epsilon {one_round:.4g}"}]
    assert ledger.histories == {1: [(1.0, 0.1, 10)], 2: [(1.0, 0.1, 10)]}
    assert all(torch.equal(t, state[name]) for name, t in model.state_dict().items())


def test_diverged_gloo_run_stops_naming_the_divergence(tmp_path, small_csv):
    """The global model's test loss is NaN after round 1: the run stops there, before the workers'
    next updates (which are not finite) could be rejected."""
    found = subprocess.run([sys.executable, "main.py", "-nn", "3", "-nr", "2", "-lr", "1e6", "--data",
                            str(small_csv), "--output", str(tmp_path)], capture_output=True, text=True, cwd=ROOT,
                           check=False)
    error = found.stderr
    assert found.returncode == 2, error
    assert error.splitlines()[-1].startswith("ppsdg: error: round 1: the global model diverged (test loss nan)")


def test_node_knows_the_world_size_not_the_highest_rank_of_its_group():
    comm = node_communicator(9, {"message": "", "ranks": {"9": 2}, "world_size": 5})
    assert (comm.rank, comm.world_size) == (2, 5)
    with pytest.raises(FederationError, match="world size 2 does not hold worker rank 2"):
        node_communicator(9, {"message": "", "ranks": {"9": 2}, "world_size": 2})


def test_cuda_rank_uses_its_own_gpu(monkeypatch):
    chosen = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "set_device", chosen.append)
    monkeypatch.setattr(torch, "use_deterministic_algorithms", lambda *args, **kwargs: None)
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    config = parser.from_mapping({"use_cuda": True})
    devices = [runtime.device_for(config.run.use_cuda, rank) for rank in (0, 1, 3)]
    assert devices == [torch.device("cuda", i) for i in (0, 1, 1)]
    assert chosen == [torch.device("cuda", i) for i in (0, 1, 1)]


def test_nccl_needs_a_gpu_per_rank_on_this_host_not_in_the_world(monkeypatch):
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    assert local_world_size(8) == 8
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    assert local_world_size(8) == 2


def test_help_names_each_default_once():
    text = parser.build_parser().format_help()
    assert "(default: None)" not in text and " ".join(text.split()).count("(default: all workers)") == 1


def test_dp_accounting_does_not_flood_the_terminal_with_opacus_warnings():
    found = fresh_python("from ppsdg import privacy\nprivacy.epsilon([(0.3, 1.0, 1000)], 1e-5, 'rdp')\n"
                         "privacy.epsilon([(50.0, 0.01, 10)], 1e-5, 'rdp')\n"
                         "privacy.epsilon([(2.0, 1.0, 1)], 1e-5, 'prv')", "-W", "error::UserWarning",
                         "-W", "error::RuntimeWarning")
    assert found.returncode == 0, found.stderr


def stray(path: str) -> bool:
    """A file a run or a session leaves behind: a pid file, nohup.out, a run's output, a log outside
    bench/results/ (which keeps its logs on purpose)."""
    name = path.rsplit("/", 1)[-1]
    return (name.endswith(".pid") or name == "nohup.out" or path.startswith("runs/")
            or (name.endswith(".log") and not path.startswith("bench/results/")))


def test_the_git_tree_holds_no_run_leftovers():
    listed = subprocess.run(["git", "ls-files"], capture_output=True, text=True, cwd=ROOT, check=False)
    if listed.returncode != 0:
        pytest.skip(f"not a git checkout: {listed.stderr.strip()}")
    assert [path for path in listed.stdout.splitlines() if stray(path)] == []
    assert [stray(path) for path in ("q3.pid", "runs/latest/metrics.jsonl", "a/nohup.out", "bench/x.log",
                                     "bench/results/gpu-h100.log", "ppsdg/data.py")] == [True] * 4 + [False] * 2
