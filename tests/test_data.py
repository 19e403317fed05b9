"""Behaviour of the dataset loaders, validators and partitioners in ppsdg.data."""

import gzip
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import peak_traced_bytes
from ppsdg.data import (
    CSV_COLUMNS,
    MAX_IDX_ITEMS,
    MEAN,
    NUM_CLASSES,
    PARTITION_SCHEMES,
    STD,
    ImageSet,
    from_frame,
    load,
    load_csv,
    load_embedded,
    load_idx,
    partition,
    split_holdout,
    to_frame,
    to_tensors,
)
from ppsdg.errors import DataError

SHARED_MNIST = Path("/work/shared/data/mnist")
UNBALANCED = np.repeat(np.arange(4), [7, 13, 20, 3])
BALANCED = np.repeat(np.arange(NUM_CLASSES), 60)


def random_images(count: int, seed: int = 1) -> ImageSet:
    """Small synthetic set whose every class occurs, for loader round trips."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, size=(count, 28, 28), dtype=np.uint8)
    labels = np.arange(count, dtype=np.int64) % NUM_CLASSES
    return ImageSet(pixels, labels)


def idx_bytes(magic: int, data: np.ndarray) -> bytes:
    """Encode an array in MNIST's IDX layout: big-endian magic, sizes, then raw uint8."""
    header = np.array([magic, *data.shape], dtype=">u4").tobytes()
    return header + data.astype(np.uint8).tobytes()


def write_idx_pair(directory: Path, prefix: str, images: ImageSet, gzipped: bool) -> None:
    """Write an images/labels pair as MNIST publishes it."""
    for name, magic, data in (
        (f"{prefix}-images-idx3-ubyte", 2051, images.pixels),
        (f"{prefix}-labels-idx1-ubyte", 2049, images.labels),
    ):
        raw = idx_bytes(magic, data)
        if gzipped:
            (directory / f"{name}.gz").write_bytes(gzip.compress(raw))
        else:
            (directory / name).write_bytes(raw)


def assert_same(left: ImageSet, right: ImageSet) -> None:
    np.testing.assert_array_equal(left.pixels, right.pixels)
    np.testing.assert_array_equal(left.labels, right.labels)


# partitioning


@pytest.mark.parametrize("scheme", PARTITION_SCHEMES)
def test_partition_is_disjoint_complete_and_sorted(scheme):
    parts = partition(BALANCED, 4, scheme=scheme, seed=3)
    assert len(parts) == 4
    joined = np.concatenate(parts)
    assert len(joined) == len(BALANCED)
    np.testing.assert_array_equal(np.sort(joined), np.arange(len(BALANCED)))
    for part in parts:
        assert part.dtype == np.int64
        assert len(part) > 0
        assert np.all(np.diff(part) > 0)


@pytest.mark.parametrize("scheme", PARTITION_SCHEMES)
def test_partition_depends_only_on_seed(scheme):
    first = partition(BALANCED, 5, scheme=scheme, seed=7)
    again = partition(BALANCED, 5, scheme=scheme, seed=7)
    other = partition(BALANCED, 5, scheme=scheme, seed=8)
    for left, right in zip(first, again):
        np.testing.assert_array_equal(left, right)
    assert any(not np.array_equal(left, right) for left, right in zip(first, other))


