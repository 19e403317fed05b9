"""A checkpoint is checked whole before the first round: every bad one ends in a named PpsdgError.

Valid checkpoints of the three kinds that carry more than a model (FedSGD's optimizer, local DP's
histories, a GAN's snapshots) are mutated by hand and by hypothesis, and re-encoded with the codec.
"""
import copy
import functools
import math
import types
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import main
from backends import Tensors, codec
from ppsdg import algorithm, checkpoint, local, models, output, parser
from ppsdg.checkpoint import Checkpoint, CheckpointError
from ppsdg.config import Config
from ppsdg.errors import CodecError, OptionsError, PpsdgError
from ppsdg.job import Job
from ppsdg.privacy import ENTRY_KEYS, LocalDP

ROUND = 2
KINDS = {
    "fedsgd": {"stochastic_gradient": True, "num_nodes": 3, "num_rounds": 5},
    "dp": {"local_dp": True, "num_nodes": 3, "num_rounds": 5},
    "gan": {"gan": True, "synthesizer": "moments", "sample_every": 1, "num_nodes": 3, "num_rounds": 5},
}
Meta = dict[str, Any]


def records(rounds: int, **figures: Any) -> list[dict[str, Any]]:
    return [{"round": r, "test_loss": 0.5, "test_accuracy": 0.9, "workers": [{"rank": 1, "num_samples": 10}],
             "failed": [], **figures} for r in range(1, rounds + 1)]


@functools.cache
def config_of(kind: str) -> Config:
    return parser.from_mapping(KINDS[kind])


@functools.cache
def valid_blob(kind: str) -> bytes:
    """A checkpoint after ROUND rounds as serve makes it, with every part its kind has."""
    config = config_of(kind)
    job = Job.of_config(config)
    model = models.new_model(job.synthesizer, config.run.seed)
    point = Checkpoint(ROUND, models.state_copy(model), records(ROUND))
    if kind == "fedsgd":
        optimizer = local.make_optimizer(model, config.job.learning_rate, config.job.momentum)
        for param in model.parameters():
            param.grad = torch.ones_like(param)
        optimizer.step()
        point.optimizer = optimizer.state_dict()
    if kind == "dp":
        point.histories = {1: [(1.1, 0.05, 20), (1.1, 0.05, 20)], 2: [(1.1, 0.05, 20)]}
    if kind == "gan":
        point.records = records(ROUND, test_loss=None, test_accuracy=None)
        state = job.synthesizer.generator_state(model)
        point.snapshots = {r: state for r in range(1, ROUND + 1)}
    return checkpoint.encode(point, config.fixed_options())


@functools.cache
def valid_parts(kind: str) -> tuple[Tensors, Meta]:
    return codec.decode(valid_blob(kind), max_meta_bytes=checkpoint.META_BYTES)


def parts(kind: str) -> tuple[Tensors, Meta]:
    """The valid checkpoint's tensors and metadata, to mutate: tensors are replaced, never changed in place."""
    tensors, meta = valid_parts(kind)
    return dict(tensors), copy.deepcopy(meta)


@functools.cache
def fresh_model(kind: str) -> torch.nn.Module:
    """The run's model, to check against and to load into; loading copies, so one serves every example."""
    config = config_of(kind)
    return models.new_model(Job.of_config(config).synthesizer, config.run.seed)


def decode(kind: str, tensors: Tensors, meta: Meta) -> Checkpoint:
    blob = codec.encode(tensors, meta, max_meta_bytes=checkpoint.META_BYTES)
    config = config_of(kind)
    return checkpoint.decode(blob, config.fixed_options(), config.run, Job.of_config(config), fresh_model(kind).state_dict())


