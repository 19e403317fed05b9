"""Samples per second of one worker's local training (local.local_update, as every backend runs
it) on the CPU with 1 and with all threads, and on CUDA when there is a GPU.

    python bench/bench_throughput.py [--data embedded] [--batch-sizes 10,64] [--seconds 10]

The federation overhead on a GPU is bench_overhead.py --use-cuda --name overhead-cuda.
Writes bench/results/throughput[-cuda].{md,json}.
"""
import argparse
import os
import statistics
import time

import torch

import runs
from ppsdg import local, parser
from ppsdg.runtime import device_for
from ppsdg.models import new_model
from ppsdg.job import Job

WORKERS = 2


def devices() -> list[tuple[str, torch.device, int]]:
    """(label, device, threads) for every setting worth timing here."""
    cores = os.cpu_count() or 1
    found = [("CPU, 1 thread", torch.device("cpu"), 1)]
    if cores > 1:
        found.append((f"CPU, {cores} threads", torch.device("cpu"), cores))
    if torch.cuda.is_available():
        found.append((f"CUDA ({torch.cuda.get_device_name(0)})", torch.device("cuda"), 1))
    return found


def samples_per_second(device: torch.device, threads: int, batch_size: int, source: str, seconds: float) -> float:
    """Worker 1's rounds from the same global model until `seconds` have passed; median over rounds."""
    torch.set_num_threads(threads)
    config = parser.parse(["-nn", str(WORKERS + 1), "-bs", str(batch_size), "--data", source,
                           *(["-uc"] if device.type == "cuda" else [])])
    run = config.run
    if device.type == "cuda":
        device = device_for(run.use_cuda)
    job = Job.of_config(config)
    examples = local.worker_examples(config.source, None, run.workers, run.seed, 1, device)
    model = new_model(job.synthesizer, run.seed, device)
    start_state = {k: v.clone() for k, v in model.state_dict().items()}
    rates, spent, round_ = [], 0.0, 0
    while spent < seconds or len(rates) < 3:
        round_ += 1
        model.load_state_dict(start_state)
        synchronize(device)
        started = time.perf_counter()
        local.local_update(model, examples, job, run.seed, round_, 1)
        synchronize(device)
        elapsed = time.perf_counter() - started
        spent += elapsed
        if round_ > 1:
            rates.append(config.job.epochs * len(examples) / elapsed)
    return statistics.median(rates)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    cli = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    cli.add_argument("--data", default="embedded")
    cli.add_argument("--batch-sizes", default="10,64")
    cli.add_argument("--seconds", type=float, default=10.0, help="timed seconds per setting (after a warm-up round)")
    args = cli.parse_args()
    header = f"Machine: {runs.machine()}. One worker of {WORKERS} on `{args.data}`, one local epoch a round."
    print(header, flush=True)
    rows = []
    for label, device, threads in devices():
        for batch_size in (int(b) for b in args.batch_sizes.split(",")):
            before = runs.load()
            rate = samples_per_second(device, threads, batch_size, args.data, args.seconds)
            rows.append({"setting": label, "batch_size": batch_size, "samples_per_s": rate,
                         "load": [before, runs.load()]})
            print(f"{label:<40} B={batch_size:<4} {rate:9.0f} samples/s  (load {before:.1f})", flush=True)
    lines = [header, "", "| setting | batch size | samples / s | load avg |", "|---|---:|---:|---|"]
    lines += [f"| {r['setting']} | {r['batch_size']} | {r['samples_per_s']:.0f} | "
              f"{r['load'][0]:.1f} -> {r['load'][1]:.1f} |" for r in rows]
    name = "throughput-cuda" if torch.cuda.is_available() else "throughput"
    runs.write_text(f"{name}.md", "\n".join(lines) + "\n")
    runs.write_json(f"{name}.json", {"header": header, "rows": rows})


if __name__ == "__main__":
    main()
