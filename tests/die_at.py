"""One rank of a torchrun-style gloo run (`main.py`) that dies at a named point of the protocol.

    python tests/die_at.py POINT ROUND MAIN_ARGUMENTS...

The worker kills itself (SIGKILL, as a crash would end it) at POINT of round ROUND, so that a test
of the server's reaction does not depend on when the test process gets to send a signal.
"""
import os
import runpy
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch.distributed as dist  # noqa: E402

from ppsdg import coordination  # noqa: E402

# Point -> (transfer, how many of the round's transfers of that kind, whether it dies before posting
# the last one or after).
POINTS = {
    # The receive of the round's first chunk is posted: the server's send may come before or after.
    "before-broadcast": ("irecv", 1, "after"),
    # The first chunk arrived whole and the receive of the second is posted.
    "between-chunks": ("irecv", 2, "after"),
    # The whole message arrived and the update is trained; nothing of it is sent.
    "awaiting-update": ("isend", 1, "before"),
    # The update's first chunk went out and the second is posted.
    "mid-update": ("isend", 2, "after"),
}


def die() -> NoReturn:
    os.kill(os.getpid(), signal.SIGKILL)
    raise AssertionError("SIGKILL returned")


class Round:
    """Which round the worker is in, and how many transfers of each kind it posted in it."""

    number = 0
    posted: dict[str, int] = {}


def counting_rounds(worker_round: Callable[..., int]) -> Callable[..., int]:
    def counted(*args, **kwargs) -> int:
        Round.number += 1
        Round.posted = {}
        return worker_round(*args, **kwargs)
    return counted


def dying_at(name: str, transfer: Callable[..., dist.Work], point: tuple[str, int, str],
             round_: int) -> Callable[..., dist.Work]:
    """`transfer`, killing the process at `point` of round `round_`."""
    def post(*args, **kwargs) -> dist.Work:
        Round.posted[name] = Round.posted.get(name, 0) + 1
        here = Round.number == round_ and point[:2] == (name, Round.posted[name])
        if here and point[2] == "before":
            die()
        work = transfer(*args, **kwargs)
        if here:
            die()
        return work
    return post


def main() -> None:
    point, round_ = POINTS[sys.argv[1]], int(sys.argv[2])
    coordination.worker_round = counting_rounds(coordination.worker_round)
    dist.irecv = dying_at("irecv", dist.irecv, point, round_)
    dist.isend = dying_at("isend", dist.isend, point, round_)
    sys.argv = [str(ROOT / "main.py"), *sys.argv[3:]]
    runpy.run_path(sys.argv[0], run_name="__main__")


if __name__ == "__main__":
    main()