def assert_usable(kind: str, point: Checkpoint) -> None:
    """What serve and finish_run rely on: a round within the run, one record a round, histories the
    ledger takes, an optimizer state and snapshots that load into the run's own."""
    config = config_of(kind)
    job = Job.of_config(config)
    assert 0 <= point.round <= config.run.num_rounds and len(point.records) == point.round
    assert [record["round"] for record in point.records] == list(range(1, point.round + 1))
    assert all(isinstance(record["workers"], list) for record in point.records)
    model = fresh_model(kind)
    model.load_state_dict(point.model)
    if point.optimizer is not None:
        local.make_optimizer(model, config.job.learning_rate, config.job.momentum).load_state_dict(point.optimizer)
    for rank, history in point.histories.items():
        assert 1 <= rank < config.run.num_nodes and len(history) <= point.round
        assert all(LocalDP.entry(dict(zip(ENTRY_KEYS, entry))) == entry for entry in history)
    template = job.synthesizer.generator_state(model) if point.snapshots else {}
    for when, snapshot in point.snapshots.items():
        assert 1 <= when <= point.round
        codec.check_expected(snapshot, template)


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_a_valid_checkpoint_of_each_kind_comes_back_whole(kind):
    point = decode(kind, *parts(kind))
    assert_usable(kind, point)
    assert point.round == ROUND and bool(point.optimizer) == (kind == "fedsgd")
    assert bool(point.histories) == (kind == "dp") and bool(point.snapshots) == (kind == "gan")


def set_meta(path: tuple, value: Any) -> Callable[[Tensors, Meta], None]:
    def mutate(tensors: Tensors, meta: Meta) -> None:
        *above, last = path
        functools.reduce(lambda node, step: node[step], above, meta)[last] = value
    return mutate


def delete_meta(key: str) -> Callable[[Tensors, Meta], None]:
    return lambda tensors, meta: meta.pop(key)


def rename(old: str, new: str) -> Callable[[Tensors, Meta], None]:
    return lambda tensors, meta: tensors.__setitem__(new, tensors.pop(old))


def replace(name: str, tensor: torch.Tensor) -> Callable[[Tensors, Meta], None]:
    return lambda tensors, meta: tensors.__setitem__(name, tensor)


def nan_in(name: str) -> Callable[[Tensors, Meta], None]:
    def mutate(tensors: Tensors, meta: Meta) -> None:
        tensors[name] = tensors[name].clone()
        tensors[name].view(-1)[0] = math.nan
    return mutate


