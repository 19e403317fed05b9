"""Synthetic tables on the breadth set: the eight real tables of ../shared/data/tables and UCI Adult,
each split by its natural site column over 3 nodes (`--nodes`), run as a user runs them (`ppsdg schema`
on the training part, the draft taken as reviewed, then `main.py --data node1,node2,node3 --num-nodes 4
--test-data TEST --schema S -ldp --target-epsilon E`), beside the floors on the same split: independent
columns (each column drawn from its own training marginal, no DP), noisy naive Bayes at the run's epsilon
(`naive_bayes`) and TRTR; and the sampling floor of the TVD: as many records drawn with replacement from
the training part itself (a perfect model's table of that size).

    python bench/bench_breadth.py --epsilons 3                       # the test parts
    python bench/bench_breadth.py --epsilons 3 --validation          # defaults are chosen here
    python bench/bench_breadth.py --epsilons 3 --validation --bins 10   # a variant of the draft
    python bench/bench_breadth.py --epsilons 3 --secure-aggregation     # the run under secure aggregation
    python bench/bench_breadth.py --epsilons 3 --nodes 1                # one pooled node
    python bench/bench_breadth.py --report

The test part is a seeded 20% of each table, stratified by its target: a method or default is never
chosen on it. `--validation` holds out 20% of the training part instead and scores on that: the
split on which defaults are chosen. Results: bench/results/breadth.jsonl, one line a run; a run
already there is not run again. A row's `secure` says whether the run passed `--secure-aggregation` (a
row without it did not): the sum of the nodes' releases then carries one release's noise, not sqrt(nodes)
times it; the floors are the same either way. A row's `nodes` is how many nodes the training part was cut
over (a row without it: 3): the site column's groups go, largest first, each to the node with the fewest
rows, and while there are fewer nodes than asked the largest is halved in the file's order (so 1 is the
whole training part, and 3 the split of the rows without `nodes`). `--num-nodes` (nodes + 1, the server
included) is always given: with one file main.py would otherwise split it over two workers.
"""
import argparse
import functools
import json
import statistics
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

import runs
from ppsdg import tables
from ppsdg.privacy import planned_noise
from ppsdg.tables import DRAFT_BINS, Schema

RESULTS = runs.RESULTS / "breadth.jsonl"
SHARED = runs.ROOT.parent / "shared" / "data"
NODES, HOLDOUT, SPLIT_SEED = 3, 0.2, 7  # NODES: the default of --nodes, that of the rows without `nodes`
# The marginals plan the rows were run with: "tree" (every tree edge a triple, before 2026-12-07's
# gate), "gated" (a triple only where the survey shows more dependence than its noise) or "fine" (the
# gated plan, and numbers decoded from the survey's fine histograms; since 2026-12-07's evening).
PLAN = "fine"
FIGURES = ("tstr_auc", "trtr_auc", "tvd_1way", "tvd_2way", "tvd_3way", "memorized_share", "exact_copy_share")


@dataclass(frozen=True)
class Table:
    name: str
    path: Path
    target: str
    site: str


TABLES = [Table("adult", SHARED / "adult" / "adult-train.csv.gz", "income", "race"),
          *(Table(name, SHARED / "tables" / file, target, site) for name, file, target, site in [
              ("loans", "openintro-loans-full-schema.csv.gz", "grade", "issue_month"),
              ("nmes", "AER-NMES1988.csv.gz", "health", "region"),
              ("doctor", "Ecdat-DoctorContacts.csv.gz", "physlim", "health"),
              ("randhie", "sampleSelection-RandHIE.csv.gz", "binexp", "site"),
              ("colon", "survival-colon.csv.gz", "status", "rx"),
              ("pbc", "survival-pbc.csv.gz", "status", "trt"),
              ("credit", "modeldata-credit-data.csv.gz", "Status", "Home"),
              ("nhis", "stevedata-mm-nhis.csv.gz", "hi", "nwhite")])]


def read(table: Table) -> pd.DataFrame:
    return pd.read_csv(table.path, dtype=str, keep_default_na=False, na_values=[""])


