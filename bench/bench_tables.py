"""Synthetic tables against the privacy budget: epsilon x split x nodes x seed on UCI Adult, run as a
user runs it (`main.py --data parts --test-data TEST --schema S [-ldp --target-epsilon E]
[--secure-aggregation]`), with every figure of its summary, the wall time and the mean time of a round.

    python bench/bench_tables.py --epsilons 1,10 --splits iid --nodes 3 --seeds 1,2,3
    python bench/bench_tables.py --epsilons 1 --nodes 3,10 --secure-aggregation --results bench/results/tables-secure.jsonl
    python bench/bench_tables.py --report        # the table of what ran, mean and spread
    python bench/bench_tables.py --plot          # bench/results/tables_privacy_utility.png

Results go to bench/results/tables.jsonl (or --results), one line a run; a run already there is not
run again. A row's `secure` says whether it ran under secure aggregation (a row without it did not):
each node then adds 1/nodes of the noise variance, so the sum carries one release's noise, not
sqrt(nodes) times it. One node has nothing to aggregate and is refused it.
`--num-nodes` is always given (nodes + 1, the server included): for one file main.py's default is two
workers, each with half the file and its own noise, which the one-node rows of tables.jsonl, run
before it was given, are.
The data are ../shared/data/adult (never copied here): the training file split over the nodes, the
test file as the real test part. The schema is drafted from the training file (`ppsdg schema`).
Splits: `iid` (a seeded shuffle cut in equal parts), `race` (nodes by race: the largest group apart,
the others together, then cut in equal parts), `dirichlet` (Dirichlet 0.5 on income).
"""
import argparse
import functools
import json
import math
import statistics
import subprocess
import time
from pathlib import Path

import numpy as np
import pandas as pd

import runs

RESULTS = runs.RESULTS / "tables.jsonl"
ADULT = runs.ROOT.parent / "shared" / "data" / "adult"
FIGURES = ("tstr_auc", "tstr_accuracy", "trtr_auc", "tvd_1way", "tvd_2way", "tvd_3way", "memorized_share",
           "closer_to_train_share", "exact_copy_share", "holdout_exact_copy_share")
SPLIT_SEED = 7


def split(train: pd.DataFrame, how: str, nodes: int) -> list[pd.DataFrame]:
    """The training file as `nodes` parts, one per node."""
    rng = np.random.default_rng(SPLIT_SEED)
    if how == "iid":
        return [train.iloc[np.sort(part)] for part in np.array_split(rng.permutation(len(train)), nodes)]
    if how == "race":
        white = train["race"] == train["race"].mode()[0]
        groups = [np.flatnonzero(white.to_numpy()), np.flatnonzero(~white.to_numpy())]
        first = np.array_split(rng.permutation(groups[0]), nodes - 1)
        return [train.iloc[np.sort(part)] for part in [*first, groups[1]]]
    labels = (train["income"] == ">50K").to_numpy()
    shares = rng.dirichlet(np.full(nodes, 0.5), size=2)
    parts = [[] for _ in range(nodes)]
    for label in (False, True):
        members = rng.permutation(np.flatnonzero(labels == label))
        cuts = (np.cumsum(shares[int(label)])[:-1] * len(members)).astype(int)
        for node, piece in enumerate(np.split(members, cuts)):
            parts[node].append(piece)
    return [train.iloc[np.sort(np.concatenate(part))] for part in parts]


