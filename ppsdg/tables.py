"""Tables of records as node data: the public schema, reading a table, and its integer codes.

DP needs the domain to be public: which columns, which categories, which numeric bins. A schema
says it once (`--schema schema.json`); every party encodes its rows to integer codes with it, so
that a contingency table of a few columns is the same array on every node and can be summed.
`draft` writes a first schema from a data owner's own file for the owner to review: a category
seen only in private data, or a bound read off it, is itself private until the owner publishes it.
"""
from __future__ import annotations

import csv
import gzip
import io
import json
import math
import re
import stat
import zipfile
import zlib
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ppsdg.errors import DataError

CATEGORICAL, NUMERIC, DATE, ID, IGNORE = "categorical", "numeric", "date", "id", "ignore"
KINDS = (CATEGORICAL, NUMERIC, DATE, ID, IGNORE)
LINEAR, LOG = "linear", "log"
MISSING_LABEL = "missing"
# A drafted numeric column's bins. Chosen on the breadth set's validation splits (7 tables, epsilon 3,
# 3 nodes by site, seeds 1-2; bench_breadth.py --validation --bins B): against 20 bins, 10 gave a
# higher TSTR AUC on 5 tables (mean 0.810 against 0.803) and a lower 2-way TVD on 5, one tie (mean
# ratio to independent columns 0.91 against 1.05): a small table's noise spreads over fewer cells.
DRAFT_BINS = 10
# A numeric or date column's fine histogram (`Column.fine_edges`), which decoding draws a value inside
# its bin from: each whole number of an integer column of at most FINE_WHOLE of them, else each bin
# cut in FINE_SPLIT parts.
FINE_WHOLE = 200
FINE_SPLIT = 10
DRAFT_MAX_CATEGORIES = 100
INTEGER_VALUES = 32
POINT_MASS = 0.3
# A drafted numeric column gets log-spaced bins when equal widths would put more than this share of
# its rows in the first bin (amounts, counts, durations: a long right tail).
HEAVY_TAIL = 0.5
# An identifier: a column named like one (id, patient_id, key, rownames), or whole numbers whose
# rows come in runs of equal, ascending values (a sorted export's person number), or words without a
# space unique to each row (text with spaces is free text); with at least this share of distinct
# values among its rows.
ID_NAME = re.compile(r"(^|[^a-z0-9])(id|ids|key|uuid|rownames?)$|^(id|key)([^a-z0-9]|$)", re.IGNORECASE)
ID_DISTINCT = 0.1
MIN_ID_ROWS = 20
MAX_COLUMNS = 100
SHOWN_NAMES = 8
CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
MAX_CATEGORIES = 1000
# An integer column's values are whole numbers a float holds exactly (and an int64 too).
MAX_WHOLE = float(1 << 53)
MAX_TABLE_BYTES = 2 << 30
UNPACK_PIECE = 1 << 20
# A schema file or text: 100 columns of 1000 categories of 100 characters are 10 MB of JSON.
MAX_SCHEMA_BYTES = 16 << 20
# The cells of a table run's marginals (`marginal_cells`): a node's release is two float64 vectors of
# them, 128 MiB at this bound; 100 columns of 10 categories with a binary target take 2.4 million.
MAX_CELLS = 1 << 23
IMAGE_COLUMNS = 785
IMAGE_HEADER_CHARS = 1 << 16
TABLE_FORMATS = ("csv", "parquet", "excel")
# A table file's format by how its name ends (`table_format`); a CSV's separator is read off its first
# lines (`csv_separator`), since Excel writes ';' where the decimal mark is a comma.
TABLE_SUFFIXES = {".csv": "csv", ".csv.gz": "csv", ".tsv": "csv", ".tsv.gz": "csv", ".xlsx": "excel",
                  ".xls": "excel", ".parquet": "parquet"}
TABLE_FILES = ("CSV (.csv or .tsv, gzipped or not; cells separated by commas, semicolons, tabs or |), "
               "Excel (.xlsx or .xls, the first sheet) or Parquet (.parquet)")
SEPARATORS = ",;\t|"
SDV_VERSION, SDV_NUMERICAL, SDV_DATETIME = "SINGLE_TABLE_V1", "numerical", "datetime"
DAY, MONTH, YEAR = "day", "month", "year"
# The date formats a draft tries, each with the granularity its fields give (a datetime's time of
# day is dropped: a date's domain is days at the finest).
DATE_FORMATS = {"%Y-%m-%d": DAY, "%Y-%m-%d %H:%M:%S": DAY, "%Y-%m-%dT%H:%M:%S": DAY, "%d/%m/%Y": DAY,
                "%m/%d/%Y": DAY, "%d.%m.%Y": DAY, "%Y/%m/%d": DAY, "%Y%m%d": DAY, "%Y-%m": MONTH, "%b-%Y": MONTH,
                "%b %Y": MONTH, "%m/%Y": MONTH}
EPOCH = pd.Timestamp("1970-01-01")


class SchemaError(DataError):
    """A schema that cannot describe a table: named by its column and what is wrong."""


