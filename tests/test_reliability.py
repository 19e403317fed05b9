"""Failures mid-training, checkpoints and resume, hostile input: each ends cleanly and is named."""
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import main
import train
from backends import codec
from backends.gloo import free_port
from conftest import run_main
from ppsdg import algorithm, checkpoint, coordination, data, models, output, parser
from ppsdg.errors import DataError, FederationError, OptionsError
from ppsdg.job import Job
from test_dishonest_server import initial_state

ROOT = Path(__file__).resolve().parent.parent


def learning_figures(records: list[dict]) -> list[dict]:
    return [coordination.comparable(r) for r in records]


def test_gloo_run_stopped_and_resumed_equals_one_that_was_not(gloo_run, tmp_path):
    _, straight_state, straight_records = gloo_run
    run_main(tmp_path, "--backend", "gloo", "-nr", "2")
    state, records = run_main(tmp_path, "--backend", "gloo", "--resume", "--log-interval", "3")
    assert all(torch.equal(state[name], straight_state[name]) for name in straight_state)
    assert learning_figures(records) == learning_figures(straight_records)


@pytest.mark.parametrize("extra", [["-sgd", "-nr", "4"], ["-ldp", "--noise-multiplier", "1.0", "-nr", "3"]],
                         ids=["fedsgd", "dp"])
def test_vantage6_run_resumed_equals_one_that_was_not(small_csv, tmp_path, extra):
    argv = ["--backend", "vantage6", "--data", str(small_csv), "-bs", "32", *extra]
    straight_state, straight_records = run_main(tmp_path / "straight", *argv)
    run_main(tmp_path / "resumed", *argv, "-nr", "2")
    state, records = run_main(tmp_path / "resumed", *argv, "--resume")
    assert all(torch.equal(state[name], straight_state[name]) for name in straight_state)
    assert learning_figures(records) == learning_figures(straight_records)


def records(rounds: int) -> list[dict]:
    """The least a checkpoint's records may be: one a finished round, with its test figures."""
    return [{"round": r, "test_loss": 0.5, "test_accuracy": 0.9, "workers": [], "failed": []}
            for r in range(1, rounds + 1)]


def test_a_checkpoint_written_halfway_leaves_the_previous_one_whole(tmp_path, monkeypatch):
    config = parser.from_mapping({})
    first = checkpoint.encode(checkpoint.Checkpoint(1, initial_state(config), records(1)), config.fixed_options())
    checkpoint.save(first, tmp_path)

    def crash(*args):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError):
        checkpoint.save(b"half" * 10, tmp_path)
    assert checkpoint.load(tmp_path) == first
    point = checkpoint.read(checkpoint.load(tmp_path), config.fixed_options(), config.run, Job.of_config(config))
    assert point.round == 1


def test_resume_refuses_other_options_and_a_missing_checkpoint(tmp_path):
    config = parser.from_mapping({"output": str(tmp_path)})
    with pytest.raises(OptionsError, match="no checkpoint at"):
        train.resume_point(config)
    blob = checkpoint.encode(checkpoint.Checkpoint(2, initial_state(config), records(2)), config.fixed_options())
    checkpoint.save(blob, tmp_path)
    other = parser.from_mapping({"output": str(tmp_path), "learning_rate": 0.5, "num_rounds": 5})
    with pytest.raises(OptionsError, match=r"differing: learning_rate \(checkpoint 0.05, now 0.5\)"):
        train.resume_point(other)
    assert train.resume_point(parser.from_mapping({"output": str(tmp_path), "num_rounds": 5})).round == 2


