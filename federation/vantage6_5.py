"""The environment that runs ppsdg's vantage6 5.x module (`ppsdg/vantage6_v5.py`) through vantage6 5's
mock network: Python >= 3.13, vantage6-algorithm-tools 5.x and ppsdg's core needs, in a cache folder
outside the repo (about 6 GB: torch's wheel for 3.13 brings CUDA's libraries). tests/test_vantage6_v5.py
uses it where it exists.

    python -m federation.vantage6_5        # build it (minutes), or say where it is
"""
import shutil
from pathlib import Path

from federation import toolenv
from federation.shell import HarnessError, say

FOLDER = Path("/var/cache/ppsdg-vantage6-5/venv")
REQUIREMENTS = Path(__file__).with_name("vantage6-5-requirements.txt")
PYTHON = ("python3.13", "python3.14")
PYENV = Path.home() / ".pyenv" / "versions"


def interpreter() -> str:
    """A Python >= 3.13 on the PATH or in pyenv's versions."""
    found = [str(path) for path in sorted(PYENV.glob("3.1[3-9]*/bin/python3"))]
    found += [shutil.which(name) for name in PYTHON]
    for candidate in found:
        if candidate:
            return candidate
    raise HarnessError(f"vantage6 5.x needs Python >= 3.13: none of {', '.join(PYTHON)} is on the PATH or in {PYENV}")


if __name__ == "__main__":
    say(f"vantage6 5.x environment: {toolenv.ensure(FOLDER, REQUIREMENTS, interpreter())}")
