"""Hypothesis fuzzing of the surfaces a hostile party reaches, besides checkpoints (test_checkpoint.py):
a node's task input, the central function's handling of the nodes' results, and the --output
directory. Every example ends in a correct acceptance or a named PpsdgError, quickly.
"""
import base64
import copy
import functools
import json
import math
import os
import re
import stat
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from vantage6.common import bytes_to_base64s

from backends import codec
from backends.vantage6 import CentralCommunicator
from ppsdg import algorithm, checkpoint, output, parser
from ppsdg.config import Config
from ppsdg.errors import PpsdgError
from ppsdg.policy import FOLDER
from test_vantage6 import round_message, worker_frames

# Values a hostile task input or result may hold anywhere: every JSON type, and the numbers that break
# naive checks (too large for a C integer or a float32, not finite, negative zero).
NUMBERS = [None, True, False, -1, 0, 1, 2, 2 ** 31, 2 ** 63, 2 ** 64, 10 ** 30, -(10 ** 30), math.inf, -math.inf,
           math.nan, 1e300, -1e300, 1e39, -0.0, 0.5, 1e-300]
HOSTILE = st.recursive(
    st.sampled_from(NUMBERS) | st.integers() | st.floats() | st.text(max_size=6)
    | st.sampled_from(["", "yes", "1", "7", "prv", "moments", "wgan", "embedded", "gloo"]),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=3), children, max_size=3),
    max_leaves=5)


# 1. A node's task input: run_partial with a valid subtask's kwargs, mutated.

ORGANIZATION = 7
KINDS = {"classifier": {}, "dp": {"local_dp": True}, "moments": {"gan": True},
         "wgan": {"gan": True, "synthesizer": "wgan", "epochs": 1}}
# Whole-number options a hostile task may push to the parser's bound, where training legitimately takes
# long (10,000 epochs are minutes even on 60 rows): the node owner's PPSDG_MAX_EPOCHS is what refuses them.
NODE_POLICY = {"PPSDG_MAX_EPOCHS": "2"}


@functools.cache
def frame() -> Any:
    return worker_frames(count=1, rows=60)[0]


@functools.cache
def valid_input(kind: str) -> dict[str, Any]:
    config = parser.from_mapping({"num_nodes": 2, "batch_size": 32, **KINDS[kind]})
    message, _ = round_message(config)
    return {"message": message, "ranks": {str(ORGANIZATION): 1}, "world_size": 2,
            "options": config.task_options()}


def mutated_text(draw: st.DrawFn, text: str) -> str:
    """Codec text cut short, with a character changed, or with bytes of its blob flipped."""
    how = draw(st.sampled_from(["cut", "char", "byte"]))
    if how == "cut":
        return text[:draw(st.integers(0, len(text)))]
    if how == "char":
        at = draw(st.integers(0, len(text) - 1))
        return text[:at] + draw(st.sampled_from("A/+=-_ \n\x00é")) + text[at + 1:]
    blob = bytearray(base64.b64decode(text))
    at = draw(st.integers(0, min(len(blob) - 1, 300)))
    blob[at] = draw(st.integers(0, 255))
    return base64.b64encode(bytes(blob)).decode()


def typed_like(value: Any) -> st.SearchStrategy:
    """Values of an option's own type, where its range checks and the training behind them are reached."""
    if isinstance(value, bool):
        return st.booleans()
    if isinstance(value, int):
        return st.integers() | st.sampled_from([-5, -1, 0, 1, 2, 3, 1 << 20, 10 ** 6, 10 ** 9, (1 << 63) - 1, 1 << 63,
                                                1 << 64, 10 ** 30])
    if isinstance(value, float) or value is None:
        return st.floats() | st.sampled_from([1e300, math.inf, math.nan, 1e-300, -0.0, 1e6, 1e39, 0.999999, 30.0])
    return st.sampled_from(["", "prv", "rdp", "moments", "wgan", "dct", "digits", "auto", "iid", "vantage6"])