def start_ranks(tmp_path: Path, *argv: str, last_dies_at: list[str] | None = None,
                workers: int = 2) -> list[subprocess.Popen]:
    """Server and the workers as separate processes, the way torchrun starts them; with
    `last_dies_at` (a point of tests/die_at.py and a round), the last worker dies there."""
    port = free_port()
    processes = []
    for rank in range(workers + 1):
        env = {**os.environ, "RANK": str(rank), "WORLD_SIZE": str(workers + 1), "MASTER_ADDR": "127.0.0.1",
               "MASTER_PORT": str(port)}
        entry = [str(ROOT / "tests" / "die_at.py"), *last_dies_at] if last_dies_at and rank == workers else [
            str(ROOT / "main.py")]
        processes.append(subprocess.Popen(
            [sys.executable, *entry, "--backend", "gloo", "-nn", str(workers + 1), "--output", str(tmp_path), *argv],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    return processes


def test_under_torchrun_only_the_server_says_where_the_results_are(tmp_path, small_csv):
    processes = start_ranks(tmp_path, "--data", str(small_csv), "-nr", "1")
    outputs = [process.communicate(timeout=120) for process in processes]
    assert [process.returncode for process in processes] == [0, 0, 0], outputs[0][1][-2000:]
    assert ["results in" in out for out, _ in outputs] == [True, False, False]


def after_first_round(tmp_path: Path, processes: list[subprocess.Popen]) -> None:
    deadline = time.monotonic() + 120
    while not (tmp_path / checkpoint.FILE).exists():
        if processes[0].poll() is not None or time.monotonic() > deadline:
            pytest.fail(f"round 1 never finished: {processes[0].communicate()[1][-2000:]}")
        time.sleep(0.05)


def test_gloo_worker_that_hangs_stops_the_server_naming_worker_and_round(tmp_path, small_csv):
    # 12 rounds: the worker is stopped mid-run even where a loaded machine lets the server finish
    # several before the test sees round 1's checkpoint.
    processes = start_ranks(tmp_path, "--data", str(small_csv), "-nr", "12", "--worker-timeout", "8")
    try:
        after_first_round(tmp_path, processes)
        processes[2].send_signal(signal.SIGSTOP)
        _, error = processes[0].communicate(timeout=120)
    finally:
        for process in processes:
            process.kill()
    assert processes[0].returncode == 2, error[-3000:]
    assert "Traceback" not in error
    assert re.search(r"ppsdg: error: round \d+: worker rank 2: no answer within 8 s \(--worker-timeout\)", error)
    assert codec.decode(checkpoint.load(tmp_path))[1]["round"] >= 1
    assert not (tmp_path / output.SUMMARY).exists()


@pytest.mark.parametrize("point", ["before-broadcast", "between-chunks", "awaiting-update"])
def test_gloo_worker_that_dies_is_left_out_when_min_workers_allows(tmp_path, small_csv, point):
    """Worker 2 dies in round 2 at a named point; the server goes on with worker 1 within seconds.
    --worker-timeout 60: a death the server missed ends the run naming the timeout."""
    processes = start_ranks(tmp_path, "--data", str(small_csv), "-nr", "4", "--min-workers", "1",
                            "--worker-timeout", "60", last_dies_at=[point, "2"])
    try:
        _, error = processes[0].communicate(timeout=120)
    finally:
        for process in processes:
            process.kill()
    assert processes[0].returncode == 0, error[-3000:]
    records = [json.loads(line) for line in (tmp_path / output.METRICS).read_text().splitlines()]
    assert [r["round"] for r in records] == [1, 2, 3, 4]
    assert [[w["rank"] for w in r["workers"]] for r in records] == [[1, 2], [1], [1], [1]]
    assert [[f["rank"] for f in r["failed"]] for r in records] == [[], [2], [2], [2]]
    doing = "waiting for" if point == "awaiting-update" else "sending to"
    assert records[1]["failed"][0]["reason"].startswith(f"lost while {doing} it ("), records[1]["failed"]


def test_a_gloo_member_that_dies_under_secure_aggregation_costs_its_round_an_attempt(tmp_path, table_files):
    """Worker 3 dies in round 2 after the key agreement, its release unsent: the round runs again without
    it, and the later rounds go on without it, in one attempt each."""
    parts = ",".join(str(table_files[name]) for name in ("a", "b", "a"))
    processes = start_ranks(tmp_path, "--data", parts, "--schema", str(table_files["schema"]), "-ldp",
                            "--noise-multiplier", "3", "--secure-aggregation", "--min-workers", "2",
                            "--synthetic-samples", "200", "--worker-timeout", "60",
                            last_dies_at=["awaiting-update", "2"], workers=3)
    try:
        _, error = processes[0].communicate(timeout=180)
    finally:
        for process in processes:
            process.kill()
    assert processes[0].returncode == 0, error[-3000:]
    records = [json.loads(line) for line in (tmp_path / output.METRICS).read_text().splitlines()]
    assert [r["attempts"] for r in records] == [1, 2, 1]
    assert [[w["rank"] for w in r["workers"]] for r in records] == [[1, 2, 3], [1, 2], [1, 2]]
    assert records[1]["failed"][0]["reason"].startswith("lost while waiting for it (")
    assert "the round ran again without it" in records[1]["failed"][0]["reason"]


NODE_FRAMES = {
    "wrong column count": (lambda f: f.iloc[:, :700], "expected 785 columns"),
    "non-numeric value": (lambda f: f.astype(object).assign(pixel3=["x"] * len(f)), "is not a number"),
    "label outside 0..9": (lambda f: f.assign(label=[12] * len(f)), "labels must be integers 0..9"),
    "empty partition": (lambda f: f.iloc[:0], "no rows"),
}


@pytest.mark.parametrize("case", NODE_FRAMES)
def test_node_with_bad_data_fails_naming_itself_and_tells_the_problem_to_its_owner_only(case, capsys):
    damage, message = NODE_FRAMES[case]
    config = parser.from_mapping({"num_nodes": 2})
    state = models.new_model(None, config.run.seed).state_dict()
    kwargs = {"message": codec.encode_text({coordination.ROUND: torch.tensor(1), **state}),
              "ranks": {"5": 1}, "world_size": 2, "options": config.task_options()}
    frame = damage(data.to_frame(data.load("embedded")[0].subset(torch.arange(50).numpy())))
    with pytest.raises(FederationError, match=r"organization 5 \(worker rank 1\): this node's data do not fit") as refused:
        algorithm.run_partial(5, frame, kwargs)
    assert message not in str(refused.value) and message in capsys.readouterr().err


def test_node_refuses_a_message_from_another_format_version():
    config = parser.from_mapping({"num_nodes": 2})
    newer = codec.encode({coordination.ROUND: torch.tensor(1)}).replace(b"\xa7version\x01", b"\xa7version\x02")
    kwargs = {"message": codec.to_text(newer), "ranks": {"5": 1}, "world_size": 2, "options": config.task_options()}
    frame = data.to_frame(data.load("embedded")[0].subset(torch.arange(20).numpy()))
    with pytest.raises(FederationError, match="unsupported format version 2"):
        algorithm.run_partial(5, frame, kwargs)


def test_bad_input_leaves_no_output_behind(tmp_path, small_csv):
    bad = tmp_path / "bad.csv"
    bad.write_text(small_csv.read_text().replace("\n3,", "\n13,", 1))
    for backend in ("gloo", "vantage6"):
        target = tmp_path / backend
        assert main.main(["--backend", backend, "--data", str(bad), "--output", str(target)]) == 2
        assert not target.exists()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.lists(st.one_of(st.integers(-5, 300), st.floats(allow_nan=True), st.text(max_size=3)),
                         min_size=0, max_size=790), min_size=0, max_size=4),
       st.booleans())
