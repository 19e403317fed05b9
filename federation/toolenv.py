"""The harness's own virtual environment (vantage6 CLI and server), in a cache folder outside the repo."""
import shutil
import sys
from pathlib import Path

from federation.shell import run, say

REQUIREMENTS = Path(__file__).with_name("requirements.txt")


def ensure(folder: Path) -> Path:
    """Reuse the environment if it was completed from the same requirements, else build it afresh."""
    python = folder / "bin" / "python"
    stamp = folder / REQUIREMENTS.name
    if stamp.exists() and stamp.read_text() == REQUIREMENTS.read_text():
        return python
    say(f"creating the vantage6 tool environment in {folder}")
    shutil.rmtree(folder, ignore_errors=True)
    run([sys.executable, "-m", "venv", str(folder)], timeout_s=120)
    run([str(python), "-m", "pip", "install", "--quiet", "-r", str(REQUIREMENTS)], timeout_s=900)
    shutil.copyfile(REQUIREMENTS, stamp)
    return python
