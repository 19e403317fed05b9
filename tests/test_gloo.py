"""End to end over torch.distributed: the real launcher, a server and two worker processes."""
import json

import torch

from conftest import ROUNDS, run_main
from ppsdg import data, output


def test_gloo_run_learns_far_above_chance_and_writes_its_files(gloo_run):
    directory, state, records = gloo_run
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


def test_same_seed_gives_bit_identical_parameters(gloo_run, tmp_path):
    _, first, first_records = gloo_run
    second, second_records = run_main(tmp_path, "--backend", "gloo")
    assert first.keys() == second.keys()
    assert all(torch.equal(first[name], second[name]) for name in first)
    assert [r["test_loss"] for r in first_records] == [r["test_loss"] for r in second_records]


def test_subgroups_average_only_the_drawn_workers(tmp_path):
    _, records = run_main(tmp_path, "--backend", "gloo", "-gs", "1", "-ta", "-nr", "2")
    for record in records:
        assert len(record["group"]) == 1
        assert [w["rank"] for w in record["workers"]] == [1, 2]
        assert [w["averaged"] for w in record["workers"]] == [r in record["group"] for r in (1, 2)]
