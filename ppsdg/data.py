"""Datasets in one canonical form (uint8 28x28 pixels, int64 labels) and their split across workers.

Every source (the embedded digits, MNIST IDX files, a node's CSV) ends as an ImageSet, so the
model, the workers and the vantage6 algorithm never care where the data came from.
"""

from __future__ import annotations

import csv
import dataclasses
import gzip
import math
import sys
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from ppsdg import tables
from ppsdg.config import Source, Table
from ppsdg.errors import DataError

MEAN, STD = 0.1307, 0.3081
IMAGE_SIDE = 28
NUM_CLASSES = 10
NUM_PIXELS = IMAGE_SIDE * IMAGE_SIDE
CSV_COLUMNS: list[str] = ["label"] + [f"pixel{i}" for i in range(NUM_PIXELS)]
PARTITION_SCHEMES = ("iid", "dirichlet", "classes")

HOLDOUT_FRACTION = 0.2
HOLDOUT_SEED = 20_230_817
MAX_PIXEL = 255

_DIGITS_FILE = Path(__file__).with_name("digits.npz")
_DIGITS_MAX = 16
_DIGIT_BOX = 20
_IMAGES_MAGIC = 2051
_LABELS_MAGIC = 2049
# Largest IDX file accepted: EMNIST's biggest split holds ~814k images, so 1M (784 MB of pixels)
# admits every published MNIST-family set while bounding what a forged header can make us allocate.
MAX_IDX_ITEMS = 1_000_000
# Rows parsed and validated at a time: bounds the numeric working copy of a CSV or frame to ~6 MB.
_CHUNK_ROWS = 1024
_READ_PIECE = 1 << 20
_IDX_PAIRS = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "t10k": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_DIRICHLET_TRIES = 100
# A stratified holdout takes round(HOLDOUT_FRACTION * n) of a value on n rows: none below this many.
_HOLDOUT_MIN_ROWS = 3


@dataclass(frozen=True, eq=False)
class ImageSet:
    """Canonical form of every dataset: uint8 pixels 0..255 (N, 28, 28) and int64 labels (N,)."""

    pixels: np.ndarray
    labels: np.ndarray

    def __post_init__(self) -> None:
        """Refuse a malformed set at construction so no later stage has to re-check it."""
        if self.pixels.dtype != np.uint8 or self.pixels.shape[1:] != (IMAGE_SIDE, IMAGE_SIDE):
            raise DataError(
                f"pixels must be uint8 of shape (N, {IMAGE_SIDE}, {IMAGE_SIDE}), "
                f"found {self.pixels.dtype} {self.pixels.shape}"
            )
        if self.labels.dtype != np.int64 or self.labels.shape != (len(self.pixels),):
            raise DataError(
                f"labels must be int64 of shape ({len(self.pixels)},), "
                f"found {self.labels.dtype} {self.labels.shape}"
            )

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, indices: np.ndarray) -> ImageSet:
        """Select samples in the given order, so callers control shuffling."""
        return ImageSet(self.pixels[indices], self.labels[indices])


Dataset = ImageSet | pd.DataFrame


def load_embedded() -> tuple[ImageSet, ImageSet]:
    """Give every installation a dataset with no download, in MNIST's geometry."""
    with np.load(_DIGITS_FILE) as archive:
        small, labels = archive["images"], archive["labels"]
    images = ImageSet(_to_mnist_box(small), labels.astype(np.int64))
    return split_holdout(images, HOLDOUT_FRACTION, HOLDOUT_SEED)


def _to_mnist_box(small: np.ndarray) -> np.ndarray:
    """Upscale 8x8 digits to 20x20 and centre them in 28x28, as MNIST frames its digits."""
    grey = torch.from_numpy(small.astype(np.float32) / _DIGITS_MAX).unsqueeze(1)
    box = F.interpolate(grey, size=(_DIGIT_BOX, _DIGIT_BOX), mode="bilinear", align_corners=False)
    canvas = torch.zeros(len(small), IMAGE_SIDE, IMAGE_SIDE)
    start = (IMAGE_SIDE - _DIGIT_BOX) // 2
    canvas[:, start : start + _DIGIT_BOX, start : start + _DIGIT_BOX] = box[:, 0]
    return (canvas * MAX_PIXEL).round().to(torch.uint8).numpy()


