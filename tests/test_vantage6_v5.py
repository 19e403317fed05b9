"""The table job through vantage6 5.x's mock network (`ppsdg/vantage6_v5.py`) gives the table that
vantage6 4.x's mock gives for the same seed. It runs in the environment of federation/vantage6_5.py
(Python >= 3.13, vantage6-algorithm-tools 5.x, no vantage6 4.x), and is skipped where that is not built."""
import json
import subprocess
from pathlib import Path

import pytest

import main
from federation import vantage6_5

RUNNER = Path(__file__).with_name("vantage6_v5_run.py")
PYTHON = vantage6_5.FOLDER / "bin" / "python"
EPSILON = "3"


@pytest.mark.skipif(not PYTHON.exists(), reason=f"vantage6 5.x needs Python >= 3.13 and its own environment "
                    f"({vantage6_5.FOLDER}): build it with `python -m federation.vantage6_5`")
def test_vantage6_5s_mock_network_gives_the_table_of_vantage6_4s_mock(table_files, tmp_path):
    parts = [table_files["a"], table_files["b"]]
    found = tmp_path / "v5.json"
    subprocess.run([str(PYTHON), str(RUNNER), str(found), str(table_files["schema"]), "outcome", EPSILON,
                    *map(str, parts)], check=True, capture_output=True, timeout=600)
    assert main.main(["--data", ",".join(map(str, parts)), "--test-data", str(table_files["test"]),
                      "--schema", str(table_files["schema"]), "-ldp", "--target-epsilon", EPSILON,
                      "--backend", "vantage6", "--output", str(tmp_path / "v4")]) == 0
    result = json.loads(found.read_text())
    assert "error" not in result
    assert result["synthetic"]["csv"] == (tmp_path / "v4" / "synthetic.csv").read_text()
    # The accountant's figure, computed by another numpy and scipy under Python 3.13, agrees to 1e-12.
    epsilon = json.loads((tmp_path / "v4" / "summary.json").read_text())["epsilon"]
    assert result["synthetic"]["epsilon"] == pytest.approx(epsilon, rel=1e-9)
