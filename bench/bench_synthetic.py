"""Synthetic data against the privacy budget: each synthesizer x epsilon x data x seed, run as a user
runs it (`main.py --gan [-ldp --target-epsilon E] --data ...`), with the figures of its summary.

    python bench/bench_synthetic.py --data mnist --epsilons 1,3,10,inf --seeds 1,2,3
    python bench/bench_synthetic.py --report        # table, privacy-utility plot, side-by-side samples

Results go to bench/results/synthetic.jsonl, one line a run; a run already there is not run again.
Each run's first 100 synthetic images (10 a class) go to bench/results/samples/, for the side-by-side
grid. `moments-linear` is the moments synthesizer drawing its Gaussians without the refiner;
`moments-refiner1` rows are the first refiner's runs (15 epochs, its drawings not inked, the draws not
widened) and `moments-refiner2` rows the second's (noisy class covariances shrunk halfway toward the
pool, not a tenth); `moments-unsplit` and `moments-linear-unsplit` rows are runs without DP before
each class was split in four there; all kept to compare with, and no longer configurations that run.
The MNIST data are the real test set in ../shared/data/mnist, split by the loader (8,000 training,
2,000 held out); nothing is chosen on the held-out part. Public data: the embedded digits (UCI),
for the `digits` basis only; on the embedded digits themselves nothing is public.
"""
import argparse
import json
import math
import statistics
import tempfile
from pathlib import Path

import numpy as np
import runs

from ppsdg import data

RESULTS = runs.RESULTS / "synthetic.jsonl"
MNIST = runs.ROOT.parent / "shared" / "data" / "mnist"
SAMPLES = runs.RESULTS / "samples"
GRID_COLUMNS = 10
# Configurations that are a synthesizer with other options than its defaults.
VARIANTS = {"moments-linear": ["--synthesizer", "moments", "--moments-draw", "linear"]}
# The side-by-side grid: (title, synthesizer, target epsilon) at seed 1, then the real images.
GRID = (("Gaussian (moments-linear), eps 10", "moments-linear", 10.0),
        ("first refiner, eps 10", "moments-refiner1", 10.0),
        ("refined moments (default), eps 10", "moments", 10.0), ("WGAN-GP, no DP", "wgan", math.inf))
FIGURES = ("tstr_accuracy", "frechet_distance", "memorized_share", "precision", "recall", "coverage")
# Published TSTR on MNIST (centralized, 60,000 images, delta 1e-5), as (epsilon, accuracy) marks.
REFERENCES = {
    "DPDM": [(1, 0.953), (10, 0.981)],
    "DP-MERF": [(1, 0.803), (10, 0.822)],
    "GS-WGAN": [(1, 0.724), (10, 0.80)],
    "DP-SGD classifier on real data": [(1, 0.882), (10, 0.964)],
}


def command(synthesizer: str, source: str, epsilon: float, seed: int, partition: str, workers: int,
            output: Path) -> list[str]:
    """The user's plain command for one configuration; -sm so that the run's model can be digested."""
    path = str(MNIST) if source == "mnist" else source
    privacy = [] if math.isinf(epsilon) else ["-ldp", "--target-epsilon", f"{epsilon:g}"]
    method = VARIANTS.get(synthesizer, ["--synthesizer", synthesizer])
    return [*runs.MAIN, "--gan", *method, "--data", path, "-s", str(seed), "-nn",
            str(workers + 1), "--partition", partition, *privacy, "-sm", "--output", str(output)]


def measure(synthesizer: str, source: str, epsilon: float, seed: int, partition: str, workers: int,
            timeout_s: float) -> dict:
    with tempfile.TemporaryDirectory(prefix="ppsdg-bench-") as folder:
        output = Path(folder)
        result = runs.run(command(synthesizer, source, epsilon, seed, partition, workers, output), output,
                          timeout_s=timeout_s)
        summary = json.loads((output / "summary.json").read_text())
        first = data.load_csv(output / "synthetic.csv").subset(np.arange(GRID_COLUMNS * data.NUM_CLASSES))
        save_tile(first, SAMPLES / f"{synthesizer}-{source}-eps{epsilon:g}-seed{seed}.png")
    evaluation = summary["evaluation"]
    return {"synthesizer": synthesizer, "data": source, "target_epsilon": epsilon, "seed": seed,
            "partition": partition, "workers": workers, "epsilon": summary.get("epsilon", math.inf),
            **{key: evaluation[key] for key in FIGURES}, "trtr_accuracy": evaluation["trtr_accuracy"],
            "wall_s": round(result.wall_s, 1), "peak_mib": round(max(result.peak_mib.values(), default=0.0)),
            "load": round(result.load_after, 2), "machine": runs.machine()}


def save_tile(images: data.ImageSet, path: Path) -> None:
    """Images as one grey PNG, a row per class (0 at the top), GRID_COLUMNS a row."""
    from matplotlib import pyplot

    order = np.argsort(images.labels, kind="stable")[:GRID_COLUMNS * data.NUM_CLASSES]
    side = data.IMAGE_SIDE
    tiles = images.pixels[order].reshape(data.NUM_CLASSES, GRID_COLUMNS, side, side)
    path.parent.mkdir(exist_ok=True)
    pyplot.imsave(path, tiles.transpose(0, 2, 1, 3).reshape(data.NUM_CLASSES * side, GRID_COLUMNS * side),
                  cmap="gray", vmin=0, vmax=data.MAX_PIXEL)