@st.composite
def task_inputs(draw: st.DrawFn) -> dict[str, Any]:
    """A valid subtask input with one key, one option or the message replaced, deleted, or added to."""
    kwargs = copy.deepcopy(valid_input(draw(st.sampled_from(sorted(KINDS)))))
    where = draw(st.sampled_from(["top", "options", "options", "options", "ranks", "message"]))
    if where == "message":
        kwargs["message"] = mutated_text(draw, kwargs["message"])
        return kwargs
    target = {"top": kwargs, "options": kwargs["options"], "ranks": kwargs["ranks"]}[where]
    key = draw(st.sampled_from(sorted(target)))
    action = draw(st.sampled_from(["replace", "replace", "replace", "delete", "extra"]))
    if action == "replace":
        target[key] = draw(typed_like(target[key]) if where == "options" and draw(st.booleans()) else HOSTILE)
    elif action == "delete":
        del target[key]
    else:
        target[draw(st.sampled_from(["", "x", "7", "backend", "output", "secure_noise"]) | st.text(max_size=4))] = \
            draw(HOSTILE)
    return kwargs


@pytest.fixture
def node(monkeypatch, tmp_path):
    """A node with a job folder and the policy above, whatever the test process's environment holds."""
    for name in [name for name in os.environ if name.startswith("PPSDG_")]:
        monkeypatch.delenv(name)
    for name, value in {**NODE_POLICY, FOLDER: str(tmp_path)}.items():
        monkeypatch.setenv(name, value)
    for kind in KINDS:  # the first round of a kind loads what it needs (Opacus, the accountant): not a hang
        algorithm.run_partial(ORGANIZATION, frame(), valid_input(kind))
    return monkeypatch


def answered_or_named(kwargs: dict[str, Any]) -> None:
    """The property: run_partial answers with a reply that decodes as its rank's, or raises a project error."""
    try:
        result = algorithm.run_partial(ORGANIZATION, frame(), kwargs)
    except PpsdgError as error:
        event(f"refused: {type(error).__name__}")
        return
    event("answered")
    assert set(result) == {"rank", "message"} and result["rank"] == kwargs["ranks"][str(ORGANIZATION)]
    codec.decode_text(result["message"], require_finite=False)


