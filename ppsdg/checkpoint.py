"""The server's state after a round, enough to go on exactly as if never stopped.

One codec message (nothing pickled): the global model, the FedSGD server optimizer's buffers, the GAN
snapshots, and as metadata the round, the round records, every worker's privacy history and the
options that must not change on resume. The same bytes are a file on gloo and text in a vantage6
task's input and result.
"""
import math
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from backends import Tensors, codec
from ppsdg import local
from ppsdg.config import Run
from ppsdg.errors import CodecError, FederationError, OptionsError, PpsdgError
from ppsdg.files import write_atomically
from ppsdg.job import Job
from ppsdg.models import new_model
from ppsdg.privacy import ENTRY_KEYS, HistoryEntry, LocalDP, out_of_reach, release_entry

FILE = "checkpoint.msgpack"
MODEL, OPTIMIZER, SNAPSHOT = "model.", "optimizer.", "snapshot."
META_KEYS = frozenset({"round", "records", "optimizer", "histories", "options"})
# The figures of a round's record that the summary and the plot read from every record.
TEST_FIGURES = ("test_loss", "test_accuracy")
WORKER_FIGURES = ("critic_loss", "generator_loss")
# What torch's SGD (local.make_optimizer) keeps per parameter.
PARAMETER_STATE = ("momentum_buffer",)
BRIEF = 200
# A checkpoint's meta holds every round's record: room for tens of thousands of rounds of many workers.
META_BYTES = 64 << 20


class CheckpointError(PpsdgError):
    """A checkpoint that cannot be resumed from: damaged, made by hand, or from another version."""


@dataclass
class Checkpoint:
    """What the server carries from round to round; `round` is the last one finished."""

    round: int
    model: Tensors
    records: list[dict[str, Any]] = field(default_factory=list)
    optimizer: dict[str, Any] | None = None
    histories: dict[int, list[tuple[float, float, int]]] = field(default_factory=dict)
    snapshots: dict[int, Tensors] = field(default_factory=dict)


def encode(point: Checkpoint, fixed: Mapping[str, Any]) -> bytes:
    """The checkpoint's bytes; `fixed` is what a run resumed from it must share (`Config.fixed_options`)."""
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
            "options": dict(fixed)}
    return codec.encode(tensors, meta, max_meta_bytes=META_BYTES)


def decode(blob: bytes, fixed: Mapping[str, Any], run: Run, job: Job, model_template: Tensors) -> Checkpoint:
    """Read a checkpoint and check all of it against this run (`fixed`: `Config.fixed_options`), its job and this
    model before the first round, so that a bad one ends here, named, rather than in a crash or a wrong run
    later."""
    tensors, meta = codec.decode(blob, max_meta_bytes=META_BYTES)
    _check_meta_keys(meta)
    _check_options(meta["options"], fixed, job.dp, run.num_rounds)
    round_ = _round(meta["round"], run.num_rounds)
    parts = _split(tensors)
    _check_tensors(parts[MODEL], model_template, "model")
    fresh = new_model(job.synthesizer, run.seed) if job.federated_sgd or job.synthesizer is not None else None
    records = _records(meta["records"], round_)
    snapshots = _snapshots(parts[SNAPSHOT], job, round_, fresh)
    if job.releases_statistics:
        _check_statistics(parts[MODEL], records, job, "model")
        for when, snapshot in snapshots.items():
            _check_statistics(snapshot, records[:when], job, f"generator snapshot of round {when}")
    histories = _histories(meta["histories"], job.dp, run.workers, round_)
    _check_charged(histories, records, run.workers, job)
    return Checkpoint(round=round_, model=parts[MODEL], records=records,
                      optimizer=_optimizer_state(parts[OPTIMIZER], meta["optimizer"], job, fresh),
                      histories=histories, snapshots=snapshots)


