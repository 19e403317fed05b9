"""Shared fixtures: one gloo run that several tests compare against, and a fixed thread count."""
import json
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

import main
from ppsdg import data, output
from ppsdg.errors import PpsdgError

torch.set_num_threads(1)

ROUNDS = 3
COMMON = ["-nn", "3", "-nr", str(ROUNDS), "-sm"]


def run_main(directory: Path, *argv: str) -> tuple[dict[str, torch.Tensor], list[dict]]:
    """Run the real launcher; return the saved model and the metrics lines."""
    assert main.main([*COMMON, *argv, "--output", str(directory)]) == 0
    state = torch.load(directory / output.MODEL, weights_only=True)
    records = [json.loads(line) for line in (directory / output.METRICS).read_text().splitlines()]
    return state, records


@pytest.fixture(scope="session")
def gloo_run(tmp_path_factory) -> tuple[Path, dict[str, torch.Tensor], list[dict]]:
    directory = tmp_path_factory.mktemp("gloo")
    return (directory, *run_main(directory, "--backend", "gloo"))


@pytest.fixture(scope="session")
def small_csv(tmp_path_factory) -> Path:
    """300 embedded digits in the node CSV layout: 240 to train on, 60 held out. For runs that must
    be quick rather than accurate."""
    train_set, _ = data.load("embedded")
    path = tmp_path_factory.mktemp("data") / "digits.csv"
    data.to_frame(train_set.subset(torch.arange(300).numpy())).to_csv(path, index=False)
    return path


def peak_traced_bytes(action: Callable[[], object]) -> int:
    """The peak of Python and numpy allocations while `action` runs (numpy reports to tracemalloc);
    a project error it raises is expected: refusing the input is what the tests measure."""
    tracemalloc.start()
    try:
        action()
    except PpsdgError:
        pass
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak
