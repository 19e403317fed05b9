"""Datasets in one canonical form (uint8 28x28 pixels, int64 labels) and their split across workers.

Every source (the embedded digits, MNIST IDX files, a node's CSV) ends as an ImageSet, so the
model, the workers and the vantage6 algorithm never care where the data came from.
"""

from __future__ import annotations

import argparse
import gzip
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

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
_IDX_PAIRS = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "t10k": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_DIRICHLET_TRIES = 100


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
    pixels = _read_idx(images_path, _IMAGES_MAGIC, 3)
    labels = _read_idx(labels_path, _LABELS_MAGIC, 1)
    if pixels.shape[1:] != (IMAGE_SIDE, IMAGE_SIDE):
        raise DataError(
            f"{images_path}: images are {pixels.shape[1]}x{pixels.shape[2]}, "
            f"expected {IMAGE_SIDE}x{IMAGE_SIDE}"
        )
    if len(pixels) != len(labels):
        raise DataError(
            f"count mismatch: {images_path} holds {len(pixels)} images "
            f"but {labels_path} holds {len(labels)} labels"
        )
    bad = np.flatnonzero(labels >= NUM_CLASSES)
    if len(bad):
        raise DataError(
            f"{labels_path}: label {labels[bad[0]]} at index {bad[0]} is outside 0..{NUM_CLASSES - 1}"
        )
    return ImageSet(pixels, labels.astype(np.int64))


def _read_idx(path: Path, magic: int, ndim: int) -> np.ndarray:
    """Parse one IDX file, checking its header against its length so truncation is caught."""
    raw = _read_bytes(path)
    header_size = 4 * (1 + ndim)
    if len(raw) < header_size:
        raise DataError(f"{path}: truncated: expected at least {header_size} bytes, found {len(raw)}")
    header = np.frombuffer(raw, dtype=">u4", count=1 + ndim)
    if header[0] != magic:
        raise DataError(f"{path}: magic number {header[0]} found, expected {magic}")
    shape = tuple(int(size) for size in header[1:])
    expected = header_size + int(np.prod(shape))
    if len(raw) != expected:
        problem = "truncated" if len(raw) < expected else "trailing bytes"
        raise DataError(f"{path}: {problem}: expected {expected} bytes, found {len(raw)}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header_size).reshape(shape).copy()


def _read_bytes(path: Path) -> bytes:
    """Hide the gzip layer so the parser sees the same bytes either way."""
    try:
        raw = path.read_bytes()
        return gzip.decompress(raw) if path.suffix == ".gz" else raw
    except (OSError, EOFError, zlib.error) as error:
        raise DataError(f"{path}: cannot read: {error}") from error


def load_csv(path: str | Path) -> ImageSet:
    """Read a node's CSV the way vantage6 does (header row first), then validate it."""
    path = Path(path)
    try:
        frame = pd.read_csv(path)
    except FileNotFoundError as error:
        raise DataError(f"{path}: no such file") from error
    except pd.errors.EmptyDataError as error:
        raise DataError(f"{path}: empty file") from error
    except (OSError, UnicodeDecodeError, pd.errors.ParserError) as error:
        raise DataError(f"{path}: cannot read as CSV: {error}") from error
    try:
        return from_frame(frame)
    except DataError as error:
        raise DataError(f"{path}: {error}") from error


def from_frame(frame: pd.DataFrame) -> ImageSet:
    """Validate a node's table by position, since nodes may name their columns differently.

    Rows are reported by 0-based position (header excluded), columns by their name.
    """
    if frame.shape[1] != len(CSV_COLUMNS):
        raise DataError(
            f"expected {len(CSV_COLUMNS)} columns (label + {NUM_PIXELS} pixels), found {frame.shape[1]}"
        )
    if len(frame) == 0:
        raise DataError("no rows")
    values = _numeric_matrix(frame)
    _check_integers(values[:, :1], frame.columns[:1], "label", NUM_CLASSES - 1)
    _check_integers(values[:, 1:], frame.columns[1:], "pixel", MAX_PIXEL)
    pixels = values[:, 1:].astype(np.uint8).reshape(-1, IMAGE_SIDE, IMAGE_SIDE)
    return ImageSet(pixels, values[:, 0].astype(np.int64))


def _numeric_matrix(frame: pd.DataFrame) -> np.ndarray:
    """Convert to float64, naming the first cell (row-major) that is not a number or is missing."""
    text = [i for i, dtype in enumerate(frame.dtypes) if not pd.api.types.is_numeric_dtype(dtype)]
    values = np.empty(frame.shape, dtype=np.float64)
    numeric = sorted(set(range(frame.shape[1])) - set(text))
    values[:, numeric] = frame.iloc[:, numeric].to_numpy(dtype=np.float64, na_value=np.nan)
    if text:
        raw = frame.iloc[:, text]
        converted = raw.apply(pd.to_numeric, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
        not_number = np.isnan(converted) & raw.notna().to_numpy()
        if not_number.any():
            row, column = np.argwhere(not_number)[0]
            raise DataError(
                f"value {raw.iat[row, column]!r} at row {row}, "
                f"column {raw.columns[column]!r} is not a number"
            )
        values[:, text] = converted
    if np.isnan(values).any():
        row, column = np.argwhere(np.isnan(values))[0]
        raise DataError(f"value at row {row}, column {frame.columns[column]!r} is missing")
    return values


def _check_integers(values: np.ndarray, names: pd.Index, kind: str, maximum: int) -> None:
    """Reject fractional or out-of-range cells, which would silently change under uint8 casting."""
    bad = (values != np.floor(values)) | (values < 0) | (values > maximum)
    if bad.any():
        row, column = np.argwhere(bad)[0]
        raise DataError(
            f"{kind} at row {row}, column {names[column]!r} is {values[row, column]:g}; "
            f"{kind}s must be integers 0..{maximum}"
        )


def to_frame(images: ImageSet) -> pd.DataFrame:
    """Write the node layout, so test fixtures and node CSVs come from the same code."""
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


def worker_sets(options: argparse.Namespace) -> list[ImageSet]:
    """Each worker's share of `options.data`'s training set, in rank order, as the options ask.

    Every place that needs a worker's data (a gloo worker, the mock's node databases, the launcher's
    early check) takes it from here, so they all hold identical bytes.
    """
    train_set, _ = load(options.data)
    parts = partition(train_set.labels, options.num_nodes - 1, options.partition, options.seed,
                      options.dirichlet_alpha, options.classes_per_worker)
    return [train_set.subset(indices) for indices in parts]


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