def split_holdout(images: ImageSet, test_fraction: float, seed: int) -> tuple[ImageSet, ImageSet]:
    """Stratify the test set so every class is evaluated in the proportion it is trained on."""
    if not 0 < test_fraction < 1:
        raise DataError(f"test_fraction must be between 0 and 1, found {test_fraction}")
    if len(images) == 0:
        raise DataError("no images to split into train and test sets")
    rng = np.random.default_rng(seed)
    test_parts = []
    for label in np.unique(images.labels):
        members = rng.permutation(np.flatnonzero(images.labels == label))
        test_parts.append(members[: round(len(members) * test_fraction)])
    test_mask = np.zeros(len(images), dtype=bool)
    test_mask[np.concatenate(test_parts)] = True
    if test_mask.all() or not test_mask.any():
        raise DataError(
            f"holding out {test_fraction} of {len(images)} samples leaves an empty train or test set"
        )
    return images.subset(np.flatnonzero(~test_mask)), images.subset(np.flatnonzero(test_mask))


def load_idx(directory: str | Path) -> tuple[ImageSet, ImageSet]:
    """Read MNIST as published; a lone pair (e.g. only t10k) is split so both sets exist."""
    directory = Path(directory)
    if not directory.is_dir():
        raise DataError(f"{directory}: not a directory")
    pairs = {name: _find_pair(directory, *files) for name, files in _IDX_PAIRS.items()}
    found = {name: pair for name, pair in pairs.items() if pair is not None}
    if len(found) == len(_IDX_PAIRS):
        return _read_idx_pair(*found["train"]), _read_idx_pair(*found["t10k"])
    if found:
        (pair,) = found.values()
        return split_holdout(_read_idx_pair(*pair), HOLDOUT_FRACTION, HOLDOUT_SEED)
    expected = ", ".join(name for files in _IDX_PAIRS.values() for name in files)
    raise DataError(f"{directory}: no MNIST IDX files; expected {expected} (each optionally .gz)")


def _find_pair(directory: Path, images_name: str, labels_name: str) -> tuple[Path, Path] | None:
    """Treat half a pair as an error, since silently ignoring it would hide a broken download."""
    images, labels = _find_file(directory, images_name), _find_file(directory, labels_name)
    if images is None and labels is None:
        return None
    if images is None or labels is None:
        missing = images_name if images is None else labels_name
        raise DataError(f"{directory}: {missing} (or {missing}.gz) is missing from its pair")
    return images, labels


