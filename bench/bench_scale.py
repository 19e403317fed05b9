"""Scale: per-round time and peak memory as the workers grow, and as the model grows, on both backends.

    python bench/bench_scale.py [--workers 1,2,4,8,16] [--rounds 3] [--sizes 1.2,4.8,19.2] [--size-workers 2]

Workers: main.py's real training on the embedded data (the same 1,438 samples split over N
workers, --threads 1), over gloo and over vantage6's mock client. Per-round time is the median of
the rounds' `seconds`; peak memory is read from /proc per process (resident high-water mark, and
the largest PSS seen, which splits pages shared with the forkserver among its children).

Model: `Net` is fixed, so the transport alone carries states of growing size (million float32
parameters, in 1M-parameter layers): a gloo server broadcasting to and gathering from N worker
processes, and the vantage6 central communicator running one subtask per round through the mock
client, whose nodes decode the message and send it back. Per-round time, each process's peak
resident memory (ru_maxrss), and how much the memory the server holds after a round grows per round.
Writes bench/results/scale.{md,json,png} (--name changes "scale").
"""
import argparse
import multiprocessing
import os
import resource
import statistics
import time
from pathlib import Path
from typing import Any

import torch

import runs
from backends.gloo import free_port

LAYER = 1_000_000
SIZE_ROUNDS = 12


def parse_list(text: str, kind: type) -> list:
    return [kind(part) for part in text.split(",") if part]


def workers_sweep(counts: list[int], rounds: int, scratch: Path) -> list[dict[str, Any]]:
    """The real training for every worker count on both backends."""
    rows = []
    for backend in ("gloo", "vantage6"):
        for count in counts:
            output = scratch / f"{backend}-{count}"
            command = [*runs.MAIN, "--backend", backend, "-nn", str(count + 1), "-nr", str(rounds), "-sm",
                       "--threads", "1", "--output", str(output)]
            result = runs.run(command, output, proportional=True)
            rows.append(workers_row(backend, count, result))
            row = rows[-1]
            print(f"{backend:<9} {count:>2} workers: {row['round_s']:6.2f} s/round, wall {row['wall_s']:6.1f} s, "
                  f"server {row['server_mib']:6.0f} MiB, worker {row['worker_mib']:6.0f} MiB, total PSS "
                  f"{row['total_pss_mib']:6.0f} MiB, load {result.load_before:.1f}", flush=True)
    return rows


def workers_row(backend: str, count: int, result: runs.RunResult) -> dict[str, Any]:
    """One run's figures: on gloo the server and the largest worker process; on the mock the one
    process that is server and workers at once."""
    peaks, pss = result.peak_mib, result.peak_pss_mib
    workers = [v for k, v in peaks.items() if k.startswith("worker")]
    one_process = backend == "vantage6"
    return {"backend": backend, "workers": count, "round_s": statistics.median(result.round_s),
            "wall_s": result.wall_s, "rounds": result.round_s,
            "server_mib": peaks["launcher"] if one_process else peaks.get("server", 0.0),
            "worker_mib": 0.0 if one_process else max(workers, default=0.0),
            "total_pss_mib": sum(pss.values()), "peaks": peaks, "pss": pss,
            "load": [result.load_before, result.load_after]}


