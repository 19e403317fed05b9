"""Accuracy against the literature: rounds to a target test accuracy for FedAvg (E=5, B=10) and
FedSGD, IID and non-IID, next to a centralized run on the same data.

    python bench/bench_accuracy.py [MNIST_DIR] [--clients 20] [--fraction 0.1] [--budget-s 240]
                                   [--targets 0.95,0.97] [--jobs 2] [--only centralized] [--name NAME]

McMahan et al. (2017), CNN on MNIST: 60,000 training images over K=100 clients of 600, C=0.1 (10
clients a round), 99% test accuracy after 20 rounds (IID) and 229 (non-IID) for FedAvg E=5 B=10,
626 and 483 for FedSGD; learning rates tuned per setting. This is the same protocol shrunk to a
2-core machine: the data are MNIST_DIR's IDX files (with only the 10k test set there, 8,000 train
and 2,000 held out, see ppsdg.data) or the embedded digits when no directory is given; K clients,
a seeded group of round(C*K) a round (main.py --group-size); non-IID is McMahan's two label-sorted
shards per client (--partition classes); FedSGD sends the gradient of each client's whole data (B=inf,
-bs larger than any client); plain SGD (momentum 0, no decay); the centralized run is plain SGD
with B=10 on all the training data, one evaluation per epoch. Every run stops at the last target,
at --max-rounds, or at --budget-s seconds, whichever comes first, so its bound is known.

The federated runs are bench/inprocess.py, the backends' own server and worker code without the
transport (the same model bit for bit as gloo and vantage6: bench_overhead.py checks it).
Writes bench/results/accuracy[-NAME].{md,json,png}.
"""
import argparse
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

import inprocess
import runs
from ppsdg import data, local, parser
from ppsdg.config import Config
from ppsdg.runtime import derive_seed
from ppsdg.models import new_model

PROGRESS_S = 30.0
PAPER = {"FedAvg E=5 B=10, IID": 20, "FedAvg E=5 B=10, non-IID": 229,
         "FedSGD, IID": 626, "FedSGD, non-IID": 483}


class Stop(Exception):
    """Raised from the round callback: the run has its answer or has used its budget."""


@dataclass(frozen=True)
class Setting:
    """One curve: its label, main.py options (without data), and the sample gradients a round costs."""

    label: str
    argv: tuple[str, ...]
    centralized: bool = False


def settings(clients: int, fraction: float, lr_fedavg: float, lr_fedsgd: float, max_rounds: int,
             max_sgd_rounds: int, epochs: int) -> list[Setting]:
    """McMahan's four federated settings, shrunk, and the centralized reference."""
    group = max(1, round(fraction * clients))
    common = ("-nn", str(clients + 1), "-gs", str(group), "--momentum", "0", "-g", "1.0", "--threads", "1")
    fedavg = (*common, "-e", "5", "-bs", "10", "-lr", str(lr_fedavg), "-nr", str(max_rounds))
    fedsgd = (*common, "-sgd", "-bs", "1000000", "-lr", str(lr_fedsgd), "-nr", str(max_sgd_rounds))
    non_iid = ("--partition", "classes", "--classes-per-worker", "2")
    return [Setting("centralized, B=10", ("-nn", "2", "-bs", "10", "-lr", str(lr_fedavg), "--momentum", "0",
                                          "-nr", str(epochs), "--threads", "1"), centralized=True),
            Setting("FedAvg E=5 B=10, IID", fedavg), Setting("FedAvg E=5 B=10, non-IID", fedavg + non_iid),
            Setting("FedSGD, IID", fedsgd), Setting("FedSGD, non-IID", fedsgd + non_iid)]


def run_setting(setting: Setting, source: str, targets: list[float], budget_s: float) -> dict[str, Any]:
    """One curve, until the last target, its round limit or the time budget."""
    config = parser.parse([*setting.argv, "--data", source])
    torch.set_num_threads(config.run.threads)
    passes = 1 if setting.centralized or config.job.stochastic_gradient else config.job.epochs
    started = time.perf_counter()
    curve: list[dict[str, float]] = []

    def on_round(record: dict, point: Any) -> None:
        seconds = time.perf_counter() - started
        curve.append({"round": record["round"], "accuracy": record["test_accuracy"],
                      "samples": passes * sum(worker["num_samples"] for worker in record["workers"]),
                      "seconds": seconds})
        if len(curve) == 1 or int(seconds / PROGRESS_S) > int(curve[-2]["seconds"] / PROGRESS_S):
            print(f"  {setting.label}: round {record['round']}, accuracy {record['test_accuracy']:.4f}, "
                  f"{seconds:.0f} s", flush=True)
        if record["test_accuracy"] >= max(targets) or seconds > budget_s:
            raise Stop

    try:
        (centralized if setting.centralized else inprocess.run)(config, on_round)
    except Stop:
        pass
    return {"label": setting.label, "argv": list(setting.argv), "curve": cumulative(curve),
            "seconds": time.perf_counter() - started}


def cumulative(curve: list[dict[str, float]]) -> list[dict[str, float]]:
    total = 0
    for point in curve:
        total += point["samples"]
        point["samples"] = total
    return curve


