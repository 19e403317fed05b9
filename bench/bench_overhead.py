"""Federation overhead: the same training in one process, over gloo and over vantage6's mock client.

    python bench/bench_overhead.py [--repeats 3] [--rounds 10] [--workers 2] [--data embedded] [--use-cuda]

Every side runs the same rounds on the same partitions with the same seeds: bench/inprocess.py is
the single process (the server's and the workers' code of the backends, with no transport, the
workers in turn), main.py --backend gloo and --backend vantage6 the federations. Each is a fresh
command, timed from start to exit (interpreter, imports, processes, data, rounds, output) and by
its rounds alone (the `seconds` of metrics.jsonl), and by the CPU seconds of all its processes,
which other load on the machine disturbs far less than the wall time. Equal --threads give the same arithmetic, so
the model digests must agree: that is checked, not assumed.

The runs are interleaved (one of each configuration, then again) so that other load on the
machine hits every configuration alike; medians are reported, with the load average.
Writes bench/results/overhead.{md,json,png}.
"""
import argparse
import os
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path

import runs

TARGETS = {"gloo": 1.10, "vantage6": 1.15}


@dataclass(frozen=True)
class Config:
    """One side of the comparison: what runs, and with how many torch threads per process."""

    label: str
    backend: str
    threads: int
    main: Path = runs.ROOT / "main.py"

    def command(self, common: list[str], output: Path) -> list[str]:
        base = runs.INPROCESS if self.backend == "single" else [sys.executable, str(self.main),
                                                                "--backend", self.backend]
        return [*base, *common, "--threads", str(self.threads), "--output", str(output)]

    @property
    def key(self) -> str:
        return f"{self.backend}-{self.threads}-{self.main.stem}"