def run_one(epsilon: float, how: str, nodes: int, seed: int, secure: bool, folder: Path) -> dict:
    train = pd.read_csv(ADULT / "adult-train.csv.gz", dtype=str, keep_default_na=False)
    paths = []
    for index, part in enumerate(split(train, how, nodes)):
        paths.append(folder / f"node{index + 1}.csv")
        part.to_csv(paths[-1], index=False)
    schema = folder / "schema.json"
    schema.write_text(subprocess.run([*runs.MAIN, "schema", str(ADULT / "adult-train.csv.gz"), "--target", "income"],
                                     check=True, capture_output=True, text=True).stdout)
    privacy = [] if math.isinf(epsilon) else ["-ldp", "--target-epsilon", f"{epsilon:g}"]
    privacy += ["--secure-aggregation"] if secure else []
    command = [*runs.MAIN, "--data", ",".join(map(str, paths)), "--num-nodes", str(nodes + 1), "--test-data",
               str(ADULT / "adult-test.csv.gz"), "--schema", str(schema), "-s", str(seed), *privacy, "--output",
               str(folder / "run")]
    load, started = round(runs.load(), 2), time.perf_counter()
    subprocess.run(command, check=True, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    summary = json.loads((folder / "run" / "summary.json").read_text())
    rounds = [record["seconds"] for record in runs.read_rows(folder / "run" / "metrics.jsonl")]
    return {"epsilon": None if math.isinf(epsilon) else epsilon, "split": how, "nodes": nodes, "seed": seed,
            "secure": secure, "wall_seconds": round(seconds, 1), "round_seconds": round(statistics.mean(rounds), 2),
            "load_before": load,
            "reported_epsilon": summary.get("epsilon"),
            **{key: summary["evaluation"][key] for key in FIGURES}}


def done(results: Path) -> list[dict]:
    return runs.read_rows(results)


def report(results: Path) -> str:
    """Mean and spread (standard deviation over seeds) of each figure per configuration; `-` where no
    row has the figure (round_seconds came after the first rows)."""
    groups: dict[tuple, list[dict]] = {}
    for row in done(results):
        groups.setdefault((row["epsilon"] or math.inf, row["split"], row["nodes"], row.get("secure", False)),
                          []).append(row)
    keys = ("tstr_auc", "tvd_2way", "tvd_3way", "memorized_share", "exact_copy_share", "round_seconds",
            "wall_seconds")
    lines = ["| epsilon | split | nodes | secure | seeds | " + " | ".join(keys) + " |", "|" + "---|" * (len(keys) + 5)]
    for (epsilon, how, nodes, secure), rows in sorted(groups.items()):
        cells = []
        for key in keys:
            values = [row[key] for row in rows if key in row]
            spread = statistics.stdev(values) if len(values) > 1 else 0.0
            cells.append(f"{statistics.mean(values):.4g} ± {spread:.2g}" if values else "-")
        lines.append(f"| {epsilon:g} | {how} | {nodes} | {'yes' if secure else 'no'} | {len(rows)} | "
                     + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(results: Path) -> Path:
    """The privacy-utility plot: TSTR AUC and 2-/3-way TVD against epsilon, one line per method (the
    federated runs by split and node count, the centralized anchors of bench_table_anchors.py), the
    means over seeds; runs without DP as dotted levels, real data's AUC (TRTR) as a dashed one. The
    figure is named after the results file (tables.jsonl: tables_privacy_utility.png)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from bench_table_anchors import RESULTS as ANCHORS

    lines: dict[str, dict[float, list[dict]]] = {}
    for row in done(results):
        secure = ", secure aggregation" if row.get("secure") else ""
        lines.setdefault(f"ppsdg, {row['split']}, {row['nodes']} node(s){secure}", {}).setdefault(
            row["epsilon"] or math.inf, []).append(row)
    for row in runs.read_rows(ANCHORS):
        lines.setdefault(f"{row['method'].upper()} (centralized)", {}).setdefault(row["epsilon"], []).append(row)
    keys = (("tstr_auc", "TSTR ROC AUC"), ("tvd_2way", "mean TVD, 2-way"), ("tvd_3way", "mean TVD, 3-way"))
    figure, axes = plt.subplots(1, len(keys), figsize=(15, 4.5))
    for (key, title), axis in zip(keys, axes):
        for number, (label, points) in enumerate(sorted(lines.items())):
            color = f"C{number}"
            finite = sorted(e for e in points if math.isfinite(e))
            axis.plot(finite, [statistics.mean(r[key] for r in points[e]) for e in finite], "o-", color=color,
                      label=label)
            if math.inf in points:
                axis.axhline(statistics.mean(r[key] for r in points[math.inf]), color=color, linestyle=":")
        if key == "tstr_auc":
            axis.axhline(statistics.mean(r["trtr_auc"] for r in done(results)), color="black", linestyle="--",
                         label="real data (TRTR)")
        axis.set(xscale="log", xlabel="epsilon (delta 1e-5)", title=title)
    axes[0].legend(fontsize=7)
    figure.suptitle("Adult: synthetic tables against the privacy budget (dotted: no DP)")
    path = runs.RESULTS / f"{results.stem}_privacy_utility.png"
    figure.savefig(path, dpi=110, bbox_inches="tight")
    return path


def main() -> None:
    cli = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    cli.add_argument("--epsilons", default="1,10")
    cli.add_argument("--splits", default="iid")
    cli.add_argument("--nodes", default="3")
    cli.add_argument("--seeds", default="1,2,3")
    cli.add_argument("--secure-aggregation", action="store_true",
                     help="the runs pass --secure-aggregation to main.py (with DP and two nodes or more)")
    cli.add_argument("--results", type=Path, default=RESULTS, help=f"the results file (default: {RESULTS})")
    cli.add_argument("--report", action="store_true")
    cli.add_argument("--plot", action="store_true")
    options = cli.parse_args()
    if options.plot:
        print(plot(options.results))
        return
    if not options.report:
        secure = options.secure_aggregation
        seen = {(r["epsilon"] or math.inf, r["split"], r["nodes"], r["seed"], r.get("secure", False))
                for r in done(options.results)}
        for epsilon in map(float, options.epsilons.split(",")):
            for how in options.splits.split(","):
                for nodes in map(int, options.nodes.split(",")):
                    for seed in map(int, options.seeds.split(",")):
                        if (epsilon, how, nodes, seed, secure) not in seen:
                            runs.record_run(options.results,
                                            functools.partial(run_one, epsilon, how, nodes, seed, secure))
    print(report(options.results))


if __name__ == "__main__":
    main()
