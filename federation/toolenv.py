"""The harness's own virtual environments, in a cache folder outside the repo: its tools (vantage6 CLI
and server), and a researcher's, which holds vantage6's client alone."""
import shutil
import sys
from pathlib import Path

from federation.shell import run, say

REQUIREMENTS = Path(__file__).with_name("requirements.txt")
CLIENT_REQUIREMENTS = Path(__file__).with_name("client-requirements.txt")


def ensure(folder: Path, requirements: Path = REQUIREMENTS, interpreter: str = sys.executable) -> Path:
    """Reuse the environment if it was completed from the same requirements, else build it afresh with
    `interpreter`."""
    python = folder / "bin" / "python"
    stamp = folder / requirements.name
    if stamp.exists() and stamp.read_text() == requirements.read_text():
        return python
    say(f"creating the environment of {requirements.name} in {folder}")
    shutil.rmtree(folder, ignore_errors=True)
    run([interpreter, "-m", "venv", str(folder)], timeout_s=120)
    run([str(python), "-m", "pip", "install", "--quiet", "-r", str(requirements)], timeout_s=900)
    shutil.copyfile(requirements, stamp)
    return python