# A round on 60 rows takes 0.1-0.3 s, but a DP task whose target the fuzzer changed plans its noise
# anew: --target-epsilon 0.25 at sample rate 0.5 takes the accountant search 2.7 s on a quiet machine
# (as long as Opacus's own search; 6.9 s when an RDP search came first and each evaluation computed
# the safe domain twice) and three times that under load, near the hostile suite's 10 s. The deadline
# still tells a hang from it.
@settings(max_examples=120, deadline=30_000, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(task_inputs())
def test_fuzzed_task_input_is_answered_or_refused_by_name(node, kwargs):
    answered_or_named(kwargs)


@pytest.mark.parametrize("kind, option, value", [("classifier", "learning_rate", 1e300),
                                                  ("classifier", "learning_rate", 1e39),
                                                  ("wgan", "gan_learning_rate", 1e300)])
def test_a_learning_rate_beyond_float32_is_refused_by_name(node, kind, option, value):
    """torch's optimizers raised a RuntimeError (overflow) on the first step."""
    kwargs = copy.deepcopy(valid_input(kind))
    kwargs["options"][option] = value
    with pytest.raises(PpsdgError, match=f"--{option.replace('_', '-')} must be at most 1e\\+06"):
        algorithm.run_partial(ORGANIZATION, frame(), kwargs)


# 2. The central function's handling of the results: exchange against a fake algorithm client.

ORGANIZATIONS = [4, 5, 6]
RANKS = [1, 2, 3]
TEMPLATE = {"w": torch.zeros(2), "n": torch.zeros((), dtype=torch.int64)}
STATUSES = ["completed", "failed", "crashed", "active", "pending", "initializing", "killed by user", "",
            None, 3, ["completed"], {"x": 1}]
LOGS = [None, "", "ppsdg.errors.FederationError: refused\n", "x" * 200_000,
        "KeyError: " + "k" * 5000, 5, ["Error: x"], {"log": 1}]


def run_id(organization: int) -> int:
    return 10 + organization


def b64json(value: Any) -> str:
    return bytes_to_base64s(json.dumps(value).encode())


VALID = codec.encode_text({"w": torch.ones(2), "n": torch.tensor(3)})
OTHER_SHAPES = [codec.encode_text(t) for t in (
    {"w": torch.ones(3), "n": torch.tensor(3)}, {"w": torch.ones(2)}, {"w": torch.ones(2, dtype=torch.float64),
                                                                      "n": torch.tensor(3)},
    {"w": torch.ones(2), "n": torch.tensor(3), "x": torch.ones(1)}, {"w": torch.ones(2), "n": torch.tensor(3.0)},
    {"v": torch.ones(2), "n": torch.tensor(3)}, {})]


@st.composite
def messages(draw: st.DrawFn) -> Any:
    how = draw(st.sampled_from(["valid", "valid", "other", "mutated", "random", "hostile"]))
    if how == "valid":
        return VALID
    if how == "other":
        return draw(st.sampled_from(OTHER_SHAPES))
    if how == "mutated":
        return mutated_text(draw, VALID)
    if how == "random":
        return draw(st.text(max_size=40) | st.binary(max_size=60).map(lambda b: base64.b64encode(b).decode()))
    return draw(HOSTILE)


@st.composite
def results(draw: st.DrawFn) -> Any:
    """A result as the server hands it on: base64 of the node's JSON, or something that is not one."""
    how = draw(st.sampled_from(["reply", "reply", "reply", "no message", "not a dict", "not json", "not base64",
                                "hostile"]))
    if how == "reply":
        return b64json({"rank": draw(HOSTILE), "message": draw(messages())})
    if how == "no message":
        return b64json({"rank": 1})
    if how == "not a dict":
        return b64json(draw(HOSTILE))
    if how == "not json":
        return bytes_to_base64s(draw(st.binary(max_size=20)))
    if how == "not base64":
        return draw(st.text(max_size=10))
    return draw(HOSTILE)


@st.composite
def rounds(draw: st.DrawFn) -> tuple[list[dict], list[dict]]:
    """The runs of the round's subtask (some missing, with odd statuses and logs) and the result entries
    (ids of those runs, of no run, or repeated)."""
    runs = [{"id": run_id(o), "organization": {"id": o}, "status": draw(st.sampled_from(STATUSES)),
             "log": draw(st.sampled_from(LOGS))} for o in ORGANIZATIONS if draw(st.integers(0, 5))]
    ids = st.sampled_from([run_id(o) for o in ORGANIZATIONS] + [99, None, "14", 14.0, True])
    entries = draw(st.lists(st.fixed_dictionaries({"id": ids, "result": results()}), max_size=6))
    return runs, entries


class FuzzedClient:
    """A fake algorithm client whose subtask has the given runs and result entries."""

    def __init__(self, runs: list[dict], entries: list[dict]) -> None:
        self.runs = runs
        self.entries = entries
        self.run = self
        self.task = self

    def create(self, **task: Any) -> dict[str, int]:
        return {"id": 1}

    def from_task(self, task_id: int) -> list[dict]:
        return copy.deepcopy(self.runs)

    def _multi_page_request(self, endpoint: str, params: dict) -> list[dict]:
        return copy.deepcopy(self.entries)


def expected_replies(runs: list[dict], entries: list[dict]) -> dict[int, Any]:
    """What the server says each organization's run released: the first entry with a result for its run id."""
    ids = {run["id"]: run["organization"]["id"] for run in runs}
    found: dict[int, Any] = {}
    for entry in entries:
        organization = ids.get(entry["id"])  # JSON's 14.0 is the number 14
        if organization is not None and organization not in found and entry["result"]:
            found[organization] = entry["result"]
    return {RANKS[ORGANIZATIONS.index(o)]: result for o, result in found.items()}


def assert_exactly_the_template(reply: dict[str, torch.Tensor]) -> None:
    assert sorted(reply) == sorted(TEMPLATE)
    assert all(reply[name].shape == TEMPLATE[name].shape and reply[name].dtype == TEMPLATE[name].dtype
               for name in TEMPLATE)


@settings(max_examples=150, deadline=10_000, suppress_health_check=[HealthCheck.too_slow])
@given(rounds())
def test_fuzzed_results_are_decoded_against_the_template_or_named_as_failures(round_):
    runs, entries = round_
    client = FuzzedClient(runs, entries)
    comm = CentralCommunicator(client, ORGANIZATIONS, {}, round_timeout_s=0.0, poll_s=0.0)
    try:
        replies = comm.exchange(TEMPLATE, RANKS, TEMPLATE)
    except PpsdgError:
        return
    expected = expected_replies(runs, entries)
    assert set(replies) <= set(expected)
    for rank, reply in replies.items():
        assert_exactly_the_template(reply)
        sent, _ = codec.decode_text(json.loads(base64.b64decode(expected[rank]))["message"], require_finite=False)
        assert all(torch.equal(reply[name], sent[name]) for name in TEMPLATE)
    failures = comm.failures
    assert set(failures) == set(RANKS) - set(replies)
    assert all(isinstance(reason, str) and reason for reason in failures.values())
    for run in client.runs:
        run["status"] = "completed"
    for rank, late in comm.late_replies().items():
        assert rank in failures and all(sorted(reply) == sorted(TEMPLATE) for reply in late)


def test_a_result_that_is_not_text_is_no_result():
    comm = CentralCommunicator(FuzzedClient([{"id": 14, "organization": {"id": 4}, "status": "completed", "log": None}],
                                            [{"id": 14, "result": True}]), [4], {}, round_timeout_s=0.0, poll_s=0.0)
    assert comm.exchange(TEMPLATE, [1], TEMPLATE) == {}
    assert comm.failures == {1: "update rejected: the result holds no message"}


def test_a_result_of_a_run_still_listed_as_running_is_used_once_not_again_as_late():
    """The server lists the runs and then the results: a run may finish between the two requests."""
    runs = [{"id": 14, "organization": {"id": 4}, "status": "active", "log": None}]
    client = FuzzedClient(runs, [{"id": 14, "result": b64json({"rank": 1, "message": VALID})}])
    comm = CentralCommunicator(client, [4], {}, round_timeout_s=0.0, poll_s=0.0)
    assert list(comm.exchange(TEMPLATE, [1], TEMPLATE)) == [1]
    runs[0]["status"] = "completed"
    assert comm.late_replies() == {}


# 3. The --output directory: check_directory on hostile states, then the writes of the run it admits.

NAMES = ["a", "b.txt", output.MODEL, output.SUMMARY, output.METRICS, output.SYNTHETIC, checkpoint.FILE,
         "samples_round0001.png", output.MARKER]
OWNED = {output.METRICS, output.MARKER, *output.STALE}


@st.composite
def directory_states(draw: st.DrawFn) -> dict[str, Any]:
    """What --output names: nothing, a file, a path below a file, a folder (files, folders, links with
    the run's own names or others; the marker or not; read-only or not), or a link to one of these."""
    return {"kind": draw(st.sampled_from(["absent", "file", "below a file", "folder", "folder", "folder",
                                          "link to folder", "dangling link", "link to file"])),
            "entries": draw(st.dictionaries(st.sampled_from(NAMES), st.sampled_from(["file", "folder", "link out"]),
                                            max_size=5)),
            "read_only": draw(st.booleans()) and os.geteuid() != 0,
            "nested": draw(st.booleans()),
            "data_inside": draw(st.booleans()),
            "resume": draw(st.booleans())}


def make_folder(folder: Path, entries: dict[str, str], outside: Path) -> None:
    folder.mkdir(parents=True)
    for name, kind in entries.items():
        if kind == "file":
            (folder / name).write_bytes(f"not yours: {name}".encode())
        elif kind == "folder":
            (folder / name).mkdir()
            (folder / name / "inner").write_text("inner")
        else:
            (folder / name).symlink_to(outside)


def build(root: Path, state: dict[str, Any]) -> Path:
    """Lay out the state under root; return the --output path."""
    outside = root / "outside.txt"
    outside.write_text("someone else's")
    target = root / "out" / "run" if state["nested"] else root / "run"
    kind = state["kind"]
    if kind == "file":
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text("a file")
    elif kind == "below a file":
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text("a file")
        target = target / "below"
    elif kind in ("folder", "link to folder"):
        real = target if kind == "folder" else root / "real"
        make_folder(real, state["entries"], outside)
        if kind == "link to folder":
            target.parent.mkdir(parents=True, exist_ok=True)
            target.symlink_to(real, target_is_directory=True)
    elif kind in ("dangling link", "link to file"):
        target.parent.mkdir(parents=True, exist_ok=True)
        target.symlink_to(root / "nothing" if kind == "dangling link" else outside)
    return target


def snapshot(root: Path) -> dict[str, Any]:
    """Every file's bytes, every link's target and every folder under root, by path."""
    found: dict[str, Any] = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(folder) / name
            key = str(path.relative_to(root))
            found[key] = ("link", os.readlink(path)) if path.is_symlink() else \
                ("folder",) if path.is_dir() else ("file", path.read_bytes())
    return found


def run_writes(config: Config) -> None:
    """What a run writes once check_directory admitted it: the first round's line and checkpoint."""
    out = output.RunOutput(config.run, config.summary())
    out.add_round({"round": 1}, b"checkpoint")


def allowed_change(key: str, root: Path, directory: Path, had_marker: bool) -> bool:
    """A run may create its own files in its directory, and replace those of an earlier ppsdg run."""
    path = root / key
    return path.parent == directory and (path.name in OWNED or path.name.startswith("samples_round")) \
        and had_marker


def restore_permissions(root: Path) -> None:
    for folder, dirs, _ in os.walk(root):
        for name in dirs:
            os.chmod(Path(folder) / name, stat.S_IRWXU)


@settings(max_examples=120, deadline=10_000, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(state=directory_states())
def test_fuzzed_output_directory_is_refused_or_the_run_touches_only_its_own_files(tmp_path_factory, state):
    root = tmp_path_factory.mktemp("output")
    target = build(root, state)
    real = target.resolve()
    data = real / output.SYNTHETIC if state["data_inside"] else None
    if state["read_only"] and real.is_dir():
        os.chmod(real, stat.S_IRUSR | stat.S_IXUSR)
    config = parser.from_mapping({"output": str(target), "resume": state["resume"],
                                  "data": str(data) if data else "embedded"})
    before = snapshot(root)
    had_marker = (real / output.MARKER).exists() or (real / output.MARKER).is_symlink()
    try:
        try:
            output.check_directory(config.run.output, config.source.data)
        except PpsdgError:
            event("refused")
            assert snapshot(root) == before
            return
        event("accepted")
        assert snapshot(root) == before
        run_writes(config)
        after = snapshot(root)
        for key, value in before.items():
            assert after.get(key) == value or allowed_change(key, root, real, had_marker), key
        for key in set(after) - set(before):
            new = root / key
            assert new in (real, *real.parents) or (new.parent == real and new.name in OWNED), key
    finally:
        restore_permissions(root)


@pytest.mark.parametrize("kind", ["folder", "link out"])
@pytest.mark.parametrize("name", [output.METRICS, output.SUMMARY, output.MARKER])
def test_a_run_name_that_is_no_file_of_a_run_is_refused(tmp_path, name, kind):
    outside = tmp_path / "outside.txt"
    outside.write_text("someone else's")
    make_folder(tmp_path / "run", {output.MARKER: "file", name: kind}, outside)
    with pytest.raises(PpsdgError, match=f"holds {re.escape(name)}, which is not a file a ppsdg run wrote"):
        output.check_directory(str(tmp_path / "run"), "embedded")
    assert outside.read_text() == "someone else's"
