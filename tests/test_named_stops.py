"""A run that stops by a named error says so in its last line, whole, and leaves only valid output."""
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parent.parent


def strict_json(line: str) -> dict:
    """JSON as the standard has it: NaN and Infinity are not numbers there."""
    def refuse(constant: str) -> None:
        raise ValueError(f"{constant} is not JSON")

    return json.loads(line, parse_constant=refuse)


def test_a_diverged_gloo_run_stops_by_name_in_its_last_line_and_writes_no_nan(tmp_path, small_csv):
    """NaN in metrics.jsonl before, and the workers' "lost the server" lines after or inside the error."""
    ended = subprocess.run([sys.executable, str(ROOT / "main.py"), "--backend", "gloo", "--data", str(small_csv),
                            "--stochastic-gradient", "--learning-rate", "1e6", "-nr", "4", "--output", str(tmp_path)],
                           capture_output=True, text=True, timeout=300, check=False)
    lines = ended.stderr.splitlines()
    assert ended.returncode == 2 and lines[-1].startswith("ppsdg: error: round ")
    assert lines[-1].endswith("the global model diverged (test loss nan): the run stops before saving it; a lower "
                              "--learning-rate may train")
    assert all(line.startswith("ppsdg: worker ") for line in lines[:-1] if "ppsdg" in line)
    records = [strict_json(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [record["round"] for record in records] == list(range(1, len(records) + 1))