def held_out(frame: pd.DataFrame, target: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A seeded HOLDOUT share of the rows of each target value, and the rest."""
    rng = np.random.default_rng(SPLIT_SEED)
    test = np.zeros(len(frame), dtype=bool)
    for _, rows in frame.groupby(frame[target].fillna(""), sort=True).indices.items():
        test[rng.permutation(rows)[:int(round(HOLDOUT * len(rows)))]] = True
    return frame[~test], frame[test]


def sites(frame: pd.DataFrame, site: str, nodes: int) -> list[pd.DataFrame]:
    """`nodes` parts by the site column: its groups (missing a group of its own), largest first, each to
    the part with the fewest rows; while there are fewer parts than nodes, the largest part is halved."""
    groups = sorted(frame.groupby(frame[site].fillna("(missing)"), sort=True).indices.values(), key=len, reverse=True)
    parts: list[list[np.ndarray]] = [[] for _ in range(min(nodes, len(groups)))]
    for rows in groups:
        min(parts, key=lambda part: sum(map(len, part))).append(rows)
    indices = [np.sort(np.concatenate(part)) for part in parts]
    while len(indices) < nodes:
        largest = indices.pop(int(np.argmax([len(rows) for rows in indices])))
        indices += [largest[: len(largest) // 2], largest[len(largest) // 2:]]
    return [frame.iloc[rows] for rows in indices]


def independent(train: pd.DataFrame, rows: int, seed: int) -> pd.DataFrame:
    """The floor: each column drawn on its own from the training part (shuffling each column)."""
    rng = np.random.default_rng(seed)
    return pd.DataFrame({name: train[name].to_numpy()[rng.integers(0, len(train), rows)] for name in train.columns})


def naive_bayes(parts: list[pd.DataFrame], schema: Schema, target: str, epsilon: float, rows: int,
                seed: int) -> pd.DataFrame:
    """The floor of a DP method that knows only each column's tie to the target: every node releases,
    in one Gaussian release at `epsilon` (delta 1e-5, the run's), the target's counts and each
    feature's counts by target, equally weighted (squares summing to 1, as the run's releases); the
    sums, clipped at zero, give P(target) and P(feature | target), from which `rows` records are drawn."""
    rng = np.random.default_rng(seed)
    codes = [tables.encode(part, schema)[0] for part in parts]
    shape = schema.shape
    column = schema.names.index(target)
    cliques = [(column,)] + [tuple(sorted((c, column))) for c in range(len(shape)) if c != column]
    noise = planned_noise(epsilon, 1e-5, 1.0, 1, "prv") * np.sqrt(len(cliques))
    counts = [sum(tables.marginal(part, shape, clique).reshape([shape[c] for c in clique])
                  + rng.normal(0, noise, [shape[c] for c in clique]) for part in codes).clip(0) for clique in cliques]
    drawn = np.empty((rows, len(shape)), dtype=np.int64)
    drawn[:, column] = rng.choice(shape[column], rows, p=counts[0] / counts[0].sum())
    for clique, table in zip(cliques[1:], counts[1:]):
        feature = clique[0] if clique[1] == column else clique[1]
        by_target = table if clique[0] == feature else table.T
        for value in range(shape[column]):
            where = drawn[:, column] == value
            weights = by_target[:, value] + 1e-12
            drawn[where, feature] = rng.choice(shape[feature], int(where.sum()), p=weights / weights.sum())
    return tables.decode(drawn, schema, rng)


def evaluate(synthetic: Path, train: Path, test: Path, schema: Path, target: str) -> dict:
    done = subprocess.run([*runs.MAIN, "evaluate", str(synthetic), "--data", str(train), "--test-data", str(test),
                           "--schema", str(schema), "--target", target], check=True, capture_output=True, text=True)
    return json.loads(done.stdout)


def run_one(table: Table, epsilon: float, seed: int, validation: bool, bins: int, secure: bool, nodes: int,
            folder: Path) -> dict:
    train, test = held_out(read(table), table.target)
    if validation:
        train, test = held_out(train, table.target)
    paths = {"train": folder / "train.csv", "test": folder / "test.csv", "schema": folder / "schema.json",
             "independent": folder / "independent.csv", "naive_bayes": folder / "naive_bayes.csv",
             "resample": folder / "resample.csv"}
    train.to_csv(paths["train"], index=False)
    test.to_csv(paths["test"], index=False)
    files = []
    for index, part in enumerate(sites(train, table.site, nodes)):
        files.append(folder / f"node{index + 1}.csv")
        part.to_csv(files[-1], index=False)
    paths["schema"].write_text(subprocess.run([*runs.MAIN, "schema", str(paths["train"]), "--target", table.target,
                                               "--bins", str(bins)], check=True, capture_output=True, text=True).stdout)
    command = [*runs.MAIN, "--data", ",".join(map(str, files)), "--num-nodes", str(nodes + 1), "--test-data",
               str(paths["test"]), "--schema", str(paths["schema"]), "-s", str(seed), "-ldp", "--target-epsilon",
               f"{epsilon:g}", "--output", str(folder / "run"), *(["--secure-aggregation"] if secure else [])]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    row = {"table": table.name, "epsilon": epsilon, "seed": seed, "validation": validation, "bins": bins, "plan": PLAN,
           "secure": secure, "nodes": nodes, "rows": len(train),
           "columns": len(train.columns), "node_rows": [sum(1 for _ in open(node)) - 1 for node in files],
           "wall_seconds": round(seconds, 1)}
    if done.returncode != 0:
        return {**row, "error": done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"exit {done.returncode}"}
    summary = json.loads((folder / "run" / "summary.json").read_text())
    independent(train, len(train), seed).to_csv(paths["independent"], index=False)
    floor = evaluate(paths["independent"], paths["train"], paths["test"], paths["schema"], table.target)
    schema = Schema.from_text(paths["schema"].read_text())
    naive_bayes([pd.read_csv(node, dtype=str, keep_default_na=False, na_values=[""]) for node in files], schema,
                table.target, epsilon, len(train), seed).to_csv(paths["naive_bayes"], index=False)
    bayes = evaluate(paths["naive_bayes"], paths["train"], paths["test"], paths["schema"], table.target)
    train.sample(len(train), replace=True, random_state=seed).to_csv(paths["resample"], index=False)
    resample = evaluate(paths["resample"], paths["train"], paths["test"], paths["schema"], table.target)
    return {**row, "reported_epsilon": summary.get("epsilon"),
            **{key: summary["evaluation"].get(key) for key in FIGURES},
            **{f"independent_{key}": floor.get(key) for key in ("tstr_auc", "tvd_2way", "tvd_3way")},
            **{f"naive_bayes_{key}": bayes.get(key) for key in ("tstr_auc", "tvd_2way", "tvd_3way")},
            "resample_tvd_2way": resample.get("tvd_2way")}


def done() -> list[dict]:
    return runs.read_rows(RESULTS) if RESULTS.exists() else []


def report() -> str:
    """One line per table and epsilon (mean over seeds): the synthetic table against the floors."""
    groups: dict[tuple, list[dict]] = {}
    for row in done():
        groups.setdefault((row.get("plan", "tree"), row.get("nodes", NODES), row.get("secure", False),
                           row["validation"], row["bins"], row["table"], row["epsilon"]), []).append(row)
    keys = ("tstr_auc", "trtr_auc", "independent_tstr_auc", "naive_bayes_tstr_auc", "tvd_2way", "independent_tvd_2way",
            "naive_bayes_tvd_2way", "resample_tvd_2way", "tvd_3way", "memorized_share", "wall_seconds")
    lines = ["| plan | nodes | secure | split | bins | table | rows x cols | epsilon | seeds | " + " | ".join(keys)
             + " | 2-way / independent |", "|" + "---|" * (len(keys) + 10)]
    for (plan, nodes, secure, validation, bins, name, epsilon), rows in sorted(groups.items()):
        good = [row for row in rows if "error" not in row]
        first = (f"| {plan} | {nodes} | {'yes' if secure else 'no'} | {'validation' if validation else 'test'} | "
                 f"{bins} | {name} |")
        if not good:
            lines.append(f"{first} | {epsilon:g} | {len(rows)} | error: {rows[-1]['error']} |")
            continue

        def mean(key: str) -> float | None:
            values = [row[key] for row in good if row.get(key) is not None]
            return statistics.mean(values) if values else None

        cells = [f"{mean(key):.4g}" if mean(key) is not None else "-" for key in keys]
        ratio = mean("tvd_2way") / mean("independent_tvd_2way")
        lines.append(f"{first} {good[0]['rows']} x {good[0]['columns']} | {epsilon:g} | {len(good)} | "
                     + " | ".join(cells) + f" | {ratio:.2f} |")
    return "\n".join(lines)


def main() -> None:
    cli = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    cli.add_argument("--tables", default=",".join(table.name for table in TABLES))
    cli.add_argument("--epsilons", default="3")
    cli.add_argument("--seeds", default="1")
    cli.add_argument("--validation", action="store_true")
    cli.add_argument("--bins", type=int, default=DRAFT_BINS,
                     help=f"the draft's bins of a numeric column (`ppsdg schema --bins`; default {DRAFT_BINS}, the draft's)")
    cli.add_argument("--secure-aggregation", action="store_true", help="the runs pass --secure-aggregation to main.py")
    cli.add_argument("--nodes", type=int, default=NODES, help=f"the nodes the training part is cut over (default {NODES})")
    cli.add_argument("--report", action="store_true")
    options = cli.parse_args()
    if not options.report:
        seen = {(r["table"], r["epsilon"], r["seed"], r["validation"], r["bins"], r.get("plan", "tree"),
                 r.get("secure", False), r.get("nodes", NODES)) for r in done()}
        chosen = [table for table in TABLES if table.name in options.tables.split(",")]
        for table in chosen:
            for epsilon in map(float, options.epsilons.split(",")):
                for seed in map(int, options.seeds.split(",")):
                    if (table.name, epsilon, seed, options.validation, options.bins, PLAN,
                            options.secure_aggregation, options.nodes) not in seen:
                        runs.record_run(RESULTS, functools.partial(run_one, table, epsilon, seed, options.validation,
                                                                   options.bins, options.secure_aggregation,
                                                                   options.nodes))
    print(report())


if __name__ == "__main__":
    main()