def test_fuzzed_csv_ends_in_data_error_or_a_valid_image_set(tmp_path, rows, with_header):
    lines = ([",".join(data.CSV_COLUMNS)] if with_header else []) + [",".join(map(str, row)) for row in rows]
    path = tmp_path / "fuzz.csv"
    path.write_text("\n".join(lines))
    try:
        images = data.load_csv(path)
    except DataError:
        return
    assert images.pixels.dtype.name == "uint8" and images.labels.max() <= 9


@pytest.mark.parametrize("target", [{"target_epsilon": 3.0}, {}], ids=["given", "default"])
def test_resume_with_more_rounds_than_the_dp_noise_was_planned_for_is_refused(tmp_path, target):
    planned = {"output": str(tmp_path), "local_dp": True, "num_rounds": 3, **target}
    config = parser.from_mapping(planned)
    blob = checkpoint.encode(checkpoint.Checkpoint(2, initial_state(config), records(2)), config.fixed_options())
    checkpoint.save(blob, tmp_path)
    with pytest.raises(OptionsError, match=r"planned to spend --target-epsilon 3 over --num-rounds 3; 5 rounds "
                                           r"would end above it"):
        train.resume_point(parser.from_mapping({**planned, "num_rounds": 5}))
    assert train.resume_point(config).round == 2
