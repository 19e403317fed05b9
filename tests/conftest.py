"""Shared fixtures: one gloo run that several tests compare against, a small registry-like table in
files, and a fixed thread count."""
import json
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import main
from ppsdg import data, output, tables
from ppsdg.errors import PpsdgError

torch.set_num_threads(1)

ROUNDS = 3
COMMON = ["-nn", "3", "-nr", str(ROUNDS), "-sm"]
TABLE_ROWS = 600


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


def people(rows: int = TABLE_ROWS, seed: int = 0) -> pd.DataFrame:
    """A table with the traits of a registry: dependent columns, numbers, categories, missing cells."""
    rng = np.random.default_rng(seed)
    age = rng.integers(18, 80, rows)
    sex = rng.choice(["F", "M"], rows)
    smoker = np.where(rng.random(rows) < 0.2 + 0.3 * (sex == "M"), "yes", "no")
    weight = np.round(55 + 15 * (sex == "M") + rng.normal(0, 8, rows), 1)
    outcome = np.where(rng.random(rows) < 0.1 + 0.5 * (smoker == "yes") * (age > 50), "ill", "well")
    region = rng.choice(["north", "south", "east"], rows).astype(object)
    region[rng.random(rows) < 0.05] = None
    return pd.DataFrame({"age": age, "sex": sex, "smoker": smoker, "weight": weight, "region": region,
                         "outcome": outcome})


@pytest.fixture(scope="module")
def table_files(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("table")
    frame = people()
    paths = {"all": folder / "people.csv", "a": folder / "a.csv", "b": folder / "b.csv.gz",
             "test": folder / "test.csv", "schema": folder / "schema.json"}
    frame.to_csv(paths["all"], index=False)
    frame.iloc[:250].to_csv(paths["a"], index=False)
    frame.iloc[250:500].to_csv(paths["b"], index=False)
    people(200, seed=1).to_csv(paths["test"], index=False)
    paths["schema"].write_text(tables.draft(frame, "outcome").text())
    return paths
