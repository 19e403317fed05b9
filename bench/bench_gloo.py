"""Wall time of a gloo run against one process training the same samples for the same steps.

    python bench/bench_gloo.py [--rounds 5] [--workers 2] [--data embedded]

The single process trains the union of the workers' data, R x E epochs with the same batch size, on
as many threads as the gloo run has workers, so both use the same cores.
"""
import argparse
import subprocess
import sys
import time
from pathlib import Path

import torch

import train
from ppsdg import data, parser

ROOT = Path(__file__).resolve().parent.parent


def single_process_seconds(options: argparse.Namespace, threads: int) -> float:
    torch.set_num_threads(threads)
    train_set, _ = data.load(options.data)
    examples = train.Examples.from_images(train_set, torch.device("cpu"))
    model = train.new_model(options.seed)
    optimizer = train.make_optimizer(model, options.learning_rate, options.momentum)
    generator = torch.Generator().manual_seed(options.seed)
    started = time.perf_counter()
    for _ in range(options.num_rounds * options.epochs):
        train.train_epoch(model, optimizer, examples, options.batch_size, generator)
    return time.perf_counter() - started


def gloo_seconds(argv: list[str]) -> float:
    """The whole launcher as a user runs it, process start-up included."""
    started = time.perf_counter()
    subprocess.run([sys.executable, str(ROOT / "main.py"), "--backend", "gloo", *argv], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT)
    return time.perf_counter() - started


def main() -> None:
    cli = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    cli.add_argument("--rounds", type=int, default=5)
    cli.add_argument("--workers", type=int, default=2)
    cli.add_argument("--data", default="embedded")
    args = cli.parse_args()
    argv = ["-nn", str(args.workers + 1), "-nr", str(args.rounds), "--data", args.data,
            "--output", "/tmp/ppsdg-bench-gloo"]
    options = parser.parse(argv)
    single = single_process_seconds(options, args.workers)
    gloo = gloo_seconds(argv)
    print(f"{'run':<34}{'seconds':>10}")
    print(f"{'single process (' + str(args.workers) + ' threads)':<34}{single:>10.2f}")
    print(f"{'gloo (server + ' + str(args.workers) + ' workers)':<34}{gloo:>10.2f}")
    print(f"{'ratio gloo / single':<34}{gloo / single:>10.2f}")


if __name__ == "__main__":
    main()