def configs(workers: int, cores: int, backends: list[str], other_main: Path | None) -> list[Config]:
    """Single process on one thread and on every core; gloo with the cores shared out so that
    workers do not fight over them (and, to compare launchers, gloo through another main.py);
    the mock (workers in turn) on one thread and on every core."""
    per_worker = max(1, cores // workers)
    gloo = f"gloo, {workers} workers x {per_worker} thread(s)"
    chosen = [Config("single process, 1 thread", "single", 1),
              Config(f"single process, {cores} threads", "single", cores),
              Config(gloo, "gloo", per_worker),
              *([Config(f"{gloo}, {other_main}", "gloo", per_worker, other_main)] if other_main else []),
              Config("vantage6 mock, 1 thread", "vantage6", 1),
              Config(f"vantage6 mock, {cores} threads", "vantage6", cores)]
    return list({c.key: c for c in chosen if c.backend in backends}.values())


def measure(chosen: list[Config], common: list[str], repeats: int, scratch: Path) -> dict[Config, list[runs.RunResult]]:
    """Every configuration `repeats` times, interleaved."""
    results: dict[Config, list[runs.RunResult]] = {config: [] for config in chosen}
    for repeat in range(repeats):
        for config in chosen:
            output = scratch / config.key
            result = runs.run(config.command(common, output), output)
            results[config].append(result)
            print(f"[{repeat + 1}/{repeats}] {config.label:<34} wall {result.wall_s:6.1f} s, rounds "
                  f"{result.rounds_s:6.1f} s, CPU {result.cpu_s:6.1f} s, model {result.digest}, "
                  f"load {result.load_before:.1f}->{result.load_after:.1f}", flush=True)
    return results


def median(values: list[float]) -> float:
    return statistics.median(values)


def summary_rows(results: dict[Config, list[runs.RunResult]]) -> list[dict]:
    """Medians per configuration; a configuration whose repeats disagree on the model is flagged."""
    rows = []
    for config, done in results.items():
        digests = {r.digest for r in done}
        rows.append({"label": config.label, "backend": config.backend, "threads": config.threads,
                     "main": str(config.main),
                     "wall_s": median([r.wall_s for r in done]), "rounds_s": median([r.rounds_s for r in done]),
                     "outside_s": median([r.outside_rounds_s for r in done]),
                     "cpu_s": median([r.cpu_s for r in done]),
                     "walls": [round(r.wall_s, 2) for r in done],
                     "digest": digests.pop() if len(digests) == 1 else "DIFFERS BETWEEN REPEATS",
                     "accuracy": done[-1].accuracy[-1],
                     "load": [round(r.load_before, 2) for r in done] + [round(done[-1].load_after, 2)]})
    return rows


def ratios(rows: list[dict], cores: int) -> list[dict]:
    """Each federation against the single process with the same threads per process (same
    arithmetic) and against the single process on every core (same machine); a run through
    another main.py against the same run through this one (the launcher alone differs)."""
    singles = {row["threads"]: row for row in rows if row["backend"] == "single"}
    ours = {(row["backend"], row["threads"]): row for row in rows if row["main"] == str(runs.ROOT / "main.py")}
    found = []
    for row in rows:
        if row["backend"] == "single":
            continue
        if row["main"] != str(runs.ROOT / "main.py"):
            bases = {"the launcher alone differs": ours.get((row["backend"], row["threads"]))}
        else:
            bases = {"same threads per process": singles.get(row["threads"]),
                     f"single process on all {cores} cores": singles.get(cores)}
        for basis, reference in bases.items():
            if reference is None or any(f["federation"] == row["label"] and f["against"] == reference["label"]
                                        for f in found):
                continue
            found.append({"federation": row["label"], "against": reference["label"], "basis": basis,
                          "wall": row["wall_s"] / reference["wall_s"],
                          "rounds": row["rounds_s"] / reference["rounds_s"],
                          "cpu": row["cpu_s"] / reference["cpu_s"],
                          "bit_identical": row["digest"] == reference["digest"],
                          "target": TARGETS[row["backend"]] if reference["backend"] == "single" else None})
    return found


def verdict(found: dict) -> str:
    if found["target"] is None:
        return "-"
    return f"{found['target']:.2f}: {'met' if found['wall'] <= found['target'] else 'not met'}"


def markdown(rows: list[dict], found: list[dict], header: str) -> str:
    lines = [header, "", "| run | threads / process | wall s (median) | rounds s | outside rounds s | CPU s | walls | final acc. | model | load avg |",
             "|---|---:|---:|---:|---:|---:|---|---:|---|---|"]
    lines += [f"| {r['label']} | {r['threads']} | {r['wall_s']:.1f} | {r['rounds_s']:.1f} | {r['outside_s']:.1f} | {r['cpu_s']:.1f} | "
              f"{', '.join(f'{w:.1f}' for w in r['walls'])} | {r['accuracy']:.4f} | `{r['digest']}` | "
              f"{' '.join(f'{v:.1f}' for v in r['load'])} |" for r in rows]
    lines += ["", "| run | against | wall ratio | rounds-only ratio | CPU ratio | bit-identical | target (wall) |",
              "|---|---|---:|---:|---:|---|---|"]
    lines += [f"| {f['federation']} | {f['against']} | {f['wall']:.2f} | {f['rounds']:.2f} | {f['cpu']:.2f} | "
              f"{'yes' if f['bit_identical'] else 'no (other threads)'} | {verdict(f)} |" for f in found]
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], path: Path) -> None:
    """Stacked bars: what the rounds cost, and what start-up and the end cost around them."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    figure, axes = pyplot.subplots(figsize=(8, 0.6 * len(rows) + 1.6))
    labels = [row["label"] for row in rows]
    rounds = [row["rounds_s"] for row in rows]
    axes.barh(labels, rounds, label="rounds")
    axes.barh(labels, [row["outside_s"] for row in rows], left=rounds, label="start-up and end")
    axes.invert_yaxis()
    axes.set_xlabel("seconds (median)")
    axes.legend(loc="upper center", bbox_to_anchor=(0.5, -0.25), ncol=2)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    pyplot.close(figure)


def main() -> None:
    cli = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    cli.add_argument("--repeats", type=int, default=3)
    cli.add_argument("--rounds", type=int, default=10)
    cli.add_argument("--workers", type=int, default=2)
    cli.add_argument("--data", default="embedded")
    cli.add_argument("--cores", type=int, default=os.cpu_count(), help="cores to share out (default: all)")
    cli.add_argument("--use-cuda", action="store_true", help="every side trains on CUDA (-uc)")
    cli.add_argument("--backends", default="single,gloo,vantage6", help="which sides to run")
    cli.add_argument("--other-main", type=Path, help="also time gloo through this main.py (another launcher)")
    cli.add_argument("--name", default="overhead", help="names the result files")
    cli.add_argument("--scratch", type=Path, default=Path("/tmp/ppsdg-bench-overhead"))
    args = cli.parse_args()
    common = ["-nn", str(args.workers + 1), "-nr", str(args.rounds), "--data", args.data, "-sm",
              *(["-uc"] if args.use_cuda else [])]
    header = (f"Machine: {runs.machine()}. Options common to every run: `{' '.join(common)}`; "
              f"median of {args.repeats} interleaved runs.")
    print(header, flush=True)
    chosen = configs(args.workers, args.cores, args.backends.split(","), args.other_main)
    results = measure(chosen, common, args.repeats, args.scratch)
    rows = summary_rows(results)
    found = ratios(rows, args.cores)
    table = markdown(rows, found, header)
    print("\n" + table)
    runs.write_text(f"{args.name}.md", table)
    runs.write_json(f"{args.name}.json", {"header": header, "rows": rows, "ratios": found})
    plot(rows, runs.RESULTS / f"{args.name}.png")


if __name__ == "__main__":
    main()