INF = math.inf
BAD = [
    # The round: a whole number of 0 or more, within the run.
    ("fedsgd", set_meta(("round",), "2"), CheckpointError, "round '2' is not a whole number"),
    ("fedsgd", set_meta(("round",), 2.0), CheckpointError, "round 2.0 is not a whole number"),
    ("fedsgd", set_meta(("round",), True), CheckpointError, "round True is not a whole number"),
    ("fedsgd", set_meta(("round",), INF), CheckpointError, "round inf is not a whole number"),
    ("fedsgd", set_meta(("round",), -2), CheckpointError, "round -2 is not a whole number of 0 or more"),
    ("fedsgd", set_meta(("round",), 10 ** 9), OptionsError, "at round 1000000000, past --num-rounds 5"),
    # The metadata's fields and the tensors' parts.
    ("dp", delete_meta("histories"), CheckpointError, r"missing fields \['histories'\] and unknown fields \[\]"),
    ("dp", set_meta(("extra",), 1), CheckpointError, r"unknown fields \['extra'\]"),
    ("dp", set_meta(("options",), [1]), CheckpointError, "options are list, not a mapping"),
    ("dp", set_meta(("options", "seed"), 2), OptionsError, r"differing: seed \(checkpoint 2, now 1\)"),
    ("dp", rename("model.fc2.bias", "weights.fc2.bias"), CheckpointError, "'weights.fc2.bias', which is part of no"),
    ("dp", replace("model.fc2.bias", torch.zeros(11)), CheckpointError,
     r"the checkpoint's model: .*tensor 'fc2.bias': expected float32 \[10\], found float32 \[11\]"),
    ("dp", nan_in("model.fc2.bias"), CodecError, "tensor 'model.fc2.bias' holds NaN or Inf"),
    ("fedsgd", nan_in("optimizer.7.momentum_buffer"), CodecError, "holds NaN or Inf"),
    # The records: one a finished round, with the fields the output reads.
    ("dp", set_meta(("records",), {"1": {}}), CheckpointError, "records are not a list .* found dict"),
    ("dp", set_meta(("records",), [1, 2]), CheckpointError, "record 1: is int, not a mapping"),
    ("dp", set_meta(("records",), records(1)), CheckpointError, r"one per finished round \(2\): found 1"),
    ("dp", set_meta(("records", 1, "round"), 1), CheckpointError, "record 2: has round 1, expected 2"),
    ("dp", set_meta(("records", 1, "test_loss"), "low"), CheckpointError, "record 2: has test_loss 'low', not a"),
    ("dp", set_meta(("records", 1, "workers"), {}), CheckpointError, r"record 2: has workers \{\}, not a list"),
    ("dp", set_meta(("records", 1, "failed"), [1]), CheckpointError, r"record 2: has failed \[1\], not a list"),
    ("dp", set_meta(("records", 0, "workers", 0, "generator_loss"), "x"), CheckpointError,
     "record 1: has a worker figure 'x', not a number"),
    ("dp", set_meta(("records", 1, "test_accuracy"), None), CheckpointError, "mix rounds with and without"),
    ("dp", lambda tensors, meta: meta["records"][1].pop("test_loss"), CheckpointError, "record 2: has no test_loss"),
    # The privacy histories: workers 1..num_nodes-1, at most one entry a round, each a valid accountant entry.
    ("dp", set_meta(("histories",), [[1.1, 0.05, 20]]), CheckpointError, "histories are list, not a mapping"),
    ("dp", set_meta(("histories", "0"), []), CheckpointError, "worker rank is '0', not a whole number in 1..2"),
    ("dp", set_meta(("histories", "3"), []), CheckpointError, "worker rank is '3', not a whole number in 1..2"),
    ("dp", set_meta(("histories", "-1"), []), CheckpointError, "worker rank is '-1', not a whole number in 1..2"),
    ("dp", set_meta(("histories", "01"), []), CheckpointError, "worker rank is '01', not a whole number in 1..2"),
    ("dp", set_meta(("histories", "9" * 5000), []), CheckpointError, "worker rank is '9999"),
    ("dp", set_meta(("histories", "one"), []), CheckpointError, "worker rank is 'one', not a whole number in 1..2"),
    ("dp", set_meta(("histories", "1"), [[1.1, 0.05, 20]] * 3), CheckpointError,
     r"worker 1 is not a list of at most one entry a finished round \(2\)"),
    ("dp", set_meta(("histories", "1"), {}), CheckpointError, "worker 1 is not a list of at most one entry"),
    ("dp", set_meta(("histories", "1", 0), [1.1, 0.05]), CheckpointError, r"\[1.1, 0.05\], not three finite"),
    ("dp", set_meta(("histories", "1", 0), 7), CheckpointError, "entry 7, not three finite numbers"),
    ("dp", set_meta(("histories", "1", 0, 0), "1.1"), CheckpointError, "not three finite numbers"),
    ("dp", set_meta(("histories", "1", 0, 2), True), CheckpointError, "not three finite numbers"),
    ("dp", set_meta(("histories", "1", 0, 2), INF), CheckpointError, r"\[1.1, 0.05, inf\], not three finite"),
    ("dp", set_meta(("histories", "1", 0, 0), math.nan), CheckpointError, "not three finite numbers"),
    ("dp", set_meta(("histories", "1", 0, 2), -20), CheckpointError, "DP steps -20 is not a whole number in 1.."),
    ("dp", set_meta(("histories", "1", 0, 2), 2.5), CheckpointError, "DP steps 2.5 is not a whole number in 1.."),
    ("dp", set_meta(("histories", "1", 0, 2), 2 ** 63), CheckpointError, "DP steps 9223372036854775808 is not"),
    ("dp", set_meta(("histories", "1", 0, 0), 0.0), CheckpointError, "DP noise multiplier 0.0 is not a positive"),
    ("dp", set_meta(("histories", "1", 0, 0), -1.1), CheckpointError, "DP noise multiplier -1.1 is not a positive"),
    ("dp", set_meta(("histories", "1", 0, 1), 0), CheckpointError, r"DP sample rate 0 is not in \(0, 1\]"),
    ("dp", set_meta(("histories", "1", 0, 1), 1.5), CheckpointError, r"DP sample rate 1.5 is not in \(0, 1\]"),
    ("dp", set_meta(("histories", "1", 0, 0), 1e-300), CheckpointError,
     r"worker 1 \[\[1e-300, 0.05, 20\], \[1.1, 0.05, 20\]\] is out of the prv accountant's reach"),
    ("fedsgd", set_meta(("histories",), {"1": []}), CheckpointError, "privacy histories but the run is not"),
    # The GAN's snapshots: the run's own generator, at rounds it has finished.
    ("gan", rename("snapshot.1.count", "snapshot.1.counts"), CheckpointError,
     r"snapshot of round 1: .*missing tensors \['count'\], unexpected tensors \['counts'\]"),
    ("gan", replace("snapshot.2.sum", torch.zeros(10, 41, dtype=torch.float64)), CheckpointError,
     r"snapshot of round 2: .*tensor 'sum': expected float64 \[10, 40\], found float64 \[10, 41\]"),
    ("gan", replace("snapshot.2.sum", torch.zeros(10, 40)), CheckpointError,
     r"tensor 'sum': expected float64 \[10, 40\], found float32 \[10, 40\]"),
    ("gan", rename("snapshot.1.count", "snapshot.3.count"), CheckpointError,
     "round in the tensor 'snapshot.3.count' is '3', not a whole number in 1..2"),
    ("gan", rename("snapshot.1.count", "snapshot.0.count"), CheckpointError, "is '0', not a whole number in 1..2"),
    ("gan", rename("snapshot.1.count", "snapshot.x.count"), CheckpointError, "is 'x', not a whole number in 1..2"),
    ("gan", rename("snapshot.1.count", "snapshot.1"), CheckpointError,
     "tensor 'snapshot.1' is not named snapshot.<number>.<name>"),
    ("gan", rename("snapshot.1.count", "snapshot." + "9" * 5000 + ".count"), CheckpointError,
     "round in the tensor 'snapshot.999"),
    ("dp", replace("snapshot.1.count", torch.zeros(10)), CheckpointError, "snapshots but the run is not --gan"),
    # Summed statistics: within what the averaged workers' rows and the planned noise allow.
    ("gan", replace("model.noise_variance", torch.tensor(-1e6, dtype=torch.float64)), CheckpointError,
     "model is not the sum of the releases its records list: update rejected: noise_variance -1e"),
    ("gan", replace("model.count", torch.full((10,), 1e300, dtype=torch.float64)), CheckpointError,
     "model is not the sum .*: update rejected: class count 1e"),
    ("gan", replace("snapshot.2.count", torch.ones(10, dtype=torch.float64)), CheckpointError,
     r"generator snapshot of round 2 is not the sum .*: update rejected: class count 1 .* outside \[0, 0\]"),
    ("gan", set_meta(("records", 0, "workers", 0, "averaged"), True), CheckpointError,
     r"model is not the sum .*: update rejected: total count 0 .* outside \[10, 10\]"),
    ("gan", set_meta(("records", 0, "workers"), [{"rank": 1, "num_samples": -5, "averaged": True}]), CheckpointError,
     r"an averaged worker's num_samples that is not a whole number of 1 or more: \[-5\]"),
    # FedSGD's optimizer: the optimizer the run builds, one buffer per parameter, shaped like it.
    ("fedsgd", set_meta(("optimizer",), None), CheckpointError, "optimizer state None is not a mapping"),
    ("fedsgd", set_meta(("optimizer", "extra"), 1), CheckpointError, "is not a mapping of state and param_groups"),
    ("fedsgd", set_meta(("optimizer", "param_groups"), []), CheckpointError,
     r"param_groups \[\] are not those of the optimizer this run builds"),
    ("fedsgd", set_meta(("optimizer", "param_groups", 0, "momentum"), 0.9), CheckpointError,
     "param_groups .* are not those of the optimizer"),
    ("fedsgd", set_meta(("optimizer", "param_groups", 0, "params"), [0, 1]), CheckpointError,
     "param_groups .* are not those of the optimizer"),
    ("fedsgd", set_meta(("optimizer", "param_groups", 0, "lr"), "fast"), CheckpointError,
     "param_groups .* are not those of the optimizer"),
    ("fedsgd", set_meta(("optimizer", "state"), []), CheckpointError, r"optimizer state \[\] is not a mapping"),
    ("fedsgd", set_meta(("optimizer", "state", "8"), {}), CheckpointError,
     r"FedSGD optimizer state's parameter index is '8', not a whole number in 0..7"),
    ("fedsgd", set_meta(("optimizer", "state", "0"), {"step": 1}), CheckpointError,
     r"state of parameter 0 holds 'step' = 1; SGD keeps only a tensor \('momentum_buffer',\)"),
    ("fedsgd", rename("optimizer.7.momentum_buffer", "optimizer.8.momentum_buffer"), CheckpointError,
     "parameter index in the tensor 'optimizer.8.momentum_buffer' is '8', not a whole number in 0..7"),
    ("fedsgd", rename("optimizer.7.momentum_buffer", "optimizer.7.velocity"), CheckpointError,
     "parameter 7 holds 'velocity'"),
    ("fedsgd", replace("optimizer.7.momentum_buffer", torch.zeros(11)), CheckpointError,
     r"momentum_buffer of parameter 7 is torch.float32 \[11\], but the parameter is torch.float32 \[10\]"),
    ("fedsgd", replace("optimizer.7.momentum_buffer", torch.zeros(10, dtype=torch.float64)), CheckpointError,
     r"is torch.float64 \[10\], but the parameter is torch.float32 \[10\]"),
    ("dp", replace("optimizer.0.momentum_buffer", torch.zeros(1)), CheckpointError,
     "FedSGD optimizer state but the run is not --stochastic-gradient"),
]


