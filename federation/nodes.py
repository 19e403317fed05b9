"""The two vantage6 nodes: their configuration, started and stopped the normal way (`v6 node ...`), and
everything Docker keeps of them removed at the end.

The CLI runs with HOME set to the harness's work folder, so the node configurations, logs and data
folders live there and go with it.
"""
import json
import os
import subprocess
from pathlib import Path

from federation.images import NODE
from federation.server import API_PATH, LAUNCHER, Server
from federation.shell import run, say

PREFIX = "ppsdg-fed"
IMAGES = "default"  # the label of each node's database of images (main.py's default --database)
TABLE = "table"  # the label of each node's part of a table (Adult)
SCOPE = "user"
# A real node draws DP noise securely unless its owner allows the seed: the harness compares the real
# federation with the mock run bit for bit, so its owners allow it.
SEEDED_NOISE = {"PPSDG_ALLOW_SEEDED_NOISE": "1"}
# The owner's consent to a share of the noise under secure aggregation (assuming no colluders).
DISTRIBUTED_NOISE = {"PPSDG_DISTRIBUTED_NOISE": "0"}


def node_names(count: int) -> list[str]:
    return [f"{PREFIX}-{index}" for index in range(1, count + 1)]


def container_name(name: str) -> str:
    return f"vantage6-{name}-{SCOPE}"


class Nodes:
    """The nodes of one harness run; a node's databases are its worker's CSV partitions, one per job."""

    def __init__(self, python: Path, work: Path, server: Server) -> None:
        self.python = python
        self.work = work
        self.server = server
        self.config_folder = work / ".config" / "vantage6" / "node"

    def configure(self, name: str, api_key: str, databases: dict[str, Path],
                  environment: dict[str, str] | None = None) -> None:
        """Write the node's configuration: its CSV databases by label (a task names the one it reads),
        and `environment`, the owner's `algorithm_env`, which the node hands to every algorithm
        container (ppsdg reads its node policy there)."""
        self.config_folder.mkdir(parents=True, exist_ok=True)
        config = {
            "api_key": api_key, "server_url": self.server.url, "port": self.server.port, "api_path": API_PATH,
            "task_dir": str(self.work / name / "tasks"),
            "databases": [{"label": label, "uri": str(path), "type": "csv"} for label, path in databases.items()],
            "encryption": {"enabled": False, "private_key": None},
            # The node image is local: the pull fails and the CLI and node fall back to it.
            "images": {"node": NODE},
            "policies": {"require_algorithm_pull": False},
            "algorithm_env": environment or {},
            "logging": {"level": "INFO", "file": f"{name}.log", "use_console": True, "backup_count": 1,
                        "max_size": 1024, "format": "%(asctime)s %(name)s %(levelname)s %(message)s",
                        "datefmt": "%H:%M:%S", "loggers": []},
        }
        (self.config_folder / f"{name}.yaml").write_text(json.dumps(config))  # YAML reads JSON

    def v6(self, *arguments: str, timeout_s: float = 120) -> subprocess.CompletedProcess:
        return run([str(self.python), str(LAUNCHER), "cli", *arguments], timeout_s=timeout_s,
                   env={**os.environ, "HOME": str(self.work)})

    def start(self, name: str) -> None:
        say(f"v6 node start --name {name}")
        self.v6("node", "start", "--name", name, f"--{SCOPE}")

    def stop(self, name: str) -> None:
        say(f"v6 node stop --name {name}")
        self.v6("node", "stop", "--name", name, f"--{SCOPE}")

    def running(self, name: str) -> bool:
        return bool(run(["docker", "ps", "--quiet", "--filter", f"name=^{container_name(name)}$"],
                        timeout_s=30).stdout.strip())

    def logs(self, name: str, lines: int = 40) -> str:
        result = subprocess.run(["docker", "logs", "--tail", str(lines), container_name(name)],
                                capture_output=True, text=True, timeout=30)
        return result.stdout + result.stderr


def remove_leftovers() -> None:
    """Every container, network and volume of this harness's nodes, whatever state a run left."""
    for kind, remove in (("container", ["rm", "-f"]), ("network", ["network", "rm"]),
                         ("volume", ["volume", "rm", "-f"])):
        listed = run(["docker", kind, "ls", *(["-a"] if kind == "container" else []), "--quiet",
                      "--filter", f"name=vantage6-{PREFIX}-"], timeout_s=60).stdout.split()
        if listed:
            run(["docker", *remove, *listed], timeout_s=120)
