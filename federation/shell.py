"""Commands, waits and progress lines for the harness: every command and every wait is bounded."""
import signal
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

T = TypeVar("T")
STARTED = time.monotonic()


class HarnessError(RuntimeError):
    """A step of the federation harness that failed; the message says which and why."""


def say(message: str) -> None:
    """A progress line with the seconds since the harness started, so slow steps stand out."""
    print(f"[federation {time.monotonic() - STARTED:6.1f}s] {message}", flush=True)


def tail(text: str, lines: int = 25) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])


def run(command: Sequence[str], timeout_s: float, **kwargs: Any) -> subprocess.CompletedProcess:
    """Run to completion within `timeout_s`; a failure raises with the command's last output."""
    try:
        result = subprocess.run(list(command), capture_output=True, text=True, timeout=timeout_s, **kwargs)
    except subprocess.TimeoutExpired as error:
        raise HarnessError(f"{' '.join(command)} still running after {timeout_s:.0f} s") from error
    if result.returncode != 0:
        raise HarnessError(f"{' '.join(command)} exited {result.returncode}:\n"
                           f"{tail(result.stdout + result.stderr)}")
    return result


def wait_until(probe: Callable[[], T], timeout_s: float, what: str, interval_s: float = 0.5) -> T:
    """Call `probe` until it returns something true, for at most `timeout_s` seconds."""
    deadline = time.monotonic() + timeout_s
    while not (value := probe()):
        if time.monotonic() > deadline:
            raise HarnessError(f"gave up after {timeout_s:.0f} s waiting for {what}")
        time.sleep(interval_s)
    return value


def stop_process(process: subprocess.Popen, timeout_s: float = 20.0) -> None:
    """Terminate, and kill if it does not exit in time; never wait unbounded."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout_s)


@contextmanager
def time_limit(seconds: int, what: str) -> Iterator[None]:
    """Bound work that can block where no timeout reaches: vantage6's client retries a refused
    connection forever, so a dead server would otherwise hang the harness."""
    def expire(signum: int, frame: Any) -> None:
        raise HarnessError(f"{what} took more than {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
