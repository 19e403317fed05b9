"""The node's privacy policy: the data owner's variables decide, before the private table is read."""
import json
import re

import pytest
import torch

import main
from backends import codec
from backends.mock import ForgetfulMockClient
from ppsdg import algorithm, checkpoint, coordination, data, parser, privacy, runtime
from ppsdg.config import Config, Moments
from ppsdg.policy import FOLDER, NodeLedger, NodePolicy, PolicyError
from ppsdg.job import Job
from test_vantage6 import central, mock_client, round_message, worker_frames

ROWS = 120
BATCH = 64


@pytest.fixture
def node_env(monkeypatch, tmp_path):
    """A node with a job folder and no policy; each test sets its own variables."""
    for name in ("PPSDG_REQUIRE_DP", "PPSDG_SECURE_NOISE", "PPSDG_ALLOW_SEEDED_NOISE", "PPSDG_MAX_EPSILON", "PPSDG_DELTA", "PPSDG_MAX_EPOCHS",
                 "PPSDG_MAX_BATCH_SIZE", "PPSDG_MAX_THREADS", "PPSDG_MAX_ROUNDS", "PPSDG_MIN_NOISE_MULTIPLIER",
                 "PPSDG_MAX_GRAD_NORM"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(FOLDER, str(tmp_path))
    return monkeypatch


def config(**values) -> Config:
    return parser.from_mapping({"num_nodes": 3, "batch_size": BATCH, **values})


def admit(node: NodePolicy, chosen: Config, env: dict[str, str], organization: int = 0) -> None:
    """The node's admission of a round of `chosen` on ROWS rows."""
    node.admit(chosen.run, Job.of_config(chosen), ROWS, env, organization)


@pytest.mark.parametrize("name, value", [
    ("PPSDG_REQUIRE_DP", "yes"), ("PPSDG_REQUIRE_DP", " 1"), ("PPSDG_REQUIRE_DP", "true"), ("PPSDG_REQUIRE_DP", ""),
    ("PPSDG_SECURE_NOISE", "true"), ("PPSDG_SECURE_NOISE", "01"), ("PPSDG_ALLOW_SEEDED_NOISE", "yes"),
    ("PPSDG_MAX_EPSILON", "abc"), ("PPSDG_MAX_EPSILON", "-1"), ("PPSDG_MAX_EPSILON", "inf"),
    ("PPSDG_MAX_EPSILON", "nan"), ("PPSDG_MAX_EPSILON", "0"), ("PPSDG_MAX_EPSILON", "1_0"),
    ("PPSDG_MAX_EPSILON", " 2"), ("PPSDG_DELTA", "1"), ("PPSDG_DELTA", "1e-5x"),
    ("PPSDG_MAX_EPOCHS", "1.5"), ("PPSDG_MAX_EPOCHS", "0"), ("PPSDG_MAX_EPOCHS", "+3"),
    ("PPSDG_MAX_THREADS", "\u0663"), ("PPSDG_MIN_NOISE_MULTIPLIER", "1e999"), ("PPSDG_MAX_GRAD_NORM", "-0.5"),
    ("PPSDG_DISTRIBUTED_NOISE", "-1"), ("PPSDG_DISTRIBUTED_NOISE", "yes"), ("PPSDG_DISTRIBUTED_NOISE", ""),
])
def test_a_variable_the_node_cannot_read_is_a_refusal_that_names_it(name, value):
    with pytest.raises(PolicyError, match=re.escape(f"{name}={value!r} cannot be read")):
        NodePolicy.from_environment({name: value})


def test_readable_variables_and_defaults():
    read = NodePolicy.from_environment({"PPSDG_REQUIRE_DP": "1", "PPSDG_SECURE_NOISE": "0", "PPSDG_MAX_EPSILON": "2.5",
                                        "PPSDG_DELTA": "1e-6", "PPSDG_MAX_EPOCHS": "3", "PPSDG_MIN_NOISE_MULTIPLIER": ".8",
                                        "PPSDG_DISTRIBUTED_NOISE": "0"})
    assert (read.require_dp, read.secure_noise, read.max_epsilon, read.delta, read.max_epochs,
            read.min_noise_multiplier, read.distributed_noise) == (True, False, 2.5, 1e-6, 3, 0.8, 0)
    default = NodePolicy.from_environment({})
    assert (default.require_dp, default.max_epsilon, default.delta, default.max_threads, default.max_epochs,
            default.distributed_noise) == (False, None, 1e-5, runtime.cores(), 100, None)


@pytest.mark.parametrize("variable, limit, option, asked", [
    ("PPSDG_MAX_EPOCHS", "2", "epochs", 3), ("PPSDG_MAX_BATCH_SIZE", "32", "batch_size", 64),
    ("PPSDG_MAX_THREADS", "1", "threads", 2), ("PPSDG_MAX_ROUNDS", "5", "num_rounds", 6)])
def test_a_task_larger_than_the_node_allows_is_refused_not_cut(variable, limit, option, asked, tmp_path):
    node = NodePolicy.from_environment({variable: limit})
    with pytest.raises(PolicyError, match=f"{variable}={limit}: the task asks for --{option.replace('_', '-')} {asked}"):
        admit(node, config(**{option: asked}), {FOLDER: str(tmp_path)})
    admit(node, config(**{option: int(limit)}), {FOLDER: str(tmp_path)})


def test_threads_above_the_nodes_cores_and_epochs_above_100_are_refused_by_default():
    with pytest.raises(PolicyError, match="PPSDG_MAX_THREADS"):
        admit(NodePolicy.from_environment({}), config(threads=runtime.cores() + 1), {})
    with pytest.raises(PolicyError, match="PPSDG_MAX_EPOCHS=100: the task asks for --epochs 101"):
        admit(NodePolicy.from_environment({}), config(epochs=101), {})


def test_noise_and_clipping_limits_apply_to_the_rounds_own_mechanism():
    dp = {"local_dp": True, "noise_multiplier": 0.5}
    with pytest.raises(PolicyError, match="PPSDG_MIN_NOISE_MULTIPLIER=1: this round's noise multiplier would be 0.5"):
        admit(NodePolicy(min_noise_multiplier=1.0), config(**dp), {})
    with pytest.raises(PolicyError, match="PPSDG_MAX_GRAD_NORM=1: the task asks for --max-grad-norm 2"):
        admit(NodePolicy(max_grad_norm=1.0), config(**dp, max_grad_norm=2.0), {})
    moments = config(**dp, gan=True, max_grad_norm=2.0)
    assert NodePolicy(max_grad_norm=1.0).admit(moments.run, Job.of_config(moments), ROWS, {}, 0) is None
    with pytest.raises(PolicyError, match="PPSDG_MIN_NOISE_MULTIPLIER, PPSDG_MAX_GRAD_NORM set: .* no --local_dp"):
        admit(NodePolicy(min_noise_multiplier=1.0, max_grad_norm=1.0), config(), {})


def test_the_planned_entry_is_what_a_round_releases():
    """The node charges its plan before the round and the reply carries its figures: they must be the same."""
    frame = worker_frames(count=1, rows=ROWS)[0]
    for values in ({}, {"gan": True}, {"target_epsilon": 3.0, "epochs": 2, "accountant": "rdp"}):
        chosen = parser.from_mapping({"num_nodes": 2, "batch_size": BATCH, "local_dp": True, **values})
        message, _ = round_message(chosen)
        reply = algorithm.run_partial(7, frame, {"message": message, "ranks": {"7": 1}, "world_size": 2,
                                                 "options": chosen.task_options()})
        figures = coordination.Reply.from_message(codec.decode_text(reply["message"])[0]).figures
        releases_once = isinstance(chosen.job, Moments)
        assert privacy.entry_from_extra(figures) == Job.of_config(chosen).dp.planned_entry(len(frame), releases_once)


def test_require_dp_refuses_before_the_table_is_read(node_env):
    node_env.setenv("PPSDG_REQUIRE_DP", "1")
    frames = worker_frames(count=2, rows=ROWS)
    frames[0].iloc[5, 0] = 11
    result = central(mock_client(frames), num_rounds=1, batch_size=BATCH)
    assert "organization 0 (worker rank 1): PPSDG_REQUIRE_DP set" in result["error"]
    assert "label" not in result["error"]
    assert (result["metrics"], result["checkpoint"]) == ([], None)


def test_require_dp_admits_a_local_dp_run(node_env):
    node_env.setenv("PPSDG_REQUIRE_DP", "1")
    result = central(mock_client(worker_frames(count=2, rows=ROWS)), num_rounds=1, batch_size=BATCH, local_dp=True)
    assert "error" not in result and len(result["metrics"]) == 1


def test_max_epsilon_stops_the_run_before_the_round_that_would_exceed_it(node_env, tmp_path):
    noise = 1.5
    frames = worker_frames(count=2, rows=ROWS)
    one, two = (privacy.epsilon([Job.of_config(config(local_dp=True, noise_multiplier=noise)).dp
                                 .planned_entry(len(frames[0]), False)] * k, 1e-5, "prv") for k in (1, 2))
    node_env.setenv("PPSDG_MAX_EPSILON", f"{(one + two) / 2:.6f}")
    result = central(mock_client(frames), num_rounds=2, batch_size=BATCH, local_dp=True, noise_multiplier=noise)
    assert [record["round"] for record in result["metrics"]] == [1]
    assert result["checkpoint"] is not None
    assert "round 2: organization 0 (worker rank 1): PPSDG_MAX_EPSILON=" in result["error"]
    assert "this node's budget at delta 1e-05 would be exceeded" in result["error"]
    worker_epsilon = result["metrics"][0]["workers"][0]["epsilon"]
    ledger = NodeLedger(tmp_path / "ppsdg-ledger-0.json")
    assert len(ledger.rounds) == 1 and ledger.epsilon(1e-5, "prv") == pytest.approx(worker_epsilon)
    assert json.loads((tmp_path / "ppsdg-ledger-1.json").read_text())["rounds"][0]["entry"] == list(ledger.rounds[0])


def test_max_epsilon_without_a_job_folder_is_a_refusal(node_env):
    node_env.delenv(FOLDER)
    node_env.setenv("PPSDG_MAX_EPSILON", "5")
    result = central(mock_client(worker_frames(count=2, rows=ROWS)), num_rounds=1, batch_size=BATCH, local_dp=True)
    assert "PPSDG_MAX_EPSILON is set but there is no writable TEMPORARY_FOLDER" in result["error"]


def test_max_rounds_counts_the_rounds_this_node_served_in_the_job(tmp_path):
    ledger = NodeLedger(tmp_path / "ledger.json")
    ledger.charge(None)
    node = NodePolicy(max_rounds=1)
    with pytest.raises(PolicyError, match=r"PPSDG_MAX_ROUNDS=1: this node has served 1 round\(s\)"):
        node.check_history(NodeLedger(tmp_path / "ledger.json"), None, None)
    assert NodeLedger(tmp_path / "ledger.json").epsilon(1e-5, "prv") == float("inf")


def test_an_unreadable_ledger_is_a_refusal_not_a_fresh_start(tmp_path):
    (tmp_path / "ledger.json").write_text('{"rounds": [{"entry": [1.0]}]}')
    with pytest.raises(PolicyError, match="ledger .* cannot be read"):
        NodeLedger(tmp_path / "ledger.json")


@pytest.mark.parametrize("environment, on_node, secure", [
    ({}, False, False), ({}, True, True), ({"PPSDG_ALLOW_SEEDED_NOISE": "1"}, True, False),
    ({"PPSDG_SECURE_NOISE": "1"}, False, True), ({"PPSDG_SECURE_NOISE": "1", "PPSDG_ALLOW_SEEDED_NOISE": "1"}, True, True)])
def test_dp_noise_is_secure_on_a_real_node_unless_its_owner_allows_the_seed(node_env, environment, on_node, secure):
    for name, value in environment.items():
        node_env.setenv(name, value)
    chosen = parser.from_mapping({"num_nodes": 2, "batch_size": BATCH, "local_dp": True})
    message, _ = round_message(chosen)
    frame = worker_frames(count=1, rows=ROWS)[0]
    task = {"message": message, "ranks": {"7": 1}, "world_size": 2, "options": chosen.task_options()}
    first, second = (codec.decode_text(algorithm.run_partial(7, frame, task, on_node)["message"])[0] for _ in range(2))
    same = all(torch.equal(first[name], second[name]) for name in first)
    assert same == (not secure)


def test_secure_noise_leaves_a_run_without_dp_reproducible(node_env):
    node_env.setenv("PPSDG_SECURE_NOISE", "1")
    chosen = parser.from_mapping({"num_nodes": 2, "batch_size": BATCH})
    message, _ = round_message(chosen)
    task = {"message": message, "ranks": {"7": 1}, "world_size": 2, "options": chosen.task_options()}
    frame = worker_frames(count=1, rows=ROWS)[0]
    first, second = (algorithm.run_partial(7, frame, task, True)["message"] for _ in range(2))
    assert first == second


def test_node_reads_its_variables_as_a_vantage6_node_encodes_them(monkeypatch):
    """A node hands the container base32 text with '=' written as '!'; a plain value passes as it is."""
    import base64

    from ppsdg.node_task import node_environment

    monkeypatch.setenv("PPSDG_REQUIRE_DP", base64.b32encode(b"1").decode().replace("=", "!"))
    monkeypatch.setenv("PPSDG_MAX_EPSILON", "2.5")
    environment = node_environment()
    assert (environment["PPSDG_REQUIRE_DP"], environment["PPSDG_MAX_EPSILON"]) == ("1", "2.5")
    assert "PATH" not in environment


def test_a_budget_rehearsed_without_a_server_stops_where_it_would_on_a_node(node_env, small_csv, tmp_path, capsys):
    """main.py's mock gives each node a job folder, as a real node has: its ledger composes the job's
    rounds, so the run stops at the budget after the rounds that fit, and keeps them."""
    node_env.delenv(FOLDER)
    argv = ["--backend", "vantage6", "--data", str(small_csv), "-nr", "3", "-ldp", "--noise-multiplier", "1.0",
            "-bs", str(BATCH)]
    chosen = parser.parse(argv)
    job = Job.of_config(chosen)
    planned = [job.dp.planned_entry(len(images), False)
               for images in data.worker_sets(chosen.source, chosen.run.workers, chosen.run.seed, None)]
    one, two = (max(privacy.epsilon([entry] * k, 1e-5, "prv") for entry in planned) for k in (1, 2))
    node_env.setenv("PPSDG_MAX_EPSILON", f"{(one + two) / 2:.6f}")
    run = tmp_path / "run"
    assert main.main([*argv, "--output", str(run)]) == 2
    error = capsys.readouterr().err
    assert re.search(r"error: round 2: organization \d \(worker rank \d\): PPSDG_MAX_EPSILON=[0-9.]+: this node's "
                     r"budget at delta 1e-05 would be exceeded: epsilon [0-9.]+ spent in 1 round\(s\)", error)
    assert "Rounds 1..1 are saved" in error
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["round"] for r in records] == [1] and records[-1]["epsilon"] == pytest.approx(one, rel=1e-3)
    fixed = chosen.fixed_options()
    assert checkpoint.read(checkpoint.load(run), fixed, chosen.run, job).round == 1