def test_iid_gives_equal_class_shares_and_the_rest_to_the_last_worker():
    workers = 3
    parts = partition(UNBALANCED, workers, scheme="iid", seed=0)
    for label, count in enumerate(np.bincount(UNBALANCED)):
        shares = [int(np.sum(UNBALANCED[part] == label)) for part in parts]
        assert shares[:-1] == [count // workers] * (workers - 1)
        assert shares[-1] == count - (workers - 1) * (count // workers)


@pytest.mark.parametrize(("workers", "per_worker"), [(5, 2), (10, 2), (4, 5)])
def test_classes_scheme_limits_classes_per_worker(workers, per_worker):
    parts = partition(BALANCED, workers, scheme="classes", seed=2, classes_per_worker=per_worker)
    for part in parts:
        assert len(np.unique(BALANCED[part])) <= per_worker
        assert len(part) == len(BALANCED) // workers


def mean_top_class_share(parts: list[np.ndarray], labels: np.ndarray) -> float:
    """Average over workers of the share their most common class takes."""
    return float(np.mean([np.bincount(labels[part]).max() / len(part) for part in parts]))


def test_dirichlet_skew_grows_as_alpha_shrinks():
    labels = np.repeat(np.arange(NUM_CLASSES), 100)
    skewed = partition(labels, 5, scheme="dirichlet", seed=0, alpha=0.05)
    even = partition(labels, 5, scheme="dirichlet", seed=0, alpha=1000.0)
    assert mean_top_class_share(skewed, labels) > 0.4
    assert mean_top_class_share(even, labels) < 0.15


@pytest.mark.parametrize(
    ("labels", "workers", "options", "message"),
    [
        (BALANCED, 0, {}, "num_workers must be at least 1, found 0"),
        (np.arange(3), 4, {}, "4 workers but only 3 samples"),
        (BALANCED, 2, {"scheme": "shuffle"}, "unknown partition scheme 'shuffle'; known: iid, dirichlet, classes"),
        (BALANCED, 2, {"scheme": "dirichlet", "alpha": 0.0}, "alpha must be positive, found 0.0"),
        (BALANCED, 2, {"scheme": "classes", "classes_per_worker": 0}, "classes_per_worker must be at least 1"),
        (np.arange(3), 2, {"scheme": "iid"}, "worker 0 of 2 with no samples"),
        (np.zeros(4, dtype=np.int64), 3, {"scheme": "classes"}, r"6 shards \(3 workers x 2 classes\) exceed 4"),
    ],
)
def test_partition_rejects_impossible_requests(labels, workers, options, message):
    with pytest.raises(DataError, match=message):
        partition(labels, workers, **options)


def test_dirichlet_that_keeps_emptying_a_worker_is_refused():
    with pytest.raises(DataError, match="left a worker empty in 100 draws"):
        partition(np.zeros(3, dtype=np.int64), 3, scheme="dirichlet", alpha=1e-3)


# holdout split


def test_split_holdout_is_stratified_disjoint_and_complete():
    images = ImageSet(np.zeros((len(UNBALANCED), 28, 28), np.uint8), UNBALANCED.astype(np.int64))
    train, test = split_holdout(images, 0.25, seed=4)
    np.testing.assert_array_equal(np.bincount(test.labels), [2, 3, 5, 1])
    np.testing.assert_array_equal(np.bincount(train.labels), [5, 10, 15, 2])


def test_split_holdout_refuses_an_empty_set():
    empty = ImageSet(np.zeros((0, 28, 28), np.uint8), np.zeros(0, np.int64))
    with pytest.raises(DataError, match="no images"):
        split_holdout(empty, 0.2, seed=0)


def test_split_holdout_keeps_original_order():
    images = random_images(50)
    images = ImageSet(images.pixels, np.arange(50, dtype=np.int64) % 5)
    train, test = split_holdout(images, 0.2, seed=0)
    positions = np.concatenate([_positions(images, train), _positions(images, test)])
    np.testing.assert_array_equal(np.sort(positions), np.arange(50))
    assert np.all(np.diff(_positions(images, train)) > 0)
    assert np.all(np.diff(_positions(images, test)) > 0)


def _positions(whole: ImageSet, part: ImageSet) -> np.ndarray:
    """Recover each sample's original index from its (unique) random pixels."""
    keys = {whole.pixels[i].tobytes(): i for i in range(len(whole))}
    return np.array([keys[image.tobytes()] for image in part.pixels])


# embedded data


def test_embedded_data_looks_like_mnist():
    train, test = load_embedded()
    assert len(train) + len(test) == 1797
    assert len(test) == 359
    for images in (train, test):
        assert images.pixels.shape == (len(images), 28, 28)
        assert images.pixels.dtype == np.uint8
        assert images.labels.dtype == np.int64
        np.testing.assert_array_equal(np.unique(images.labels), np.arange(NUM_CLASSES))
        assert images.pixels[:, :4].max() == 0 and images.pixels[:, 24:].max() == 0
        assert images.pixels.max() == 255


def test_embedded_test_set_is_fixed_across_calls():
    _, first = load_embedded()
    _, second = load_embedded()
    assert_same(first, second)
    assert_same(load("embedded")[1], first)


# IDX loader


@pytest.mark.parametrize("gzipped", [False, True])
def test_idx_reads_train_and_t10k(tmp_path, gzipped):
    train, t10k = random_images(30, seed=1), random_images(20, seed=2)
    write_idx_pair(tmp_path, "train", train, gzipped)
    write_idx_pair(tmp_path, "t10k", t10k, gzipped)
    got_train, got_test = load_idx(tmp_path)
    assert_same(got_train, train)
    assert_same(got_test, t10k)


@pytest.mark.parametrize("gzipped", [False, True])
def test_idx_splits_a_lone_t10k_pair(tmp_path, gzipped):
    t10k = random_images(50)
    write_idx_pair(tmp_path, "t10k", t10k, gzipped)
    train, test = load(str(tmp_path))
    assert (len(train), len(test)) == (40, 10)
    assert_same(test, load_idx(tmp_path)[1])
    np.testing.assert_array_equal(np.bincount(test.labels), [1] * NUM_CLASSES)


def test_idx_rejects_wrong_magic_number(tmp_path):
    write_idx_pair(tmp_path, "t10k", random_images(10), gzipped=False)
    images = random_images(10)
    (tmp_path / "t10k-images-idx3-ubyte").write_bytes(idx_bytes(2049, images.pixels))
    with pytest.raises(DataError, match="t10k-images-idx3-ubyte: magic number 2049 found, expected 2051"):
        load_idx(tmp_path)


def test_idx_rejects_truncated_file(tmp_path):
    write_idx_pair(tmp_path, "t10k", random_images(10), gzipped=True)
    path = tmp_path / "t10k-images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(gzip.decompress(path.read_bytes())[:-100]))
    with pytest.raises(DataError, match="truncated: expected 7856 bytes, found 7756"):
        load_idx(tmp_path)


def test_idx_rejects_count_mismatch(tmp_path):
    write_idx_pair(tmp_path, "t10k", random_images(10), gzipped=False)
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(idx_bytes(2049, np.arange(9) % 10))
    with pytest.raises(DataError, match="count mismatch: .* holds 10 images but .* holds 9 labels"):
        load_idx(tmp_path)


def test_idx_rejects_label_out_of_range(tmp_path):
    write_idx_pair(tmp_path, "t10k", random_images(10), gzipped=False)
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(idx_bytes(2049, np.array([0] * 9 + [12])))
    with pytest.raises(DataError, match="label 12 at index 9 is outside 0..9"):
        load_idx(tmp_path)


def test_idx_rejects_wrong_image_size(tmp_path):
    write_idx_pair(tmp_path, "t10k", random_images(10), gzipped=False)
    (tmp_path / "t10k-images-idx3-ubyte").write_bytes(idx_bytes(2051, np.zeros((10, 8, 8))))
    with pytest.raises(DataError, match="images are 8x8, expected 28x28"):
        load_idx(tmp_path)


def test_idx_names_expected_files_when_none_present(tmp_path):
    with pytest.raises(DataError, match="no MNIST IDX files; expected train-images-idx3-ubyte"):
        load_idx(tmp_path)


def test_idx_rejects_half_a_pair(tmp_path):
    write_idx_pair(tmp_path, "t10k", random_images(10), gzipped=False)
    (tmp_path / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte .* is missing from its pair"):
        load_idx(tmp_path)


def header_only(magic: int, *sizes: int) -> bytes:
    """An IDX header with arbitrary (possibly forged) sizes and no body."""
    return np.array([magic, *sizes], dtype=">u4").tobytes()


def test_idx_gzip_bomb_is_refused_without_decompressing_it(tmp_path):
    write_idx_pair(tmp_path, "t10k", random_images(10), gzipped=True)
    path = tmp_path / "t10k-images-idx3-ubyte.gz"
    valid = gzip.decompress(path.read_bytes())
    with gzip.open(path, "wb") as bomb:
        bomb.write(valid)
        for _ in range(64):
            bomb.write(bytes(1 << 20))
    assert path.stat().st_size < 200_000
    with pytest.raises(DataError, match="trailing bytes: expected 7856 bytes, found more"):
        load_idx(tmp_path)
    assert peak_traced_bytes(lambda: load_idx(tmp_path)) < 4 << 20


@pytest.mark.parametrize(
    ("images_header", "message"),
    [
        ((2051, 2**31, 2**31, 4), "images are 2147483648x4, expected 28x28"),
        ((2051, MAX_IDX_ITEMS + 1, 28, 28), "header announces 1000001 items, more than the limit of 1000000"),
        ((2051, 2**32 - 1, 28, 28), "header announces 4294967295 items"),
    ],
)
def test_idx_refuses_forged_header_before_reading_the_body(tmp_path, images_header, message):
    write_idx_pair(tmp_path, "t10k", random_images(10), gzipped=True)
    (tmp_path / "t10k-images-idx3-ubyte.gz").write_bytes(gzip.compress(header_only(*images_header)))
    with pytest.raises(DataError, match=message):
        load_idx(tmp_path)


def test_idx_refuses_forged_label_count(tmp_path):
    write_idx_pair(tmp_path, "t10k", random_images(10), gzipped=False)
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(header_only(2049, 2**32 - 1))
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte: header announces 4294967295 items"):
        load_idx(tmp_path)


def test_idx_rejects_trailing_bytes_and_short_header(tmp_path):
    write_idx_pair(tmp_path, "t10k", random_images(10), gzipped=False)
    labels = tmp_path / "t10k-labels-idx1-ubyte"
    labels.write_bytes(labels.read_bytes() + b"\0")
    with pytest.raises(DataError, match="trailing bytes: expected 18 bytes, found more"):
        load_idx(tmp_path)
    labels.write_bytes(b"\0\0\x08")
    with pytest.raises(DataError, match="truncated: expected at least 8 bytes, found 3"):
        load_idx(tmp_path)


def test_idx_rejects_corrupt_gzip(tmp_path):
    write_idx_pair(tmp_path, "t10k", random_images(10), gzipped=True)
    path = tmp_path / "t10k-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-12])
    with pytest.raises(DataError, match="t10k-images-idx3-ubyte.gz: cannot read"):
        load_idx(tmp_path)


@pytest.mark.parametrize("gzipped", [False, True])
def test_idx_refuses_a_pair_without_images(tmp_path, gzipped):
    write_idx_pair(tmp_path, "t10k", ImageSet(np.zeros((0, 28, 28), np.uint8), np.zeros(0, np.int64)), gzipped)
    with pytest.raises(DataError, match="t10k-images-idx3-ubyte(.gz)?: no images"):
        load_idx(tmp_path)


SIZES = st.one_of(st.integers(0, 30), st.sampled_from([28, 2**16, 2**31, 2**32 - 1]), st.integers(0, 2**32 - 1))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(magic=st.sampled_from([2051, 2049, 2052, 0]), sizes=st.lists(SIZES, min_size=0, max_size=4),
       body=st.integers(-3, 3), gzipped=st.booleans())
def test_fuzzed_idx_header_ends_in_data_error_or_a_consistent_set(tmp_path, magic, sizes, body, gzipped):
    """Any header, body a few bytes either side of what it announces: DataError or a faithful read."""
    count = sizes[0] if sizes else 0
    write_idx_pair(tmp_path, "t10k", random_images(min(count, 4) or 1), gzipped)
    announced = int(np.prod(sizes, dtype=object)) if sizes else 0
    length = max(0, (announced if announced < 10_000 else 10) + body)
    raw = header_only(magic, *sizes) + np.arange(length, dtype=np.uint8).tobytes()
    path = tmp_path / ("t10k-images-idx3-ubyte" + (".gz" if gzipped else ""))
    path.write_bytes(gzip.compress(raw) if gzipped else raw)
    try:
        train, test = load_idx(tmp_path)
    except DataError:
        return
    assert (magic, sizes[1:], body) == (2051, [28, 28], 0)
    assert len(train) + len(test) == count


@pytest.mark.skipif(not SHARED_MNIST.is_dir(), reason="shared MNIST files not present")
def test_idx_reads_shared_mnist_test_set():
    train, test = load_idx(SHARED_MNIST)
    assert (len(train), len(test)) == (8000, 2000)
    assert train.pixels.shape == (8000, 28, 28)
    np.testing.assert_array_equal(np.unique(test.labels), np.arange(NUM_CLASSES))


# CSV loader


def test_csv_round_trip_is_exact(tmp_path):
    images = random_images(25)
    frame = to_frame(images)
    assert list(frame.columns) == CSV_COLUMNS
    assert (frame.dtypes == np.int64).all()
    path = tmp_path / "node.csv"
    frame.to_csv(path, index=False)
    assert_same(load_csv(path), images)
    assert_same(from_frame(frame), images)


def test_from_frame_ignores_column_names():
    images = random_images(5)
    frame = to_frame(images)
    frame.columns = [f"c{i}" for i in range(len(CSV_COLUMNS))]
    assert_same(from_frame(frame), images)


def write_bad_csv(tmp_path: Path, row: int, column: int, value: object) -> Path:
    """A valid node CSV with one cell replaced."""
    frame = to_frame(random_images(6)).astype(object)
    frame.iloc[row, column] = value
    path = tmp_path / "bad.csv"
    frame.to_csv(path, index=False)
    return path


@pytest.mark.parametrize(
    ("row", "column", "value", "message"),
    [
        (2, 5, "abc", "value at row 2, column 'pixel4' is not a number"),
        (3, 0, 10, r"label at row 3, column 'label' is out of range: labels must be integers 0\.\.9"),
        (1, 0, -1, "label at row 1, column 'label' is out of range"),
        (4, 0, 3.5, "label at row 4, column 'label' is out of range"),
        (5, 100, 256, r"pixel at row 5, column 'pixel99' is out of range: pixels must be integers 0\.\.255"),
        (0, 9, 1.25, "pixel at row 0, column 'pixel8' is out of range"),
        (2, 30, "", "value at row 2, column 'pixel29' is missing"),
    ],
)
def test_csv_rejects_bad_cell(tmp_path, row, column, value, message):
    path = write_bad_csv(tmp_path, row, column, value)
    with pytest.raises(DataError, match=f"bad.csv: {message}"):
        load_csv(path)


def write_rows(path: Path, rows: list[list[object]], header: list[str] | None = CSV_COLUMNS) -> Path:
    """Write CSV text line by line, so malformed shapes reach the loader exactly as given."""
    lines = ([",".join(header)] if header is not None else []) + [",".join(map(str, row)) for row in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


def valid_rows(count: int) -> list[list[int]]:
    return to_frame(random_images(count)).to_numpy().tolist()


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda rows: rows[3].append(7), "row 3 has 786 cells, but the header has 785"),
        (lambda rows: [row.append(0) for row in rows], "row 0 has 786 cells, but the header has 785"),
        (lambda rows: rows[2].append(""), "row 2 has 786 cells"),
        (lambda rows: rows[4].pop(), "row 4 has 784 cells, but the header has 785"),
        (lambda rows: rows[1].__setitem__(slice(None), [1, 2]), "row 1 has 2 cells"),
    ],
)
def test_csv_rows_must_have_exactly_the_header_cell_count(tmp_path, damage, message):
    rows = valid_rows(6)
    damage(rows)
    with pytest.raises(DataError, match=f"rows.csv: {message}"):
        load_csv(write_rows(tmp_path / "rows.csv", rows))


def test_csv_without_header_is_refused_not_shortened(tmp_path):
    path = write_rows(tmp_path / "bare.csv", valid_rows(5), header=None)
    with pytest.raises(DataError, match="bare.csv: the header is missing: the first row holds only numbers"):
        load_csv(path)


def test_csv_header_of_wrong_width_is_refused(tmp_path):
    path = write_rows(tmp_path / "narrow.csv", [row[:10] for row in valid_rows(3)], header=CSV_COLUMNS[:10])
    with pytest.raises(DataError, match=r"narrow.csv: expected 785 columns \(label \+ 784 pixels\), found 10"):
        load_csv(path)


def test_csv_keeps_accepting_whole_floats_blank_lines_and_other_column_names(tmp_path):
    images = random_images(7)
    path = tmp_path / "floats.csv"
    frame = to_frame(images).astype(np.float64)
    frame.columns = [f"c{i}" for i in range(len(CSV_COLUMNS))]
    frame.to_csv(path, index=False)
    path.write_text(path.read_text().replace("\n", "\n\n", 3))
    assert "\n1.0," in path.read_text()
    assert_same(load_csv(path), images)


def test_csv_header_only_has_no_rows(tmp_path):
    with pytest.raises(DataError, match="header.csv: no rows"):
        load_csv(write_rows(tmp_path / "header.csv", []))


@pytest.mark.parametrize(("cell", "message"), [("True", "value at row 1030, column 'pixel6' is not a number"),
                                               ("", "value at row 1030, column 'pixel6' is missing"),
                                               ("300", "pixel at row 1030, column 'pixel6' is out of range"),
                                               ("nan", "pixel at row 1030, column 'pixel6' is out of range")])
def test_csv_names_the_bad_row_beyond_the_first_chunk(tmp_path, cell, message):
    rows = [[row % NUM_CLASSES] + [0] * 784 for row in range(1100)]
    rows[1030][7] = cell
    with pytest.raises(DataError, match=message):
        load_csv(write_rows(tmp_path / "long.csv", rows))


def test_csv_memory_is_a_small_multiple_of_the_pixels(tmp_path):
    images = random_images(4000)
    path = tmp_path / "big.csv"
    to_frame(images).to_csv(path, index=False)
    assert peak_traced_bytes(lambda: load_csv(path)) < 4 * images.pixels.nbytes + (16 << 20)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(widths=st.lists(st.sampled_from([784, 785, 785, 785, 786]), min_size=0, max_size=4),
       header=st.sampled_from(["named", "numeric", "none"]), seed=st.integers(0, 2**16))
def test_fuzzed_csv_shape_ends_in_data_error_or_exact_values(tmp_path, widths, header, seed):
    """Rows of random widths under any header: a DataError unless every row fits, then exact values."""
    rng = np.random.default_rng(seed)
    rows = [[int(rng.integers(0, 10))] + rng.integers(0, 256, width - 1).tolist() for width in widths]
    names = {"named": CSV_COLUMNS, "numeric": [str(i) for i in range(785)], "none": None}[header]
    path = write_rows(tmp_path / "shape.csv", rows, names)
    try:
        images = load_csv(path)
    except DataError:
        assert header != "named" or not rows or set(widths) != {785}
        return
    assert header == "named" and set(widths) == {785}
    expected = np.array(rows)
    np.testing.assert_array_equal(images.labels, expected[:, 0])
    np.testing.assert_array_equal(images.pixels.reshape(len(rows), -1), expected[:, 1:])


def test_from_frame_rejects_wrong_column_count():
    frame = to_frame(random_images(3)).iloc[:, :784]
    with pytest.raises(DataError, match=r"expected 785 columns \(label \+ 784 pixels\), found 784"):
        from_frame(frame)


def test_from_frame_rejects_no_rows():
    with pytest.raises(DataError, match="no rows"):
        from_frame(pd.DataFrame(columns=CSV_COLUMNS))


@pytest.mark.parametrize(
    ("column", "values", "message"),
    [
        ("label", [True] * 1100, "value at row 0, column 'label' is not a number"),
        ("pixel3", [0] * 1050 + [None] * 50, "value at row 1050, column 'pixel3' is missing"),
        ("pixel3", [0] * 1060 + ["x"] * 40, "value at row 1060, column 'pixel3' is not a number"),
        ("pixel3", [0.0] * 1070 + [1.5] * 30, "pixel at row 1070, column 'pixel3' is out of range"),
        ("pixel3", [0] * 1080 + [1j] * 20, "value at row 0, column 'pixel3' is not a number"),
    ],
)
def test_from_frame_names_bad_cells_in_any_chunk(column, values, message):
    frame = to_frame(random_images(1100))
    frame[column] = values
    with pytest.raises(DataError, match=message):
        from_frame(frame)


def test_from_frame_reads_a_large_frame_exactly():
    images = random_images(2500)
    assert_same(from_frame(to_frame(images)), images)


def test_csv_rejects_empty_and_missing_files(tmp_path):
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(DataError, match="empty.csv: empty file"):
        load_csv(empty)
    with pytest.raises(DataError, match="absent.csv: no such file"):
        load_csv(tmp_path / "absent.csv")


def test_load_accepts_csv_and_refuses_unknown_sources(tmp_path):
    images = random_images(50)
    path = tmp_path / "node.csv"
    to_frame(images).to_csv(path, index=False)
    train, test = load(str(path))
    assert (len(train), len(test)) == (40, 10)
    with pytest.raises(DataError, match="is not 'embedded', a directory of MNIST IDX files"):
        load(str(tmp_path / "nothing.txt"))


# tensors


def test_to_tensors_normalises_like_mnist():
    pixels = np.zeros((2, 28, 28), dtype=np.uint8)
    pixels[1, 3, 4] = 255
    images, labels = to_tensors(ImageSet(pixels, np.array([7, 2], dtype=np.int64)))
    assert images.shape == (2, 1, 28, 28)
    assert images.dtype == torch.float32
    assert labels.dtype == torch.int64
    assert labels.tolist() == [7, 2]
    assert images[0, 0, 0, 0].item() == pytest.approx(-MEAN / STD, rel=1e-6)
    assert images[1, 0, 3, 4].item() == pytest.approx((1 - MEAN) / STD, rel=1e-6)
    assert images[1, 0, 3, 5].item() == pytest.approx(-MEAN / STD, rel=1e-6)


@pytest.mark.parametrize("cell", ["\U000c279e", "\U000c279eI\U0003df1b", "\u0663"])
def test_non_ascii_cell_is_named_not_a_crash(tmp_path, cell):
    """numpy 2.4's loadtxt segfaults on some characters outside the BMP: they must never reach it."""
    path = tmp_path / "odd.csv"
    path.write_text(",".join(CSV_COLUMNS) + "\n" + cell + ",2" + ",0" * 783 + "\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"row 0|rows 0"):
        load_csv(path)
