"""A default of the marginals method, chosen fast: each release of a table run simulated in one
process, on the breadth set's validation splits (`bench_breadth.held_out` twice: never a test part).

    python bench/bench_marginals_variants.py --fine-shares 0,0.05,0.1 --seeds 1,2,3
    python bench/bench_marginals_variants.py --plan-one-way-shares 0.25,0.5
    python bench/bench_marginals_variants.py --rounds 5
    python bench/bench_marginals_variants.py --iters 4000
    python bench/bench_marginals_variants.py --survey-one-way-shares 0.3,0.7
    python bench/bench_marginals_variants.py --report

The training part is one node, so each release carries one node's noise: that of secure aggregation's
sum, or of one site holding everything. The rest is the run's own code (`marginals.release`'s cliques
and weights, `select`'s plan, the graphical model's fit, sampling and decoding; the survey at the
noise multiplier a 3-round run plans for the epsilon, the measuring rounds' releases summed as the
server sums them), scored by the evaluation's own fidelity and TSTR figures against the validation
part. No transport, no floors, no second process: a run takes seconds where `bench_breadth.py` takes
a minute, so a default can be tried on every table with several seeds. A variant here is the survey's
share of squared weight for the fine histograms (`marginals.FINE_SHARE`) and for the 1-way marginals
(`marginals.ONE_WAY_SHARE`), the measuring rounds' share for the 1-way marginals
(`marginals.PLAN_ONE_WAY_SHARE`), the rounds (a table run's default 3: the survey is one of them, so
it spends a third of the budget), and the graphical model's mirror-descent steps
(`marginals.ESTIMATION_ITERS`).
Results: bench/results/marginals-variants.jsonl, one line a run; a run already there is not run again.
"""
import argparse
import json
import math
import statistics
import time

import jax
import numpy as np
import torch

import runs
from bench_breadth import TABLES, held_out, read
from ppsdg import table_evaluation, tables
from ppsdg.config import TABLE_ROUNDS, Table
from ppsdg.privacy import planned_noise
from ppsdg.synthesizers import marginals

RESULTS = runs.RESULTS / "marginals-variants.jsonl"
DELTA = 1e-5


def released(codes: np.ndarray, layout: marginals.Layout, weights: np.ndarray, noise: float,
             rng: np.random.Generator) -> torch.Tensor:
    """`marginals.release`'s vector with the noise drawn from `rng` (a seeded run needs no ledger)."""
    vector = marginals.release(codes, layout, weights, 0.0, None)
    scale = np.divide(noise, weights, out=np.zeros_like(weights), where=weights > 0)
    return torch.from_numpy(vector + rng.normal(0, 1, layout.cells) * np.repeat(scale, np.diff(layout.starts)))


def run_one(name: str, epsilon: float, seed: int, fine_share: float, one_way_share: float, rounds: int,
            iters: int, survey_one_way: float) -> dict:
    table = next(table for table in TABLES if table.name == name)
    train, test = held_out(held_out(read(table), table.target)[0], table.target)
    schema = tables.draft(train, table.target)
    layout = marginals.Layout.of(schema, table.target)
    codes = tables.encode(train, schema, fine=True)[0]
    noise, rng = planned_noise(epsilon, DELTA, 1.0, rounds, "prv"), np.random.default_rng(seed)
    marginals.FINE_SHARE, marginals.PLAN_ONE_WAY_SHARE = fine_share, one_way_share
    marginals.ESTIMATION_ITERS, marginals.ONE_WAY_SHARE = iters, survey_one_way
    started = time.perf_counter()
    state = {"survey": released(codes, layout, layout.survey_weights(), noise, rng),
             "measured": torch.zeros(layout.cells, dtype=torch.float64),
             "survey_noise": torch.tensor(noise ** 2, dtype=torch.float64),
             "measure_noise": torch.tensor(noise ** 2 / (rounds - 1), dtype=torch.float64)}
    plan = marginals.select({**state, "plan": torch.zeros(len(layout.found), dtype=torch.float64)}, layout, rounds - 1)
    state.update(plan=torch.from_numpy(plan), measured=released(codes, layout, plan, noise / math.sqrt(rounds - 1), rng))
    synthetic = marginals.MarginalsSynthesizer(Table(schema.text(), table.target, None), rounds).sample(
        state, len(train), seed)
    jax.clear_caches()  # each fit compiles programs of its own: dozens of runs would exhaust the JIT's memory
    fidelity, _ = table_evaluation.fidelity_figures(synthetic, train, schema)
    utility, _ = table_evaluation.classifier_figures(synthetic, test, schema, table.target)
    return {"table": name, "epsilon": epsilon, "seed": seed, "fine_share": fine_share,
            "plan_one_way_share": one_way_share, "rounds": rounds, "iters": iters,
            "survey_one_way_share": survey_one_way, "rows": len(train),
            "planned": int((plan[len(schema.columns):] > 0).sum()), "seconds": round(time.perf_counter() - started, 1),
            "tstr_auc": utility["auc"], **{key: fidelity[key] for key in ("tvd_1way", "tvd_2way")},
            "independent_tvd_2way": fidelity[table_evaluation.INDEPENDENT]}