def read(blob: bytes, fixed: Mapping[str, Any], run: Run, job: Job) -> Checkpoint:
    """Decode a checkpoint for this run and job, checked against a fresh model of theirs."""
    return decode(blob, fixed, run, job, new_model(job.synthesizer, run.seed).state_dict())


def _check_meta_keys(meta: dict[str, Any]) -> None:
    """Exactly what encode writes: a missing field is damage, an unknown one another version."""
    missing, extra = sorted(META_KEYS - set(meta)), sorted(set(meta) - META_KEYS)
    if missing or extra:
        raise CheckpointError(f"the checkpoint's metadata has missing fields {missing} and unknown fields {extra}")


def _check_options(saved: Any, fixed: Mapping[str, Any], dp: LocalDP | None, num_rounds: int) -> None:
    """A resumed run must train as the one it continues."""
    if not isinstance(saved, dict):
        raise CheckpointError(f"the checkpoint's options are {type(saved).__name__}, not a mapping")
    mismatched = sorted(k for k in set(fixed) | set(saved) if saved.get(k) != fixed.get(k))
    if mismatched == ["num_rounds"] and dp is not None:
        raise OptionsError(f"--resume: the DP noise was planned to spend --target-epsilon {dp.target_epsilon:g} "
                           f"over --num-rounds {saved.get('num_rounds')!r}; {num_rounds} rounds would end "
                           f"above it. Resume with --num-rounds {saved.get('num_rounds')!r}, or start a new run")
    if mismatched:
        raise OptionsError("the checkpoint was made with other options; differing: " + ", ".join(
            f"{k} (checkpoint {_brief(saved.get(k))}, now {_brief(fixed.get(k))})" for k in mismatched))


def _round(value: Any, num_rounds: int) -> int:
    """The last finished round; the run goes on from the next one, so it must lie within the run."""
    if not _is_int(value) or value < 0:
        raise CheckpointError(f"the checkpoint's round {value!r} is not a whole number of 0 or more")
    if value > num_rounds:
        raise OptionsError(f"the checkpoint is at round {value}, past --num-rounds {num_rounds}: a resumed run "
                           "goes on from the round after it")
    return value


def _split(tensors: Tensors) -> dict[str, Tensors]:
    """The tensors by part, their prefix taken off; a tensor of no part is refused, not ignored."""
    parts: dict[str, Tensors] = {MODEL: {}, OPTIMIZER: {}, SNAPSHOT: {}}
    for name, tensor in tensors.items():
        prefix = next((p for p in parts if name.startswith(p)), None)
        if prefix is None:
            raise CheckpointError(f"the checkpoint holds the tensor {name!r}, which is part of no checkpoint")
        parts[prefix][name[len(prefix):]] = tensor
    return parts


def _records(records: Any, round_: int) -> list[dict[str, Any]]:
    """One record per finished round, in order, with the fields the run's output reads from all of them."""
    if not isinstance(records, list) or len(records) != round_:
        count = len(records) if isinstance(records, list) else type(records).__name__
        raise CheckpointError(f"the checkpoint's records are not a list of one per finished round "
                              f"({round_}): found {count}")
    for position, record in enumerate(records, 1):
        problem = _record_problem(record, position)
        if problem is not None:
            raise CheckpointError(f"the checkpoint's record {position}: {problem}")
    kinds = {record.get("test_accuracy") is None for record in records}
    if len(kinds) > 1:
        raise CheckpointError("the checkpoint's records mix rounds with and without a test accuracy")
    return records


