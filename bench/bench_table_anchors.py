"""The centralized anchors for synthetic tables: MST and AIM, the reference mechanisms of Private-PGM,
run on the pooled Adult training data with the same public schema, the same mbi and the same
evaluation as the federated runs of bench_tables.py, so that their figures compare line by line; and
on the breadth set's test splits (`--tables`), as bench_breadth.py cuts and drafts them, so that a
target the federated run misses can be put beside what the central state of the art reaches there.

    python bench/bench_table_anchors.py --methods mst,aim --epsilons 1,10 --seeds 1,2,3
    python bench/bench_table_anchors.py --methods aim --epsilons 3 --tables nmes,credit,pbc
    python bench/bench_table_anchors.py --report

Written after private-pgm's mechanisms/mst.py and aim.py (those scripts use mbi 1.x's API and are not
in the 2.0 wheel). As there: privacy in zCDP, converted to (epsilon, delta) by the bound of Canonne,
Kamath and Steinke (2020); MST spends a third of rho on the 1-way marginals, a third on choosing a
spanning tree of pairs (exponential mechanism on how badly the 1-way model explains each pair), a
third on measuring it; AIM measures the 1-way marginals, then each round picks the workload clique
(all pairs with the target and their subsets, as the issue's 3-way TVD weighs) that the current model
explains worst (exponential mechanism, noise-corrected), measures it, refits, and halves its noise
when a measurement barely moved the model. Departures, to fit two cores: no domain compression in
MST; AIM's model capped at 8 MB (the federated synthesizer's cap; AIM's default is 80) and
AIM_ROUNDS rounds (the reference: 16 per column), or twice the columns where that is more, so that
the 1-way marginals spend at most half the budget (at 40 rounds 55 columns' would spend more than all
of it), with AIM_ITERS mirror-descent steps each, warm started; and AIM scores the model's answers to
its candidate marginals (211 on Adult) on SAMPLE_FACTOR times the data's rows drawn from the model
(sampling error per cell about sqrt(count / 10), below the measurement noise), since mbi's exact
inference of each took 0.75-1.4 s here, minutes a round.
Results: bench/results/table_anchors.jsonl, one line a run.
"""
import argparse
import itertools
import json
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.optimize import brentq
from scipy.special import logsumexp

import runs

sys.path.insert(0, str(runs.ROOT))
from bench_breadth import TABLES, held_out, independent, read  # noqa: E402
from ppsdg import table_evaluation, tables  # noqa: E402
from ppsdg.synthesizers.marginals import mbi  # noqa: E402

RESULTS = runs.RESULTS / "table_anchors.jsonl"
ADULT = runs.ROOT.parent / "shared" / "data" / "adult"
TARGET = "income"
DELTA = 1e-5
MODEL_MB = 8.0
AIM_ROUNDS = 40
AIM_ITERS = 300
SAMPLE_FACTOR = 10
FINAL_ITERS = 1000
FIGURES = ("tstr_auc", "tstr_accuracy", "trtr_auc", "tvd_1way", "tvd_2way", "tvd_3way", "memorized_share",
           "closer_to_train_share", "exact_copy_share", "holdout_exact_copy_share")


def zcdp_delta(rho: float, epsilon: float) -> float:
    """The delta of rho-zCDP at epsilon (Canonne, Kamath, Steinke 2020, Proposition 12), optimized
    over the Renyi order."""
    def slope(alpha: float) -> float:
        return (2 * alpha - 1) * rho - epsilon + math.log1p(-1 / alpha)

    high = (epsilon + 1) / (2 * rho) + 2
    alpha = brentq(slope, 1.0001, high) if slope(1.0001) < 0 < slope(high) else (1.0001 if slope(1.0001) >= 0 else high)
    value = (alpha - 1) * (alpha * rho - epsilon) + alpha * math.log1p(-1 / alpha)
    return min(math.exp(value) / (alpha - 1), 1.0)


def zcdp_rho(epsilon: float, delta: float) -> float:
    """The largest rho whose zCDP gives (epsilon, delta)-DP."""
    return brentq(lambda rho: zcdp_delta(rho, epsilon) - delta, 1e-9, epsilon + 1)


def exponential_choice(scores: np.ndarray, epsilon: float, sensitivity: float, rng: np.random.Generator) -> int:
    """The exponential mechanism (rho = epsilon^2 / 8 in zCDP)."""
    logits = 0.5 * epsilon / sensitivity * scores
    return int(rng.choice(len(scores), p=np.exp(logits - logsumexp(logits))))