def variant(row: dict) -> tuple[float, float, int, int, float]:
    """A row's variant: its fine share, its plan's 1-way share, its rounds, the model fit's
    mirror-descent steps and the survey's 1-way share (0.25, 3, 1000 and 0.5, the defaults, where the
    row predates the option)."""
    return (row["fine_share"], row.get("plan_one_way_share", 0.25), row.get("rounds", TABLE_ROUNDS),
            row.get("iters", 1000), row.get("survey_one_way_share", 0.5))


def report(epsilon: float) -> str:
    """Per table and variant (fine share, plan's 1-way share, rounds, fit steps, survey's 1-way share) at
    `epsilon`, the mean over seeds: 2-way TVD / TSTR AUC; then the means over the tables every variant
    ran."""
    rows = [{**row, "variant": variant(row)} for row in (runs.read_rows(RESULTS) if RESULTS.exists() else [])
            if row["epsilon"] == epsilon]
    shares = sorted({row["variant"] for row in rows})
    names = [table.name for table in TABLES if any(row["table"] == table.name for row in rows)]
    cell = {(name, share): [row for row in rows if row["table"] == name and row["variant"] == share]
            for name in names for share in shares}
    lines = ["| table | " + " | ".join(f"fine {fine:g}, 1-way {one:g}, {rounds} rounds, {iters} steps, "
                                     f"survey 1-way {survey:g}: 2-way TVD / AUC"
                                     for fine, one, rounds, iters, survey in shares) + " |",
             "|---|" + "---|" * len(shares)]
    for name in names:
        lines.append(f"| {name} | " + " | ".join(
            f"{statistics.mean(r['tvd_2way'] for r in cell[name, s]):.4f} / "
            f"{statistics.mean(r['tstr_auc'] for r in cell[name, s] if r['tstr_auc'] is not None):.3f} "
            f"({len(cell[name, s])})" if cell[name, s] else "-" for s in shares) + " |")
    complete = [name for name in names if all(cell[name, share] for share in shares)]
    if complete:
        means = [(statistics.mean(statistics.mean(r["tvd_2way"] for r in cell[n, s]) for n in complete),
                  statistics.mean(statistics.mean(r["tstr_auc"] for r in cell[n, s]) for n in complete)) for s in shares]
        lines.append(f"| mean of {len(complete)} | " + " | ".join(f"{tvd:.4f} / {auc:.4f}" for tvd, auc in means) + " |")
    return "\n".join(lines)


def main() -> None:
    cli = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    cli.add_argument("--tables", default="adult,nmes,doctor,colon,pbc,credit,nhis")
    cli.add_argument("--epsilon", type=float, default=3.0)
    cli.add_argument("--seeds", default="1,2,3")
    cli.add_argument("--fine-shares", default=str(marginals.FINE_SHARE))
    cli.add_argument("--plan-one-way-shares", default=str(marginals.PLAN_ONE_WAY_SHARE))
    cli.add_argument("--rounds", type=int, default=TABLE_ROUNDS)
    cli.add_argument("--iters", type=int, default=marginals.ESTIMATION_ITERS)
    cli.add_argument("--survey-one-way-shares", default=str(marginals.ONE_WAY_SHARE))
    cli.add_argument("--report", action="store_true")
    options = cli.parse_args()
    if not options.report:
        done = {(row["table"], row["epsilon"], row["seed"], variant(row))
                for row in (runs.read_rows(RESULTS) if RESULTS.exists() else [])}
        shares = [(fine, one, options.rounds, options.iters, survey)
                  for fine in map(float, options.fine_shares.split(","))
                  for one in map(float, options.plan_one_way_shares.split(","))
                  for survey in map(float, options.survey_one_way_shares.split(","))]
        for seed in map(int, options.seeds.split(",")):
            for name in options.tables.split(","):
                for share in shares:
                    if (name, options.epsilon, seed, share) in done:
                        continue
                    row = run_one(name, options.epsilon, seed, *share)
                    with RESULTS.open("a") as results:
                        results.write(json.dumps(row) + "\n")
                    print(json.dumps(row), flush=True)
    print(report(options.epsilon))


if __name__ == "__main__":
    main()