def test_each_mock_job_gives_each_node_a_folder_its_subtasks_share(node_env, tmp_path):
    node_env.delenv(FOLDER)
    node_env.setenv("PPSDG_MAX_ROUNDS", "2")
    client = ForgetfulMockClient(datasets=[[{"database": f}] for f in worker_frames(count=2, rows=ROWS)],
                                 module="ppsdg", job_root=tmp_path)
    for _ in range(2):
        assert "error" not in central(client, num_rounds=2, batch_size=BATCH)
    ledgers = sorted(path.relative_to(tmp_path).as_posix() for path in tmp_path.rglob("ppsdg-ledger-*.json"))
    assert ledgers == [f"job-{job}/node-{node}/ppsdg-ledger-{node}.json" for job in (1, 2) for node in (0, 1)]
    assert all(len(NodeLedger(tmp_path / ledger).rounds) == 2 for ledger in ledgers)
    assert client.job_folder is None


def admit_one_round(folder: str, budget: str, start, outcomes) -> None:
    """One round of a job on organization 3, started when `start` lets every racer go."""
    start.wait()
    try:
        admit(NodePolicy.from_environment({"PPSDG_MAX_EPSILON": budget}),
              config(local_dp=True, noise_multiplier=1.5), {FOLDER: folder}, 3)
        outcomes.put("admitted")
    except PolicyError as error:
        outcomes.put(str(error))