def centralized(config: Config, on_round: Any) -> None:
    """One model on the union of the training data, plain SGD, an evaluation per epoch."""
    classifier, seed = config.job, config.run.seed
    train_set, _ = data.load(config.source.data)
    examples = local.Examples.from_images(train_set, torch.device("cpu"))
    test_set = local.test_examples(config.source, True, torch.device("cpu"))
    model = new_model(None, seed)
    optimizer = local.make_optimizer(model, classifier.learning_rate, classifier.momentum)
    generator = torch.Generator().manual_seed(derive_seed(seed, 0, 0))
    for epoch in range(1, config.run.num_rounds + 1):
        local.train_epoch(model, optimizer, local.shuffled_batches(examples, classifier.batch_size, generator))
        accuracy = local.test(model, test_set, classifier.test_batch_size)[1]
        on_round({"round": epoch, "test_accuracy": accuracy, "workers": [{"num_samples": len(examples)}]}, None)


def first_reaching(curve: list[dict[str, float]], target: float) -> dict[str, float] | None:
    return next((point for point in curve if point["accuracy"] >= target), None)


def markdown(results: list[dict[str, Any]], targets: list[float], header: str) -> str:
    target_heads = " | ".join(f"rounds to {t:.0%} (sample gradients)" for t in targets)
    lines = [header, "", f"| setting | {target_heads} | best accuracy | rounds run | seconds | McMahan: rounds to 99% |",
             "|---|" + "---:|" * (len(targets) + 4)]
    for result in results:
        curve = result["curve"]
        cells = []
        for target in targets:
            point = first_reaching(curve, target)
            cells.append(f"{point['round']} ({point['samples']:,})" if point else
                         f"not within {curve[-1]['round'] if curve else 0}")
        lines.append(f"| {result['label']} | {' | '.join(cells)} | {max(p['accuracy'] for p in curve):.4f} | "
                     f"{len(curve)} | {result['seconds']:.0f} | {PAPER.get(result['label'], '-')} |")
    lines += ["", "Rounds are epochs for the centralized run. Options of each run (plus `--data`):", ""]
    lines += [f"- {r['label']}: `{' '.join(r['argv'])}`" for r in results]
    return "\n".join(lines) + "\n"


def plot(results: list[dict[str, Any]], targets: list[float], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    figure, (by_round, by_samples) = pyplot.subplots(1, 2, figsize=(12, 4.5))
    for result in results:
        curve = result["curve"]
        by_round.plot([p["round"] for p in curve], [p["accuracy"] for p in curve], label=result["label"])
        by_samples.plot([p["samples"] for p in curve], [p["accuracy"] for p in curve], label=result["label"])
    for axis, xlabel in ((by_round, "round (epoch for centralized)"), (by_samples, "sample gradients computed")):
        for target in targets:
            axis.axhline(target, color="grey", linestyle=":", linewidth=1)
        axis.set_xscale("log")
        axis.set_ylim(max(0.0, min(targets) - 0.25), 1.0)
        axis.set_xlabel(xlabel)
        axis.set_ylabel("test accuracy")
        axis.grid(alpha=0.3)
    by_round.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    pyplot.close(figure)


def main() -> None:
    cli = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    cli.add_argument("data", nargs="?", default="embedded", help="directory of MNIST IDX files (default: embedded digits)")
    cli.add_argument("--clients", type=int, default=20, help="K")
    cli.add_argument("--fraction", type=float, default=0.1, help="C: round(C*K) clients a round")
    cli.add_argument("--targets", default="0.95,0.97", help="test accuracies to reach")
    cli.add_argument("--lr-fedavg", type=float, default=0.05)
    cli.add_argument("--lr-fedsgd", type=float, default=0.2)
    cli.add_argument("--max-rounds", type=int, default=200, help="FedAvg round limit")
    cli.add_argument("--max-sgd-rounds", type=int, default=2000, help="FedSGD round limit")
    cli.add_argument("--epochs", type=int, default=50, help="centralized epoch limit")
    cli.add_argument("--budget-s", type=float, default=240.0, help="seconds each run may take")
    cli.add_argument("--jobs", type=int, default=2, help="runs at once (one thread each)")
    cli.add_argument("--only", help="run only the settings whose label contains this text (e.g. centralized)")
    cli.add_argument("--name", help="names the result files (default: accuracy[-DATA_DIR_NAME])")
    args = cli.parse_args()
    targets = sorted(float(t) for t in args.targets.split(","))
    chosen = [s for s in settings(args.clients, args.fraction, args.lr_fedavg, args.lr_fedsgd, args.max_rounds,
                                  args.max_sgd_rounds, args.epochs) if args.only is None or args.only in s.label]
    name = args.name or ("accuracy" if args.data == "embedded" else f"accuracy-{Path(args.data).name}")
    train_size = len(data.load(args.data)[0])
    header = (f"Machine: {runs.machine()}. Data: `{args.data}` ({train_size:,} training samples); K={args.clients}, "
              f"C={args.fraction}, budget {args.budget_s:.0f} s per run.")
    print(header, flush=True)
    with ProcessPoolExecutor(args.jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = [pool.submit(run_setting, s, args.data, targets, args.budget_s) for s in chosen]
        results = []
        for future in futures:
            results.append(future.result())
            curve = results[-1]["curve"]
            print(f"{results[-1]['label']:<28} {len(curve)} rounds, best {max(p['accuracy'] for p in curve):.4f}, "
                  f"{results[-1]['seconds']:.0f} s", flush=True)
    table = markdown(results, targets, header)
    print("\n" + table)
    runs.write_text(f"{name}.md", table)
    runs.write_json(f"{name}.json", {"header": header, "targets": targets, "results": results})
    plot(results, targets, runs.RESULTS / f"{name}.png")


if __name__ == "__main__":
    main()