def _record_problem(record: Any, position: int) -> str | None:
    """What makes a round's record unusable for metrics.jsonl, the summary and the plot, if anything."""
    if not isinstance(record, dict):
        return f"is {type(record).__name__}, not a mapping"
    if not _is_int(record.get("round")) or record["round"] != position:
        return f"has round {record.get('round')!r}, expected {position}"
    for key in TEST_FIGURES:
        if key not in record:
            return f"has no {key}"
        if not _is_number_or_none(record[key]):
            return f"has {key} {record[key]!r}, not a number"
    for key in ("workers", "failed"):
        entries = record.get(key)
        if not isinstance(entries, list) or not all(isinstance(entry, dict) for entry in entries):
            return f"has {key} {entries!r}, not a list of mappings"
    figures = [worker.get(key) for worker in record["workers"] for key in WORKER_FIGURES]
    return next((f"has a worker figure {value!r}, not a number" for value in figures
                 if not _is_number_or_none(value)), None)


def _optimizer_state(tensors: Tensors, meta: Any, job: Job, model: nn.Module | None) -> dict[str, Any] | None:
    """FedSGD's server optimizer as a state_dict that loads into the optimizer this run builds."""
    if not job.federated_sgd:
        if meta is not None or tensors:
            raise CheckpointError("the checkpoint holds a FedSGD optimizer state but the run is not "
                                  "--stochastic-gradient")
        return None
    if not isinstance(meta, dict) or set(meta) != {"state", "param_groups"}:
        raise CheckpointError(f"the checkpoint's FedSGD optimizer state {_brief(meta)} is not a mapping of "
                              "state and param_groups")
    params = list(model.parameters())
    _check_param_groups(meta["param_groups"],
                        local.make_optimizer(model, job.classifier.learning_rate, job.classifier.momentum))
    state = _optimizer_meta_state(meta["state"], len(params))
    for name, tensor in tensors.items():
        index, key = _numbered(OPTIMIZER, name, range(len(params)), "parameter index")
        state.setdefault(index, {})[key] = tensor
    for index, values in state.items():
        _check_parameter_state(index, values, params[index])
    return {"state": state, "param_groups": meta["param_groups"]}


def _check_param_groups(groups: Any, optimizer: torch.optim.Optimizer) -> None:
    """The groups of the run's own optimizer: the same settings and parameters, whatever the round's lr
    (the round sets it before each step)."""
    expected = optimizer.state_dict()["param_groups"]
    if not (isinstance(groups, list) and len(groups) == len(expected) and all(
            isinstance(group, dict) and _is_number(group.get("lr")) and _without_lr(group) == _without_lr(fresh)
            for group, fresh in zip(groups, expected))):
        raise CheckpointError(f"the checkpoint's FedSGD param_groups {_brief(groups)} are not those of the "
                              f"optimizer this run builds ({_brief(expected)})")


def _optimizer_meta_state(state: Any, count: int) -> dict[int, dict[str, Any]]:
    """The optimizer's non-tensor state, by parameter index."""
    if not isinstance(state, dict) or not all(isinstance(values, dict) for values in state.values()):
        raise CheckpointError(f"the checkpoint's FedSGD optimizer state {_brief(state)} is not a mapping of "
                              "parameter indices to mappings")
    return {_index(index, range(count), "FedSGD optimizer state's parameter index"): dict(values)
            for index, values in state.items()}


def _check_parameter_state(index: int, values: dict[str, Any], param: torch.Tensor) -> None:
    """SGD keeps one momentum buffer per parameter, shaped like the parameter it belongs to."""
    for key, value in values.items():
        if key not in PARAMETER_STATE or not isinstance(value, torch.Tensor):
            raise CheckpointError(f"the checkpoint's FedSGD optimizer state of parameter {index} holds "
                                  f"{key!r} = {_brief(value)}; SGD keeps only a tensor {PARAMETER_STATE}")
        if (value.shape, value.dtype) != (param.shape, param.dtype):
            raise CheckpointError(f"the checkpoint's FedSGD {key} of parameter {index} is {value.dtype} "
                                  f"{list(value.shape)}, but the parameter is {param.dtype} {list(param.shape)}")