@dataclass(frozen=True)
class Column:
    """One column of the table. A categorical column's codes are its categories in order, then
    `other` (a value the schema does not list, if the schema maps such values there), then missing
    (if allowed). A numeric column's codes are its bins (`edges`, the last bin closed), then missing;
    `clip` maps a value outside the bounds to the nearest bin instead of refusing it, and `scale`
    "log" cuts a bin above 0 into log-spaced fine cells (`fine_edges`) and, decoded without them,
    draws a value log-uniformly inside it (a long tail's bins are wide).
    A date column is a numeric one of whole periods (days, months or years since 1970) written in its
    `date_format`. An `id` column and an `ignore` column are not modelled: an id is written afresh in the synthetic
    table (1, 2, ...), and with `unit` each node keeps one row per id, so that DP protects a person
    of several rows, not a row; an ignored column (free text, say) is left out."""

    name: str
    kind: str
    categories: tuple[str, ...] = ()
    edges: tuple[float, ...] = ()
    integer: bool = False
    missing: bool = True
    other: bool = False
    clip: bool = True
    scale: str = LINEAR
    unit: bool = False
    date_format: str = ""
    granularity: str = DAY

    @property
    def modelled(self) -> bool:
        return self.kind in (CATEGORICAL, NUMERIC, DATE)

    @property
    def size(self) -> int:
        values = len(self.categories) + self.other if self.kind == CATEGORICAL else len(self.edges) - 1
        return values + self.missing

    @property
    def missing_code(self) -> int:
        return self.size - 1

    @property
    def whole(self) -> bool:
        """Whether the column's values are whole numbers (an integer column, a date's periods)."""
        return self.integer or self.kind == DATE

    @cached_property
    def fine_edges(self) -> np.ndarray:
        """The edges of the column's fine histogram, public as the bins are (they follow from the edges
        alone): each whole number of a whole-number column of at most FINE_WHOLE of them (its top one
        too: a cell [k, k + 1) each), else each bin cut in FINE_SPLIT equal parts (log-spaced for a log
        column's bin above 0; whole numbers for a whole-number column, its top one's cell added). The
        bins' own edges are among them, so that each fine cell lies inside one bin. Computed once a
        column: a release sizes its cliques by them, thousands of times."""
        edges = np.asarray(self.edges, dtype=np.float64)
        low, high = edges[0], edges[-1]
        if self.whole and high - low <= FINE_WHOLE:
            inner = np.arange(math.ceil(low), math.floor(high) + 2, dtype=np.float64)
        else:
            inner = np.concatenate([np.geomspace(a, b, FINE_SPLIT + 1) if self.scale == LOG and a > 0 else
                                    np.linspace(a, b, FINE_SPLIT + 1) for a, b in zip(edges[:-1], edges[1:])])
            if self.whole:
                inner = np.append(np.ceil(inner), math.floor(high) + 1)
        return np.unique(np.concatenate([edges, inner[inner >= low]]))

    @property
    def fine_size(self) -> int:
        """The cells of the fine histogram, missing included (so that they count every row)."""
        return len(self.fine_edges) - 1 + self.missing

    @property
    def fine_bins(self) -> np.ndarray:
        """The bin each fine cell lies in."""
        cells = self.fine_edges[:-1]
        return np.clip(np.searchsorted(np.asarray(self.edges), cells, side="right") - 1, 0, len(self.edges) - 2)

    @property
    def other_code(self) -> int:
        return len(self.categories)

    def to_json(self) -> dict[str, Any]:
        if self.kind == ID:
            return {"name": self.name, "type": ID, "unit": self.unit}
        if self.kind == IGNORE:
            return {"name": self.name, "type": IGNORE}
        common = {"name": self.name, "type": self.kind, "missing": self.missing}
        if self.kind == CATEGORICAL:
            return {**common, "categories": list(self.categories), "other": self.other}
        if self.kind == DATE:
            return {**common, "format": self.date_format, "granularity": self.granularity,
                    "edges": list(format_periods(np.asarray(self.edges), self)), "clip": self.clip}
        scale = {"scale": LOG} if self.scale == LOG else {}
        return {**common, "edges": list(self.edges), "integer": self.integer, "clip": self.clip, **scale}


@dataclass(frozen=True)
class Schema:
    """The public domain of a table: every column of its file in order (`fields`), the columns the
    synthesizer models among them (`columns`, `names`), and the column TSTR predicts."""

    fields: tuple[Column, ...]
    target: str | None = None
    columns: tuple[Column, ...] = field(init=False)
    names: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "columns", tuple(column for column in self.fields if column.modelled))
        object.__setattr__(self, "names", tuple(column.name for column in self.columns))

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(column.size for column in self.columns)

    @property
    def fine(self) -> tuple[int, ...]:
        """The modelled columns (their places in `columns`) that have a fine histogram: the numeric and
        date ones."""
        return tuple(index for index, column in enumerate(self.columns) if column.kind != CATEGORICAL)

    @property
    def fine_shape(self) -> tuple[int, ...]:
        return tuple(self.columns[index].fine_size for index in self.fine)

    def column(self, name: str) -> Column:
        return self.columns[self.names.index(name)]

    def to_json(self) -> dict[str, Any]:
        return {"columns": [column.to_json() for column in self.fields],
                **({"target": self.target} if self.target else {})}

    def text(self) -> str:
        """The canonical JSON text: what travels in a task's options and what every party hashes alike."""
        return json.dumps(self.to_json(), sort_keys=True, separators=(",", ":"))

    def to_sdv(self) -> dict[str, Any]:
        """SDV's single-table metadata of the synthetic table (SDV's `sdmetrics` and SDGym read it), with
        the public domain as `range_values` and `range_min` / `range_max`; ignored columns are not in it."""
        columns: dict[str, dict[str, Any]] = {}
        for column in self.fields:
            if column.kind == ID:
                columns[column.name] = {"sdtype": ID}
            elif column.kind == CATEGORICAL:
                columns[column.name] = {"sdtype": CATEGORICAL, "range_values": [*column.categories, *["other"] * column.other]}
            elif column.kind == NUMERIC:
                columns[column.name] = {"sdtype": SDV_NUMERICAL, "computer_representation": "Int64" if column.integer
                                        else "Float", "range_min": column.edges[0], "range_max": column.edges[-1]}
            elif column.kind == DATE:
                low, high = format_periods(np.asarray(column.edges)[[0, -1]], column)
                columns[column.name] = {"sdtype": SDV_DATETIME, "datetime_format": column.date_format,
                                        "range_min": low, "range_max": high}
        keys = [column.name for column in self.fields if column.kind == ID and not column.unit]
        return {"METADATA_SPEC_VERSION": SDV_VERSION, "columns": columns, **({"primary_key": keys[0]} if keys else {})}

    @classmethod
    def from_sdv(cls, value: Mapping[str, Any], target: str | None = None) -> "Schema":
        """SDV's single-table metadata (or a multi-table one of one table) as a schema. DP needs the domain
        public, so each column states it: `range_values` for a categorical, ordinal or boolean column (a
        boolean's default: False, True), `range_min` and `range_max` for a numerical one, cut in DRAFT_BINS
        equal widths (whole numbers where `computer_representation` is an integer type); `id` columns are
        ids; a `datetime` column with its `datetime_format` and its bounds as dates in it is a date column."""
        if "tables" in value:
            found = value["tables"]
            if not isinstance(found, Mapping) or len(found) != 1:
                raise SchemaError("SDV metadata of several tables: ppsdg synthesizes one table at a time")
            value = next(iter(found.values()))
        if not isinstance(value, Mapping) or not isinstance(value.get("columns"), Mapping):
            raise SchemaError("SDV metadata has a mapping 'columns' of each column's name to its sdtype")
        return cls.from_json({"columns": [_sdv_column(str(name), meta) for name, meta in value["columns"].items()],
                              **({"target": target} if target else {})})

    @classmethod
    def from_json(cls, value: Any) -> "Schema":
        """A schema from its JSON object, checked whole: every problem names its column. SDV's metadata
        (its 'columns' a mapping) is read as such (`from_sdv`)."""
        if isinstance(value, Mapping) and (isinstance(value.get("columns"), Mapping) or "tables" in value):
            return cls.from_sdv(value)
        if not isinstance(value, Mapping) or not isinstance(value.get("columns"), list):
            raise SchemaError("a schema is a JSON object with a list 'columns'")
        unknown = sorted(set(value) - {"columns", "target"})
        if unknown:
            raise SchemaError(f"unknown schema key(s): {shown(unknown)}")
        entries = value["columns"]
        if not 1 <= len(entries) <= MAX_COLUMNS:
            raise SchemaError(f"a schema has 1 to {MAX_COLUMNS} columns, this one {len(entries)}")
        columns = tuple(_column(entry, index) for index, entry in enumerate(entries))
        names = [column.name for column in columns]
        doubled = sorted({name for name in names if names.count(name) > 1})
        if doubled:
            raise SchemaError(f"column(s) named twice: {shown(doubled)}")
        schema = cls(columns, value.get("target"))
        if not schema.columns:
            raise SchemaError(f"no column to model: every column is '{ID}' or '{IGNORE}'")
        units = [column.name for column in columns if column.unit]
        if len(units) > 1:
            raise SchemaError(f"more than one 'unit' id column ({shown(units)}): one person, one id")
        if schema.target is not None and schema.target not in schema.names:
            raise SchemaError(f"target {schema.target!r} is not a modelled column of the schema")
        return schema

    @classmethod
    def from_text(cls, text: str) -> "Schema":
        """A schema from its JSON text, of at most MAX_SCHEMA_BYTES, each object's keys distinct: JSON
        readers differ on which value of a doubled key they keep, and every party must read one schema."""
        if len(text) > MAX_SCHEMA_BYTES:
            raise SchemaError(f"the schema is {len(text)} characters long, more than {MAX_SCHEMA_BYTES}")
        try:
            value = json.loads(text, object_pairs_hook=_distinct_keys)
        except SchemaError:
            raise
        except (ValueError, RecursionError) as error:  # not JSON, a number of over 4,300 digits, nested too deep
            raise SchemaError(f"the schema is not JSON: {error}") from None
        return cls.from_json(value)

    @classmethod
    def read(cls, path: str | Path) -> "Schema":
        try:
            text = read_small(Path(path), MAX_SCHEMA_BYTES).decode("utf-8")
        except DataError as error:
            raise SchemaError(f"schema {error}") from None
        except UnicodeDecodeError as error:
            raise SchemaError(f"schema {path}: not UTF-8 text: {error}") from None
        try:
            return cls.from_text(text)
        except SchemaError as error:
            raise SchemaError(f"schema {path}: {error}") from error