def make_state(million: float) -> dict[str, torch.Tensor]:
    """`million` million float32 parameters in layers of one million, like a model's state."""
    count = round(million * 1e6)
    sizes = [LAYER] * (count // LAYER) + ([count % LAYER] if count % LAYER else [])
    generator = torch.Generator().manual_seed(0)
    return {f"layer{i}.weight": torch.randn(size, generator=generator) for i, size in enumerate(sizes)}


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def gloo_rank(rank: int, world_size: int, port: int, million: float, rounds: int, queue: Any) -> None:
    """One process of the gloo transport test: the server times broadcast + gather of the state."""
    from backends.gloo import GlooCommunicator

    os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"] = "127.0.0.1", str(port)
    torch.set_num_threads(1)
    state = make_state(million)
    comm = GlooCommunicator(rank, world_size, torch.device("cpu"), 600.0)
    seconds, held = [], []
    for _ in range(rounds):
        started = time.perf_counter()
        if rank == 0:
            comm.broadcast(state)
            comm.gather(state)
        else:
            comm.gather(comm.broadcast(state))
        seconds.append(time.perf_counter() - started)
        held.append(resident_mib())
    comm.close()
    queue.put((rank, statistics.median(seconds), peak_rss_mib(), held))


def gloo_transport(million: float, workers: int, rounds: int) -> dict[str, float]:
    """Server and workers as fresh processes, so each one's peak memory belongs to this size alone."""
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    port = free_port()
    processes = [context.Process(target=gloo_rank, args=(rank, workers + 1, port, million, rounds, queue))
                 for rank in range(workers + 1)]
    for process in processes:
        process.start()
    reports = {rank: (seconds, peak, held) for rank, seconds, peak, held in (queue.get(timeout=600) for _ in processes)}
    for process in processes:
        process.join()
    return {"round_s": reports[0][0], "server_mib": reports[0][1],
            "server_growth_mib": growth_per_round(reports[0][2]), "server_held_mib": reports[0][2],
            "worker_mib": max(peak for rank, (_, peak, _) in reports.items() if rank)}


def growth_per_round(held: list[float]) -> float:
    """How fast the floor of the memory held after a round rises (the first two rounds left out).

    A process that keeps every round's messages grows by their size each round. glibc's heap
    keeps some freed buffers for reuse and returns others, so what it holds jumps up and down by a
    message or two between rounds; its floor, the least it holds, stays put.
    """
    later = held[2:] if len(held) > 5 else held
    half = max(len(later) // 2, 1)
    return (min(later[-half:]) - min(later[:half])) / max(len(later) - half, 1)


def resident_mib() -> float:
    """The memory this process holds now (VmRSS), as opposed to its high-water mark."""
    return runs.status_mib(os.getpid(), "VmRSS") or 0.0


def vantage6_transport(million: float, workers: int, rounds: int, queue: Any) -> None:
    """The central communicator over the mock client, in a fresh process; this module is the algorithm."""
    import pandas as pd
    from backends.mock import ForgetfulMockClient
    from backends.vantage6 import CentralCommunicator

    torch.set_num_threads(1)
    state = make_state(million)
    frame = pd.DataFrame({"label": [0]})
    client = ForgetfulMockClient(datasets=[[{"database": frame}]] * workers, module="__main__")
    shapes = {name: list(tensor.shape) for name, tensor in state.items()}
    comm = CentralCommunicator(client, [o["id"] for o in client.organization.list()], {"shapes": shapes}, poll_s=0.01)
    seconds, held = [], []
    for _ in range(rounds):
        started = time.perf_counter()
        replies = comm.exchange(state, range(1, workers + 1), state)
        seconds.append(time.perf_counter() - started)
        held.append(resident_mib())
        if len(replies) != workers:
            raise SystemExit(f"the mock round lost workers: {comm.failures}")
    queue.put({"round_s": statistics.median(seconds), "server_mib": peak_rss_mib(),
               "server_growth_mib": growth_per_round(held), "server_held_mib": held, "worker_mib": 0.0})


def echo_partial() -> Any:
    """The node side of the vantage6 transport test: decode the round's message against the
    model's shapes, as a worker does, and send it back as its update."""
    from vantage6.algorithm.tools.decorators import algorithm_client, data

    from backends.subtask import node_communicator, node_result

    @data(1)
    @algorithm_client
    def partial(client: Any, frame: Any, **kwargs: Any) -> dict[str, Any]:
        comm = node_communicator(client.organization_id, kwargs)
        template = {name: torch.empty(shape) for name, shape in kwargs["options"]["shapes"].items()}
        comm.gather(comm.broadcast(template))
        return node_result(client.organization_id, comm)

    return partial


partial = echo_partial()


def vantage6_in_process(million: float, workers: int, rounds: int) -> dict[str, float]:
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=vantage6_transport, args=(million, workers, rounds, queue))
    process.start()
    result = queue.get(timeout=900)
    process.join()
    return result


def sizes_sweep(sizes: list[float], workers: int, rounds: int) -> list[dict[str, Any]]:
    """The transport alone for every state size on both backends."""
    rows = []
    for million in sizes:
        for backend, measure in (("gloo", gloo_transport), ("vantage6", vantage6_in_process)):
            figures = measure(million, workers, rounds)
            rows.append({"backend": backend, "million_parameters": million, "megabytes": million * 4, **figures})
            print(f"{backend:<9} {million:6.1f} M parameters: transport {figures['round_s'] * 1000:8.1f} ms/round, "
                  f"server {figures['server_mib']:6.0f} MiB (+{figures['server_growth_mib']:.0f} MiB/round), "
                  f"worker {figures['worker_mib']:6.0f} MiB, load {runs.load():.1f}", flush=True)
    return rows


def growth(rows: list[dict[str, Any]], x: str, y: str) -> dict[str, float]:
    """Per backend, the least-squares slope of y against x: how much each step costs."""
    slopes = {}
    for backend in ("gloo", "vantage6"):
        points = [(row[x], row[y]) for row in rows if row["backend"] == backend]
        if len(points) > 1:
            mean_x = statistics.fmean(p[0] for p in points)
            mean_y = statistics.fmean(p[1] for p in points)
            slopes[backend] = (sum((px - mean_x) * (py - mean_y) for px, py in points)
                               / sum((px - mean_x) ** 2 for px, _ in points))
    return slopes


def markdown(workers: list[dict], sizes: list[dict], header: str, size_workers: int) -> str:
    lines = [header, "", "### Workers (real training, embedded data, --threads 1)", "",
             "| backend | workers | s / round (median) | wall s | server peak RSS MiB | largest worker peak RSS MiB | total peak PSS MiB |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    lines += [f"| {r['backend']} | {r['workers']} | {r['round_s']:.2f} | {r['wall_s']:.1f} | {r['server_mib']:.0f} | "
              f"{r['worker_mib']:.0f} | {r['total_pss_mib']:.0f} |" for r in workers]
    for label, x, y, unit in (("per-round time", "workers", "round_s", "s per added worker"),
                              ("total PSS", "workers", "total_pss_mib", "MiB per added worker")):
        slopes = growth(workers, x, y)
        if slopes:
            lines += ["", f"Growth of {label}: " + ", ".join(f"{b} {v:+.3g} {unit}" for b, v in slopes.items()) + "."]
    lines += ["", f"### Model size (transport only, {size_workers} workers)", "",
              "| backend | M parameters | MB float32 | transport ms / round | server peak RSS MiB | server growth MiB / round (floor held after a round) | worker peak RSS MiB |",
              "|---|---:|---:|---:|---:|---:|---:|"]
    lines += [f"| {r['backend']} | {r['million_parameters']:.1f} | {r['megabytes']:.1f} | {r['round_s'] * 1000:.1f} | "
              f"{r['server_mib']:.0f} | {r['server_growth_mib']:.0f} | "
              f"{r['worker_mib']:.0f} |" for r in sizes]
    for label, y, scale, unit in (("transport time", "round_s", 1000, "ms per MB"),
                                  ("server peak memory", "server_mib", 1, "MiB per MB of model")):
        slopes = growth(sizes, "megabytes", y)
        if slopes:
            lines += ["", f"Growth of {label}: " + ", ".join(f"{b} {v * scale:.3g} {unit}" for b, v in slopes.items()) + "."]
    lines += ["", "Memory the server held after each round, MiB:", ""]
    lines += [f"- {r['backend']}, {r['megabytes']:.1f} MB: {', '.join(f'{m:.0f}' for m in r['server_held_mib'])}"
              for r in sizes]
    return "\n".join(lines) + "\n"


def plot(workers: list[dict], sizes: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    figure, axes = pyplot.subplots(2, 2, figsize=(11, 8))
    for backend, marker in (("gloo", "o"), ("vantage6", "s")):
        mine = [r for r in workers if r["backend"] == backend]
        counts = [r["workers"] for r in mine]
        axes[0][0].plot(counts, [r["round_s"] for r in mine], marker=marker, label=backend)
        axes[0][1].plot(counts, [r["total_pss_mib"] for r in mine], marker=marker, label=f"{backend}: all processes (PSS)")
        axes[0][1].plot(counts, [r["server_mib"] for r in mine], marker=marker, linestyle="--",
                        label=f"{backend}: server process (RSS)")
        grown = [r for r in sizes if r["backend"] == backend]
        megabytes = [r["megabytes"] for r in grown]
        axes[1][0].plot(megabytes, [r["round_s"] * 1000 for r in grown], marker=marker, label=backend)
        axes[1][1].plot(megabytes, [r["server_mib"] for r in grown], marker=marker, label=f"{backend}: server")
        if backend == "gloo":
            axes[1][1].plot(megabytes, [r["worker_mib"] for r in grown], marker=marker, linestyle="--",
                            label="gloo: worker")
    titles = (("per-round time vs workers", "workers", "seconds per round"),
              ("peak memory vs workers", "workers", "MiB"),
              ("transport time per round vs model size", "model MB (float32)", "ms per round"),
              ("peak memory vs model size", "model MB (float32)", "MiB"))
    for axis, (title, xlabel, ylabel) in zip(axes.flat, titles):
        axis.set_title(title)
        axis.set_xlabel(xlabel)
        axis.set_ylabel(ylabel)
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    pyplot.close(figure)


def main() -> None:
    cli = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    cli.add_argument("--workers", default="1,2,4,8,16", help="worker counts of the training sweep")
    cli.add_argument("--rounds", type=int, default=3, help="rounds of each training run")
    cli.add_argument("--sizes", default="1.2,4.8,19.2", help="million parameters of the transport sweep")
    cli.add_argument("--size-workers", type=int, default=2, help="workers of the transport sweep")
    cli.add_argument("--size-rounds", type=int, default=SIZE_ROUNDS, help="rounds of each transport run")
    cli.add_argument("--name", default="scale", help="names the result files")
    cli.add_argument("--scratch", type=Path, default=Path("/tmp/ppsdg-bench-scale"))
    args = cli.parse_args()
    header = f"Machine: {runs.machine()}."
    print(header, flush=True)
    workers = workers_sweep(parse_list(args.workers, int), args.rounds, args.scratch)
    sizes = sizes_sweep(parse_list(args.sizes, float), args.size_workers, args.size_rounds)
    table = markdown(workers, sizes, header, args.size_workers)
    print("\n" + table)
    runs.write_text(f"{args.name}.md", table)
    runs.write_json(f"{args.name}.json", {"header": header, "workers": workers, "sizes": sizes})
    plot(workers, sizes, runs.RESULTS / f"{args.name}.png")


if __name__ == "__main__":
    main()