@pytest.mark.parametrize("kind, mutate, error, message", BAD, ids=[f"{case[0]}-{case[3][:40]}" for case in BAD])
def test_a_bad_checkpoint_is_refused_naming_the_problem(kind, mutate, error, message):
    tensors, meta = parts(kind)
    mutate(tensors, meta)
    with pytest.raises(error, match=message):
        decode(kind, tensors, meta)


def test_the_central_function_refuses_a_checkpoint_past_its_rounds():
    """vantage6's central function once trained from round 10**9 on: it must refuse before the first round."""
    tensors, meta = parts("dp")
    meta["round"] = 10 ** 9
    text = codec.to_text(codec.encode(tensors, meta, max_meta_bytes=checkpoint.META_BYTES))
    kwargs = {**KINDS["dp"], "organizations": [1, 2], "checkpoint": text}
    with pytest.raises(OptionsError, match="past --num-rounds 5"):
        algorithm.run_central(types.SimpleNamespace(), kwargs)


def poisoned_moments() -> tuple[Tensors, Meta]:
    """A moments checkpoint whose noise variance (-1e6) would crash the sampling after the training."""
    tensors, meta = parts("gan")
    tensors["model.noise_variance"] = torch.tensor(-1e6, dtype=torch.float64)
    return tensors, meta