def side_by_side() -> None:
    """The GRID's sample tiles of seed 1 on MNIST and real training images, as synthetic-grid.png."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    train, _ = data.load(str(MNIST))
    real = np.concatenate([np.flatnonzero(train.labels == label)[:GRID_COLUMNS] for label in range(data.NUM_CLASSES)])
    save_tile(train.subset(real), SAMPLES / "real-mnist.png")
    panels = [(title, SAMPLES / f"{name}-mnist-eps{epsilon:g}-seed1.png") for title, name, epsilon in GRID]
    panels.append(("real MNIST (training part)", SAMPLES / "real-mnist.png"))
    figure, axes = pyplot.subplots(1, len(panels), figsize=(4 * len(panels), 4.4))
    for axis, (title, path) in zip(axes, panels):
        if path.exists():
            axis.imshow(pyplot.imread(path), interpolation="nearest")
        axis.set(title=title, xticks=[], yticks=[])
    figure.tight_layout()
    figure.savefig(runs.RESULTS / "synthetic-grid.png", dpi=100)


def key(row: dict) -> tuple:
    return (row["synthesizer"], row["data"], float(row["target_epsilon"]), row["seed"], row["partition"],
            row["workers"])


def done() -> set[tuple]:
    if not RESULTS.exists():
        return set()
    return {key(json.loads(line)) for line in RESULTS.read_text().splitlines()}


def report() -> None:
    """The table (mean and spread over seeds) and the privacy-utility plot."""
    rows = [json.loads(line) for line in RESULTS.read_text().splitlines()]
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault(key(row)[:3] + key(row)[4:], []).append(row)
    lines = ["| synthesizer | data | partition | workers | target epsilon | seeds | TSTR mean (min-max) | Frechet | "
             "memorized | precision / recall | wall s (max) |", "|---|---|---|---|---:|---:|---|---:|---:|---|---:|"]
    for (synthesizer, source, epsilon, partition, workers), group in sorted(groups.items()):
        tstr = [r["tstr_accuracy"] for r in group]
        lines.append(
            f"| {synthesizer} | {source} | {partition} | {workers} | {epsilon:g} | {len(group)} | "
            f"{statistics.mean(tstr):.3f} ({min(tstr):.3f}-{max(tstr):.3f}) | "
            f"{statistics.mean(r['frechet_distance'] for r in group):.1f} | "
            f"{statistics.mean(r['memorized_share'] for r in group):.3f} | "
            f"{statistics.mean(r['precision'] for r in group):.2f} / {statistics.mean(r['recall'] for r in group):.2f} | "
            f"{max(r['wall_s'] for r in group):.0f} |")
    runs.write_text("synthetic.md", "\n".join(lines) + "\n")
    plot(groups)
    side_by_side()


def plot(groups: dict[tuple, list[dict]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    figure, axes = pyplot.subplots(figsize=(10, 4.5))
    shown_inf = 30.0
    for (synthesizer, source, _, partition, workers) in sorted({k[:2] + (None,) + k[3:] for k in groups}):
        points = sorted((min(eps, shown_inf), statistics.mean(r["tstr_accuracy"] for r in group))
                        for (s, d, eps, p, w), group in groups.items()
                        if (s, d, p, w) == (synthesizer, source, partition, workers))
        axes.plot(*zip(*points), marker="o", label=f"ppsdg {synthesizer}, {source}, {partition}, {workers} workers")
    for index, (name, marks) in enumerate(REFERENCES.items()):
        axes.scatter(*zip(*marks), marker="x^sd"[index], color="grey", label=f"{name} (published)")
    axes.set(xscale="log", xlabel=f"epsilon (delta 1e-5; {shown_inf:g} = no DP)", ylabel="TSTR accuracy",
             ylim=(0, 1), title="Synthetic MNIST-like data: utility against privacy")
    axes.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    figure.tight_layout()
    figure.savefig(runs.RESULTS / "synthetic.png", dpi=110)


def main() -> None:
    cli = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    cli.add_argument("--synthesizers", default="moments")
    cli.add_argument("--data", default="mnist", help="comma-separated: mnist, embedded, or paths")
    cli.add_argument("--epsilons", default="1,3,10,inf")
    cli.add_argument("--seeds", default="1")
    cli.add_argument("--partition", default="iid")
    cli.add_argument("--workers", type=int, default=2)
    cli.add_argument("--timeout", type=float, default=1800.0, help="seconds a run may take (a loaded machine)")
    cli.add_argument("--report", action="store_true", help="only write the table and the plot")
    args = cli.parse_args()
    if args.report:
        report()
        return
    finished = done()
    for synthesizer in args.synthesizers.split(","):
        for source in args.data.split(","):
            for seed in map(int, args.seeds.split(",")):
                for epsilon in map(float, args.epsilons.split(",")):
                    row = {"synthesizer": synthesizer, "data": source, "target_epsilon": epsilon, "seed": seed,
                           "partition": args.partition, "workers": args.workers}
                    if key(row) in finished:
                        continue
                    row = measure(synthesizer, source, epsilon, seed, args.partition, args.workers, args.timeout)
                    print(json.dumps(row), flush=True)
                    with RESULTS.open("a") as results:
                        results.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
