"""Run the project's commands as a user runs them and read back what a benchmark needs: wall time,
per-round times, accuracy, a digest of the final model, every process's peak memory, the load.

Shared by the bench_* scripts, so that each measures the same way.
"""
import hashlib
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
MAIN = [sys.executable, str(ROOT / "main.py")]
INPROCESS = [sys.executable, str(ROOT / "bench" / "inprocess.py")]
POLL_S = 0.2
PSS_EVERY = 5


@dataclass
class RunResult:
    """What one command did: its times, accuracy, model digest, peak memory (MiB) by process, the load."""

    command: list[str]
    wall_s: float
    round_s: list[float]
    accuracy: list[float]
    digest: str
    load_before: float
    load_after: float
    peak_mib: dict[str, float] = field(default_factory=dict)
    peak_pss_mib: dict[str, float] = field(default_factory=dict)
    cpu_s: float = 0.0

    @property
    def rounds_s(self) -> float:
        return sum(self.round_s)

    @property
    def outside_rounds_s(self) -> float:
        """Start-up (interpreter, imports, processes, data) and the end (plot, summary, model)."""
        return self.wall_s - self.rounds_s


def machine() -> str:
    """One line for the tables: where the figures were taken."""
    memory_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (f"{cpu_model()}, {os.cpu_count()} cores, {memory_gib:.0f} GiB RAM, Linux {platform.release()}, "
            f"Python {platform.python_version()}, torch {torch.__version__}")


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def load() -> float:
    """The 1-minute load average: other work on the machine skews every timing."""
    return os.getloadavg()[0]


def run(command: list[str], output: Path, proportional: bool = False, timeout_s: float = 1800.0) -> RunResult:
    """Run one command to the end (it must write --output), watching its processes' peak memory.

    `proportional` also samples PSS, which costs CPU time (the kernel walks every page table): leave
    it off where the wall time is the figure.
    """
    before = load()
    started = time.perf_counter()
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)
    watcher = MemoryWatcher(process.pid, proportional)
    watcher.start()
    try:
        _, stderr = process.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGTERM)  # its workers too: a timed-out run went on training unseen
        process.wait()
        raise
    finally:
        watcher.stop()
    wall = time.perf_counter() - started
    if process.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed ({process.returncode}):\n{stderr[-2000:]}")
    records = [json.loads(line) for line in (output / "metrics.jsonl").read_text().splitlines()]
    return RunResult(command, wall, [r["seconds"] for r in records], [r["test_accuracy"] for r in records],
                     model_digest(output / "model.pt"), before, load(), watcher.peaks(),
                     watcher.peaks(proportional=True) if proportional else {}, watcher.cpu_s())


def model_digest(path: Path) -> str:
    """Equal digests mean bit-identical models."""
    state = torch.load(path, weights_only=True)
    digest = hashlib.sha256()
    for name in sorted(state):
        digest.update(name.encode())
        digest.update(state[name].contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


class MemoryWatcher:
    """Polls the peak resident memory (VmHWM) of a process and all its descendants until stopped.

    VmHWM is the kernel's own high-water mark, so a poll only has to come before a process ends;
    a process that lives shorter than one poll interval is missed.
    """

    def __init__(self, root_pid: int, proportional: bool = False) -> None:
        self.root_pid = root_pid
        self.proportional = proportional
        self._peaks: dict[int, float] = {}
        self._pss: dict[int, float] = {}
        self._cpu: dict[int, float] = {}
        self._names: dict[int, tuple[int, str]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def peaks(self, proportional: bool = False) -> dict[str, float]:
        """Peak MiB by role: the launcher (the whole run, if it is one process), then the ranks of a
        gloo run in the order they started (rank 0, the server, first), then multiprocessing's helpers.

        Resident (VmHWM) counts pages shared with a forkserver in every process that maps them;
        proportional (the largest PSS seen) splits them among the sharers, so it adds up.
        """
        peaks = self._pss if proportional else self._peaks
        ranks = sorted(pid for pid, (parent, name) in self._names.items()
                       if "spawn_main" in name or "forkserver" in self._names.get(parent, (0, ""))[1])
        roles = {"launcher": peaks.get(self.root_pid, 0.0)}
        roles.update({("server" if index == 0 else f"worker {index}"): peaks.get(pid, 0.0)
                      for index, pid in enumerate(ranks)})
        helpers = [peak for pid, peak in peaks.items() if pid != self.root_pid and pid not in ranks]
        if helpers:
            roles["helpers"] = sum(helpers)
        return roles

    def cpu_s(self) -> float:
        """CPU seconds (user + system) of all the processes, as last seen: each process's last
        poll interval is missing, so this is low by up to POLL_S per process."""
        return sum(self._cpu.values())

    def _poll(self) -> None:
        polls = 0
        while not self._stop.is_set():
            with_pss = self.proportional and polls % PSS_EVERY == 0
            polls += 1
            for pid, parent in descendants(self.root_pid):
                peak = peak_mib(pid)
                if peak is None:
                    continue
                self._peaks[pid] = max(peak, self._peaks.get(pid, 0.0))
                self._cpu[pid] = max(cpu_seconds(pid), self._cpu.get(pid, 0.0))
                if with_pss:
                    self._pss[pid] = max(pss_mib(pid), self._pss.get(pid, 0.0))
                if pid not in self._names:
                    self._names[pid] = (parent, process_name(pid))
            self._stop.wait(POLL_S)


def descendants(pid: int) -> list[tuple[int, int]]:
    """(pid, parent pid) of the process and, recursively, of its children."""
    found, queue = [], [(pid, 0)]
    while queue:
        current, parent = queue.pop()
        found.append((current, parent))
        try:
            children = Path(f"/proc/{current}/task/{current}/children").read_text().split()
        except OSError:
            continue
        queue.extend((int(child), current) for child in children)
    return found


def peak_mib(pid: int) -> float | None:
    return status_mib(pid, "VmHWM")


def status_mib(pid: int, key: str) -> float | None:
    """A memory figure of /proc/PID/status (VmHWM: the peak resident memory, VmRSS: what the
    process holds now), None if the process is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{key}:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of the process so far, 0 if it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pss_mib(pid: int) -> float:
    """The process's proportional set size now, 0 if it is gone."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return 0.0
    return 0.0


def process_name(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def read_rows(path: Path) -> list[dict]:
    """The runs recorded in a results file, one JSON object a line."""
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def record_run(path: Path, run: Callable[[Path], dict]) -> None:
    """One benchmark run in a temporary folder, its row appended to the results file `path` and printed."""
    with tempfile.TemporaryDirectory() as folder:
        row = run(Path(folder))
    with path.open("a") as results:
        results.write(json.dumps(row) + "\n")
    print(json.dumps(row), flush=True)


def write_json(name: str, payload: object) -> Path:
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / name
    path.write_text(json.dumps(payload, indent=1, default=str) + "\n")
    return path


def write_text(name: str, text: str) -> Path:
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / name
    path.write_text(text)
    return path
