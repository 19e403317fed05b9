"""What a run leaves in its output directory, the same for every backend.

metrics.jsonl (one line per round, written as rounds finish), summary.json, a plot of test accuracy
and loss per round, and with --save-model the final state_dict as model.pt.
"""
import argparse
import json
import os
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from ppsdg import parser

METRICS = "metrics.jsonl"
SUMMARY = "summary.json"
PLOT = "accuracy_loss.png"
MODEL = "model.pt"


class RunOutput:
    """The output directory of one run; it starts a fresh metrics file."""

    def __init__(self, directory: str | Path, options: argparse.Namespace) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.options = options
        self.started = time.perf_counter()
        (self.directory / METRICS).write_text("")

    def add_round(self, record: Mapping[str, Any]) -> None:
        with open(self.directory / METRICS, "a", encoding="utf-8") as metrics:
            metrics.write(json.dumps(record) + "\n")

    def finish(self, state: Mapping[str, torch.Tensor], records: Sequence[Mapping[str, Any]],
               extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Write the summary, the plot and (if asked) the model; return the summary."""
        summary = summarize(self.options, records, time.perf_counter() - self.started, extra or {})
        _write_atomically(self.directory / SUMMARY, (json.dumps(summary, indent=2) + "\n").encode())
        plot(records, self.directory / PLOT)
        if self.options.save_model:
            save_model(state, self.directory / MODEL)
        return summary


def summarize(options: argparse.Namespace, records: Sequence[Mapping[str, Any]], seconds: float,
              extra: Mapping[str, Any]) -> dict[str, Any]:
    last = records[-1] if records else {}
    return {
        "options": parser.to_mapping(options),
        "rounds": len(records),
        "test_accuracy": last.get("test_accuracy"),
        "test_loss": last.get("test_loss"),
        "best_test_accuracy": max((r["test_accuracy"] for r in records), default=None),
        "wall_seconds": round(seconds, 3),
        **extra,
    }


def save_model(state: Mapping[str, torch.Tensor], path: Path) -> None:
    """The final state_dict, loadable with torch.load(path, weights_only=True)."""
    cpu_state = {name: tensor.detach().cpu() for name, tensor in state.items()}
    with tempfile.NamedTemporaryFile(dir=path.parent, delete=False, suffix=".tmp") as handle:
        torch.save(cpu_state, handle)
    os.replace(handle.name, path)


def plot(records: Sequence[Mapping[str, Any]], path: Path) -> None:
    """Test accuracy and loss per round, side by side."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    rounds = [r["round"] for r in records]
    figure, (accuracy_axes, loss_axes) = pyplot.subplots(1, 2, figsize=(10, 4))
    accuracy_axes.plot(rounds, [r["test_accuracy"] for r in records], marker="o")
    accuracy_axes.set(xlabel="round", ylabel="test accuracy", ylim=(0, 1), title="Test accuracy")
    loss_axes.plot(rounds, [r["test_loss"] for r in records], marker="o", color="tab:red")
    loss_axes.set(xlabel="round", ylabel="test loss (NLL)", title="Test loss")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    pyplot.close(figure)


def _write_atomically(path: Path, content: bytes) -> None:
    with tempfile.NamedTemporaryFile(dir=path.parent, delete=False, suffix=".tmp") as handle:
        handle.write(content)
    os.replace(handle.name, path)