def _find_file(directory: Path, name: str) -> Path | None:
    """Accept the plain file or its gzipped download, preferring the plain one."""
    for candidate in (directory / name, directory / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _read_idx_pair(images_path: Path, labels_path: Path) -> ImageSet:
    """Check the pair agrees before trusting it, since a mismatch would mislabel every sample."""
    pixels = _read_idx(images_path, _IMAGES_MAGIC, (IMAGE_SIDE, IMAGE_SIDE))
    labels = _read_idx(labels_path, _LABELS_MAGIC, ())
    if len(pixels) != len(labels):
        raise DataError(
            f"count mismatch: {images_path} holds {len(pixels)} images "
            f"but {labels_path} holds {len(labels)} labels"
        )
    if len(pixels) == 0:
        raise DataError(f"{images_path}: no images")
    bad = np.flatnonzero(labels >= NUM_CLASSES)
    if len(bad):
        raise DataError(
            f"{labels_path}: label {labels[bad[0]]} at index {bad[0]} is outside 0..{NUM_CLASSES - 1}"
        )
    return ImageSet(pixels, labels.astype(np.int64))


def _read_idx(path: Path, magic: int, item_shape: tuple[int, ...]) -> np.ndarray:
    """Parse one IDX file, validating its header before reading (or decompressing) the body.

    At most the header's announced size + 1 bytes are ever read, so a forged header or a gzip
    bomb cannot make us allocate more than MAX_IDX_ITEMS items, and truncation is still caught.
    """
    try:
        with gzip.open(path) if path.suffix == ".gz" else path.open("rb") as stream:
            shape = _idx_shape(path, stream, magic, item_shape)
            size = math.prod(shape)
            body = _read_at_most(stream, size + 1)
    except (OSError, EOFError, zlib.error) as error:
        raise DataError(f"{path}: cannot read: {error}") from error
    expected = _idx_header_size(len(shape)) + size
    if len(body) < size:
        found = _idx_header_size(len(shape)) + len(body)
        raise DataError(f"{path}: truncated: expected {expected} bytes, found {found}")
    if len(body) > size:
        raise DataError(f"{path}: trailing bytes: expected {expected} bytes, found more")
    return body.reshape(shape)


def _idx_header_size(ndim: int) -> int:
    """The magic number and one size per dimension, 4 bytes each."""
    return 4 * (1 + ndim)


def _idx_shape(path: Path, stream: BinaryIO, magic: int, item_shape: tuple[int, ...]) -> tuple[int, ...]:
    """Read and check the header: magic, item dimensions and count, all as Python ints (no wrap)."""
    header_size = _idx_header_size(1 + len(item_shape))
    header = stream.read(header_size)
    if len(header) < header_size:
        raise DataError(f"{path}: truncated: expected at least {header_size} bytes, found {len(header)}")
    found_magic, count, *dims = (int.from_bytes(header[i : i + 4], "big") for i in range(0, header_size, 4))
    if found_magic != magic:
        raise DataError(f"{path}: magic number {found_magic} found, expected {magic}")
    if tuple(dims) != item_shape:
        shown, expected = "x".join(map(str, dims)), "x".join(map(str, item_shape))
        raise DataError(f"{path}: images are {shown}, expected {expected}")
    if count > MAX_IDX_ITEMS:
        raise DataError(f"{path}: header announces {count} items, more than the limit of {MAX_IDX_ITEMS}")
    return (count, *item_shape)


def _read_at_most(stream: BinaryIO, size: int) -> np.ndarray:
    """Read up to `size` bytes into one buffer, in pieces, so memory grows with the bytes present.

    GzipFile.readinto reads into a temporary bytes object first; small pieces keep that copy small.
    """
    buffer = np.empty(size, dtype=np.uint8)
    view, filled = memoryview(buffer), 0
    while filled < size and (got := stream.readinto(view[filled : filled + _READ_PIECE])):
        filled += got
    return buffer[:filled]


def load_csv(path: str | Path) -> ImageSet:
    """Read a node's CSV (header row first, as vantage6 stores it) chunk by chunk, validating as it goes.

    Memory stays near the pixel bytes: only _CHUNK_ROWS rows at a time are held as text or numbers.
    """
    path = Path(path)
    try:
        with path.open(encoding="utf-8-sig") as lines:
            return _parse_csv(lines)
    except FileNotFoundError as error:
        raise DataError(f"{path}: no such file") from error
    except DataError as error:
        raise DataError(f"{path}: {error}") from error
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise DataError(f"{path}: cannot read as CSV: {error}") from error


def _parse_csv(lines: Iterator[str]) -> ImageSet:
    """Turn the text after the header into an ImageSet; blank lines are skipped and not counted."""
    names = _csv_header(lines)
    pieces: list[tuple[np.ndarray, np.ndarray]] = []
    row = 0
    while chunk := list(islice(lines, _CHUNK_ROWS)):
        filled = [line for line in chunk if line.strip()]
        if filled:
            values = _csv_values(filled, names, row)
            pieces.append(_image_rows(values, names, row))
            row += len(values)
    return _joined(pieces)


def _csv_header(lines: Iterator[str]) -> list[str]:
    """Take the first non-blank line as the header; a numeric one means the header was left out."""
    first = next((line for line in lines if line.strip()), None)
    if first is None:
        raise DataError("empty file")
    names = next(csv.reader([first]))
    if all(_is_number(name) for name in names):
        raise DataError(
            f"the header is missing: the first row holds only numbers; "
            f"expected a header row like {','.join(CSV_COLUMNS[:3])},...,{CSV_COLUMNS[-1]}"
        )
    _check_column_count(len(names))
    return names


def _csv_values(lines: list[str], names: list[str], first_row: int) -> np.ndarray:
    """Parse non-blank lines as a matrix with exactly one cell per header name.

    Integers are tried first (numpy parses them ~6x faster); floats such as 3.0 or 2.5 only when a
    chunk holds one, so _check_integers can accept the first and name the second. A number is ASCII,
    and numpy 2.4's loadtxt crashes the process on some characters outside the Basic Multilingual
    Plane (U+C279E, say), so a chunk with anything else never reaches it.
    """
    if not all(line.isascii() for line in lines):
        raise _csv_problem(lines, names, first_row, "text other than ASCII")
    for dtype in (np.int64, np.float64):
        try:
            values = np.loadtxt(lines, delimiter=",", dtype=dtype, ndmin=2, comments=None, quotechar='"')
            break
        except ValueError as error:
            problem = error
    else:
        raise _csv_problem(lines, names, first_row, str(problem)) from problem
    if values.shape[1] != len(names):
        raise _csv_problem(lines, names, first_row, f"{values.shape[1]} cells per row")
    return values


def _csv_problem(lines: list[str], names: list[str], first_row: int, parser_message: str) -> DataError:
    """Name the first bad row or cell of a chunk the fast parser refused, in the CSV's own terms."""
    for offset, cells in enumerate(csv.reader(lines)):
        row = first_row + offset
        if len(cells) != len(names):
            return DataError(f"row {row} has {len(cells)} cells, but the header has {len(names)}")
        for name, cell in zip(names, cells):
            if not cell.strip():
                return DataError(f"value at row {row}, column {name!r} is missing")
            if not _is_number(cell):
                return DataError(f"value at row {row}, column {name!r} is not a number")
    return DataError(f"cannot parse rows {first_row}..{first_row + len(lines) - 1}: {parser_message}")


def _is_number(text: str) -> bool:
    """Whether a cell reads as a number, the test for both a missing header and a bad cell."""
    try:
        float(text)
    except ValueError:
        return False
    return True


def from_frame(frame: pd.DataFrame) -> ImageSet:
    """Validate a node's table by position, since nodes may name their columns differently.

    Rows are reported by 0-based position (header excluded), columns by their name. The frame is
    converted _CHUNK_ROWS rows at a time, so validation adds little to the frame's own memory.
    """
    _check_column_count(frame.shape[1])
    names = list(frame.columns)
    return _joined([
        _image_rows(_numeric_matrix(frame.iloc[start : start + _CHUNK_ROWS], start), names, start)
        for start in range(0, len(frame), _CHUNK_ROWS)
    ])


def _check_column_count(found: int) -> None:
    """One message for a table of the wrong width, whether it came from a file or a frame."""
    if found != len(CSV_COLUMNS):
        raise DataError(f"expected {len(CSV_COLUMNS)} columns (label + {NUM_PIXELS} pixels), found {found}")


def _joined(pieces: list[tuple[np.ndarray, np.ndarray]]) -> ImageSet:
    """Concatenate validated chunks; a table without data rows is refused here."""
    if not pieces:
        raise DataError("no rows")
    return ImageSet(np.concatenate([pixels for pixels, _ in pieces]),
                    np.concatenate([labels for _, labels in pieces]))


def _image_rows(values: np.ndarray, names: Sequence[object], first_row: int) -> tuple[np.ndarray, np.ndarray]:
    """Range-check a numeric chunk (label, pixels...) and convert it to uint8 pixels and int64 labels."""
    _check_integers(values[:, :1], names[:1], "label", NUM_CLASSES - 1, first_row)
    _check_integers(values[:, 1:], names[1:], "pixel", MAX_PIXEL, first_row)
    pixels = values[:, 1:].astype(np.uint8).reshape(-1, IMAGE_SIDE, IMAGE_SIDE)
    return pixels, values[:, 0].astype(np.int64)


def _numeric_matrix(frame: pd.DataFrame, first_row: int) -> np.ndarray:
    """Convert to float64, naming the first cell (row-major) that is not a number or is missing.

    Only integer and float columns count as numbers: booleans or complex values would otherwise be
    silently read as 0/1 or lose their imaginary part.
    """
    text = [i for i, dtype in enumerate(frame.dtypes) if not _is_real_dtype(dtype)]
    values = np.empty(frame.shape, dtype=np.float64)
    numeric = sorted(set(range(frame.shape[1])) - set(text))
    values[:, numeric] = frame.iloc[:, numeric].to_numpy(dtype=np.float64, na_value=np.nan)
    if text:
        raw = frame.iloc[:, text].astype(object)
        converted = raw.astype(str).apply(pd.to_numeric, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
        not_number = np.isnan(converted) & raw.notna().to_numpy()
        if not_number.any():
            row, column = np.argwhere(not_number)[0]
            raise DataError(f"value at row {first_row + row}, column {raw.columns[column]!r} is not a number")
        values[:, text] = converted
    if np.isnan(values).any():
        row, column = np.argwhere(np.isnan(values))[0]
        raise DataError(f"value at row {first_row + row}, column {frame.columns[column]!r} is missing")
    return values


def _is_real_dtype(dtype: object) -> bool:
    """Integer or float columns, the only ones converted to float64 without looking at each cell."""
    return pd.api.types.is_integer_dtype(dtype) or pd.api.types.is_float_dtype(dtype)


def _check_integers(values: np.ndarray, names: Sequence[object], kind: str, maximum: int, first_row: int) -> None:
    """Reject fractional, non-finite or out-of-range cells, which uint8 casting would silently change.

    This message, like every DataError, names the row, the column and what was expected, never the
    cell's value: a node's error travels in its run's log to the server and the researcher."""
    bad = ~((values == np.floor(values)) & (values >= 0) & (values <= maximum))
    if bad.any():
        row, column = np.argwhere(bad)[0]
        raise DataError(f"{kind} at row {first_row + row}, column {names[column]!r} is out of range: "
                        f"{kind}s must be integers 0..{maximum}")


def to_frame(images: Dataset) -> pd.DataFrame:
    """Write the node layout, so test fixtures and node CSVs come from the same code (a table is
    its own layout)."""
    if isinstance(images, pd.DataFrame):
        return images
    flat = images.pixels.reshape(len(images), NUM_PIXELS)
    table = np.concatenate([images.labels[:, None], flat], axis=1).astype(np.int64)
    return pd.DataFrame(table, columns=CSV_COLUMNS)


def load(source: str) -> tuple[ImageSet, ImageSet]:
    """One entry point for the command line, so each run names its data in one string."""
    if source == "embedded":
        return load_embedded()
    path = Path(source)
    if path.is_dir():
        return load_idx(path)
    if path.is_file() and path.suffix.lower() == ".csv":
        return split_holdout(load_csv(path), HOLDOUT_FRACTION, HOLDOUT_SEED)
    raise DataError(
        f"data source {source!r} is not 'embedded', a directory of MNIST IDX files "
        f"or an existing .csv file"
    )


def data_files(source: str) -> list[str]:
    """The files --data names: one, or one per worker (comma-separated)."""
    return [part.strip() for part in source.split(",")]


def check_paths(source: str, test_data: str | None) -> None:
    """--data and --test-data as paths, before anything reads them, so that a mistake is named with its
    fix where a reader would stumble on a later symptom: a missing file as missing, a folder of tables with
    the --data that names them, a format ppsdg does not read with those it does."""
    files = data_files(source)
    if files != ["embedded"]:
        for path in files:
            _check_source(Path(path), several=len(files) > 1)
    if test_data is not None:
        path = Path(test_data)
        if path.is_dir() or not path.exists():
            raise DataError(f"--test-data {path}: " + ("a folder: name one table file" if path.is_dir() else
                                                       "no such file"))
        if tables.table_format(path) is None:
            raise DataError(f"--test-data {path}: not a table file ppsdg reads: {tables.TABLE_FILES}")


def _check_source(path: Path, several: bool) -> None:
    """One file of --data: an existing table, an images CSV, or (alone) a folder of MNIST IDX files."""
    if not path.exists():
        raise DataError(f"--data {path}: no such file or folder")
    if path.is_dir():
        _check_folder(path, several)
    elif tables.table_format(path) is None:
        raise DataError(f"--data {path}: not a file ppsdg reads: a table is {tables.TABLE_FILES}; images are "
                        "a CSV in the node layout or a folder of MNIST IDX files")


def _check_folder(path: Path, several: bool) -> None:
    """A folder is MNIST's IDX files; one of tables is refused with the --data that names them, one file a
    worker (a folder may hold more than the workers' data: a test part, an old export)."""
    found = sorted(str(file) for file in path.iterdir() if file.is_file() and tables.table_format(file))
    idx = any(_find_file(path, name) for names in _IDX_PAIRS.values() for name in names)
    if several:
        raise DataError(f"--data {path} is a folder: a comma-separated --data names one file per worker")
    if found and not idx:
        shown = ",".join(found[:3]) + (",..." if len(found) > 3 else "")
        raise DataError(f"--data {path} is a folder of {len(found)} table file(s), not a table: name the "
                        f"workers' files, one per worker, comma-separated: --data {shown}")
    if not idx:
        expected = ", ".join(name for names in _IDX_PAIRS.values() for name in names)
        raise DataError(f"--data {path} is a folder without MNIST IDX files ({expected}) or tables: name a "
                        f"table file ({tables.TABLE_FILES})")


def check_inputs(source: Source, table: Table | None, workers: int, seed: int) -> None:
    """Do once, before any worker starts, what every worker will do with the inputs, so that a mistake is
    named in seconds, by its file and line, not by a worker after the launch: each worker's share is made
    (the files read, the holdout, the partition) and, for a table, each file's training part is encoded
    under the schema."""
    worker_sets(source, workers, seed, table.target if table is not None else None)
    if table is None:
        return
    schema = tables.Schema.from_text(table.schema)
    files = data_files(source.data)
    for number, path in enumerate(files, start=1):
        frame = tables.read_table(path)
        train = frame if source.test_data is not None else frame[~_holdout_mask(frame, table.target, path)]
        check_fits(train, schema, path, f"--data {path}" + (f" (worker {number})" if len(files) > 1 else ""))


def check_fits(part: pd.DataFrame, schema: tables.Schema, path: str, owner: str) -> None:
    """Encode `part`, rows of the table file at `path` indexed by their place in it, as a worker will; a
    row that does not fit is named by its place in the file (`_place`), where the owner can find it, not by
    its place in a worker's share. `owner` says whose file it is."""
    try:
        tables.encode(part, schema)
    except tables.CellError as error:
        raise DataError(f"{owner}: {error.at(_place(path, int(error.label)))}; correct the file or the schema") \
            from None
    except DataError as error:
        raise DataError(f"{owner}: {error}; correct the file or the schema") from None


def _place(path: str, record: int) -> str:
    """Where data row `record` (0-based, the header not counted, as read_table numbers it) is in its file,
    as the owner's editor shows it: a CSV's line (the header's is line 1), an Excel sheet's row, a
    Parquet file's record counted from 1 (so is a CSV's whose lines the csv module cannot count)."""
    kind = tables.table_format(path)
    if kind == "excel":
        return f"row {record + 2}"
    if kind == "parquet":
        return f"record {record + 1}"
    try:
        return f"line {next(islice(_record_lines(Path(path)), record + 1, None), record + 2)}"
    except csv.Error:  # a cell longer than the csv module reads (128 KiB), which pandas read
        return f"record {record + 1}"


def _record_lines(path: Path) -> Iterator[int]:
    """The line each record of a CSV starts on, the header first, as read_table reads them: a blank line
    is no record, a quoted cell may span lines."""
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8-sig", newline="") as handle:
        rows = csv.reader(handle, delimiter=tables.csv_separator(path), skipinitialspace=True)
        end = 0
        for cells in rows:
            start, end = end + 1, rows.line_num
            if len(cells) > 1 or any(cell.strip() for cell in cells):
                yield start


def worker_sets(source: Source, workers: int, seed: int, target: str | None) -> list[Dataset]:
    """Each of `workers` workers' share of the training set, in rank order, as `source` splits it (a
    table's by its `target`): with one file per worker, exactly that file's training part.

    Every place that needs a worker's data (a gloo worker, the mock's node databases, the launcher's
    early check) takes it from here, so they all hold identical bytes.
    """
    trains, _ = training_parts(source.data, source.test_data, target)
    if len(trains) > 1:
        return trains
    train_set = trains[0]
    parts = partition(_labels(train_set, target), workers, source.partition, seed, source.dirichlet_alpha,
                      source.classes_per_worker)
    return [_subset(train_set, indices) for indices in parts]


def load_sets(source: str, test_data: str | None, target: str | None) -> tuple[Dataset, Dataset]:
    """The whole training set of --data `source` (every worker's part) and the test set, images or a table."""
    trains, test = training_parts(source, test_data, target)
    if isinstance(test, ImageSet):
        return ImageSet(np.concatenate([t.pixels for t in trains]), np.concatenate([t.labels for t in trains])), test
    return pd.concat(trains, ignore_index=True), test


def training_parts(source: str, test_data: str | None, target: str | None) -> tuple[list[Dataset], Dataset]:
    """The training part of each file --data `source` names, and the test part: --test-data, or a seeded
    HOLDOUT_FRACTION of each file (stratified by label or target)."""
    files = data_files(source)
    if not tables.is_table_path(source):
        if len(files) == 1:
            train_set, test_set = load(files[0])
            return [train_set], test_set
        splits = [split_holdout(load_csv(path), HOLDOUT_FRACTION, HOLDOUT_SEED) for path in files]
        return [train for train, _ in splits], ImageSet(np.concatenate([t.pixels for _, t in splits]),
                                                        np.concatenate([t.labels for _, t in splits]))
    frames = [_with_target(tables.read_table(path), target, path) for path in files]
    if test_data is not None:
        return frames, _with_target(tables.read_table(test_data), target, test_data)
    masks = [_holdout_mask(frame, target, path) for frame, path in zip(frames, files)]
    return ([frame[~mask].reset_index(drop=True) for frame, mask in zip(frames, masks)],
            pd.concat([frame[mask] for frame, mask in zip(frames, masks)], ignore_index=True))


def _with_target(frame: pd.DataFrame, target: str | None, path: str) -> pd.DataFrame:
    """The table read from `path`, refused where it lacks --target: its columns are named, which shows a
    header that did not split into columns."""
    if target is not None and target not in frame.columns:
        raise DataError(f"--target {target!r} is not a column of {path} (its columns: "
                        f"{tables.shown(frame.columns)})")
    return frame


def _holdout_mask(frame: pd.DataFrame, target: str | None, path: str) -> np.ndarray:
    """The rows of `frame` held out for the test part: HOLDOUT_FRACTION of each target value's, seeded."""
    if not len(frame):
        raise DataError(f"{path}: no rows")
    labels = _target_codes(frame, target)
    rng = np.random.default_rng(HOLDOUT_SEED)
    test = np.concatenate([rng.permutation(np.flatnonzero(labels == label))[:round(np.sum(labels == label)
                                                                                  * HOLDOUT_FRACTION)]
                           for label in np.unique(labels)])
    mask = np.zeros(len(frame), dtype=bool)
    mask[test] = True
    if not mask.any():
        column = f"--target {target!r}" if target else "the last column (the default --target)"
        raise DataError(f"{path}: no row is held out for the test part: the {HOLDOUT_FRACTION:.0%} holdout "
                        f"takes none of a target value on fewer than {_HOLDOUT_MIN_ROWS} rows, and every value "
                        f"of {column} is: give --test-data, or a --target of fewer values")
    return mask


def _target_codes(frame: pd.DataFrame, target: str | None) -> np.ndarray:
    """The target column (default: the last) as integer codes, missing as a code of its own."""
    column = frame[target] if target is not None and target in frame.columns else frame.iloc[:, -1]
    return pd.factorize(column.astype(str).where(column.notna(), ""), sort=True)[0]


def _labels(dataset: Dataset, target: str | None) -> np.ndarray:
    return dataset.labels if isinstance(dataset, ImageSet) else _target_codes(dataset, target)


def _subset(dataset: Dataset, indices: np.ndarray) -> Dataset:
    return dataset.subset(indices) if isinstance(dataset, ImageSet) else dataset.iloc[indices].reset_index(drop=True)


def prepare_table(source: Source, table: Table) -> Table:
    """A table job with its schema (drafted from the training part, with a warning, when none is given)
    and its target (--target, else the schema's, else the last column) fixed, once for the run."""
    schema_text = table.schema
    if schema_text is None:
        train_set, _ = load_sets(source.data, source.test_data, table.target)
        print("ppsdg: warning: no --schema: the domain (categories, numeric bounds) is read off the training "
              "data itself, which the DP guarantee does not cover. Draft one with `ppsdg schema DATA`, review "
              "it and pass it with --schema.", file=sys.stderr)
        schema = tables.draft(train_set, table.target)
        for note in tables.notes(train_set, schema):
            print(f"ppsdg: note: {note}", file=sys.stderr)
        schema_text = schema.text()
    schema = tables.Schema.from_text(schema_text)
    target = table.target or schema.target or schema.names[-1]
    if target not in schema.names:
        raise DataError(f"--target {target!r} is not a modelled column of the schema (its columns: "
                        f"{tables.shown(schema.names)})")
    tables.check_cells(schema, target)
    return dataclasses.replace(table, schema=schema_text, target=target)


def to_tensors(images: ImageSet) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalise with fixed float32 ops, so every worker feeds the model identical inputs."""
    pixels = torch.tensor(images.pixels, dtype=torch.float32)
    normalised = (pixels / MAX_PIXEL - MEAN) / STD
    return normalised.unsqueeze(1), torch.tensor(images.labels, dtype=torch.int64)


def from_tensors(images: torch.Tensor, labels: torch.Tensor) -> ImageSet:
    """The inverse of to_tensors, rounding to whole pixel values: how synthetic images are stored."""
    pixels = ((images.detach().cpu().float() * STD + MEAN).clamp(0, 1) * MAX_PIXEL).round()
    return ImageSet(pixels.to(torch.uint8).reshape(-1, IMAGE_SIDE, IMAGE_SIDE).numpy(),
                    labels.detach().cpu().to(torch.int64).numpy())


def partition(
    labels: np.ndarray,
    num_workers: int,
    scheme: str = "iid",
    seed: int = 0,
    alpha: float = 0.5,
    classes_per_worker: int = 2,
) -> list[np.ndarray]:
    """Split sample indices across workers reproducibly, so every process derives the same split."""
    labels = np.asarray(labels)
    _check_partition_request(labels, num_workers, scheme, alpha, classes_per_worker)
    rng = np.random.default_rng(seed)
    if scheme == "iid":
        parts = _iid(labels, num_workers, rng)
    elif scheme == "dirichlet":
        parts = _dirichlet(labels, num_workers, rng, alpha)
    else:
        parts = _shards(labels, num_workers, rng, classes_per_worker)
    return _finish(parts)


def _check_partition_request(
    labels: np.ndarray, num_workers: int, scheme: str, alpha: float, classes_per_worker: int
) -> None:
    """Refuse requests that cannot give every worker data, before any randomness is spent."""
    if labels.ndim != 1:
        raise DataError(f"labels must be one-dimensional, found shape {labels.shape}")
    if num_workers < 1:
        raise DataError(f"num_workers must be at least 1, found {num_workers}")
    if num_workers > len(labels):
        raise DataError(f"{num_workers} workers but only {len(labels)} samples")
    if scheme not in PARTITION_SCHEMES:
        raise DataError(f"unknown partition scheme {scheme!r}; known: {', '.join(PARTITION_SCHEMES)}")
    if scheme == "dirichlet" and not alpha > 0:
        raise DataError(f"alpha must be positive, found {alpha}")
    if scheme == "classes" and classes_per_worker < 1:
        raise DataError(f"classes_per_worker must be at least 1, found {classes_per_worker}")


def _split_each_class(labels: np.ndarray, num_workers: int, rng: np.random.Generator,
                      cuts: Callable[[int], Sequence[int]]) -> list[np.ndarray]:
    """Shuffle every class and cut it where `cuts(class size)` says; worker k takes piece k."""
    shares: list[list[np.ndarray]] = [[] for _ in range(num_workers)]
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        for worker, piece in enumerate(np.split(members, cuts(len(members)))):
            shares[worker].append(piece)
    return [np.concatenate(share) for share in shares]


def _iid(labels: np.ndarray, num_workers: int, rng: np.random.Generator) -> list[np.ndarray]:
    """EqualPartitionEachClass: equal per-class shares, the remainder to the last worker."""
    return _split_each_class(labels, num_workers, rng,
                             lambda size: [size // num_workers * k for k in range(1, num_workers)])


def _dirichlet(
    labels: np.ndarray, num_workers: int, rng: np.random.Generator, alpha: float
) -> list[np.ndarray]:
    """Label skew of tunable strength; redraw rather than hand a worker nothing."""
    for _ in range(_DIRICHLET_TRIES):
        parts = _dirichlet_draw(labels, num_workers, rng, alpha)
        if all(len(part) for part in parts):
            return parts
    raise DataError(
        f"dirichlet partition with alpha={alpha} left a worker empty in {_DIRICHLET_TRIES} draws; "
        f"raise alpha or use fewer workers"
    )


def _dirichlet_draw(
    labels: np.ndarray, num_workers: int, rng: np.random.Generator, alpha: float
) -> list[np.ndarray]:
    """Split each class at cumulative Dirichlet proportions."""
    return _split_each_class(
        labels, num_workers, rng,
        lambda size: (np.cumsum(rng.dirichlet(np.full(num_workers, alpha)))[:-1] * size).astype(np.int64))


def _shards(
    labels: np.ndarray, num_workers: int, rng: np.random.Generator, per_worker: int
) -> list[np.ndarray]:
    """McMahan's pathological non-IID split: label-sorted shards, a few per worker."""
    num_shards = num_workers * per_worker
    if num_shards > len(labels):
        raise DataError(
            f"{num_shards} shards ({num_workers} workers x {per_worker} classes) "
            f"exceed {len(labels)} samples"
        )
    shuffled = rng.permutation(len(labels))
    ordered = shuffled[np.argsort(labels[shuffled], kind="stable")]
    shards = np.array_split(ordered, num_shards)
    owners = rng.permutation(num_shards).reshape(num_workers, per_worker)
    return [np.concatenate([shards[shard] for shard in row]) for row in owners]


def _finish(parts: list[np.ndarray]) -> list[np.ndarray]:
    """Sort and type the result, refusing a split that leaves a worker idle."""
    for worker, part in enumerate(parts):
        if len(part) == 0:
            raise DataError(f"partition leaves worker {worker} of {len(parts)} with no samples")
    return [np.sort(part).astype(np.int64) for part in parts]