def _histories(histories: Any, dp: LocalDP | None, workers: int, round_: int) -> dict[int, list[HistoryEntry]]:
    """Every worker's accountant history, each entry checked as the server checks a reply's, at most
    one a finished round."""
    if not isinstance(histories, dict):
        raise CheckpointError(f"the checkpoint's privacy histories are {type(histories).__name__}, not a mapping")
    if histories and dp is None:
        raise CheckpointError("the checkpoint holds privacy histories but the run is not --local_dp")
    checked = {}
    for key, history in histories.items():
        rank = _index(key, range(1, workers + 1), "privacy history's worker rank")
        if not isinstance(history, list) or len(history) > round_:
            raise CheckpointError(f"the checkpoint's privacy history of worker {rank} is not a list of at most "
                                  f"one entry a finished round ({round_}): {_brief(history)}")
        checked[rank] = [_history_entry(entry, rank) for entry in history]
        if out_of_reach(checked[rank], dp.delta, dp.accountant):
            raise CheckpointError(f"the checkpoint's privacy history of worker {rank} {_brief(history)} is out of "
                                  f"the {dp.accountant} accountant's reach: no run can go on from it")
    return checked


def _check_charged(histories: dict[int, list[HistoryEntry]], records: list[dict[str, Any]], workers: int,
                   job: Job) -> None:
    """The records' workers are the run's (ranks 1..num_nodes-1), and under DP the histories charge what
    they released: at least one entry a round a worker's reply was taken (a history that forgets one
    would have the resumed run report less than was spent), and for a statistics release exactly the
    planned release, which the server knows (one that claims more noise would charge less)."""
    ranks = [worker.get("rank") for record in records for worker in record["workers"]]
    stray = next((rank for rank in ranks if not (_is_int(rank) and rank in range(1, workers + 1))), None)
    if stray is not None or None in ranks:
        raise CheckpointError(f"the checkpoint's records list a worker of rank {_brief(stray)}, not a whole number "
                              f"in 1..{workers}")
    if job.dp is None:
        return
    for rank, released in sorted(Counter(ranks).items()):
        if len(histories.get(rank, [])) < released:
            raise CheckpointError(f"the checkpoint's privacy history charges {len(histories.get(rank, []))} "
                                  f"release(s) of worker {rank}, who released in {released} round(s)")
    if job.releases_statistics:
        planned = release_entry(job.dp.release_noise())
        for rank, history in histories.items():
            wrong = next((entry for entry in history if not (math.isclose(entry[0], planned[0], rel_tol=1e-9)
                                                             and tuple(entry[1:]) == planned[1:])), None)
            if wrong is not None:
                raise CheckpointError(f"the checkpoint's privacy history of worker {rank} has the entry {wrong}, "
                                      f"which is not the planned release's {planned}")


def _history_entry(entry: Any, rank: int) -> HistoryEntry:
    """Three finite numbers, then the same check as a worker's reply (LocalDP.entry)."""
    if not (isinstance(entry, list) and len(entry) == len(ENTRY_KEYS)
            and all(_is_number(value) and math.isfinite(value) for value in entry)):
        raise CheckpointError(f"the checkpoint's privacy history of worker {rank} has the entry {_brief(entry)}, "
                              "not three finite numbers (noise multiplier, sample rate, steps)")
    try:
        return LocalDP.entry(dict(zip(ENTRY_KEYS, entry)))
    except FederationError as error:
        raise CheckpointError(f"the checkpoint's privacy history of worker {rank} has the entry {entry!r}: "
                              f"{error}") from error


