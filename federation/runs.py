"""`python main.py` as a user runs it, over the real federation, the mock client and gloo, with the same
training options; and what each run wrote."""
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

import main
from federation.accounts import Federation
from federation.images import ALGORITHM
from federation.nodes import IMAGES
from federation.server import API_PATH, Server
from federation.shell import HarnessError, say, stop_process, tail
from ppsdg import parser
from ppsdg.config import Config

REPO = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Run:
    """A finished main.py: its exit status, what it printed, and its wall time."""

    name: str
    returncode: int
    printed: str
    seconds: float
    folder: Path

    def state(self) -> dict[str, torch.Tensor]:
        return torch.load(self.folder / "model.pt", weights_only=True)

    def summary(self) -> dict:
        return json.loads((self.folder / "summary.json").read_text())

    def records(self) -> list[dict]:
        return [json.loads(line) for line in (self.folder / "metrics.jsonl").read_text().splitlines()]

    def seconds_per_round(self) -> float:
        records = self.records()
        return sum(r["seconds"] for r in records) / len(records)


@dataclass(frozen=True)
class Job:
    """A training the harness runs over the real federation and through the mock client: main.py's
    options, the label of the node database it reads, and each worker's part of its data, by rank."""

    name: str
    arguments: list[str]
    database: str
    partitions: list[Path]


def configuration(arguments: list[str]) -> Config:
    """The configuration main.py runs `arguments` with: a table's schema and target fixed as it fixes them."""
    return parser.prepared(parser.parse(arguments))


def write_partitions(arguments: list[str], folder: Path) -> list[Path]:
    """Each worker's part of the data of main.py `arguments`, written to `folder` as the mock client
    writes its organizations' databases (`main.write_partitions`), by rank."""
    config = configuration(arguments)
    target = config.table.target if config.table is not None else None
    return main.write_partitions(config.source, target, config.run.workers, config.run.seed, folder)


def server_arguments(server: Server, federation: Federation, database: str = IMAGES) -> list[str]:
    """The researcher's real-server options: the first organization also runs the central function,
    and the task reads the nodes' database labelled `database`."""
    return ["--backend", "vantage6", "--server-url", server.url, "--server-port", str(server.port),
            "--api-path", API_PATH, "--username", federation.username,
            "--collaboration", str(federation.collaboration),
            "--organizations", ",".join(map(str, federation.organizations)), "--image", ALGORITHM,
            "--database", database]


def start(name: str, arguments: list[str], folder: Path, password: str | None = None,
          extra_environment: dict[str, str] | None = None) -> subprocess.Popen:
    """main.py in the project's environment; the password travels in the environment, as documented."""
    environment = {**os.environ, **({"VANTAGE6_PASSWORD": password} if password else {}), **(extra_environment or {})}
    say(f"{name}: python main.py {' '.join(arguments)}")
    return subprocess.Popen([sys.executable, "main.py", *arguments, "--output", str(folder)], cwd=REPO,
                            env=environment, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finish(name: str, process: subprocess.Popen, folder: Path, started: float, timeout_s: float) -> Run:
    """Wait for main.py to end, at most `timeout_s` seconds after `started`."""
    try:
        printed, _ = process.communicate(timeout=max(1.0, timeout_s - (time.monotonic() - started)))
    except subprocess.TimeoutExpired as error:
        stop_process(process)
        raise HarnessError(f"{name}: main.py still running after {timeout_s:.0f} s") from error
    run = Run(name, process.returncode, printed, time.monotonic() - started, folder)
    say(f"{name}: exit {run.returncode} after {run.seconds:.1f} s")
    return run


def main_py(name: str, arguments: list[str], folder: Path, timeout_s: float, password: str | None = None,
            extra_environment: dict[str, str] | None = None) -> Run:
    started = time.monotonic()
    return finish(name, start(name, arguments, folder, password, extra_environment), folder, started, timeout_s)


def require_success(run: Run) -> Run:
    if run.returncode != 0:
        raise HarnessError(f"{run.name}: main.py exited {run.returncode}:\n{tail(run.printed)}")
    return run
