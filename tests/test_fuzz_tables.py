"""Hypothesis fuzzing of the table surfaces, where hostile or broken input arrives from someone else:
the schema, a table file (--data, --test-data, `ppsdg schema`, a node's database), a node's marginals
release as the central sees it, a table checkpoint for --resume, and `ppsdg evaluate` on a table.
Every input ends in a named PpsdgError (or the one line a command prints for it) or in a correct
acceptance, within the hostile suite's 10 s.
"""
import contextlib
import copy
import functools
import gzip
import io
import json
import math
import os
import signal
import time
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import torch
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st
from pyarrow import parquet

import main
from backends import codec
from backends.vantage6 import CentralCommunicator
from conftest import peak_traced_bytes
from ppsdg import algorithm, central_task, checkpoint, commands, coordination, data, policy, tables
from ppsdg.checkpoint import Checkpoint
from ppsdg.config import Config
from ppsdg.errors import DataError, FederationError, PpsdgError
from ppsdg.models import new_model
from ppsdg.privacy import release_entry
from ppsdg.job import Job
from ppsdg.synthesizers import marginals
from test_checkpoint import mutate_meta
from test_dishonest_server import (ORGANIZATION, TARGET, initial_state, node,  # noqa: F401 (node: a fixture)
                                   table_options, task)
from test_fuzz_surfaces import HOSTILE, FuzzedClient, b64json, mutated_text
from conftest import people

