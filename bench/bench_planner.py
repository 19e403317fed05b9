"""Time the noise planner (`privacy.planned_noise`) on the hardest targets the parser lets through.

    python bench/bench_planner.py [--timeout 60] [--accountants prv,rdp] [--only LABEL]

Each case runs in a fresh process with the planner's caches empty and Opacus already imported (a
node pays its import anyway): the seconds `planned_noise` takes, the peak memory it adds to the
process (resource.getrusage's maximum resident set, above the figure before the call) and its
answer, a noise multiplier or the name of the refusal. A case past --timeout is killed and shown so.

The cases: --target-epsilon at the ends of the parser's range (0.01 and 30), the default 3, 8, 10, and
just above RDP's floor (0.11: RDP's epsilon never falls below 0.103 at delta 1e-5); statistics
releases (rate 1, a step a round) and DP-SGD (rate batch_size / rows, epochs x rounds x batches
steps) from one round to --num-rounds 10^6 with --epochs 100 (and 10^4 at rate 1/2); rate 1/2 (128 rows, batch 64: Opacus's
RDP is slowest there), 1/63 (the MNIST split, 4,000 rows a worker: 630 steps for the classifier's
10 rounds, 6,300 for the WGAN-GP's 10 epochs a round), 1/313 over 100 rounds and 1/100,000; and
--delta 1e-10 and 0.5.
"""
import argparse
import json
import resource
import subprocess
import sys
import time
from typing import NamedTuple

from ppsdg import privacy
from ppsdg.errors import OptionsError

DEFAULT_DELTA = 1e-5


class Case(NamedTuple):
    label: str
    target: float
    rate: float
    steps: int
    delta: float = DEFAULT_DELTA


def releases(targets: tuple[float, ...], rounds: tuple[int, ...]) -> list[Case]:
    """The moments synthesizer's releases: one full-batch step a round."""
    return [Case(f"release x{steps:g}", target, 1.0, steps) for steps in rounds for target in targets]


def dp_sgd(batches: int, targets: tuple[float, ...], runs: tuple[tuple[int, int], ...]) -> list[Case]:
    """DP-SGD over `batches` batches an epoch, for each (rounds, epochs) of `runs`."""
    return [Case(f"1/{batches} x{rounds * epochs * batches:g}", target, 1 / batches, rounds * epochs * batches)
            for rounds, epochs in runs for target in targets]


CASES = (releases((0.01, 3.0, 8.0, 30.0), (1, 10, 10**6))
         + dp_sgd(2, (0.01, 0.11, 3.0, 30.0), ((10, 1), (10**6, 1), (10**6, 100), (10**6, 10**4)))
         + dp_sgd(63, (0.01, 0.11, 3.0, 8.0, 30.0), ((10, 1), (10**6, 1), (10**6, 100)))
         + dp_sgd(63, (3.0, 10.0, 30.0), ((10, 10),))
         + dp_sgd(313, (0.01, 3.0), ((100, 1),))
         + dp_sgd(100_000, (0.01, 3.0, 30.0), ((1, 1), (10, 1)))
         + [Case("1/63 x630 delta 1e-10", 3.0, 1 / 63, 630, 1e-10),
            Case("1/63 x630 delta 1e-10", 0.5, 1 / 63, 630, 1e-10),
            Case("1/63 x630 delta 0.5", 3.0, 1 / 63, 630, 0.5)])


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(case: Case, accountant: str) -> dict[str, float | str]:
    """One planning, in this process: its seconds, the peak memory it added and its answer."""
    privacy.epsilon([(1.0, 0.5, 1)], DEFAULT_DELTA, accountant)
    privacy.planned_noise.cache_clear()
    privacy.order_rdp.cache_clear()
    privacy.grid_size.cache_clear()
    before, start = peak_mb(), time.perf_counter()
    try:
        answer = f"{privacy.planned_noise(case.target, case.delta, case.rate, case.steps, accountant):.6g}"
    except OptionsError as error:
        answer = f"refused: {str(error)[:60]}"
    return {"seconds": time.perf_counter() - start, "peak_mb": peak_mb() - before, "answer": answer}


def run_case(index: int, accountant: str, timeout: float) -> dict[str, float | str]:
    """A case in a fresh process, so that its peak memory is its own; killed past `timeout`."""
    command = [sys.executable, __file__, "--case", str(index), "--accountants", accountant]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=True)
    except subprocess.TimeoutExpired:
        return {"seconds": timeout, "peak_mb": float("nan"), "answer": f"killed after {timeout:g} s"}
    except subprocess.CalledProcessError as error:
        return {"seconds": float("nan"), "peak_mb": float("nan"), "answer": error.stderr.strip().splitlines()[-1]}
    return json.loads(done.stdout)


def main() -> None:
    options = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    options.add_argument("--timeout", type=float, default=60.0, help="seconds before a case is killed")
    options.add_argument("--accountants", default="prv,rdp")
    options.add_argument("--only", default=None, help="only the cases whose label contains this")
    options.add_argument("--case", type=int, default=None, help=argparse.SUPPRESS)
    arguments = options.parse_args()
    accountants = arguments.accountants.split(",")
    if arguments.case is not None:
        print(json.dumps(measure(CASES[arguments.case], accountants[0])))
        return
    print("| case | delta | target | accountant | seconds | peak MB | answer |\n|---|---|---|---|---|---|---|")
    worst = 0.0
    for index, case in enumerate(CASES):
        if arguments.only and arguments.only not in case.label:
            continue
        for accountant in accountants:
            row = run_case(index, accountant, arguments.timeout)
            worst = max(worst, row["seconds"])
            print(f"| {case.label} | {case.delta:g} | {case.target:g} | {accountant} | {row['seconds']:.2f} | "
                  f"{row['peak_mb']:.0f} | {row['answer']} |", flush=True)
    print(f"\nworst: {worst:.2f} s")


if __name__ == "__main__":
    main()
