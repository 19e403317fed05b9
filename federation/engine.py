"""The Docker engine: use a running one, or install and start dockerd and undo everything it changed.

dockerd turns IP forwarding on, adds iptables chains and the docker0 bridge, mounts its network
namespace, and keeps all of that after it exits. The host's state is captured before dockerd starts
and put back after it stops.
"""
import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from federation.shell import HarnessError, run, say, stop_process, tail, wait_until

PACKAGES = {"docker.io": "dockerd", "debootstrap": "debootstrap"}
DOCKER_TABLES = {"filter": ("INPUT", "FORWARD", "OUTPUT"),
                 "nat": ("PREROUTING", "INPUT", "OUTPUT", "POSTROUTING")}
FORWARDING = (Path("/proc/sys/net/ipv4/ip_forward"), Path("/proc/sys/net/ipv6/conf/all/forwarding"))
STALE_PID_FILES = (Path("/var/run/docker.pid"), Path("/var/run/docker/containerd/containerd.pid"))
BRIDGE = "docker0"
DOCKER_RUN = "/run/docker/"


def daemon_responds() -> bool:
    try:
        return subprocess.run(["docker", "info", "--format", "{{.ServerVersion}}"], capture_output=True,
                              timeout=10).returncode == 0
    except subprocess.TimeoutExpired:
        return False


def install_missing_packages() -> None:
    """docker.io and debootstrap from Debian: the only registry this machine reaches besides PyPI."""
    missing = [package for package, program in PACKAGES.items() if shutil.which(program) is None]
    if not missing:
        return
    say(f"installing {', '.join(missing)} with apt-get")
    environment = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    run(["apt-get", "update", "-qq"], timeout_s=300, env=environment)
    run(["apt-get", "install", "-y", "-qq", *missing], timeout_s=600, env=environment)


@dataclass(frozen=True)
class HostNetwork:
    """What dockerd changes on the host and leaves behind: forwarding, iptables, the bridge."""

    forwarding: dict[Path, str]
    iptables: str
    had_bridge: bool
    docker_mounts: list[str]

    @classmethod
    def capture(cls) -> "HostNetwork":
        return cls({path: path.read_text().strip() for path in FORWARDING if path.exists()},
                   run(["iptables-save"], timeout_s=30).stdout, bridge_exists(), docker_mounts())

    def restore(self) -> None:
        run(["iptables-restore"], timeout_s=30, input=self.iptables_to_restore())
        for path, value in self.forwarding.items():
            path.write_text(value)
        if not self.had_bridge and bridge_exists():
            run(["ip", "link", "delete", BRIDGE], timeout_s=30)
        for mount in reversed(docker_mounts()):
            if mount not in self.docker_mounts:
                run(["umount", mount], timeout_s=30)

    def iptables_to_restore(self) -> str:
        """The saved tables, plus an empty one for each table dockerd fills that did not exist before."""
        saved = {line[1:].strip() for line in self.iptables.splitlines() if line.startswith("*")}
        empty = [f"*{table}\n" + "".join(f":{chain} ACCEPT [0:0]\n" for chain in chains) + "COMMIT\n"
                 for table, chains in DOCKER_TABLES.items() if table not in saved]
        return self.iptables + "".join(empty)


def docker_mounts() -> list[str]:
    """Mount points under Docker's run folder; dockerd leaves its network namespace mounted there."""
    points = [line.split()[1] for line in Path("/proc/self/mounts").read_text().splitlines()]
    return [point for point in points if point.startswith(DOCKER_RUN)]


def bridge_exists() -> bool:
    return Path("/sys/class/net", BRIDGE).exists()


def remove_stale_pid_files() -> None:
    """A hard-killed dockerd leaves pid files that stop the next one from starting."""
    for path in STALE_PID_FILES:
        if path.exists() and not process_alive(path.read_text().strip()):
            path.unlink()


def process_alive(pid: str) -> bool:
    status = Path("/proc", pid, "status")
    if not pid.isdigit() or not status.exists():
        return False
    state = next((line for line in status.read_text().splitlines() if line.startswith("State:")), "")
    return "zombie" not in state


class DockerEngine:
    """A Docker daemon for the harness; it stops only a daemon it started itself."""

    def __init__(self, log_path: Path) -> None:
        self.log_path = log_path
        self.process: subprocess.Popen | None = None
        self.host: HostNetwork | None = None

    def start(self) -> None:
        install_missing_packages()
        if daemon_responds():
            say("using the Docker daemon that is already running")
            return
        self.host = HostNetwork.capture()
        # With forwarding off, dockerd turns it on and sets the FORWARD policy to DROP for good.
        FORWARDING[0].write_text("1")
        remove_stale_pid_files()
        say("starting dockerd")
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(["dockerd"], stdout=log, stderr=subprocess.STDOUT,
                                            start_new_session=True)
        wait_until(lambda: daemon_responds() or self.process.poll() is not None, 90, "dockerd to answer")
        if self.process.poll() is not None:
            raise HarnessError(f"dockerd exited at start:\n{tail(self.log_path.read_text())}")

    def stop(self) -> None:
        """Stop our dockerd (it stops its containerd), then put the host's network back as it was."""
        if self.process is not None:
            say("stopping dockerd")
            stop_process(self.process, timeout_s=60)
        if self.host is not None:
            self.host.restore()
            say("host forwarding and iptables restored")


def bridge_gateway() -> str:
    """The host's address on docker0: node containers reach the server there. (A fresh daemon's
    `docker network inspect bridge` does not list the gateway yet.)"""
    interfaces = json.loads(run(["ip", "-json", "-4", "address", "show", "dev", BRIDGE], timeout_s=30).stdout)
    return interfaces[0]["addr_info"][0]["local"]
