"""Scale of a synthetic table run: wall time, every process's peak memory and each round's message as
the rows, the columns, the categories per column and the nodes grow.

    python bench/bench_table_scale.py                                   # the sweep below
    python bench/bench_table_scale.py --shapes 50000x100x10x3,1000000x15x10x3
    python bench/bench_table_scale.py --report
    python bench/bench_table_scale.py --shapes 1000000x15x10x3 --again     # once more, beside the old row

A shape is ROWSxCOLUMNSxCATEGORIESxNODES. Its table is drawn from a seeded tree of dependent columns
(each column a noisy copy of an earlier one, every third column numeric, a binary target that
depends on three columns), split evenly over the nodes, with a test part of a fifth of the rows;
then run as a user runs it: `ppsdg schema` on the union, and `main.py --data node1,...
--test-data TEST --schema S -ldp --target-epsilon 1` on gloo, the evaluation included. The message
is one node's release (the model state it sends back), as the layout sizes it.
Results: bench/results/table_scale.jsonl, one line a run; a shape already there is not run again
unless --again is given (a quiet machine's figure beside a loaded one's).
"""
import argparse
import functools
import json
import subprocess
import time
from pathlib import Path

import numpy as np
import pandas as pd

import runs
from ppsdg.synthesizers.marginals import Layout
from ppsdg.tables import Schema

RESULTS = runs.RESULTS / "table_scale.jsonl"
SWEEP = ("10000x15x10x3,50000x15x10x3,200000x15x10x3,1000000x15x10x3,"
         "50000x30x10x3,50000x60x10x3,50000x100x10x3,"
         "50000x15x2x3,50000x15x30x3,"
         "50000x15x10x2,50000x15x10x6")
TARGET = "target"
COPY = 0.6
SEED = 11
TIMEOUT_S = 3600.0


def shape_of(text: str) -> tuple[int, int, int, int]:
    rows, columns, categories, nodes = (int(part) for part in text.split("x"))
    return rows, columns, categories, nodes


def table(rows: int, columns: int, categories: int, seed: int) -> pd.DataFrame:
    """`columns` columns (the target last): column j copies a random earlier column's code with
    probability COPY, else draws uniformly; every third column is numeric (its code plus uniform
    noise, times 1000), the rest text categories."""
    rng = np.random.default_rng(seed)
    codes = np.empty((rows, columns - 1), dtype=np.int64)
    codes[:, 0] = rng.integers(0, categories, rows)
    for j in range(1, columns - 1):
        parent = codes[:, rng.integers(0, j)]
        codes[:, j] = np.where(rng.random(rows) < COPY, parent, rng.integers(0, categories, rows))
    frame = {}
    for j in range(columns - 1):
        if j % 3 == 2:
            frame[f"x{j}"] = np.round((codes[:, j] + rng.random(rows)) * 1000, 2)
        else:
            frame[f"c{j}"] = np.char.add("v", codes[:, j].astype(str))
    signal = codes[:, :3].sum(axis=1) / max(3 * (categories - 1), 1)
    frame[TARGET] = np.where(rng.random(rows) < 0.2 + 0.6 * signal, "yes", "no")
    return pd.DataFrame(frame)


def message_mb(schema_text: str) -> float:
    """One node's release as it travels: the survey and measured cells (float64) of the layout."""
    layout = Layout.of(Schema.from_text(schema_text), TARGET)
    return 2 * layout.cells * 8 / 1e6


def run_one(shape: str, folder: Path) -> dict:
    rows, columns, categories, nodes = shape_of(shape)
    whole = table(rows + rows // 5, columns, categories, SEED)
    train, test = whole.iloc[:rows], whole.iloc[rows:]
    paths = []
    for index, part in enumerate(np.array_split(np.arange(rows), nodes)):
        paths.append(folder / f"node{index + 1}.csv")
        train.iloc[part].to_csv(paths[-1], index=False)
    train.to_csv(folder / "train.csv", index=False)
    test.to_csv(folder / "test.csv", index=False)
    started = time.perf_counter()
    schema_text = subprocess.run([*runs.MAIN, "schema", str(folder / "train.csv"), "--target", TARGET],
                                 check=True, capture_output=True, text=True).stdout
    schema_s = time.perf_counter() - started
    (folder / "schema.json").write_text(schema_text)
    command = [*runs.MAIN, "--data", ",".join(map(str, paths)), "--test-data", str(folder / "test.csv"),
               "--schema", str(folder / "schema.json"), "-ldp", "--target-epsilon", "1",
               "--output", str(folder / "run")]
    started = time.perf_counter()
    process = subprocess.Popen(command, cwd=runs.ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    watcher = runs.MemoryWatcher(process.pid)
    watcher.start()
    try:
        _, stderr = process.communicate(timeout=TIMEOUT_S)
    finally:
        watcher.stop()
    wall = time.perf_counter() - started
    peaks = watcher.peaks()
    row = {"shape": shape, "rows": rows, "columns": columns, "categories": categories, "nodes": nodes,
           "schema_seconds": round(schema_s, 1), "wall_seconds": round(wall, 1), "cpu_seconds": round(watcher.cpu_s(), 1),
           "peak_mib_largest": round(max(peaks.values()), 1), "peak_mib_sum": round(sum(peaks.values()), 1),
           "message_mb": round(message_mb(schema_text), 2), "load": round(runs.load(), 2)}
    if process.returncode != 0:
        return {**row, "error": stderr.strip().splitlines()[-1] if stderr.strip() else f"exit {process.returncode}"}
    summary = json.loads((folder / "run" / "summary.json").read_text())
    records = [json.loads(line) for line in (folder / "run" / "metrics.jsonl").read_text().splitlines()]
    return {**row, "round_seconds": [round(r["seconds"], 1) for r in records],
            **{key: summary["evaluation"].get(key) for key in ("tstr_auc", "trtr_auc", "tvd_1way", "tvd_2way")}}


def report() -> str:
    keys = ("wall_seconds", "schema_seconds", "cpu_seconds", "peak_mib_largest", "peak_mib_sum", "message_mb",
            "tstr_auc", "trtr_auc", "tvd_2way", "load")
    lines = ["| rows x columns x categories x nodes | " + " | ".join(keys) + " |", "|---|" + "---:|" * len(keys)]
    for row in runs.read_rows(RESULTS) if RESULTS.exists() else []:
        cells = ["error: " + row["error"] if key == "wall_seconds" and "error" in row else
                 (f"{row[key]:.4g}" if isinstance(row.get(key), float) else str(row.get(key, "-"))) for key in keys]
        lines.append(f"| {row['shape']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    cli = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    cli.add_argument("--shapes", default=SWEEP, help="ROWSxCOLUMNSxCATEGORIESxNODES, comma-separated")
    cli.add_argument("--report", action="store_true")
    cli.add_argument("--again", action="store_true", help="run the shapes even if results hold them")
    options = cli.parse_args()
    if not options.report:
        seen = {row["shape"] for row in runs.read_rows(RESULTS)} if RESULTS.exists() and not options.again else set()
        for shape in options.shapes.split(","):
            if shape not in seen:
                runs.record_run(RESULTS, functools.partial(run_one, shape))
    print(report())


if __name__ == "__main__":
    main()