def test_two_rounds_started_together_cannot_both_spend_the_room_for_one(tmp_path):
    """Both read the ledger before either charged it, both released, and the ledger recorded one."""
    import multiprocessing

    entry = Job.of_config(config(local_dp=True, noise_multiplier=1.5)).dp.planned_entry(ROWS, False)
    budget = f"{(privacy.epsilon([entry], 1e-5, 'prv') + privacy.epsilon([entry] * 2, 1e-5, 'prv')) / 2:.4f}"
    context = multiprocessing.get_context("fork")
    start, outcomes = context.Barrier(2), context.Queue()
    racers = [context.Process(target=admit_one_round, args=(str(tmp_path), budget, start, outcomes)) for _ in range(2)]
    for racer in racers:
        racer.start()
    for racer in racers:
        racer.join(60)
    results = sorted((outcomes.get(timeout=5) for _ in racers), key=lambda outcome: outcome != "admitted")
    assert results[0] == "admitted" and results[1].startswith(f"PPSDG_MAX_EPSILON={float(budget):g}: this node's budget")
    assert NodeLedger(tmp_path / "ppsdg-ledger-3.json").rounds == [entry]


@pytest.mark.parametrize("name", ["PPSDG_REQUIRE_DPP", "PPSDG_MAX_EPSILONS", "PPSDG_"])
def test_an_unknown_variable_is_a_refusal_that_names_it_and_the_known_ones(name):
    with pytest.raises(PolicyError, match=f"^{name}: not a variable this node knows; the known ones are "
                                          "PPSDG_REQUIRE_DP, PPSDG_SECURE_NOISE, "):
        NodePolicy.from_environment({name: "1", FOLDER: "/tmp"})


def test_a_value_that_is_not_utf8_after_base32_decoding_is_a_named_refusal(node_env):
    node_env.setenv("PPSDG_MAX_ROUNDS", "77777777")
    result = central(mock_client(worker_frames(count=2, rows=ROWS)), num_rounds=1, batch_size=BATCH)
    assert result["error"].startswith("round 1: ") and "organization 0 (worker rank 1): PPSDG_MAX_ROUNDS cannot be " \
        "read: its value, base32-decoded as a node encodes it, is not UTF-8 text" in result["error"]
