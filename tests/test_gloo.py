"""End to end over torch.distributed: the real launcher, a server and two worker processes."""
import json

import pytest
import torch

import main
from ppsdg import data, output

ROUNDS = 3


def run_gloo(directory, *extra: str) -> dict[str, torch.Tensor]:
    code = main.main(["--backend", "gloo", "-nn", "3", "-nr", str(ROUNDS), "-sm", "--output", str(directory),
                      *extra])
    assert code == 0
    return torch.load(directory / output.MODEL, weights_only=True)


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    first, second = tmp_path_factory.mktemp("first"), tmp_path_factory.mktemp("second")
    return (first, run_gloo(first)), (second, run_gloo(second))


def test_gloo_run_learns_far_above_chance_and_writes_its_files(two_runs):
    (directory, state), _ = two_runs
    records = [json.loads(line) for line in (directory / output.METRICS).read_text().splitlines()]
    assert [r["round"] for r in records] == list(range(1, ROUNDS + 1))
    assert records[-1]["test_accuracy"] > 0.6
    for record in records:
        assert {"test_loss", "test_accuracy", "workers", "group"} <= set(record)
        assert [w["rank"] for w in record["workers"]] == [1, 2]
        assert sum(w["num_samples"] for w in record["workers"]) == len(data.load("embedded")[0])
        assert all(w["train_loss"] > 0 for w in record["workers"])
    summary = json.loads((directory / output.SUMMARY).read_text())
    assert summary["test_accuracy"] == records[-1]["test_accuracy"]
    assert summary["options"]["num_rounds"] == ROUNDS
    assert (directory / output.PLOT).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sum(t.numel() for t in state.values()) == 1_199_882


def test_same_seed_gives_bit_identical_parameters(two_runs):
    (_, first), (_, second) = two_runs
    assert first.keys() == second.keys()
    assert all(torch.equal(first[name], second[name]) for name in first)


def test_subgroups_average_only_the_drawn_workers(tmp_path):
    run_gloo(tmp_path, "-gs", "1", "-ta", "-nr", "2")
    records = [json.loads(line) for line in (tmp_path / output.METRICS).read_text().splitlines()]
    for record in records:
        assert len(record["group"]) == 1
        assert [w["rank"] for w in record["workers"]] == [1, 2]
        assert [w["averaged"] for w in record["workers"]] == [r in record["group"] for r in (1, 2)]
