"""`ppsdg evaluate`'s input: a synthetic set it cannot score in bounded time and memory, or more threads
than the machine's cores, ends in one named line, at once."""
import os

import pytest

from ppsdg import commands, data, evaluate


def run(capsys, *argv: str) -> tuple[int, list[str]]:
    code = commands.evaluate_command([*argv, "--data", "embedded"])
    return code, capsys.readouterr().err.splitlines()


def sparse_file(path, size: int) -> str:
    """A file of `size` bytes that takes no disk space."""
    path.touch()
    os.truncate(path, size)
    return str(path)


@pytest.mark.parametrize("make, message", [
    (lambda folder: "/dev/zero", "/dev/zero: not a regular file"),  # MemoryError before
    (lambda folder: os.mkfifo(folder / "fifo") or str(folder / "fifo"), "fifo: not a regular file"),  # waited for ever
    (lambda folder: str(folder), "not a regular file"),
    (lambda folder: str(folder / "missing.csv"), "missing.csv: No such file or directory"),
    (lambda folder: sparse_file(folder / "big.csv", evaluate.MAX_SYNTHETIC_BYTES + 1),
     f"{evaluate.MAX_SYNTHETIC_BYTES + 1} bytes, more than the"),  # 10^6 rows: 30 s and 10.7 GB before
])
def test_a_synthetic_file_it_cannot_read_in_bounded_work_is_refused(tmp_path, capsys, make, message):
    code, lines = run(capsys, make(tmp_path))
    assert code == 2 and len(lines) == 1 and lines[0].startswith("ppsdg: error: ") and message in lines[0]


def test_more_synthetic_images_than_the_limit_are_refused(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(evaluate, "MAX_SYNTHETIC_ROWS", 5)
    train, _ = data.load("embedded")
    data.to_frame(train.subset(list(range(6)))).to_csv(tmp_path / "six.csv", index=False)
    code, lines = run(capsys, str(tmp_path / "six.csv"))
    assert (code, lines) == (2, [f"ppsdg: error: {tmp_path / 'six.csv'}: 6 images, more than 5"])


def test_more_threads_than_cores_are_refused(tmp_path, capsys):
    """A segfault before, with --threads 1000000."""
    code, lines = run(capsys, "/dev/null", "--threads", "1000000")
    assert code == 2 and lines[0].startswith("ppsdg: error: --threads must be in 1..")