def test_the_central_function_refuses_poisoned_statistics_before_training():
    text = codec.to_text(codec.encode(*poisoned_moments(), max_meta_bytes=checkpoint.META_BYTES))
    kwargs = {**KINDS["gan"], "organizations": [1, 2], "checkpoint": text}
    with pytest.raises(CheckpointError, match="model is not the sum .*: update rejected: noise_variance -1e"):
        algorithm.run_central(types.SimpleNamespace(), kwargs)


def test_the_cli_refuses_poisoned_statistics_in_one_line(tmp_path, capsys):
    checkpoint.save(codec.encode(*poisoned_moments(), max_meta_bytes=checkpoint.META_BYTES), tmp_path)
    (tmp_path / output.MARKER).touch()
    argv = ["--gan", "--synthesizer", "moments", "--sample-every", "1", "-nn", "3", "-nr", "5", "--backend", "gloo",
            "--resume", "--output", str(tmp_path)]
    assert main.main(argv) == 2
    lines = capsys.readouterr().err.splitlines()
    errors = [line for line in lines if not line.startswith("ppsdg: note:")]
    assert len(errors) == 1 and "Traceback" not in "".join(lines)
    assert errors[0].startswith("ppsdg: error: the checkpoint's model is not the sum of the releases")


def test_the_cli_refuses_a_bad_checkpoint_in_one_line(tmp_path, capsys):
    tensors, meta = parts("dp")
    meta["histories"]["1"][0][2] = math.inf
    checkpoint.save(codec.encode(tensors, meta, max_meta_bytes=checkpoint.META_BYTES), tmp_path)
    (tmp_path / output.MARKER).touch()
    argv = ["-ldp", "-nn", "3", "-nr", "5", "--backend", "gloo", "--resume", "--output", str(tmp_path)]
    assert main.main(argv) == 2
    lines = capsys.readouterr().err.splitlines()
    errors = [line for line in lines if not line.startswith("ppsdg: note:")]
    assert len(errors) == 1 and "Traceback" not in "".join(lines)
    assert errors[0].startswith("ppsdg: error: the checkpoint's privacy history of worker 1") and "inf" in errors[0]


