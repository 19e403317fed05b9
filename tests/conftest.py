"""Shared fixtures: one gloo run that several tests compare against, and a fixed thread count."""
import json
from pathlib import Path

import pytest
import torch

import main
from ppsdg import output

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
