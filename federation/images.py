"""The four images of the federation, built on this machine because no image registry is reachable.

Debian (debootstrap, imported once) -> Python 3.11 -> the vantage6 node, and -> the ppsdg algorithm
from the project's own Dockerfile. Docker's build cache makes a warm run reuse every layer.
"""
import json
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

from federation.net import port_open
from federation.shell import HarnessError, run, say, stop_process, wait_until

DEBIAN = "local/debian:bookworm"
PYTHON = "local/python:3.11"
NODE = "local/v6-node:4.15.2"
ALGORITHM = "local/ppsdg:federation"
ECHO = "local/ppsdg-echo:federation"
DOCKERFILES = Path(__file__).parent / "docker"
CA_FOLDER = Path("/usr/local/share/ca-certificates")
MIRROR = "http://deb.debian.org/debian"
BUILD_TIMEOUT_S = 900
# Fixed, because the URL is a build argument and so part of the torch layer's cache key.
WHEEL_PORT = 28761


def image_exists(name: str) -> bool:
    return subprocess.run(["docker", "image", "inspect", name], capture_output=True, timeout=30).returncode == 0


def image_size_mb(name: str) -> float:
    size = run(["docker", "image", "inspect", "--format", "{{.Size}}", name], timeout_s=30).stdout
    return int(size) / 1e6


def import_debian(work: Path) -> None:
    """A minimal bookworm from the Debian mirror, imported as an image (there is nothing to pull)."""
    root = work / "debian-root"
    say(f"debootstrap bookworm -> {DEBIAN}")
    try:
        run(["debootstrap", "--variant=minbase", "bookworm", str(root), MIRROR], timeout_s=BUILD_TIMEOUT_S)
        (root / "etc" / "resolv.conf").unlink(missing_ok=True)  # Docker provides its own
        for package in (root / "var" / "cache" / "apt" / "archives").glob("*.deb"):
            package.unlink()
        run(["bash", "-o", "pipefail", "-c", f"tar -C {root} --numeric-owner -c . | docker import - {DEBIAN}"],
            timeout_s=BUILD_TIMEOUT_S)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def build(tag: str, dockerfile: Path, context: Path, build_args: dict[str, str]) -> None:
    """docker build on the host network (the algorithm build reaches the local wheel server there)."""
    started = time.monotonic()
    arguments = [item for name, value in build_args.items() for item in ("--build-arg", f"{name}={value}")]
    run(["docker", "build", "--force-rm", "--network", "host", "-f", str(dockerfile), "-t", tag, *arguments,
         str(context)], timeout_s=BUILD_TIMEOUT_S)
    say(f"built {tag} in {time.monotonic() - started:.0f} s")


def build_python(work: Path) -> None:
    """The Python base, its context a temporary folder with the machine's CA files (never committed)."""
    context = work / "python-context"
    shutil.copytree(CA_FOLDER, context / "ca", dirs_exist_ok=True)
    try:
        build(PYTHON, DOCKERFILES / "python.Dockerfile", context, {"DEBIAN": DEBIAN})
    finally:
        shutil.rmtree(context, ignore_errors=True)


def build_node(work: Path) -> None:
    context = work / "node-context"
    context.mkdir(exist_ok=True)
    build(NODE, DOCKERFILES / "node.Dockerfile", context, {"PYTHON": PYTHON})


def build_algorithm(repo: Path, wheels: Path) -> None:
    """The project's own Dockerfile, with torch from the local CPU wheel over a loopback server."""
    with wheel_server(wheels) as url:
        build(ALGORITHM, repo / "Dockerfile", repo, {"BASE": PYTHON, "TORCH_INDEX": url})
    build(ECHO, DOCKERFILES / "echo.Dockerfile", DOCKERFILES / "echo", {"ALGORITHM": ALGORITHM})


@contextmanager
def wheel_server(folder: Path) -> Iterator[str]:
    """Serve `folder` on 127.0.0.1 for as long as the build needs it."""
    if port_open("127.0.0.1", WHEEL_PORT):
        raise HarnessError(f"port {WHEEL_PORT}, where the harness serves the torch wheel, is in use")
    server = subprocess.Popen([sys.executable, "-m", "http.server", "--bind", "127.0.0.1", "--directory",
                               str(folder), str(WHEEL_PORT)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: port_open("127.0.0.1", WHEEL_PORT), 30, "the wheel server")
        yield f"http://127.0.0.1:{WHEEL_PORT}/"
    finally:
        stop_process(server)


def build_all(repo: Path, work: Path, wheels: Path) -> None:
    """Every image, reusing what exists, and their sizes."""
    if not image_exists(DEBIAN):
        import_debian(work)
    build_python(work)
    with ThreadPoolExecutor(max_workers=2) as pool:  # both wait on downloads more than on the CPU
        for job in [pool.submit(build_node, work), pool.submit(build_algorithm, repo, wheels)]:
            job.result()
    say("image sizes: " + json.dumps({name: f"{image_size_mb(name):.0f} MB"
                                      for name in (DEBIAN, PYTHON, NODE, ALGORITHM)}))