class Pooled:
    """The pooled training data as mbi wants it: columns numbered, codes, the domain."""

    def __init__(self, codes: np.ndarray, shape: tuple[int, ...]) -> None:
        self.codes, self.shape = codes, shape
        self.columns = tuple(range(len(shape)))
        self.domain = mbi().Domain(self.columns, shape)

    def answer(self, clique: tuple[int, ...]) -> np.ndarray:
        return tables.marginal(self.codes, self.shape, clique).astype(float)

    def measure(self, clique: tuple[int, ...], sigma: float, rng: np.random.Generator):
        counts = self.answer(clique)
        return mbi().LinearMeasurement(counts + rng.normal(0, sigma, counts.shape), clique, stddev=sigma)


def fit(pooled: Pooled, measurements: list, iters: int, warm=None):
    """Mirror descent; JAX's compiled programs are dropped after each fit, since every new set of
    cliques compiles new ones and AIM's rounds otherwise exhaust the JIT's memory maps."""
    import jax

    model = mbi().estimation.MirrorDescent().estimate(pooled.domain, measurements, iters=iters, warm_start=warm)
    jax.clear_caches()
    return model


def mst(pooled: Pooled, rho: float, rng: np.random.Generator):
    sigma = math.sqrt(3 / (2 * rho))
    ones = [pooled.measure((c,), sigma, rng) for c in pooled.columns]
    model = fit(pooled, ones, FINAL_ITERS)
    pairs = list(itertools.combinations(pooled.columns, 2))
    errors = {pair: np.abs(pooled.answer(pair) - np.asarray(model.project(pair).datavector())).sum() for pair in pairs}
    epsilon = math.sqrt(8 * (rho / 3) / (len(pooled.columns) - 1))
    parent = {c: c for c in pooled.columns}

    def root(c: int) -> int:
        while parent[c] != c:
            c = parent[c]
        return c

    tree = []
    for _ in range(len(pooled.columns) - 1):
        candidates = [pair for pair in pairs if root(pair[0]) != root(pair[1])]
        chosen = candidates[exponential_choice(np.array([errors[p] for p in candidates]), epsilon, 1.0, rng)]
        parent[root(chosen[0])] = root(chosen[1])
        tree.append(chosen)
    return fit(pooled, ones + [pooled.measure(pair, sigma, rng) for pair in tree], FINAL_ITERS)


def aim_candidates(pooled: Pooled, target: int) -> dict[tuple[int, ...], float]:
    """The workload (every triple with the target) closed downward, each clique weighted by how much
    of the workload it covers, as AIM compiles it."""
    workload = [tuple(sorted((*pair, target))) for pair in itertools.combinations(
        [c for c in pooled.columns if c != target], 2)]
    closure = {sub for clique in workload for size in (1, 2, 3) for sub in itertools.combinations(clique, size)}
    return {clique: float(sum(len(set(clique) & set(w)) for w in workload)) for clique in sorted(closure)}


def aim(pooled: Pooled, rho: float, rng: np.random.Generator, target: int):
    candidates = aim_candidates(pooled, target)
    answers = {clique: pooled.answer(clique) for clique in candidates}
    rounds = max(AIM_ROUNDS, 2 * len(pooled.columns))
    sigma = math.sqrt(rounds / (2 * 0.9 * rho))
    epsilon = math.sqrt(8 * 0.1 * rho / rounds)
    measurements = [pooled.measure((c,), sigma, rng) for c in pooled.columns]
    used = len(pooled.columns) * 0.5 / sigma ** 2
    model = fit(pooled, measurements, AIM_ITERS)
    while used < rho:
        if rho - used < 2 * (0.5 / sigma ** 2 + epsilon ** 2 / 8):
            sigma, epsilon = math.sqrt(1 / (2 * 0.9 * (rho - used))), math.sqrt(8 * 0.1 * (rho - used))
        used += epsilon ** 2 / 8 + 0.5 / sigma ** 2
        limit = MODEL_MB * used / rho
        fits = [c for c in candidates if mbi().junction_tree.hypothetical_model_size(
            pooled.domain, list(model.cliques) + [c]) <= limit]
        drawn = Pooled(draw(model, SAMPLE_FACTOR * len(pooled.codes), rng), pooled.shape)
        scores = np.array([candidates[c] * (np.abs(answers[c] - drawn.answer(c) / SAMPLE_FACTOR).sum()
                                            - math.sqrt(2 / math.pi) * sigma * answers[c].size) for c in fits])
        clique = fits[exponential_choice(scores, epsilon, max(candidates[c] for c in fits), rng)]
        before = np.asarray(model.project(clique).datavector())
        measurements.append(pooled.measure(clique, sigma, rng))
        model = fit(pooled, measurements, AIM_ITERS, model)
        print(f"AIM: measured {clique} (sigma {sigma:.1f}), rho used {used / rho:.0%}", file=sys.stderr, flush=True)
        if np.abs(np.asarray(model.project(clique).datavector()) - before).sum() <= \
                sigma * math.sqrt(2 / math.pi) * answers[clique].size:
            sigma, epsilon = sigma / 2, epsilon * 2
    return fit(pooled, measurements, FINAL_ITERS, model)


