"""Where a run's wall time goes, per process: py-spy samples every process of a command (idle
time included) and this script sums each process's main-thread samples by phase.

    python bench/profile_run.py NAME -- python main.py --backend gloo -nr 3 --output /tmp/p

Needs py-spy (pip install py-spy) and the right to trace child processes (root, or
kernel.yama.ptrace_scope=0). Sampling slows a run by a few percent; the shares are what count.
Writes bench/results/profile-NAME.md.
"""
import argparse
import collections
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import runs

RATE_HZ = 25
PROCESS = re.compile(r'process (\d+):"([^"]*)"')
# First match wins, so a phase nested in another (training inside a vantage6 gather) comes first.
PHASES = (
    ("import", ("_find_and_load",)),
    ("workers' local training", ("local_update (", "batch_gradient (")),
    ("server: test", ("test (local.py",)),
    ("checkpoint (encode + write)", ("add_round (", "checkpoint.py")),
    ("codec (msgpack, base64, checks)", ("codec.py",)),
    ("mock client: deepcopy of itself", ("deepcopy (",)),
    ("JSON of task input and results", ("json/",)),
    ("data: load, partition, CSV / frames", ("ppsdg/data.py", "read_csv", "write_partitions", "to_csv", "worker_sets")),
    ("new model per node round", ("new_model (",)),
    ("gloo rendezvous", ("init_process_group",)),
    ("gloo send / receive and waits", ("broadcast (", "gather (")),
    ("output: plot, summary, model", ("finish_run (", "output.py")),
    ("launcher starts the ranks", ("BaseProcess.start (",)),
    ("launcher waits for the server", ("join (multiprocessing",)),
    ("idle helper loops (forkserver, tracker)", ("select (selectors.py", "resource_tracker.py")),
)
THREAD_ROOTS = ("_bootstrap (threading.py", "Thread._bootstrap (")


def profile(command: list[str], raw: Path) -> float:
    """Run the command under py-spy; return its wall time."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    started = time.perf_counter()
    subprocess.run([spy, "record", "--subprocesses", "--idle", "--format", "raw", "-r", str(RATE_HZ),
                    "-o", str(raw), "--", *command], check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, cwd=runs.ROOT)
    return time.perf_counter() - started


def phase_of(stack: str) -> str:
    return next((name for name, marks in PHASES if any(mark in stack for mark in marks)), "other")


def role_names(processes: dict[int, tuple[int, str]]) -> dict[int, str]:
    """launcher, forkserver, server and workers (the forkserver's or spawn's children, in start order)."""
    ranks = sorted(pid for pid, (depth, name) in processes.items()
                   if "spawn_main" in name or (depth == 3 and "forkserver" in name))
    names = {}
    for pid, (depth, name) in processes.items():
        if depth == 1:
            names[pid] = "launcher (the whole run, if one process)"
        elif pid in ranks:
            index = ranks.index(pid)
            names[pid] = "server (rank 0)" if index == 0 else f"worker {index}"
        elif "resource_tracker" in name:
            names[pid] = "resource tracker"
        else:
            names[pid] = "forkserver" if "forkserver" in name else name[:60]
    return names


def summarize(raw: Path) -> dict[str, collections.Counter]:
    """Seconds by phase for every process, main thread only (threads that py-spy reports with a
    threading bootstrap at the root, such as tqdm's monitor, are left out)."""
    counts: dict[int, collections.Counter] = collections.defaultdict(collections.Counter)
    processes: dict[int, tuple[int, str]] = {}
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        found = PROCESS.findall(stack)
        if not found:
            continue
        pid, name = int(found[-1][0]), found[-1][1]
        processes.setdefault(pid, (len(found), name))
        frames = PROCESS.sub("", stack).lstrip(";")
        if frames.startswith(THREAD_ROOTS):
            continue
        counts[pid][phase_of(frames)] += int(count)
    names = role_names(processes)
    return {names[pid]: collections.Counter({k: v / RATE_HZ for k, v in counter.items()})
            for pid, counter in sorted(counts.items())}


def markdown(name: str, command: list[str], wall: float, phases: dict[str, collections.Counter]) -> str:
    columns = [phase for phase, _ in PHASES] + ["other"]
    used = [c for c in columns if any(counter[c] >= 0.05 for counter in phases.values())]
    lines = [f"Profile `{name}`: `{' '.join(command)}`, wall {wall:.1f} s under py-spy ({RATE_HZ} Hz, idle "
             f"included), load {runs.load():.1f}, {runs.machine()}. Seconds of each process's main thread:", "",
             "| process | " + " | ".join(used) + " | total |", "|---|" + "---:|" * (len(used) + 1)]
    for process, counter in phases.items():
        lines.append(f"| {process} | " + " | ".join(f"{counter[c]:.1f}" for c in used) +
                     f" | {sum(counter.values()):.1f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    cli = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    cli.add_argument("name", help="names the result file: results/profile-NAME.md")
    cli.add_argument("command", nargs=argparse.REMAINDER, help="-- then the command to profile")
    args = cli.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    with tempfile.TemporaryDirectory() as folder:
        raw = Path(folder) / "profile.raw"
        wall = profile(command, raw)
        table = markdown(args.name, command, wall, summarize(raw))
    print(table)
    runs.write_text(f"profile-{args.name}.md", table)


if __name__ == "__main__":
    main()