def _check_statistics(state: Tensors, records: list[dict[str, Any]], job: Job, what: str) -> None:
    """Summed statistics are the sum of the releases the records list as averaged: the synthesizer
    checks them against the bounds of those releases' rows and planned noise (check_sum)."""
    averaged = [[worker for worker in record["workers"] if worker.get("averaged")] for record in records]
    rows_by_round = [[worker.get("num_samples") for worker in workers] for workers in averaged]
    shares_by_round = [[worker.get("noise_share", 1.0) for worker in workers] for workers in averaged]
    rows = [count for counts in rows_by_round for count in counts]
    if not all(_is_int(count) and count >= 1 for count in rows):
        raise CheckpointError(f"the checkpoint's records hold an averaged worker's num_samples that is not a whole "
                              f"number of 1 or more: {_brief(rows)}")
    shares = [share for shares in shares_by_round for share in shares]
    if not all(_is_number(share) and 0 < share <= 1 for share in shares):
        raise CheckpointError(f"the checkpoint's records hold an averaged worker's noise_share that is not a number "
                              f"in (0, 1]: {_brief(shares)}")
    synthesizer = job.synthesizer
    try:
        synthesizer.check_sum(state, rows_by_round, synthesizer.release_std(job.dp), shares_by_round)
    except FederationError as error:
        raise CheckpointError(f"the checkpoint's {what} is not the sum of the releases its records list: "
                              f"{error}") from error


def _snapshots(tensors: Tensors, job: Job, round_: int, model: nn.Module | None) -> dict[int, Tensors]:
    """The generator's state as kept after some finished rounds: the run's own generator, at rounds it
    has finished."""
    snapshots: dict[int, Tensors] = {}
    for name, tensor in tensors.items():
        when, key = _numbered(SNAPSHOT, name, range(1, round_ + 1), "round")
        snapshots.setdefault(when, {})[key] = tensor
    if not snapshots:
        return snapshots
    if job.synthesizer is None:
        raise CheckpointError("the checkpoint holds generator snapshots but the run is not --gan")
    template = job.synthesizer.generator_state(model)
    for when, snapshot in snapshots.items():
        _check_tensors(snapshot, template, f"generator snapshot of round {when}")
    return snapshots


def _check_tensors(tensors: Tensors, template: Tensors, what: str) -> None:
    """The same names, shapes and dtypes as the run's own, every difference named at once."""
    try:
        codec.check_expected(tensors, template)
    except CodecError as error:
        raise CheckpointError(f"the checkpoint's {what}: {error}") from error


def _numbered(part: str, name: str, allowed: range, what: str) -> tuple[int, str]:
    """An optimizer or snapshot tensor's number (parameter index or round) and its own name, as encode
    writes them after the part's prefix: <number>.<name>."""
    number, dot, key = name.partition(".")
    if not (dot and key):
        raise CheckpointError(f"the checkpoint's tensor {part + name!r} is not named {part}<number>.<name>")
    return _index(number, allowed, f"{what} in the tensor {part + name!r}"), key


def _index(text: str, allowed: range, what: str) -> int:
    """A decimal as encode writes it (no sign, space, underscore or leading zero), in `allowed`; its
    length is checked first, as int() refuses (with ValueError) to read more than 4,300 digits."""
    if not (text.isascii() and text.isdigit() and len(text) <= len(str(allowed.stop))
            and str(int(text)) == text and int(text) in allowed):
        raise CheckpointError(f"the checkpoint's {what} is {text!r}, not a whole number in "
                              f"{allowed.start}..{allowed.stop - 1}")
    return int(text)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    """A JSON number: bool is an int to Python but never a figure."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_number_or_none(value: Any) -> bool:
    return value is None or _is_number(value)


def _without_lr(group: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in group.items() if key != "lr"}


def _brief(value: Any) -> str:
    """A value for an error message, cut short: a hostile checkpoint must not fill the terminal."""
    text = repr(value)
    return text if len(text) <= BRIEF else text[:BRIEF] + "..."


def save(blob: bytes, directory: Path) -> None:
    """Write atomically: a crash while writing leaves the previous checkpoint whole."""
    directory.mkdir(parents=True, exist_ok=True)
    write_atomically(directory / FILE, blob)


def load(directory: Path) -> bytes:
    path = directory / FILE
    if not path.is_file():
        raise OptionsError(f"--resume: no checkpoint at {path}")
    return path.read_bytes()
