"""The server's state after a round, enough to go on exactly as if never stopped.

One codec message (nothing pickled): the global model, the FedSGD server optimizer's buffers, the GAN
snapshots, and as metadata the round, the round records, every worker's privacy history and the
options that must not change on resume. The same bytes are a file on gloo and text in a vantage6
task's input and result.
"""
import argparse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from backends import Tensors, codec
from ppsdg import parser
from ppsdg.errors import OptionsError, PpsdgError
from ppsdg.files import write_atomically
from ppsdg.models import new_model

FILE = "checkpoint.msgpack"
MODEL, OPTIMIZER, SNAPSHOT = "model.", "optimizer.", "snapshot."
# A checkpoint's meta holds every round's record: room for tens of thousands of rounds of many workers.
META_BYTES = 64 << 20
# Options that do not change the training: a resumed run may set them anew.
RESUMABLE = ("num_rounds", "min_workers", "round_timeout", "backend", "save_model", "log_interval",
             "test_batch_size", "sample_every", "synthetic_samples", "tstr_epochs")


@dataclass
class Checkpoint:
    """What the server carries from round to round; `round` is the last one finished."""

    round: int
    model: Tensors
    records: list[dict[str, Any]] = field(default_factory=list)
    optimizer: dict[str, Any] | None = None
    histories: dict[int, list[tuple[float, float, int]]] = field(default_factory=dict)
    snapshots: dict[int, Tensors] = field(default_factory=dict)


def fixed_options(options: argparse.Namespace) -> dict[str, Any]:
    """The options a resumed run must share with the run it continues."""
    return {k: v for k, v in parser.task_options(options).items() if k not in RESUMABLE}


def encode(point: Checkpoint, options: argparse.Namespace) -> bytes:
    tensors = {MODEL + name: t.detach().cpu() for name, t in point.model.items()}
    optimizer_meta = None
    if point.optimizer is not None:
        state = {}
        for index, values in point.optimizer["state"].items():
            for key, value in values.items():
                if isinstance(value, torch.Tensor):
                    tensors[f"{OPTIMIZER}{index}.{key}"] = value.detach().cpu()
                else:
                    state.setdefault(str(index), {})[key] = value
        optimizer_meta = {"state": state, "param_groups": point.optimizer["param_groups"]}
    for round_, snapshot in point.snapshots.items():
        tensors.update({f"{SNAPSHOT}{round_}.{name}": t for name, t in snapshot.items()})
    meta = {"round": point.round, "records": point.records, "optimizer": optimizer_meta,
            "histories": {str(rank): [list(e) for e in history] for rank, history in point.histories.items()},
            "options": fixed_options(options)}
    return codec.encode(tensors, meta, max_meta_bytes=META_BYTES)


def decode(blob: bytes, options: argparse.Namespace, model_template: Tensors) -> Checkpoint:
    """Read a checkpoint and check that it belongs to a run with these options and this model."""
    tensors, meta = codec.decode(blob, max_meta_bytes=META_BYTES)
    try:
        mismatched = sorted(k for k, v in fixed_options(options).items() if meta["options"].get(k) != v)
        if mismatched:
            raise OptionsError("the checkpoint was made with other options; differing: " + ", ".join(
                f"{k} (checkpoint {meta['options'].get(k)!r}, now {getattr(options, k)!r})" for k in mismatched))
        model = {name[len(MODEL):]: t for name, t in tensors.items() if name.startswith(MODEL)}
        codec.check_expected(model, model_template)
        return Checkpoint(round=int(meta["round"]), model=model, records=list(meta["records"]),
                          optimizer=_optimizer_state(tensors, meta["optimizer"]),
                          histories={int(rank): [(float(n), float(q), int(s)) for n, q, s in history]
                                     for rank, history in meta["histories"].items()},
                          snapshots=_snapshots(tensors))
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        if isinstance(error, PpsdgError):
            raise
        raise PpsdgError(f"the checkpoint is damaged or from another version: {error!r}") from error


def read(blob: bytes, options: argparse.Namespace) -> Checkpoint:
    """Decode a checkpoint for a run with these options, checked against a fresh model of theirs."""
    return decode(blob, options, new_model(options).state_dict())


def _optimizer_state(tensors: Tensors, meta: dict[str, Any] | None) -> dict[str, Any] | None:
    if meta is None:
        return None
    state: dict[int, dict[str, Any]] = {int(i): dict(v) for i, v in meta["state"].items()}
    for name, tensor in tensors.items():
        if name.startswith(OPTIMIZER):
            index, key = name[len(OPTIMIZER):].split(".", 1)
            state.setdefault(int(index), {})[key] = tensor
    return {"state": state, "param_groups": meta["param_groups"]}


def _snapshots(tensors: Tensors) -> dict[int, Tensors]:
    snapshots: dict[int, Tensors] = {}
    for name, tensor in tensors.items():
        if name.startswith(SNAPSHOT):
            round_, key = name[len(SNAPSHOT):].split(".", 1)
            snapshots.setdefault(int(round_), {})[key] = tensor
    return snapshots


def save(blob: bytes, directory: Path) -> None:
    """Write atomically: a crash while writing leaves the previous checkpoint whole."""
    directory.mkdir(parents=True, exist_ok=True)
    write_atomically(directory / FILE, blob)


def load(directory: Path) -> bytes:
    path = directory / FILE
    if not path.is_file():
        raise OptionsError(f"--resume: no checkpoint at {path}")
    return path.read_bytes()