def draw(model, rows: int, rng: np.random.Generator) -> np.ndarray:
    """Records drawn from the model as codes (mbi draws from numpy's global generator)."""
    np.random.seed(int(rng.integers(1 << 32)))
    synthetic = model.synthetic_data(rows=rows)
    return np.stack([np.asarray(synthetic.data[c]) for c in sorted(synthetic.data)], axis=1).astype(np.int64)


def parts(name: str) -> tuple[pd.DataFrame, pd.DataFrame, str]:
    """The training and test parts and the target: Adult's own files, or a breadth table's test split
    (`bench_breadth.held_out`), read back as a run reads its CSV."""
    if name == "adult":
        return (*(tables.read_table(str(ADULT / file)) for file in ("adult-train.csv.gz", "adult-test.csv.gz")), TARGET)
    table = next(table for table in TABLES if table.name == name)
    train, test = held_out(read(table), table.target)
    with tempfile.TemporaryDirectory() as folder:
        frames = []
        for frame, file in ((train, "train.csv"), (test, "test.csv")):
            frame.to_csv(Path(folder) / file, index=False)
            frames.append(tables.read_table(str(Path(folder) / file)))
    return frames[0], frames[1], table.target


def run_one(method: str, epsilon: float, seed: int, name: str) -> dict:
    train, test, target = parts(name)
    schema = tables.draft(train, target)
    codes, _ = tables.encode(train, schema)
    pooled = Pooled(codes, schema.shape)
    rng = np.random.default_rng(seed)
    load, started = round(runs.load(), 2), time.perf_counter()
    rho = zcdp_rho(epsilon, DELTA)
    model = mst(pooled, rho, rng) if method == "mst" else aim(pooled, rho, rng, schema.names.index(target))
    table = tables.decode(draw(model, len(train), rng), schema, rng)
    seconds = time.perf_counter() - started
    figures = table_evaluation.evaluate(table, train, test, schema, target)
    floor, _ = table_evaluation.fidelity_figures(independent(train, len(train), seed), train, schema)
    return {"method": method, "epsilon": epsilon, "seed": seed, **({} if name == "adult" else {"table": name}),
            "wall_seconds": round(seconds, 1), "load_before": load, **{key: figures[key] for key in FIGURES},
            "independent_tvd_2way": floor["tvd_2way"]}


def report() -> None:
    rows = runs.read_rows(RESULTS)
    print("| table | method | epsilon | seeds | TSTR AUC | TRTR AUC | TVD 2-way | TVD 3-way | 2-way / independent "
          "| wall s |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, method, epsilon in sorted({(r.get("table", "adult"), r["method"], r["epsilon"]) for r in rows}):
        group = [r for r in rows if (r.get("table", "adult"), r["method"], r["epsilon"]) == (name, method, epsilon)]

        def cell(key: str) -> str:
            values = [r[key] for r in group]
            spread = f" ± {statistics.stdev(values):.4f}" if len(values) > 1 else ""
            return f"{statistics.mean(values):.4f}{spread}"

        ratios = [r["tvd_2way"] / r["independent_tvd_2way"] for r in group if "independent_tvd_2way" in r]
        print(f"| {name} | {method} | {epsilon:g} | {len(group)} | {cell('tstr_auc')} | {cell('trtr_auc')} | "
              f"{cell('tvd_2way')} | {cell('tvd_3way')} | {f'{statistics.mean(ratios):.2f}' if ratios else '-'} | "
              f"{statistics.mean(r['wall_seconds'] for r in group):.0f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", default="mst,aim")
    parser.add_argument("--epsilons", default="1,10")
    parser.add_argument("--seeds", default="1")
    parser.add_argument("--tables", default="adult", help="adult (its own test file) or breadth tables by name")
    parser.add_argument("--report", action="store_true")
    args = parser.parse_args()
    if args.report:
        report()
        return
    have = {(r.get("table", "adult"), r["method"], r["epsilon"], r["seed"]) for r in runs.read_rows(RESULTS)}
    for name, method, epsilon, seed in itertools.product(args.tables.split(","), args.methods.split(","),
                                                         map(float, args.epsilons.split(",")),
                                                         map(int, args.seeds.split(","))):
        if (name, method, epsilon, seed) not in have:
            result = run_one(method, epsilon, seed, name)
            print(json.dumps(result), flush=True)
            with RESULTS.open("a") as out:
                out.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