SECONDS = 10
FUZZ = settings(max_examples=80, deadline=SECONDS * 1000,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


@contextlib.contextmanager
def within(seconds: float = SECONDS) -> Iterator[None]:
    """Fail, rather than hang, where an input is waited on for ever (a FIFO) or read for ever (/dev/zero)."""
    def expire(signum: int, frame: Any) -> None:
        raise TimeoutError(f"still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def command(function: Callable[[list[str]], int], argv: list[str]) -> tuple[int, str, str]:
    """A command's exit status, stdout and stderr, run in this process."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), within():
        status = function(argv)
    return status, out.getvalue(), err.getvalue()


def one_error_line(err: str) -> str:
    """The one line a command prints for a bad input: its notes aside, one error and no traceback."""
    lines = [line for line in err.splitlines() if not line.startswith("ppsdg: note:")]
    assert len(lines) == 1 and lines[0].startswith("ppsdg: error: ") and "Traceback" not in err, err[-2000:]
    return lines[0]


# 1. The schema: a JSON text (--schema, a task's options), read whole before anything else.

SCHEMA = {"columns": [
    {"name": "age", "type": "numeric", "edges": [18, 40, 60, 80], "integer": True, "clip": False},
    {"name": "sex", "type": "categorical", "categories": ["F", "M"], "missing": False},
    {"name": "seen", "type": "date", "format": "%Y-%m-%d", "granularity": "month",
     "edges": ["2020-01-01", "2020-07-01", "2021-06-01"]},
    {"name": "person", "type": "id", "unit": True},
    {"name": "note", "type": "ignore"},
    {"name": "weight", "type": "numeric", "edges": [0.5, 10, 1000], "scale": "log"},
    {"name": "outcome", "type": "categorical", "categories": ["ill", "well"], "other": True}],
    "target": "outcome"}
SDV = {"columns": {
    "age": {"sdtype": "numerical", "range_min": 18, "range_max": 80, "computer_representation": "Int64"},
    "seen": {"sdtype": "datetime", "datetime_format": "%Y-%m", "range_min": "2020-01", "range_max": "2021-06"},
    "smoker": {"sdtype": "boolean"}, "person": {"sdtype": "id"},
    "outcome": {"sdtype": "categorical", "range_values": ["ill", "well", "other"]}}}
# What a hostile schema may hold in a column's place: its kinds, flags, formats and dates, and the
# values that break naive checks (unsorted or non-finite edges, a number float() cannot hold).
SCHEMA_VALUES = HOSTILE | st.sampled_from([
    *tables.KINDS, "day", "month", "year", "log", "linear", "%Y", "%Q", "%Y-%m-%d", "%d/%m/%Y", "2020-01-01",
    "0001-01-01", "9999-12-31", "99999", [3, 1], [0, math.nan], [0, math.inf], [0, 10 ** 400], [-1e308, 1e308],
    [2 ** 53, 2 ** 53 + 1], ["x", "x"], [str(i) for i in range(1001)], list(range(1002)), ["2020-01-01", "1990-01-01"],
    ["1000-01-01", "9999-01-01"], [{"x": 1}], [[1]], {"sdtype": "numerical"}, {"sdtype": "datetime"}])


def json_paths(value: Any, above: tuple = ()) -> Iterator[tuple]:
    """Every place in a JSON value, below the top."""
    if above:
        yield above
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, inner in items:
        yield from json_paths(inner, above + (key,))


def text_mutation(draw: st.DrawFn, text: str) -> str:
    """A schema's text cut short, with a character changed, a key doubled, or nested deeper than a reader
    recurses."""
    how = draw(st.sampled_from(["cut", "char", "double", "deep"]))
    if how == "cut":
        return text[:draw(st.integers(0, len(text)))]
    at = draw(st.integers(0, len(text) - 1))
    if how == "char":
        return text[:at] + draw(st.sampled_from('{}[]",:\\ \x00é0-eNI')) + text[at + 1:]
    if how == "double":
        opening = text.find("{", at)
        key = draw(st.sampled_from(['"name": "x", ', '"columns": [], ', '"type": "id", ', '"edges": [1, 0], ']))
        return text if opening < 0 else text[:opening + 1] + key + text[opening + 1:]
    return "[" * 100_000 + text + "]" * 100_000


@st.composite
def schema_texts(draw: st.DrawFn) -> str:
    """A valid schema (ppsdg's own, or SDV's metadata) with one place replaced, deleted or added to, its
    text perhaps mutated after."""
    value = copy.deepcopy(draw(st.sampled_from([SCHEMA, SDV])))
    path = draw(st.sampled_from(list(json_paths(value))))
    *above, last = path
    parent = functools.reduce(lambda node, step: node[step], above, value)
    action = draw(st.sampled_from(["replace", "replace", "delete", "extra"]))
    if action == "replace":
        parent[last] = draw(SCHEMA_VALUES)
    elif action == "delete":
        del parent[last]
    elif isinstance(parent[last], dict):
        parent[last][draw(st.sampled_from(["name", "type", "edges", "unit", "x", "target"]))] = draw(SCHEMA_VALUES)
    elif isinstance(parent[last], list):
        parent[last].append(draw(SCHEMA_VALUES))
    text = json.dumps(value)
    return text_mutation(draw, text) if draw(st.integers(0, 4)) == 0 else text


def assert_usable(schema: tables.Schema) -> None:
    """What every party does with an accepted schema: hash its canonical text (which reads back as the same
    schema), size its marginals (as the synthesizer's layout does), decode any codes into a table and encode
    that table back into the schema's codes, or name the cell it cannot."""
    assert tables.Schema.from_text(schema.text()) == schema
    assert json.loads(json.dumps(schema.to_sdv()))
    for target in schema.names:
        assert tables.marginal_cells(schema, target) == marginals.Layout.of(schema, target).cells
    rng = np.random.default_rng(0)
    codes = np.stack([rng.integers(0, size, 20) for size in schema.shape], axis=1)
    frame = tables.decode(codes, schema, rng)
    for column in schema.fields:
        if column.kind == tables.IGNORE:
            frame[column.name] = None
    try:
        encoded, _ = tables.encode(frame[[column.name for column in schema.fields]], schema)
    except DataError:
        return
    assert encoded.shape == codes.shape and ((encoded >= 0) & (encoded < np.array(schema.shape))).all()


@settings(max_examples=150, deadline=SECONDS * 1000, suppress_health_check=[HealthCheck.too_slow])
@given(schema_texts())
# Found by this test: a numerical range beyond int64 made numpy's arrays of objects (UFuncTypeError).
@example('{"columns": {"age": {"sdtype": "numerical", "range_min": -1000000000000000000000000000000, '
         '"range_max": 80, "computer_representation": "Int64"}, "outcome": {"sdtype": "categorical", '
         '"range_values": ["ill", "well", "other"]}}}')
def test_fuzzed_schema_is_usable_or_refused_by_name(text):
    try:
        schema = tables.Schema.from_text(text)
    except tables.SchemaError as error:
        event(f"refused: {str(error)[:40]}")
        return
    event("accepted")
    assert_usable(schema)


def big_product() -> str:
    """100 columns of 1000 categories: a valid schema whose marginals hold 4.9 million million cells."""
    return json.dumps({"columns": [{"name": f"c{i}", "type": "categorical", "categories": [str(j) for j in range(1000)]}
                                   for i in range(100)], "target": "c0"})


BAD_SCHEMAS = {
    "a key named twice": ('{"columns": [{"name": "a", "type": "categorical", "categories": ["x"], "name": "b"}]}',
                          "names the key\\(s\\) name twice in one object"),
    "NaN edges": ('{"columns": [{"name": "a", "type": "numeric", "edges": [0, NaN]}]}', "'edges' must be 2 to"),
    "unsorted edges": ('{"columns": [{"name": "a", "type": "numeric", "edges": [0, 5, 3]}]}', "increasing numbers"),
    "edges equal as floats": ('{"columns": [{"name": "a", "type": "numeric", "edges": [9007199254740992, '
                              '9007199254740993]}]}', "increasing numbers \\(as floats\\)"),
    "an edge float() cannot hold": ('{"columns": [{"name": "a", "type": "numeric", "edges": [0, 1' + "0" * 400 + ']}]}',
                                    "finite, increasing numbers"),
    "a number of 5000 digits": ('{"columns": [{"name": "a", "type": "numeric", "edges": [0, ' + "9" * 5000 + ']}]}',
                                "the schema is not JSON: Exceeds the limit"),
    "10^6 categories": (json.dumps({"columns": [{"name": "a", "type": "categorical",
                                                 "categories": [str(i) for i in range(10 ** 6)]}]}),
                        "'categories' must be 1 to 1000 distinct texts"),
    "a type that is a list": ('{"columns": [{"name": "a", "type": ["categorical"]}]}', "'type' must be one of"),
    "a date format pandas does not read": ('{"columns": [{"name": "a", "type": "date", "format": "%Q", '
                                           '"edges": ["1", "2"]}]}', "dates in '%Q' cannot be read or written"),
    "SDV values that are not texts": ('{"columns": {"a": {"sdtype": "categorical", "range_values": [[1], {"x": 1}]}}}',
                                      "a list of texts, numbers or booleans"),
    "SDV bounds of 400 digits": ('{"columns": {"a": {"sdtype": "numerical", "range_min": 0, "range_max": 1'
                                 + "0" * 400 + '}}}', "needs its public 'range_min' < 'range_max'"),
    "nested deeper than a reader recurses": ("[" * 100_000 + "]" * 100_000,
                                             "the schema is not JSON: maximum recursion"),
    "longer than a schema may be": (" " * (tables.MAX_SCHEMA_BYTES + 1), "characters long, more than 16777216"),
}


@pytest.mark.parametrize("name", list(BAD_SCHEMAS))
def test_a_hostile_schema_is_refused_by_name_in_bounded_time_and_memory(name):
    text, message = BAD_SCHEMAS[name]
    started = time.perf_counter()
    with pytest.raises(tables.SchemaError, match=message):
        tables.Schema.from_text(text)
    assert time.perf_counter() - started < SECONDS
    assert peak_traced_bytes(lambda: tables.Schema.from_text(text)) < 500 << 20


@pytest.fixture
def hostile_paths(tmp_path) -> dict[str, Path]:
    """What a path may name instead of a file: a device read for ever, a FIFO waited on for ever, a file
    too large, a folder."""
    os.mkfifo(tmp_path / "fifo.csv")
    huge = tmp_path / "huge.json"
    with huge.open("wb") as handle:
        handle.truncate(tables.MAX_SCHEMA_BYTES + 1)
    (tmp_path / "folder.csv").mkdir()
    return {"/dev/zero": Path("/dev/zero"), "a FIFO": tmp_path / "fifo.csv", "a huge file": huge,
            "a folder": tmp_path / "folder.csv"}


@pytest.mark.parametrize("name, message", [("/dev/zero", "not a regular file"), ("a FIFO", "not a regular file"),
                                           ("a huge file", "16777217 bytes, more than 16777216"),
                                           ("a folder", "a folder: name a file")])
def test_a_schema_path_that_is_no_schema_file_is_refused_by_name(hostile_paths, name, message, tmp_path):
    with within(), pytest.raises(tables.SchemaError, match=message):
        tables.Schema.read(hostile_paths[name])
    people().to_csv(tmp_path / "data.csv", index=False)
    status, _, err = command(commands.schema, [str(tmp_path / "data.csv"), "--check", str(hostile_paths[name])])
    assert status == 2 and message.split(":")[0] in one_error_line(err)


def test_a_schema_whose_marginals_would_not_fit_is_refused_before_they_are_allocated(node, tmp_path):
    """A valid schema of 100 columns of 1000 categories: each release would be 78 TB. The node, the central
    and the command line refuse it, naming the cells, before a release or a model is allocated."""
    schema = tables.Schema.from_text(big_product())
    assert tables.marginal_cells(schema, "c0") == marginals.Layout.of(schema, "c0").cells > tables.MAX_CELLS
    config = table_options()
    kwargs = task(config, initial_state(config), 1)
    kwargs["options"].update(schema=big_product(), target="c0")
    message = "the schema's marginals hold 4,870,527,562,901 cells .* more than 8,388,608"
    with within(), pytest.raises(FederationError, match=f"organization {ORGANIZATION} .*{message}"):
        algorithm.run_partial(ORGANIZATION, people(), kwargs)
    with within(), pytest.raises(tables.SchemaError, match=message):
        algorithm.run_central(None, {**kwargs["options"], "organizations": [ORGANIZATION]})
    (tmp_path / "schema.json").write_text(big_product())
    frame = pd.DataFrame({f"c{i}": ["1"] * 10 for i in range(100)})
    frame.to_csv(tmp_path / "data.csv", index=False)
    status, _, err = command(main.main, ["--data", str(tmp_path / "data.csv"), "--schema",
                                         str(tmp_path / "schema.json"), "--output", str(tmp_path / "out")])
    assert status == 2 and "the schema's marginals hold" in one_error_line(err)


@settings(max_examples=60, deadline=SECONDS * 1000)
@given(st.lists(st.integers(1, 1001), min_size=1, max_size=12), st.data())
def test_the_marginals_are_sized_as_the_synthesizers_layout_sizes_them(sizes, drawn):
    schema = tables.Schema(tuple(tables.Column(f"c{i}", tables.CATEGORICAL, categories=tuple(map(str, range(size))),
                                               missing=False) for i, size in enumerate(sizes)))
    target = drawn.draw(st.sampled_from(schema.names))
    assert tables.marginal_cells(schema, target) == marginals.Layout.of(schema, target).cells


# 2. A table file: --data, --test-data, `ppsdg schema` (and --check), a node's database, read by read_table.

ROWS = 40


@functools.cache
def valid_files() -> dict[str, bytes]:
    """A small table of people as each format's bytes: a CSV, a gzipped one, Parquet (its columns typed:
    a flag, a date, categories, whole numbers with a missing one) and Excel."""
    frame = people(ROWS)
    typed, workbook = io.BytesIO(), io.BytesIO()
    frame.assign(smoker=frame["smoker"] == "yes", seen=pd.date_range("2020-01-01", periods=ROWS, freq="W"),
                 sex=frame["sex"].astype("category"), age=frame["age"].astype("Int64").where(frame.index != 3)
                 ).to_parquet(typed)
    frame.to_excel(workbook, index=False)
    text = frame.to_csv(index=False).encode()
    return {".csv": text, ".csv.gz": gzip.compress(text, mtime=0), ".parquet": typed.getvalue(),
            ".xlsx": workbook.getvalue()}


@functools.cache
def people_schema() -> str:
    return tables.draft(people(ROWS), TARGET).text()


# Bytes that break a CSV reader: a NUL, separators and quotes, line ends (a carriage return alone
# included), bytes that are not UTF-8, a byte-order mark, a 200,000-character cell (more than the csv
# module reads), a row of too many cells, a header cell named twice.
INSERTS = [b"\x00", b",", b";", b"\t", b"|", b'"', b"\n", b"\r", b"\r\n", b"\n\n", b"\xff", b"\xc3", b"\xef\xbb\xbf",
           b"x" * 200_000, b"\n1,2,3,4,5,6,7,8,9\n", b"age,", b",,,,", b'"a\nb"', b"NaN", b"1e999", b"-0"]


def mutated_bytes(draw: st.DrawFn, blob: bytes) -> bytes:
    """A file's bytes cut short, with a byte changed, or with a hostile piece inserted, one to three times."""
    for _ in range(draw(st.integers(1, 3))):
        how = draw(st.sampled_from(["cut", "byte", "insert", "insert"]))
        at = draw(st.integers(0, len(blob)))
        if how == "cut":
            blob = blob[:at]
        elif how == "byte" and at < len(blob):
            blob = blob[:at] + bytes([draw(st.integers(0, 255))]) + blob[at + 1:]
        else:
            blob = blob[:at] + draw(st.sampled_from(INSERTS)) + blob[at:]
    return blob


@st.composite
def table_files(draw: st.DrawFn) -> tuple[str, bytes]:
    """A table file's name and bytes: a valid one of each format, mutated; a CSV mutated then gzipped;
    or a format's bytes under another format's name."""
    suffix = draw(st.sampled_from(sorted(valid_files())))
    blob = valid_files()[suffix]
    how = draw(st.sampled_from(["mutated", "mutated", "mutated", "then gzipped", "misnamed"]))
    if how == "then gzipped":
        return ".csv.gz", gzip.compress(mutated_bytes(draw, valid_files()[".csv"]), mtime=0)
    if how == "misnamed":
        return draw(st.sampled_from(sorted(set(valid_files()) - {suffix}))), blob
    return suffix, mutated_bytes(draw, blob)


def assert_read(frame: pd.DataFrame) -> None:
    """What every reader of a table relies on: rows numbered from 0, at most MAX_COLUMNS columns, each
    named once by a text."""
    assert isinstance(frame.index, pd.RangeIndex) and frame.index.start == 0
    assert frame.shape[1] <= tables.MAX_COLUMNS and frame.columns.is_unique


@FUZZ
@given(table_files())
def test_fuzzed_table_file_is_read_or_refused_by_name(tmp_path_factory, named):
    """`read_table`, then `ppsdg schema` (a draft that reads back) and `ppsdg schema --check`."""
    suffix, blob = named
    folder = tmp_path_factory.mktemp("table")
    path = folder / f"table{suffix}"
    path.write_bytes(blob)
    (folder / "schema.json").write_text(people_schema())
    try:
        with within():
            frame = tables.read_table(path)
    except DataError as error:
        event(f"refused: {str(error).split(': ', 1)[1][:30]}")
        return
    event("read")
    assert_read(frame)
    status, out, err = command(commands.schema, [str(path)])
    if status == 0:
        assert tables.Schema.from_text(out).names
    else:
        one_error_line(err)
    status, out, err = command(commands.schema, [str(path), "--check", str(folder / "schema.json")])
    assert out.startswith("the table fits the schema") if status == 0 else one_error_line(err)


def idx_images(count: int = 3) -> bytes:
    """An MNIST IDX images file (magic 2051, count, 28 x 28, then the pixels)."""
    header = b"".join(value.to_bytes(4, "big") for value in (2051, count, 28, 28))
    return header + bytes(range(256)) * (count * 784 // 256) + bytes(count * 784 % 256)


def parquet_file(path: Path, table: pa.Table) -> Path:
    parquet.write_table(table, path)
    return path


def gzip_bomb(path: Path, unpacked: int) -> Path:
    """A table's header, then gzip members of 64 MiB of rows each, concatenated (a gzip reader unpacks
    them one after the other): hundreds of times smaller than what they unpack to."""
    member = gzip.compress(b"1,2\n" * (16 << 20), compresslevel=9, mtime=0)
    path.write_bytes(gzip.compress(b"a,b\n", mtime=0) + member * -(-unpacked // (64 << 20)))
    return path


def zip_bomb(path: Path, declared: int) -> Path:
    """An .xlsx whose sheet unpacks to `declared` bytes of spaces (zipfile writes the true size)."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        with archive.open("xl/worksheets/sheet1.xml", "w", force_zip64=True) as sheet:
            for _ in range(declared >> 20):
                sheet.write(b" " * (1 << 20))
    return path


def fifo(path: Path) -> Path:
    os.mkfifo(path)
    return path


def text_file(path: Path, text: str | bytes) -> Path:
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


# Files no table reader should take, and the words read_table names each with. The bombs are read
# against a cap of CAP bytes (the mechanism is the one MAX_TABLE_BYTES sets, 2 GiB, at a smaller scale).
CAP = 32 << 20
MNIST_CSV = ",".join(data.CSV_COLUMNS) + "\n" + ",".join(["7"] + ["0"] * 784) + "\n"
HOSTILE_FILES = {
    "ragged rows": (lambda d: text_file(d / "t.csv", "a,b,c\n1,2,3\n1,2\n1,2,3,4,5\n"), "Expected 3 fields in line 4"),
    "rows longer than the header": (lambda d: text_file(d / "t.csv", "a,b\n1,2,3\n4,5\n"),
                                    "rows with more cells than the header"),
    "a header cell named twice": (lambda d: text_file(d / "t.csv", "a,a,b\n1,2,3\n"), "column\\(s\\) named twice: a"),
    "100,000 columns": (lambda d: text_file(d / "t.csv", ",".join(f"c{i}" for i in range(100_000)) + "\n"),
                        "over \\d+ columns, more than the 100 a schema describes"),
    "an MNIST CSV": (lambda d: text_file(d / "t.csv", MNIST_CSV),
                     "785 columns, more than the 100 .*images \\(a label and 784 pixels\\) are not a table"),
    "NUL bytes": (lambda d: text_file(d / "t.csv", b"age,sex\n\x0042,F\n"), "a NUL byte on line 2"),
    "MNIST's IDX file named .csv": (lambda d: text_file(d / "t.csv", idx_images()), "a NUL byte on line 1"),
    "MNIST's gzipped IDX file named .csv.gz": (lambda d: text_file(d / "t.csv.gz", gzip.compress(idx_images())),
                                               "a NUL byte on line 1"),
    "a gzip bomb": (lambda d: gzip_bomb(d / "t.csv.gz", 4 * CAP), f"more than {CAP} bytes once unpacked"),
    "a damaged gzip": (lambda d: text_file(d / "t.csv.gz", gzip.compress(b"a,b\n" * 1000)[:-40]),
                       "cannot read it as a table: Compressed file ended"),
    "nested Parquet columns": (lambda d: parquet_file(d / "t.parquet", pa.table(
        {"a": [[1, 2], [3]], "b": [{"x": 1}, {"x": 2}], "c": ["u", "v"]})),
                               "column\\(s\\) a, b hold lists, structures, maps or bytes"),
    "Parquet bytes": (lambda d: parquet_file(d / "t.parquet", pa.table({"a": pa.array([b"\xff", b"x"])})),
                      "column\\(s\\) a hold lists"),
    "Parquet of 101 columns": (lambda d: parquet_file(d / "t.parquet", pa.table({f"c{i}": [1] for i in range(101)})),
                               "101 columns, more than the 100"),
    "Parquet columns named twice": (lambda d: parquet_file(d / "t.parquet", pa.Table.from_arrays(
        [pa.array([1]), pa.array([2])], names=["a", "a"])), "column\\(s\\) named twice: a"),
    "a Parquet bomb": (lambda d: parquet_file(d / "t.parquet", pa.table({"a": pa.array(np.zeros(CAP, np.int8))})),
                       f"{CAP} rows of 1 columns, more cells than a CSV of {CAP} bytes holds"),
    "MNIST's IDX file named .parquet": (lambda d: text_file(d / "t.parquet", idx_images()), "Parquet magic bytes"),
    "a workbook that is no zip": (lambda d: text_file(d / "t.xlsx", b"PK\x03\x04" + bytes(100)),
                                  "cannot read it as a table"),
    "a workbook bomb": (lambda d: zip_bomb(d / "t.xlsx", 2 * CAP), f"unpacked, more than {CAP}"),
    "/dev/zero": (lambda d: Path("/dev/zero"), "not a regular file"),
    "a FIFO": (lambda d: fifo(d / "t.csv"), "not a regular file"),
}


@pytest.fixture
def capped(monkeypatch):
    monkeypatch.setattr(tables, "MAX_TABLE_BYTES", CAP)


@pytest.mark.parametrize("name", list(HOSTILE_FILES))
def test_a_hostile_table_file_is_refused_by_name_in_bounded_time_and_memory(name, tmp_path, capped):
    build, message = HOSTILE_FILES[name]
    path = build(tmp_path)
    started = time.perf_counter()
    with within(), pytest.raises(DataError, match=message):
        tables.read_table(path)
    assert time.perf_counter() - started < SECONDS
    with within():
        assert peak_traced_bytes(lambda: tables.read_table(path)) < 64 << 20


ACCEPTED_FILES = {
    "lines ended by a carriage return alone": (b"age,sex\r42,F\r17,M\r", [["42", "F"], ["17", "M"]]),
    "a 10 MB cell": (b"age,sex\n" + b"4" * (10 << 20) + b",F\n", [["4" * (10 << 20), "F"]]),
}


@pytest.mark.parametrize("name", list(ACCEPTED_FILES))
def test_an_odd_but_whole_table_file_is_read_as_written_and_a_cell_that_does_not_fit_is_named(name, tmp_path):
    """Read cell for cell as written; a cell the schema does not hold is named by its place in the file (a
    CSV's line, or its record where the csv module cannot count the lines), never by its value."""
    blob, cells = ACCEPTED_FILES[name]
    path = text_file(tmp_path / "t.csv", blob)
    started = time.perf_counter()
    with within():
        frame = tables.read_table(path)
    assert frame.to_numpy().tolist() == cells and list(frame.columns) == ["age", "sex"]
    schema = tables.Schema.from_json({"columns": [{"name": "age", "type": "numeric", "edges": [0, 100]},
                                                  {"name": "sex", "type": "categorical", "categories": ["F", "M"]}]})
    if name != "lines ended by a carriage return alone":
        with pytest.raises(DataError, match="--data: (line|record) \\d.*column 'age': expected a number") as refused:
            data.check_fits(frame, schema, str(path), "--data")
        assert "4444" not in str(refused.value)
    assert time.perf_counter() - started < SECONDS


class Launched(Exception):
    """A run the checks let through: the launch is replaced by this."""


@pytest.fixture
def surfaces(node, monkeypatch, tmp_path) -> Callable[[Path], dict[str, str]]:
    """Every place a table file is given, each returning the error line (or refusal) it ends in; a surface
    that takes the file fails the test. The others' files are valid: the table, its schema, a synthetic part."""
    def launch(config: Config) -> int:
        raise Launched()

    monkeypatch.setattr(main, "launch_gloo", launch)
    monkeypatch.setattr(main, "launch_vantage6", launch)
    good, synthetic, schema = tmp_path / "good.csv", tmp_path / "synthetic.csv", tmp_path / "schema.json"
    people().to_csv(good, index=False)
    people(100, seed=3).to_csv(synthetic, index=False)
    config = table_options()
    schema.write_text(config.job.schema)

    def node_database(path: Path) -> str:
        monkeypatch.setenv("USER_REQUESTED_DATABASE_LABELS", "table")
        monkeypatch.setenv("TABLE_DATABASE_URI", str(path))
        monkeypatch.setenv("TABLE_DATABASE_TYPE", tables.table_format(path) or "csv")
        with within(), pytest.raises(FederationError) as refused:
            algorithm.run_partial(ORGANIZATION, None, task(config, initial_state(config), 1), on_node=True)
        return str(refused.value)

    def line(function: Callable[[list[str]], int], *argv: Any) -> str:
        status, _, err = command(function, [str(arg) for arg in argv])
        assert status == 2
        return one_error_line(err)

    return lambda path: {
        "ppsdg schema": line(commands.schema, path),
        "--data": line(main.main, "--data", path, "--schema", schema, "--output", tmp_path / "out"),
        "--test-data": line(main.main, "--data", good, "--test-data", path, "--schema", schema, "--output",
                            tmp_path / "out"),
        "a node's database": node_database(path),
        "ppsdg evaluate's synthetic table": line(commands.evaluate_command, path, "--data", good, "--schema", schema),
        "ppsdg evaluate --data": line(commands.evaluate_command, synthetic, "--data", path, "--schema", schema)}


@pytest.mark.parametrize("name", [name for name in HOSTILE_FILES if "bomb" not in name])
def test_a_hostile_table_file_is_refused_by_name_wherever_it_is_given(name, surfaces, tmp_path):
    errors = surfaces(HOSTILE_FILES[name][0](tmp_path))
    assert errors["a node's database"].endswith("this node's data do not fit the task (its schema); what does not "
                                                "fit stays on the node: its owner finds it with `ppsdg schema DATA "
                                                "--check SCHEMA`")
    assert all(error for error in errors.values())


@FUZZ
@given(table_files())
def test_fuzzed_node_database_is_read_or_refused_in_one_sentence(node, monkeypatch, named):
    """A node's database as the node's configuration names it: the round is answered, or refused with the
    one sentence that says nothing of the data."""
    suffix, blob = named
    path = Path(os.environ[policy.FOLDER]) / f"database{suffix}"
    path.write_bytes(blob)
    monkeypatch.setenv("USER_REQUESTED_DATABASE_LABELS", "table")
    monkeypatch.setenv("TABLE_DATABASE_URI", str(path))
    monkeypatch.setenv("TABLE_DATABASE_TYPE", tables.table_format(path))
    config = table_options()
    try:
        with within():
            reply = algorithm.run_partial(ORGANIZATION, None, task(config, initial_state(config), 1), on_node=True)
    except FederationError as error:
        event("refused")
        assert "do not fit the task" in str(error) or "ledger" in str(error)
        return
    event("answered")
    codec.decode_text(reply["message"])


# 3. A node's marginals release as the central sees it: a vantage6 result, decoded against the round's
# template, then checked as a release of the round's kind (coordination.exchange).

RUN = 100 + ORGANIZATION


@functools.cache
def honest_releases() -> dict[str, tuple[dict[str, torch.Tensor], str]]:
    """The central's state sent and the node's reply text, for the survey (round 1) and a measurement
    (round 2, the plan its survey selects), as a node makes them."""
    config = table_options()
    survey = algorithm.run_partial(ORGANIZATION, people(), task(config, initial_state(config), 1))
    layout = marginals.Layout.of(tables.Schema.from_text(config.job.schema), TARGET)
    sums = {**initial_state(config), **codec.decode_text(survey["message"])[0]}
    plan = marginals.select({name: sums[name] for name in marginals.STATISTICS}, layout, config.run.num_rounds - 1)
    measuring = {**initial_state(config), "plan": torch.from_numpy(plan)}
    measured = algorithm.run_partial(ORGANIZATION, people(), task(config, measuring, 2))
    return {"survey": (initial_state(config), survey["message"]),
            "measurement": (measuring, measured["message"])}


def planned_std() -> float:
    job = Job.of_config(table_options())
    return job.synthesizer.release_std(job.dp)


Mutation = Callable[[dict[str, torch.Tensor], str, str], None]


def changed(which: str, change: Callable[[torch.Tensor], torch.Tensor]) -> Mutation:
    """Change a tensor of a reply: the round's own cells ('cells'), the other kind's ('other cells'), the
    round's declared noise variance ('noise'), or a tensor by its name."""
    def mutate(tensors: dict[str, torch.Tensor], cells: str, noise: str) -> None:
        other = "measured" if cells == "survey" else "survey"
        key = {"cells": cells, "other cells": other, "noise": noise}.get(which, which)
        tensors[key] = change(tensors[key].clone())
    return mutate


def first_cell(value: float) -> Callable[[torch.Tensor], torch.Tensor]:
    def change(cells: torch.Tensor) -> torch.Tensor:
        cells[cells.nonzero()[0]] = value
        return cells
    return change


# Releases no honest node makes: each must be rejected, in either round.
DISHONEST = {
    "scaled 1000x": changed("cells", lambda t: t * 1000),
    "negated": changed("cells", lambda t: -t),
    "a count of -1e6": changed("cells", first_cell(-1e6)),
    "a count of 1e300": changed("cells", first_cell(1e300)),
    "a NaN count": changed("cells", first_cell(math.nan)),
    "an infinite count": changed("cells", first_cell(-math.inf)),
    "a cell short": changed("cells", lambda t: t[:-1]),
    "a cell more": changed("cells", lambda t: torch.cat([t, t[:1]])),
    "float32 cells": changed("cells", lambda t: t.float()),
    "cells as a matrix": changed("cells", lambda t: t[None]),
    "a quarter of the planned noise variance": changed("noise", lambda t: t / 4),
    "no noise": changed("noise", lambda t: t * 0),
    "4x the planned noise variance": changed("noise", lambda t: t * 4),
    "a plan": changed("plan", lambda t: t + 0.1),
    "the other kind's cells too": changed("other cells", lambda t: t + 1),
    "1000x the records it has": changed(coordination.NUM_SAMPLES, lambda t: t * 1000),
    "no record": changed(coordination.NUM_SAMPLES, lambda t: t * 0),
    "2^40 records": changed(coordination.NUM_SAMPLES, lambda t: t * 0 + 2.0 ** 40),
    "half a record more": changed(coordination.NUM_SAMPLES, lambda t: t + 0.5),
    "an accountant entry of no noise": changed("extra.dp_noise_multiplier", lambda t: t * 0),
    "an accountant entry of more noise than planned": changed("extra.dp_noise_multiplier", lambda t: t * 50),
    "an accountant entry of a smaller sample rate": changed("extra.dp_sample_rate", lambda t: t / 100),
}
ROUNDS = {"survey": (1, "survey", "survey_noise"), "measurement": (2, "measured", "measure_noise")}


def mutated_release(round_: str, mutate: Mutation) -> str:
    tensors, _ = codec.decode_text(honest_releases()[round_][1], require_finite=False)
    mutate(tensors, *ROUNDS[round_][1:])
    return codec.encode_text(tensors)


def client_of(text: Any) -> FuzzedClient:
    """A server whose round subtask has this organization's run, completed, with this result."""
    return FuzzedClient([{"id": RUN, "organization": {"id": ORGANIZATION}, "status": "completed", "log": None}],
                        [{"id": RUN, "result": b64json({"rank": 1, "message": text})}])


def central_sees(round_: str, client: FuzzedClient, comm: CentralCommunicator | None = None
                 ) -> tuple[dict[int, coordination.Reply], dict[int, str]]:
    """The round as the central runs it on vantage6: the subtask's result decoded against the round's
    template, then checked (coordination.exchange): the replies it takes and why it takes no other."""
    config = table_options()
    job = Job.of_config(config)
    model = new_model(job.synthesizer, config.run.seed)
    model.load_state_dict(honest_releases()[round_][0])
    comm = comm or CentralCommunicator(client, [ORGANIZATION], central_task.round_options(config, job),
                                       round_timeout_s=0.0, poll_s=0.0)
    replies, failures, _ = coordination.exchange(comm, model, job, ROUNDS[round_][0], [1])
    return replies, failures


def assert_plausible(reply: coordination.Reply, round_: str) -> None:
    """What a taken release must be for the sum and the privacy report to hold: finite, its own kind's
    cells only, within what its rows and the planned noise allow (the loosest clique weight), the planned
    noise variance declared, and the planned release's accountant entry."""
    config = table_options()
    dp = Job.of_config(config).dp
    _, cells, noise = ROUNDS[round_]
    update = reply.update
    assert all(bool(torch.isfinite(tensor).all()) for tensor in update.values())
    assert not update["plan"].any() and all(not update[name].any() for name in marginals.STATISTICS
                                            if name not in ("plan", cells, noise))
    share = 1.0 if round_ == "survey" else 1 / (config.run.num_rounds - 1)
    assert float(update[noise]) == pytest.approx((planned_std() * share) ** 2, rel=1e-9)
    layout = marginals.Layout.of(tables.Schema.from_text(config.job.schema), TARGET)
    slack = 6 * planned_std() * share * math.sqrt(len(layout.found))
    assert bool((update[cells].abs() <= reply.num_samples * share + slack).all())
    assert coordination.checked_entry(dp, reply.figures) == (dp.release_noise(), 1.0, 1)


@pytest.mark.parametrize("round_", list(ROUNDS))
def test_an_honest_release_is_taken(node, round_):
    replies, failures = central_sees(round_, client_of(honest_releases()[round_][1]))
    assert failures == {} and list(replies) == [1]
    assert_plausible(replies[1], round_)


@pytest.mark.parametrize("name", list(DISHONEST))
@pytest.mark.parametrize("round_", list(ROUNDS))
def test_a_release_no_honest_node_makes_is_rejected_by_name(node, round_, name):
    replies, failures = central_sees(round_, client_of(mutated_release(round_, DISHONEST[name])))
    assert replies == {} and failures[1].startswith("update rejected: "), failures


@pytest.mark.parametrize("round_, sent", [("measurement", "survey"), ("survey", "measurement")])
def test_a_release_of_the_other_kind_of_round_is_rejected_by_name(node, round_, sent):
    replies, failures = central_sees(round_, client_of(honest_releases()[sent][1]))
    expected = {"measurement": "the round asked for the measurement and the release holds survey cells",
                "survey": "the round asked for the survey and the release holds measured cells"}[round_]
    assert replies == {} and expected in failures[1]


def test_a_replayed_release_is_rejected_by_name(node):
    """A node that sends its round-2 measurement again in round 3, as it is or re-encoded: under DP an honest
    release draws its noise afresh, so one equal to a release taken earlier is replayed."""
    config = table_options()
    client = client_of(honest_releases()["measurement"][1])
    comm = CentralCommunicator(client, [ORGANIZATION], central_task.round_options(config, Job.of_config(config)),
                               round_timeout_s=0.0, poll_s=0.0)
    assert list(central_sees("measurement", client, comm)[0]) == [1]
    tensors, _ = codec.decode_text(honest_releases()["measurement"][1])
    for text in (honest_releases()["measurement"][1], codec.encode_text(dict(reversed(tensors.items())))):
        client.entries = [{"id": RUN, "result": b64json({"rank": 1, "message": text})}]
        replies, failures = central_sees("measurement", client, comm)
        assert replies == {} and failures[1] == (f"update rejected: the result repeats, tensor for tensor, one that "
                                                 f"organization {ORGANIZATION} sent earlier in this run: a DP release "
                                                 "draws its noise afresh, so this one is replayed")


@st.composite
def releases(draw: st.DrawFn) -> tuple[str, str, str]:
    """A round, a result as its node's run hands it in, and what it is: honest, one no honest node makes,
    the other round's, or damaged (its text mutated, a cell moved or scaled by a drawn amount, a hostile
    value in place of the message)."""
    round_ = draw(st.sampled_from(sorted(ROUNDS)))
    honest = honest_releases()[round_][1]
    how = draw(st.sampled_from(["honest", "dishonest", "dishonest", "other round", "text", "cell", "scaled",
                                "hostile"]))
    if how == "honest":
        return round_, honest, how
    if how == "dishonest":
        return round_, mutated_release(round_, DISHONEST[draw(st.sampled_from(sorted(DISHONEST)))]), how
    if how == "other round":
        return round_, honest_releases()[next(r for r in ROUNDS if r != round_)][1], how
    if how == "text":
        return round_, mutated_text(draw, honest), how
    if how == "cell":
        at, by = draw(st.integers(0, 200)), draw(st.floats(-20, 20) | st.floats())
        return round_, mutated_release(round_, changed("cells", lambda t: t.index_put_((torch.tensor(at),),
                                                                                       t[at] + by))), how
    if how == "scaled":
        by, what = draw(st.floats(0.9, 1.1) | st.floats(-10, 10)), draw(st.sampled_from(["cells", "noise"]))
        return round_, mutated_release(round_, changed(what, lambda t: t * by)), how
    return round_, draw(HOSTILE), how


@FUZZ
@given(releases())
def test_fuzzed_release_is_taken_only_if_plausible(node, release):
    """An honest release is taken; one no honest node makes, or of the other round, is rejected by name; any
    other is rejected by name, or taken only within what its rows and the planned noise allow."""
    round_, text, how = release
    replies, failures = central_sees(round_, client_of(text))
    event(f"{how}: {'taken' if replies else 'rejected'}")
    if how == "honest":
        assert list(replies) == [1]
    if how in ("dishonest", "other round"):
        assert replies == {}
    if replies:
        assert_plausible(replies[1], round_)
    else:
        assert isinstance(failures[1], str) and failures[1]


# 4. A table run's checkpoint for --resume: checked whole against the run's options and the sums of
# the releases its records list.

@functools.cache
def table_checkpoint() -> tuple[Config, dict[str, torch.Tensor], dict[str, Any]]:
    """The configuration, tensors and metadata of a 3-node table run's checkpoint after round 2 of 3: two
    workers' releases summed, the plan the survey selects, a snapshot after each round, the histories
    the server charged."""
    config = table_options(num_nodes=3)
    job = Job.of_config(config)
    synthesizer, model, dp = job.synthesizer, new_model(job.synthesizer, config.run.seed), job.dp
    schema = tables.Schema.from_text(config.job.schema)
    parts = [people().iloc[:300], people().iloc[300:]]
    records, snapshots = [], {}
    for round_ in (1, 2):
        updates = []
        for rank, part in enumerate(parts, start=1):
            torch.manual_seed(10 * round_ + rank)
            codes = torch.from_numpy(tables.encode(part, schema, fine=True)[0])
            updates.append(synthesizer.local_update(model, codes, codes[:, synthesizer.layout.target], dp, None, 0.0, None)[0])
        state = model.state_dict()
        model.load_state_dict({name: state[name] + sum(update[name] for update in updates) for name in state})
        synthesizer.after_round(model, round_)
        snapshots[round_] = synthesizer.generator_state(model)
        records.append({"round": round_, "test_loss": None, "test_accuracy": None, "failed": [],
                        "workers": [{"rank": rank, "num_samples": len(part), "averaged": True}
                                    for rank, part in enumerate(parts, start=1)]})
    histories = {rank: [release_entry(dp.release_noise())] * 2 for rank in (1, 2)}
    point = Checkpoint(2, synthesizer.generator_state(model), records, histories=histories, snapshots=snapshots)
    tensors, meta = codec.decode(checkpoint.encode(point, config.fixed_options()), max_meta_bytes=checkpoint.META_BYTES)
    return config, tensors, meta


def read_checkpoint(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> Checkpoint:
    config = table_options(num_nodes=3)
    blob = codec.encode(tensors, meta, max_meta_bytes=checkpoint.META_BYTES)
    return checkpoint.read(blob, config.fixed_options(), config.run, Job.of_config(config))


def assert_resumable(point: Checkpoint) -> None:
    """What a resumed table run relies on: a round within the run, one record a round, statistics that load
    into the run's model, and each worker's history charging one planned release a round it took part in."""
    config, _, _ = table_checkpoint()
    job = Job.of_config(config)
    assert 0 <= point.round <= config.run.num_rounds and len(point.records) == point.round
    new_model(job.synthesizer, config.run.seed).load_state_dict(point.model)
    planned = release_entry(job.dp.release_noise())
    for record in point.records:
        for worker in record["workers"]:
            assert point.histories.get(worker["rank"], [])[:1] == [planned]
    assert all(entry == planned for history in point.histories.values() for entry in history)
    assert all(1 <= when <= point.round for when in point.snapshots)


def test_a_valid_table_checkpoint_comes_back_whole():
    _, tensors, meta = table_checkpoint()
    point = read_checkpoint(dict(tensors), copy.deepcopy(meta))
    assert_resumable(point)
    assert point.round == 2 and point.model["plan"].any() and sorted(point.snapshots) == [1, 2]


def scaled(name: str, by: float) -> Callable[[dict, dict], None]:
    return lambda tensors, meta: tensors.__setitem__(name, tensors[name] * by)


def set_field(path: tuple, value: Any) -> Callable[[dict, dict], None]:
    def mutate(tensors: dict, meta: dict) -> None:
        *above, last = path
        functools.reduce(lambda node, step: node[step], above, meta)[last] = value
    return mutate


POISONED = {
    "survey scaled 1000x": (scaled("model.survey", 1000), "model is not the sum of the releases"),
    "measured cells scaled 1000x": (scaled("model.measured", 1000), "model is not the sum of the releases"),
    "survey negated": (scaled("model.survey", -1), "model is not the sum of the releases"),
    "a quarter of the measurements' noise": (scaled("model.measure_noise", 0.25), "noise_variance"),
    "a plan the survey does not select": (lambda tensors, meta: tensors.__setitem__(
        "model.plan", torch.flip(tensors["model.plan"], [0])), "not the one that the survey selects|plan may not"),
    "a NaN cell": (lambda tensors, meta: tensors.__setitem__("model.survey", tensors["model.survey"].clone().index_fill_(
        0, torch.tensor([0]), math.nan)), "holds NaN or Inf"),
    "a poisoned snapshot": (scaled("snapshot.1.survey", 1000), "generator snapshot of round 1 is not the sum"),
    "1000x the records a worker has": (set_field(("records", 0, "workers", 0, "num_samples"), 300_000),
                                       "model is not the sum of the releases"),
    "a worker's release left out of the records": (lambda tensors, meta: meta["records"][1]["workers"].pop(),
                                                    "model is not the sum of the releases"),
    "another schema": (set_field(("options", "schema"), big_product()), "made with other options"),
    "another target": (set_field(("options", "target"), "sex"), "made with other options"),
    "a history of more noise than planned": (set_field(("histories", "1", 0, 0), 50.0),
                                             "is not the planned release's"),
    "a history of a smaller sample rate": (set_field(("histories", "1", 1, 1), 0.01), "is not the planned release's"),
    "a history that forgets a release": (lambda tensors, meta: meta["histories"]["2"].pop(),
                                         "charges 1 release\\(s\\) of worker 2, who released in 2 round\\(s\\)"),
    "no history at all": (set_field(("histories",), {}), "charges 0 release\\(s\\) of worker 1"),
}


@pytest.mark.parametrize("name", list(POISONED))
def test_a_poisoned_table_checkpoint_is_refused_by_name(name):
    mutate, message = POISONED[name]
    _, tensors, meta = table_checkpoint()
    tensors, meta = dict(tensors), copy.deepcopy(meta)
    mutate(tensors, meta)
    with within(), pytest.raises(PpsdgError, match=message):
        read_checkpoint(tensors, meta)


@st.composite
def poisoned_checkpoints(draw: st.DrawFn) -> tuple[dict, dict]:
    """The valid table checkpoint with a place in its metadata replaced, deleted or added to, or a tensor
    scaled, shifted, reshaped or renamed."""
    _, tensors, meta = table_checkpoint()
    tensors, meta = dict(tensors), copy.deepcopy(meta)
    if draw(st.booleans()):
        mutate_meta(draw, meta)
        return tensors, meta
    name = draw(st.sampled_from(sorted(tensors)))
    how = draw(st.sampled_from(["scale", "shift", "reshape", "rename", "dtype"]))
    if how == "scale":
        tensors[name] = tensors[name] * draw(st.floats(-2, 2) | st.sampled_from([0.0, 1000.0, math.inf]))
    elif how == "shift":
        tensors[name] = tensors[name] + draw(st.floats(-5, 5))
    elif how == "reshape":
        tensors[name] = tensors[name].flatten()[:draw(st.integers(0, 3))]
    elif how == "rename":
        tensors[draw(st.sampled_from(["model.x", "snapshot.3.survey", "snapshot.0.plan", "optimizer.0.x", "x"]))] = \
            tensors.pop(name)
    else:
        tensors[name] = tensors[name].float()
    return tensors, meta


@FUZZ
@given(poisoned_checkpoints())
def test_fuzzed_table_checkpoint_is_resumable_or_refused_by_name(poisoned):
    try:
        with within():
            point = read_checkpoint(*poisoned)
    except PpsdgError as error:
        event(f"refused: {str(error)[:40]}")
        return
    event("accepted")
    assert_resumable(point)


# 5. `ppsdg evaluate` on a table: the synthetic table, the real data and test part, the schema.

@settings(FUZZ, max_examples=40)
@given(st.sampled_from(["synthetic", "--data", "--test-data", "--schema"]), table_files(), schema_texts())
def test_fuzzed_evaluation_input_is_scored_or_refused_in_one_line(tmp_path_factory, which, named, schema_text):
    folder = tmp_path_factory.mktemp("evaluate")
    inputs = {"synthetic": folder / "synthetic.csv", "--data": folder / "data.csv", "--test-data": folder / "test.csv",
              "--schema": folder / "schema.json"}
    people(100, seed=3).to_csv(inputs["synthetic"], index=False)
    people(200).to_csv(inputs["--data"], index=False)
    people(60, seed=4).to_csv(inputs["--test-data"], index=False)
    inputs["--schema"].write_text(people_schema())
    if which == "--schema":
        inputs[which].write_text(schema_text)
    else:
        suffix, blob = named
        inputs[which] = folder / f"fuzzed{suffix}"
        inputs[which].write_bytes(blob)
    argv = [str(inputs["synthetic"])] + [str(part) for name in ("--data", "--test-data", "--schema")
                                        for part in (name, inputs[name])]
    status, out, err = command(commands.evaluate_command, argv)
    event(f"{which}: {'scored' if status == 0 else 'refused'}")
    if status == 0:
        figures = json.loads(out)
        assert all(key in figures["unavailable"] for key, value in figures.items() if value is None)
        assert all(math.isfinite(value) for value in figures.values() if isinstance(value, float))
    else:
        assert status == 2 and one_error_line(err)