# Values a damaged or hand-made checkpoint may hold anywhere: every msgpack type, and the numbers that
# break naive checks.
HOSTILE = st.recursive(
    st.none() | st.booleans() | st.integers(-(1 << 63), (1 << 64) - 1)
    | st.sampled_from([0, -1, -2, 1, 2, 3, 8, 10 ** 9, 2 ** 63, math.inf, -math.inf, math.nan, 0.0, -0.0, 1e308])
    | st.floats() | st.text(max_size=4) | st.sampled_from(["0", "1", "2", "-1", "01", "momentum_buffer", "lr"]),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=3), children, max_size=3),
    max_leaves=6)


def paths(node: Any, above: tuple = ()) -> Iterator[tuple]:
    """Every place in the metadata a value sits, the options' many fields left to one example."""
    yield above
    if isinstance(node, dict):
        for key, value in node.items():
            yield from paths(value, above + (key,)) if above != ("options",) else [above + (key,)]
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from paths(value, above + (index,))


@st.composite
def mutated_meta(draw: st.DrawFn) -> tuple[str, Tensors, Meta]:
    """A valid checkpoint with one place in its metadata replaced, deleted, or given an extra field."""
    kind = draw(st.sampled_from(sorted(KINDS)))
    tensors, meta = parts(kind)
    mutate_meta(draw, meta)
    return kind, tensors, meta


def mutate_meta(draw: st.DrawFn, meta: Meta) -> None:
    """One place of `meta` replaced, deleted, or given an extra field or item, in place."""
    path = draw(st.sampled_from([p for p in paths(meta) if p]))
    *above, last = path
    parent = functools.reduce(lambda node, step: node[step], above, meta)
    action = draw(st.sampled_from(["replace", "delete", "extra"]))
    if action == "replace":
        parent[last] = draw(HOSTILE)
    elif action == "delete":
        del parent[last]
    elif isinstance(parent[last], dict):
        parent[last][draw(st.text(max_size=4))] = draw(HOSTILE)
    elif isinstance(parent[last], list):
        parent[last].append(draw(HOSTILE))


def accepted_or_named(kind: str, tensors: Tensors, meta: Meta) -> None:
    """The property: decode either gives a checkpoint a run can use, or raises a project error."""
    try:
        point = decode(kind, tensors, meta)
    except PpsdgError:
        return
    assert_usable(kind, point)


# The deadline is the hostile suite's bound on any one input (10 s): a hang, not a loaded machine.
@settings(max_examples=150, deadline=10_000, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_meta())
def test_fuzzed_metadata_is_accepted_usable_or_refused_by_name(case):
    accepted_or_named(*case)


@st.composite
def mutated_tensors(draw: st.DrawFn) -> tuple[str, Tensors, Meta]:
    """A valid checkpoint with one tensor renamed, or replaced by one of another shape or dtype."""
    kind = draw(st.sampled_from(sorted(KINDS)))
    tensors, meta = parts(kind)
    name = draw(st.sampled_from(sorted(tensors)))
    if draw(st.booleans()):
        prefix = draw(st.sampled_from([checkpoint.MODEL, checkpoint.OPTIMIZER, checkpoint.SNAPSHOT, ""]))
        index = draw(st.sampled_from(["0", "1", "2", "3", "7", "8", "-1", "01", "x", ""]))
        rest = draw(st.sampled_from(["", ".", ".count", ".momentum_buffer", ".fc2.bias", ".x.y"]))
        tensors[prefix + index + rest] = tensors.pop(name)
    else:
        shape = draw(st.lists(st.integers(0, 3), max_size=3))
        dtype = draw(st.sampled_from([torch.float32, torch.float64, torch.int64, torch.bool]))
        tensors[name] = torch.zeros(shape, dtype=dtype)
    return kind, tensors, meta


@settings(max_examples=100, deadline=10_000, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_tensors())
def test_fuzzed_tensors_are_accepted_usable_or_refused_by_name(case):
    accepted_or_named(*case)
