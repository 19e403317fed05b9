"""The README's code runs: every ```python and ```bash block, unless the line before it says why not.

The rule, for whoever adds a section: a block runs by default, in a fresh folder that holds the files
the README's examples name (`org1.csv`, `org2.csv`: two organizations' data in the node CSV layout)
and `main.py`, with this checkout importable and this interpreter as `python`; it must exit 0 within
BLOCK_TIMEOUT_S. A block that cannot run here in seconds (an install, a server, Docker, root,
torchrun, a long training, a placeholder like DIR) gets `<!-- not run: the reason -->` on the line
before it. An unmarked bash block that needs one of NEVER_HERE fails instead of running. Blocks of
other languages (yaml, plain text) are not programs and are never run.
"""
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from ppsdg import data

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
RUNNABLE = ("python", "bash")
NOT_RUN = re.compile(r"<!--\s*not run:\s*(\S.*?)\s*-->")
FENCE = re.compile(r"^```(\S*)\s*$")
NEVER_HERE = re.compile(r"\b(sudo|docker|torchrun|pip install|pytest|--server-url|federation\.harness)\b")
BLOCK_TIMEOUT_S = 120
ROWS_PER_ORGANIZATION = 120


@dataclass(frozen=True)
class Block:
    """One fenced block: where it starts, its language, its text, and why it is not run (None: it runs)."""

    line: int
    language: str
    code: str
    not_run: str | None

    @property
    def name(self) -> str:
        return f"README.md:{self.line}:{self.language}"


def blocks(text: str) -> list[Block]:
    """The runnable-language blocks of a markdown text, each with the reason on the line before it, if any."""
    found: list[Block] = []
    lines = text.splitlines()
    index = 0
    while index < len(lines):
        opening = FENCE.match(lines[index])
        if opening is None:
            index += 1
            continue
        end = next((i for i in range(index + 1, len(lines)) if lines[i].startswith("```")), None)
        if end is None:
            raise ValueError(f"README.md:{index + 1}: a fenced block that never closes")
        before = next((line for line in reversed(lines[:index]) if line.strip()), "")
        marker = NOT_RUN.search(before)
        if opening.group(1) in RUNNABLE:
            found.append(Block(index + 1, opening.group(1), "\n".join(lines[index + 1:end]) + "\n",
                               marker.group(1) if marker else None))
        index = end + 1
    return found


@pytest.fixture(scope="module")
def organizations(tmp_path_factory) -> Path:
    """org1.csv and org2.csv: two organizations' shares of the embedded digits (small: the examples
    must run in seconds)."""
    folder = tmp_path_factory.mktemp("organizations")
    train_set, _ = data.load("embedded")
    parts = data.partition(train_set.labels[:2 * ROWS_PER_ORGANIZATION], 2, "iid", seed=1)
    for number, part in enumerate(parts, start=1):
        data.to_frame(train_set.subset(part)).to_csv(folder / f"org{number}.csv", index=False)
    return folder


def workspace(organizations: Path, folder: Path) -> Path:
    """A fresh folder with the examples' files and main.py, as a user's checkout would have them."""
    for source in organizations.iterdir():
        (folder / source.name).symlink_to(source)
    (folder / "main.py").symlink_to(ROOT / "main.py")
    return folder


def run_block(block: Block, folder: Path) -> subprocess.CompletedProcess:
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
                   "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]])}
    command = ([sys.executable, "-c", block.code] if block.language == "python"
               else ["bash", "-euo", "pipefail", "-c", block.code])
    return subprocess.run(command, cwd=folder, env=environment, capture_output=True, text=True,
                          timeout=BLOCK_TIMEOUT_S, check=False)


README_BLOCKS = blocks(README.read_text(encoding="utf-8"))


@pytest.mark.parametrize("block", README_BLOCKS, ids=[b.name for b in README_BLOCKS])
def test_readme_block_runs(block, organizations, tmp_path):
    if block.not_run is not None:
        pytest.skip(f"not run: {block.not_run}")
    needs = NEVER_HERE.search(block.code) if block.language == "bash" else None
    assert needs is None, (f"{block.name} needs {needs.group(1)!r}, which a test must not run: mark it "
                           "<!-- not run: the reason --> on the line before it")
    done = run_block(block, workspace(organizations, tmp_path))
    assert done.returncode == 0, f"{block.name} exited {done.returncode}:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}"


def test_the_collector_runs_unmarked_blocks_and_skips_marked_ones():
    text = ("Intro\n```python\nprint(1)\n```\n<!-- not run: needs a server -->\n\n```bash\nv6 server\n```\n"
            "```yaml\nkey: value\n```\n<!-- a plain comment -->\n```bash\necho ok\n```\n")
    assert blocks(text) == [Block(2, "python", "print(1)\n", None), Block(7, "bash", "v6 server\n", "needs a server"),
                            Block(14, "bash", "echo ok\n", None)]
    with pytest.raises(ValueError, match="README.md:2: a fenced block that never closes"):
        blocks("x\n```bash\necho\n")
    assert [b for b in README_BLOCKS if b.not_run is None and b.language == "python"], "no python block runs"


def test_a_block_runs_in_a_workspace_with_the_examples_files(organizations, tmp_path):
    block = Block(1, "bash", "test -f org1.csv && test -f org2.csv && python main.py --help > /dev/null && exit 3\n", None)
    done = run_block(block, workspace(organizations, tmp_path))
    assert (done.returncode, done.stderr) == (3, "")