def _distinct_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object of the schema (json.loads' object_pairs_hook), refused if it names a key twice."""
    doubled = sorted(key for key, count in Counter(key for key, _ in pairs).items() if count > 1)
    if doubled:
        raise SchemaError(f"the schema names the key(s) {shown(doubled)} twice in one object: which value "
                          "counts would depend on the reader")
    return dict(pairs)


def shown(names: Sequence[Any]) -> str:
    """The first SHOWN_NAMES names, for a message that says which there are: each cut at 80 characters,
    its control characters escaped, so that a hostile file's names neither fill the terminal nor break
    the message's one line."""
    texts = [CONTROL.sub(lambda found: repr(found[0])[1:-1], str(name)[:80]) for name in names[:SHOWN_NAMES]]
    return ", ".join(texts) + (", ..." if len(names) > SHOWN_NAMES else "")


def _date_column(name: str, entry: Mapping[str, Any], flags: Mapping[str, bool]) -> Column:
    """A date column's entry: its format, its granularity, and its edges as dates in that format."""
    form, granularity, edges = entry.get("format"), entry.get("granularity", DAY), entry.get("edges")
    if not isinstance(form, str) or not form or granularity not in (DAY, MONTH, YEAR):
        raise SchemaError(f"column {name!r}: a date has a 'format' (strftime's, such as '%Y-%m-%d') and a "
                          f"'granularity' of {DAY!r}, {MONTH!r} or {YEAR!r}")
    column = Column(name, DATE, date_format=form, granularity=granularity, integer=True,
                    missing=flags["missing"], clip=flags["clip"])
    if not isinstance(edges, list) or not 2 <= len(edges) <= MAX_CATEGORIES + 1 or \
            not all(isinstance(edge, str) for edge in edges):
        raise SchemaError(f"column {name!r}: 'edges' must be 2 to {MAX_CATEGORIES + 1} dates in {form!r}")
    return replace(column, edges=tuple(float(p) for p in _edge_periods(name, edges, column)))


def _edge_periods(name: str, dates: list[str], column: Column) -> np.ndarray:
    """A date column's edges as increasing periods that it writes back as dates (the synthetic table's
    dates and the schema's own text are written with `format_periods`): a format pandas cannot read,
    or dates strftime cannot write, is refused by name."""
    try:
        periods = parse_periods(pd.Series(dates), column)
        if not (np.isnan(periods).any() or (np.diff(periods) <= 0).any()):
            format_periods(periods, column)
            return periods
    except (ValueError, OverflowError, NotImplementedError) as error:
        raise SchemaError(f"column {name!r}: dates in {column.date_format!r} cannot be read or written: "
                          f"{error}") from None
    raise SchemaError(f"column {name!r}: 'edges' must be increasing dates in {column.date_format!r}, one "
                      f"{column.granularity} apart at least")


def granularity_of(form: str) -> str:
    """The finest field a date format writes: a day, a month or a year."""
    return DAY if "%d" in form or "%j" in form else MONTH if any(f in form for f in ("%m", "%b", "%B")) else YEAR


def parse_periods(values: pd.Series, column: Column) -> np.ndarray:
    """Dates written in the column's format as whole periods since 1970 (NaN where one does not parse)."""
    stamps = pd.to_datetime(values.astype(str).str.strip(), format=column.date_format, errors="coerce")
    stamps = pd.Series(stamps)
    if column.granularity == DAY:
        periods = (stamps - EPOCH).dt.days
    elif column.granularity == MONTH:
        periods = (stamps.dt.year - 1970) * 12 + stamps.dt.month - 1
    else:
        periods = stamps.dt.year.astype("float64")
    return periods.to_numpy(dtype=np.float64, na_value=np.nan)


def format_periods(periods: np.ndarray, column: Column) -> list[str]:
    """Whole periods since 1970 written as dates in the column's format."""
    whole = np.asarray(periods, dtype=np.int64)
    if column.granularity == DAY:
        stamps = EPOCH + pd.to_timedelta(whole, unit="D")
    elif column.granularity == MONTH:
        stamps = pd.to_datetime({"year": 1970 + whole // 12, "month": whole % 12 + 1, "day": 1})
    else:
        stamps = pd.to_datetime({"year": whole, "month": 1, "day": 1})
    return [stamp.strftime(column.date_format) for stamp in pd.Series(stamps)]


def _sdv_column(name: str, meta: Any) -> dict[str, Any]:
    """One column of SDV's metadata as a ppsdg schema entry (checked by `_column` after)."""
    sdtype = meta.get("sdtype") if isinstance(meta, Mapping) else None
    if sdtype == ID:
        return {"name": name, "type": ID}
    if sdtype in (CATEGORICAL, "ordinal", "boolean"):
        values = meta.get("range_values", ["False", "True"] if sdtype == "boolean" else None)
        if not isinstance(values, list) or not all(isinstance(v, (str, int, float)) for v in values):
            raise SchemaError(f"column {name!r}: SDV metadata needs its public 'range_values', a list of texts, "
                              "numbers or booleans (ppsdg's domain)")
        texts = [str(v) for v in values if v != "other"]
        return {"name": name, "type": CATEGORICAL, "categories": texts, "other": "other" in values}
    if sdtype == SDV_NUMERICAL:
        low, high = meta.get("range_min"), meta.get("range_max")
        if not (_finite(low) and _finite(high) and _finite(float(high) - float(low)) and low < high):
            raise SchemaError(f"column {name!r}: SDV metadata needs its public 'range_min' < 'range_max' "
                              "(ppsdg's domain)")
        # as floats: a whole number beyond int64 (JSON allows any) would make numpy's arrays of objects
        low, high = float(low), float(high)
        integer = str(meta.get("computer_representation", "Float")).lower().startswith(("int", "uint"))
        edges = whole_edges(low, high, DRAFT_BINS) if integer else np.linspace(low, high, DRAFT_BINS + 1).tolist()
        return {"name": name, "type": NUMERIC, "edges": [float(e) for e in edges], "integer": integer}
    if sdtype == SDV_DATETIME:
        form, low, high = (meta.get(key) for key in ("datetime_format", "range_min", "range_max"))
        if not all(isinstance(value, str) for value in (form, low, high)):
            raise SchemaError(f"column {name!r}: SDV metadata needs its 'datetime_format' and its public "
                              "'range_min' and 'range_max' as dates in that format (ppsdg's domain)")
        column = Column(name, DATE, date_format=form, granularity=granularity_of(form))
        try:
            periods = _edge_periods(name, [low, high], column)
        except SchemaError:
            raise SchemaError(f"column {name!r}: 'range_min' < 'range_max' must be dates in {form!r}, a format "
                              "pandas reads and writes") from None
        edges = whole_edges(periods[0], periods[1], DRAFT_BINS)
        return {"name": name, "type": DATE, "format": form, "granularity": column.granularity,
                "edges": list(format_periods(np.asarray(edges), column))}
    raise SchemaError(f"column {name!r}: SDV sdtype {sdtype!r} is not one ppsdg reads (id, categorical, ordinal, "
                      "boolean, numerical, datetime)")


def whole_edges(low: float, high: float, bins: int) -> list[float]:
    """`bins` equal widths between `low` and `high`, their edges rounded to whole numbers (whole values,
    or whole periods of a date), fewer where rounding makes two edges one."""
    return sorted({float(edge) for edge in np.linspace(low, high, bins + 1).round()})


def _column(entry: Any, index: int) -> Column:
    """One column entry of a schema, checked."""
    if not isinstance(entry, Mapping) or not isinstance(entry.get("name"), str) or not entry["name"]:
        raise SchemaError(f"column {index}: needs a non-empty text 'name'")
    name = entry["name"]
    kind = entry.get("type") if isinstance(entry.get("type"), str) else None
    allowed = {"name", "type"} | {CATEGORICAL: {"missing", "categories", "other"},
                                  NUMERIC: {"missing", "edges", "integer", "clip", "scale"},
                                  DATE: {"missing", "edges", "clip", "format", "granularity"},
                                  ID: {"unit"}}.get(kind, set())
    unknown = sorted(set(entry) - allowed)
    if kind not in KINDS or unknown:
        problem = f"unknown key(s) {shown(unknown)}" if kind in KINDS else \
            f"'type' must be one of {', '.join(map(repr, KINDS))}"
        raise SchemaError(f"column {name!r}: {problem}")
    flags = {key: entry.get(key, default) for key, default in
             (("missing", True), ("other", False), ("integer", False), ("clip", True), ("unit", False))}
    if not all(isinstance(flag, bool) for flag in flags.values()):
        raise SchemaError(f"column {name!r}: 'missing', 'other', 'integer', 'clip' and 'unit' are true or false")
    if kind in (ID, IGNORE):
        return Column(name, kind, unit=flags["unit"])
    if kind == DATE:
        return _date_column(name, entry, flags)
    if kind == CATEGORICAL:
        categories = entry.get("categories")
        if (not isinstance(categories, list) or not 1 <= len(categories) <= MAX_CATEGORIES
                or not all(isinstance(c, str) for c in categories) or len(set(categories)) != len(categories)):
            raise SchemaError(f"column {name!r}: 'categories' must be 1 to {MAX_CATEGORIES} distinct texts")
        return Column(name, kind, categories=tuple(categories), missing=flags["missing"], other=flags["other"])
    edges = entry.get("edges")
    if not (isinstance(edges, list) and 2 <= len(edges) <= MAX_CATEGORIES + 1 and all(map(_finite, edges))
            and all(float(a) < float(b) for a, b in zip(edges, edges[1:]))
            and _finite(float(edges[-1]) - float(edges[0]))):
        raise SchemaError(f"column {name!r}: 'edges' must be 2 to {MAX_CATEGORIES + 1} finite, increasing numbers "
                          "(as floats), their span finite too")
    if flags["integer"] and not all(abs(float(edge)) <= MAX_WHOLE for edge in edges):
        raise SchemaError(f"column {name!r}: an integer column's 'edges' must lie within +-2^53, the whole numbers a "
                          "float holds exactly")
    scale = entry.get("scale", LINEAR)
    if scale not in (LINEAR, LOG):
        raise SchemaError(f"column {name!r}: 'scale' must be {LINEAR!r} or {LOG!r}")
    return Column(name, kind, edges=tuple(float(e) for e in edges), integer=flags["integer"],
                  missing=flags["missing"], clip=flags["clip"], scale=scale)


def _finite(value: Any) -> bool:
    """A JSON number that is a finite float: not a boolean, and not a whole number of 400 digits either,
    which float() cannot hold."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(float(value))
    except OverflowError:
        return False


def marginal_cells(schema: Schema, target: str) -> int:
    """The cells of every marginal a table run may measure (the marginals synthesizer's `Layout`): each
    column's, each pair's, each other pair's with the target, and each fine histogram, in exact whole
    numbers."""
    sizes = [column.size for column in schema.columns]
    at = schema.names.index(target)
    others = sizes[:at] + sizes[at + 1:]
    return sum(sizes) + _pair_cells(sizes) + sizes[at] * _pair_cells(others) + sum(schema.fine_shape)


def _pair_cells(sizes: Sequence[int]) -> int:
    """The cells of every pair of columns of these sizes."""
    return (sum(sizes) ** 2 - sum(size * size for size in sizes)) // 2


def check_cells(schema: Schema, target: str) -> None:
    """Refuse, before a release is allocated, a schema whose marginals are too large to hold (MAX_CELLS):
    10^3 categories in each of 100 columns would make each node's release tens of terabytes."""
    cells = marginal_cells(schema, target)
    if cells > MAX_CELLS:
        raise SchemaError(f"the schema's marginals hold {cells:,} cells (each column, each pair of columns and each "
                          f"pair with the target {target!r}), more than {MAX_CELLS:,}: give its columns fewer "
                          "categories or bins, or model fewer columns")


def is_table_path(source: str) -> bool:
    """Whether --data names a table file (or several, comma-separated) rather than digit images: an
    Excel or Parquet file, or a CSV (gzipped or not) whose header is not the images' node layout (a
    label and 784 pixel columns). A CSV that is no regular file (a FIFO, a device), or a gzipped one
    that does not unpack, is left to `read_table`, which says why."""
    first = Path(source.split(",")[0].strip())
    kind = table_format(first)
    if kind != "csv" or not first.is_file():
        return kind not in (None, "csv") or (kind == "csv" and first.exists())
    try:
        opener = gzip.open if first.name.lower().endswith(".gz") else open
        with opener(first, "rt", encoding="utf-8-sig", errors="replace") as handle:
            header = handle.readline(IMAGE_HEADER_CHARS)
    except (EOFError, zlib.error, gzip.BadGzipFile):
        return True
    except OSError:
        return False
    return header.count(",") != IMAGE_COLUMNS - 1


def table_format(path: str | Path) -> str | None:
    """A table file's format (one of TABLE_FORMATS) by how its name ends; None for any other file."""
    name = Path(path).name.lower()
    return next((kind for suffix, kind in TABLE_SUFFIXES.items() if name.endswith(suffix)), None)


def csv_separator(path: str | Path) -> str:
    """The separator of a CSV file: of SEPARATORS, the one that splits its header into the most cells and
    its first row into as many; a comma where none splits them alike."""
    return _separator(_csv_sample(Path(path)))


def _csv_sample(path: Path) -> str:
    """The first IMAGE_HEADER_CHARS characters of a CSV, gunzipped, its line ends made one (a file saved
    with carriage returns alone reads as lines)."""
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8-sig", errors="replace") as handle:
        return handle.read(IMAGE_HEADER_CHARS)


def _separator(sample: str) -> str:
    try:
        widths = {separator: {len(row) for row in islice(filter(None, csv.reader(
            io.StringIO(sample), delimiter=separator, skipinitialspace=True)), 2)} for separator in SEPARATORS}
    except csv.Error as error:
        raise DataError(f"cannot read it as CSV: {error}") from None
    even = [separator for separator, found in widths.items() if len(found) == 1 and min(found) > 1]
    return max(even, key=lambda separator: min(widths[separator]), default=",")


def read_table(path: str | Path, kind: str | None = None, sheet: str | None = None) -> pd.DataFrame:
    """A table file as text cells (CSV with the separator `csv_separator` finds, gzipped CSV, an Excel
    `sheet`: never pandas' guess of a type, which turns '007' into 7 and 'true' into True) or typed
    columns (Parquet); empty cells are missing. `kind` (one of TABLE_FORMATS) is the file's format where
    its name does not say it (a node's database); a file of another name is refused with those it may have.

    The file comes from someone else (a node's owner, a shared file): it must be a regular file of at
    most MAX_TABLE_BYTES, unpacking to no more, of at most MAX_COLUMNS distinct columns (the most a
    schema describes); whatever its parser meets is a DataError that names the file."""
    path = Path(path)
    if path.is_dir():
        raise DataError(f"{path} is a folder, not a table: name one of its files")
    regular_file(path, MAX_TABLE_BYTES)
    kind = kind or table_format(path)
    if kind is None:
        raise DataError(f"{path}: not a table file ppsdg reads: {TABLE_FILES}")
    reader = {"parquet": _read_parquet, "excel": _read_excel}.get(kind, _read_csv)
    try:
        frame = reader(path, sheet)
        _check_columns([str(name) for name in frame.columns])
    except DataError as error:
        raise DataError(f"{path}: {error}") from None
    except UnicodeDecodeError as error:
        raise DataError(f"{path}: not UTF-8 text: save it as CSV in UTF-8 (Excel: 'CSV UTF-8')") from error
    except Exception as error:  # a damaged file raises whatever its parser meets: zlib, zipfile, XML, pyarrow
        raise DataError(f"{path}: cannot read it as a table: {' '.join(str(error).split())[:300]}") from error
    return frame


def regular_file(path: Path, limit: int) -> None:
    """A file read whole must be a regular file (/dev/zero would be read for ever, a FIFO waited on for
    ever) of at most `limit` bytes: a DataError names what it is instead."""
    try:
        status = path.stat()
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except OSError as error:
        raise DataError(f"{path}: cannot read it: {error.strerror}") from None
    if not stat.S_ISREG(status.st_mode):
        what = "a folder" if stat.S_ISDIR(status.st_mode) else "not a regular file (a device, a FIFO or a socket)"
        raise DataError(f"{path}: {what}: name a file")
    if status.st_size > limit:
        raise DataError(f"{path}: {status.st_size} bytes, more than {limit}")


def read_small(path: Path, limit: int) -> bytes:
    """The bytes of a regular file of at most `limit` of them (`regular_file`), read no further even if
    the file grows meanwhile."""
    regular_file(path, limit)
    try:
        with path.open("rb") as handle:
            blob = handle.read(limit + 1)
    except OSError as error:
        raise DataError(f"{path}: cannot read it: {error.strerror}") from None
    if len(blob) > limit:
        raise DataError(f"{path}: more than {limit} bytes")
    return blob


def _check_columns(names: Sequence[str], cut: bool = False) -> None:
    """A table's header (its first names, if `cut`): at most MAX_COLUMNS columns (an images CSV, a label
    and 784 pixels, has 785), each named once (pandas would read a second 'age' as 'age.1', silently)."""
    if len(names) > MAX_COLUMNS:
        images = f": images (a label and {IMAGE_COLUMNS - 1} pixels) are not a table" \
            if len(names) == IMAGE_COLUMNS and not cut else ""
        raise DataError(f"{'over ' if cut else ''}{len(names)} columns, more than the {MAX_COLUMNS} a schema "
                        f"describes{images}")
    doubled = sorted(name for name, count in Counter(names).items() if count > 1)
    if doubled:
        raise DataError(f"column(s) named twice: {shown(doubled)}")


def _read_csv(path: Path, sheet: str | None = None) -> pd.DataFrame:
    """A CSV as text cells, its header (100,000 columns take pandas seconds) and its bytes
    (`_check_bytes`) checked before pandas parses it; a row of more cells than the header is refused
    (pandas would take its first cells for row labels and shift the rest)."""
    sample = _csv_sample(path)
    separator = _separator(sample)
    rows = filter(None, csv.reader(io.StringIO(sample), delimiter=separator, skipinitialspace=True))
    header = next(rows, [])
    cut = "\n" not in sample and len(sample) == IMAGE_HEADER_CHARS
    _check_columns(header[:-1] if cut else header, cut)
    _check_bytes(path)
    frame = pd.read_csv(path, sep=separator, dtype=str, keep_default_na=False, na_values=[""],
                        skipinitialspace=True, compression="infer", encoding="utf-8")
    if not isinstance(frame.index, pd.RangeIndex):
        raise DataError(f"rows with more cells than the header ({frame.shape[1]})")
    return frame


def _check_bytes(path: Path) -> None:
    """A CSV's bytes, gunzipped if it is, read piece by piece before pandas parses them, in constant
    memory: at most MAX_TABLE_BYTES (a gzip bomb is refused, never unpacked whole), and no NUL byte
    (pandas' parser ends a cell at one, silently: '\\x0042' would read as a missing cell)."""
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    read, lines = 0, 1
    with opener(path, "rb") as stream:
        while piece := stream.read(UNPACK_PIECE):
            if b"\x00" in piece:
                line = lines + piece.count(b"\n", 0, piece.index(b"\x00"))
                raise DataError(f"a NUL byte on line {line}: a text file holds none (a binary file, or text not "
                                "in UTF-8?)")
            read, lines = read + len(piece), lines + piece.count(b"\n")
            if read > MAX_TABLE_BYTES:
                raise DataError(f"more than {MAX_TABLE_BYTES} bytes once unpacked")


def _read_excel(path: Path, sheet: str | None) -> pd.DataFrame:
    """A sheet as text cells. An .xlsx is a zip of XML whose members are unpacked no further than their
    declared sizes (zipfile stops there): those above MAX_TABLE_BYTES in all are refused unread."""
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            unpacked = sum(member.file_size for member in archive.infolist())
        if unpacked > MAX_TABLE_BYTES:
            raise DataError(f"a workbook of {unpacked} bytes once unpacked, more than {MAX_TABLE_BYTES}")
    return pd.read_excel(path, sheet_name=sheet or 0, dtype=str, keep_default_na=False, na_values=[""])


def _read_parquet(path: Path, sheet: str | None = None) -> pd.DataFrame:
    """Typed columns, checked from the file's footer before any page is unpacked: distinct names, flat
    types (`_flat`), and no more cells than a CSV of MAX_TABLE_BYTES holds (two bytes a cell, a
    character and a separator), then every value (text that is not UTF-8). Rows are numbered from 0, as
    a CSV's, whatever index pandas stored."""
    from pyarrow import parquet

    with parquet.ParquetFile(path) as file:
        schema, rows = file.schema_arrow, file.metadata.num_rows
    _check_columns(schema.names)
    nested = [field.name for field in schema if not _flat(field.type)]
    if nested:
        raise DataError(f"column(s) {shown(nested)} hold lists, structures, maps or bytes, not text, numbers or "
                        "dates: flatten them into columns of their own")
    if rows * len(schema.names) > MAX_TABLE_BYTES // 2:
        raise DataError(f"{rows} rows of {len(schema.names)} columns, more cells than a CSV of {MAX_TABLE_BYTES} "
                        "bytes holds")
    table = parquet.read_table(path)
    table.validate(full=True)  # a damaged text column is refused here, not when pandas first compares it
    return table.to_pandas().reset_index(drop=True)


def _flat(kind: Any) -> bool:
    """A Parquet (Arrow) type whose values are cells of a table: text, numbers, booleans, dates, times of
    day, nothing; a dictionary of such values."""
    from pyarrow import types

    if types.is_dictionary(kind):
        return _flat(kind.value_type)
    return any(check(kind) for check in (types.is_string, types.is_large_string, types.is_string_view,
                                          types.is_integer, types.is_floating, types.is_boolean, types.is_null,
                                          types.is_decimal, types.is_date, types.is_timestamp))


def encode(frame: pd.DataFrame, schema: Schema, fine: bool = False) -> tuple[np.ndarray, dict[str, int]]:
    """A table's modelled columns as integer codes (rows x columns) under the schema, and how many
    cells of each column were mapped (to the `other` or missing bucket, or clipped into the bounds)
    or, for a `unit` id, how many rows were left out (each id after its first row). With `fine`, each
    fine histogram's cell follows (`Schema.fine`, missing its last cell): rows x (columns + fine).

    Nothing else is dropped: a cell the schema can neither hold nor map is a DataError that names
    its row (0-based, header excluded) and column, never the value, which may be private.
    """
    expected = [column.name for column in schema.fields]
    missing = [name for name in expected if name not in frame.columns]
    extra = [str(name) for name in frame.columns if name not in expected]
    if missing or extra:
        parts = ([f"missing column(s) {shown(missing)}"] if missing else []) + \
                ([f"column(s) not in the schema: {shown(extra)}"] if extra else [])
        raise DataError(f"the table does not fit the schema: {'; '.join(parts)}")
    mapped = {}
    for unit in (column for column in schema.fields if column.unit):
        ids = frame[unit.name]
        if ids.isna().any():
            raise _cell_error(ids, unit, ids.isna().to_numpy(), "an id (a person's rows are told apart by it)")
        repeated = ids.duplicated().to_numpy()
        mapped[unit.name] = int(repeated.sum())
        frame = frame[~repeated]
    codes = np.empty((len(frame), len(schema.columns) + len(schema.fine) * fine), dtype=np.int64)
    for index, column in enumerate(schema.columns):
        codes[:, index], mapped[column.name] = _encode_column(frame[column.name], column, column.edges)
    for place, index in enumerate(schema.fine if fine else ()):
        column = schema.columns[index]
        codes[:, len(schema.columns) + place] = _encode_column(frame[column.name], column, column.fine_edges)[0]
    return codes, {name: count for name, count in mapped.items() if count}


def _encode_column(values: pd.Series, column: Column, edges: Sequence[float]) -> tuple[np.ndarray, int]:
    """A column's codes, a number's by `edges` (the column's bins, or its fine histogram's cells)."""
    absent = values.isna().to_numpy()
    if column.kind == CATEGORICAL:
        text = values.astype(str).str.strip().to_numpy()
        lookup = {category: code for code, category in enumerate(column.categories)}
        codes = np.array([lookup.get(value, -1) for value in text], dtype=np.int64)
        unknown = (codes < 0) & ~absent
        if unknown.any() and not column.other:
            raise _cell_error(values, column, unknown, "a category the schema does not list (and no 'other' bucket)")
        codes[unknown] = column.other_code
        mapped = int(unknown.sum())
    else:
        date = column.kind == DATE
        numbers = parse_periods(values, column) if date else pd.to_numeric(values, errors="coerce").to_numpy(
            dtype=np.float64)
        unreadable = np.isnan(numbers) & ~absent | np.isinf(numbers)
        if unreadable.any():
            raise _cell_error(values, column, unreadable, f"a date in {column.date_format!r}" if date else "a number")
        low, high = column.edges[0], column.edges[-1]
        outside = ~absent & ((numbers < low) | (numbers > high))
        if outside.any() and not column.clip:
            raise _cell_error(values, column, outside, f"a number in [{low:g}, {high:g}]")
        clipped = np.clip(np.nan_to_num(numbers, nan=low), low, high)
        cells = len(edges) - 1
        codes = np.clip(np.searchsorted(np.asarray(edges), clipped, side="right") - 1, 0, cells - 1)
        mapped = int(outside.sum())
    if absent.any():
        if not column.missing:
            raise _cell_error(values, column, absent, "a value (the schema allows no missing cell)")
        codes[absent] = column.missing_code if column.kind == CATEGORICAL else len(edges) - 1
    return codes, mapped


class CellError(DataError):
    """A cell the schema can neither hold nor map: named by the first such row (its position among the
    rows encoded, and its `label` in the frame's index, which a caller can turn into a line of the
    owner's file), how many more there are, and the column; never by the value, which may be private."""

    def __init__(self, row: int, label: Any, more: int, column: str, expected: str) -> None:
        self.label, self.more, self.column, self.expected = label, more, column, expected
        super().__init__(self.at(f"row {row}"))

    def at(self, place: str) -> str:
        """The message with the first row named as `place`."""
        more = f" and {self.more} more row(s)" if self.more else ""
        return f"{place}{more}, column {self.column!r}: expected {self.expected}"


def _cell_error(values: pd.Series, column: Column, bad: np.ndarray, expected: str) -> CellError:
    rows = np.flatnonzero(bad)
    return CellError(int(rows[0]), values.index[rows[0]], len(rows) - 1, column.name, expected)


def decode(codes: np.ndarray, schema: Schema, rng: np.random.Generator,
           fine: Mapping[int, np.ndarray] | None = None) -> pd.DataFrame:
    """Codes back to the table's columns: a category as its text (`other` as 'other'), a numeric bin
    as a value drawn inside it (`_numeric_values`, or `_fine_values` where `fine` holds weights of the
    column's fine histogram cells, by its place in `columns`), missing as empty, an id as a fresh
    number per record (1, 2, ...); an ignored column is left out."""
    columns = {}
    modelled = {column.name: index for index, column in enumerate(schema.columns)}
    for column in schema.fields:
        if column.kind == ID:
            columns[column.name] = pd.Series(np.arange(1, len(codes) + 1))
        if column.name not in modelled:
            continue
        code = codes[:, modelled[column.name]]
        missing = code == column.missing_code if column.missing else np.zeros(len(code), dtype=bool)
        if column.kind == CATEGORICAL:
            labels = np.array(list(column.categories) + ["other"] * column.other + [""] * column.missing, dtype=object)
            values = pd.Series(labels[code], dtype=object)
            values[missing] = None
        else:
            bins = np.where(missing, 0, code)
            weights = (fine or {}).get(modelled[column.name])
            values = pd.Series(_numeric_values(bins, column, rng) if weights is None else
                               _fine_values(bins, column, weights, rng))
            values[missing] = np.nan
            if column.kind == DATE:
                values = pd.Series(format_periods(values.fillna(0).to_numpy(), column), dtype=object)
                values[missing] = None
            elif column.integer:
                values = values.astype("Int64")
        columns[column.name] = values
    return pd.DataFrame(columns)


def _numeric_values(bins: np.ndarray, column: Column, rng: np.random.Generator) -> np.ndarray:
    """A value inside each bin: uniform, or for `scale` "log" log-uniform where the bin lies above 0;
    whole numbers of the bin for an integer column (the last bin closed: its top edge included)."""
    edges = np.asarray(column.edges)
    low, high = edges[bins], edges[bins + 1]
    if column.integer:
        last = bins == len(edges) - 2
        low, high = np.ceil(low), np.where(last, np.floor(high) + 1, np.ceil(high))
        high = np.maximum(high, low + 1)
    share = rng.random(len(bins))
    if column.scale == LOG:
        logged = low > 0
        spread = np.log(np.where(logged, high, 2.0) / np.where(logged, low, 1.0))
        share = np.where(logged, np.expm1(share * spread) / np.expm1(spread), share)
    values = low + (high - low) * share
    return np.minimum(np.floor(values), high - 1) if column.integer else values


def _fine_values(bins: np.ndarray, column: Column, weights: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A value inside each bin drawn from the fine histogram: a fine cell of the bin in proportion to its
    weight (negative weights, noise, as 0; the bin's cells alike where none is positive), then a value
    uniform inside that cell, a whole number of it for a whole-number column."""
    edges, owner = column.fine_edges, column.fine_bins
    holds = np.ceil(edges[:-1]) < edges[1:] if column.whole else np.ones(len(owner), dtype=bool)
    cells = np.empty(len(bins), dtype=np.int64)
    for value in np.unique(bins):
        where, inside = np.flatnonzero(bins == value), np.flatnonzero((owner == value) & holds)
        if not len(inside):
            inside = np.flatnonzero(owner == value)
        mass = np.clip(weights[inside], 0.0, None)
        shares = mass / mass.sum() if mass.sum() > 0 else np.full(len(inside), 1 / len(inside))
        cells[where] = inside[rng.choice(len(inside), len(where), p=shares)]
    low, high, share = edges[cells], edges[cells + 1], rng.random(len(bins))
    if not column.whole:
        return low + (high - low) * share
    low, high = np.ceil(low), np.ceil(high)
    values = low + np.floor(share * np.maximum(high - low, 1.0))
    return np.clip(np.minimum(values, high - 1), math.ceil(column.edges[0]), math.floor(column.edges[-1]))


def draft(frame: pd.DataFrame, target: str | None = None, bins: int = DRAFT_BINS,
          keep: Sequence[str] = ()) -> Schema:
    """A first schema read off a data owner's own table, for the owner to review before publishing
    (`notes` says what to look at).

    - An identifier (`is_identifier`) is an `id`; a column without a value, or of text with more than
      DRAFT_MAX_CATEGORIES distinct values (free text, names), is ignored, unless named in `keep`:
      then its DRAFT_MAX_CATEGORIES most common values are its categories, the rest `other`.
    - Numbers with at most INTEGER_VALUES distinct values (0/1 flags, codes, a constant, 36 or 60
      months) are categories, written as in the file and ordered by value: a synthetic flag stays 0/1.
    - Other numbers are numeric: `bins` equal widths between the minimum and the maximum, or
      log-spaced ones where equal widths would put more than HEAVY_TAIL of the rows in the first bin;
      a value holding more than POINT_MASS of the rows (0 in a column of gains) gets a bin of its own.
    - Text that one of DATE_FORMATS reads whole, of more than INTEGER_VALUES distinct values, is a
      date column at the granularity its format gives, in `bins` equal spans between its first and
      last date.
    - Everything else is categorical, its categories sorted.

    The draft is checked as a published schema is (`Schema.from_json`): a table of no rows drafts none.
    """
    if target is not None and target not in frame.columns:
        raise DataError(f"--target {target!r} is not a column of the table")
    unknown = [name for name in keep if name not in frame.columns]
    if unknown:
        raise DataError(f"--keep: {shown(unknown)} not a column of the table")
    columns = [_draft_column(str(name), frame[name], bins, name in keep) for name in frame.columns]
    try:
        return Schema.from_json(Schema(tuple(columns), target).to_json())
    except SchemaError as error:
        raise SchemaError(f"the table drafts no schema that reads back: {error}") from None


def notes(frame: pd.DataFrame, schema: Schema) -> list[str]:
    """What the owner should know of a draft before publishing it: the dates' formats, the columns left
    out, and the ids whose persons have several rows (DP then protects a row, unless the id is the unit)."""
    said = []
    for column in schema.fields:
        if column.kind == DATE:
            said.append(f"column {column.name!r} is read as dates written {column.date_format!r} (check the "
                        "order of day and month), binned by the {column.granularity}")
        elif column.kind == IGNORE:
            said.append(f"column {column.name!r} is left out (free text, or no value): name it with --keep to "
                        "model its most common values")
        elif column.kind == ID:
            ids = frame[column.name].dropna()
            repeated = len(ids) - ids.nunique()
            unit = ("each node keeps one row per id ('unit': true), so DP protects a person" if column.unit else
                    "DP protects a row, not a person: set 'unit': true to keep one row per id")
            said.append(f"column {column.name!r} is an identifier, written afresh in the synthetic table" +
                        (f"; {repeated} of its {len(ids)} rows repeat an id: {unit}" if repeated else ""))
    return said


def is_identifier(name: str, present: pd.Series, numbers: pd.Series) -> bool:
    """A column that names records rather than describes them (ID_NAME, ID_DISTINCT)."""
    distinct = present.nunique()
    if len(present) < MIN_ID_ROWS or distinct < ID_DISTINCT * len(present):
        return False
    if ID_NAME.search(name):
        return True
    if numbers.isna().any():
        return distinct == len(present) and not present.astype(str).str.contains(r"\s").any()
    values = numbers.to_numpy(dtype=np.float64)
    whole = bool((values == np.round(values)).all())
    runs = 1 + int((values[1:] != values[:-1]).sum())
    return whole and distinct > INTEGER_VALUES and runs == distinct and bool((np.diff(values) >= 0).all())


def _draft_column(name: str, values: pd.Series, bins: int, keep: bool) -> Column:
    present = values.dropna()
    present = present.astype(str).str.strip() if present.dtype == object or pd.api.types.is_string_dtype(present) \
        else present
    numbers = pd.to_numeric(present, errors="coerce")
    # 'inf' and '1e999' are no numbers to `encode` either: a column holding them is text
    numbers = numbers.where(np.isfinite(numbers.to_numpy(dtype=np.float64, na_value=np.nan)))
    missing = bool(values.isna().any())
    distinct = present.astype(str).unique()
    if not len(present):
        return Column(name, IGNORE)
    if is_identifier(name, present, numbers):
        return Column(name, ID)
    if not numbers.isna().any():
        if len(distinct) <= INTEGER_VALUES:  # ordered by value: Parquet's True is 1, not the text 'True'
            value_of = dict(zip(present.astype(str), numbers.to_numpy(dtype=np.float64)))
            order = sorted(distinct, key=lambda value: (value_of[value], value))
            return Column(name, CATEGORICAL, categories=tuple(order), missing=missing)
        whole = bool((numbers == numbers.round()).all())
        edges, scale = _draft_edges(numbers.to_numpy(dtype=np.float64), bins, whole)
        return Column(name, NUMERIC, edges=edges, integer=whole, missing=missing, scale=scale)
    form = date_format(distinct) if len(distinct) > INTEGER_VALUES else None
    if form is not None:
        column = Column(name, DATE, date_format=form, granularity=DATE_FORMATS[form], integer=True, missing=missing)
        periods = parse_periods(present, column)
        return replace(column, edges=tuple(whole_edges(periods.min(), periods.max(), bins)))
    if len(distinct) > DRAFT_MAX_CATEGORIES:
        if not keep:
            return Column(name, IGNORE)
        common = present.astype(str).value_counts().index[:DRAFT_MAX_CATEGORIES]
        return Column(name, CATEGORICAL, categories=tuple(sorted(common)), missing=missing, other=True)
    return Column(name, CATEGORICAL, categories=tuple(sorted(distinct)), missing=missing)


def date_format(distinct: np.ndarray) -> str | None:
    """The first of DATE_FORMATS that reads every one of the values, if one does."""
    for form in DATE_FORMATS:
        parsed = pd.to_datetime(pd.Series(distinct), format=form, errors="coerce")
        if not parsed.isna().any():
            return form
    return None


def _draft_edges(numbers: np.ndarray, bins: int, whole: bool) -> tuple[tuple[float, ...], str]:
    """Bin edges and their scale: equal widths, or log-spaced above the smallest positive value for a
    long right tail; each point mass (POINT_MASS) in a bin of its own."""
    low, high = float(numbers.min()), float(numbers.max())
    equal = np.linspace(low, high, bins + 1)
    positive = numbers[numbers > 0]
    heavy = low >= 0 and len(positive) and np.mean(numbers < equal[1]) > HEAVY_TAIL
    scale = LOG if heavy else LINEAR
    if heavy:
        start = max(float(positive.min()), 1.0) if whole else float(positive.min())
        equal = np.concatenate([[low], np.geomspace(start, high, bins)]) if start > low else np.geomspace(start, high, bins + 1)
    edges = set(equal.round() if whole else equal)
    values, counts = np.unique(numbers, return_counts=True)
    width = 1.0 if whole else (high - low) / bins / 100
    for value in values[counts > POINT_MASS * len(numbers)]:
        edges = {e for e in edges if not value < e < value + width} | {float(value), float(value) + width}
    return tuple(sorted(float(e) for e in edges if e < high) + [high]), scale


def codes_frame(codes: np.ndarray, schema: Schema) -> pd.DataFrame:
    """Codes as a frame named by the schema's columns: what the evaluation counts marginals of."""
    return pd.DataFrame(codes, columns=list(schema.names))


def marginal(codes: np.ndarray, shape: Sequence[int], columns: Sequence[int]) -> np.ndarray:
    """The contingency table (counts) of `columns`, flattened in C order: the same on every node."""
    sizes = [shape[c] for c in columns]
    flat = np.ravel_multi_index(tuple(codes[:, c] for c in columns), sizes) if columns else np.zeros(len(codes), int)
    return np.bincount(flat, minlength=int(np.prod(sizes))).astype(np.float64)


def check(frame: pd.DataFrame, schema: Schema) -> str:
    """What a node's refusal leaves out, for its owner: whether the table fits the schema, and how many
    cells the schema maps (DataError where a cell does not fit, naming its row and column)."""
    _, mapped = encode(frame, schema)
    counts = ", ".join(f"{name}: {count}" for name, count in mapped.items())
    return f"the table fits the schema ({len(frame)} rows); cells it maps to 'other', missing or its bounds: " \
           f"{counts or 'none'}"
