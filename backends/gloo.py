"""The Communicator over torch.distributed: gloo on CPU, nccl where every rank has its own GPU.

Messages travel point to point between the server and each worker, so that the server can wait
for each worker with its own deadline and name the one that died or hangs. Without a worker that
died, the others go on (as --min-workers allows); one that hangs ends the run.

Each buffer travels in chunks of at most CHUNK_BYTES, each waited for before the next is posted.

Gloo (in torch 2.13) fails a transfer whose peer died only while the transfer waits for the peer
(a receive not yet answered, a send the peer has not asked for). It never fails a send it queued
after a write that did not go through whole: the socket was full, or the peer had died just before
the send was posted, before gloo's event loop read the closed connection (the write's EPIPE is
swallowed); nor a receive it had begun to read. Such a transfer waits out its deadline. So the
server does not rely on its transfers to see a worker die: it waits for them on a thread
(`Transfers`) while it watches the worker (`watch_peer`): a receive from the worker on a gloo group
of its own, which the worker never answers and gloo fails as soon as the worker's connection
closes, within milliseconds of its process ending. Transfers left behind by a dead worker wait
without a deadline: a gloo deadline that passes closes every connection of its group, the live
workers' too.
"""
import contextlib
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, wait
from concurrent.futures import TimeoutError as FutureTimeout
from datetime import timedelta
from typing import NoReturn

import torch
import torch.distributed as dist

from backends import Communicator, Tensors, group_of
from ppsdg.errors import FederationError

NO_DEADLINE = timedelta(days=7)
# Below Linux's default socket send buffer (net.core.wmem_max, 208 KiB), so that one write takes a
# chunk whole wherever the receiver has read the one before. A model of 4.8 MB is 37 chunks: a few
# milliseconds more a transfer on one machine.
CHUNK_BYTES = 128 * 1024
# How long a worker's transfers may take to return once its connection closed: those its last
# bytes completed return within milliseconds, the others fail or never return. Generous, for a
# loaded machine.
SETTLE_S = 2.0
# The tag of the receive that `expire` posts, which no transfer of a round uses.
EXPIRY_TAG = 1
# The name of the threads that wait on gloo for the server.
WAIT_THREAD = "gloo wait"


class GlooCommunicator(Communicator):
    """Thin over torch.distributed; tensors of one dtype travel as one flat buffer, in chunks."""

    def __init__(self, rank: int, world_size: int, device: torch.device = torch.device("cpu"),
                 worker_timeout_s: float = 600.0) -> None:
        super().__init__(rank, world_size)
        use_nccl = device.type == "cuda" and torch.cuda.device_count() >= local_world_size(world_size)
        self.device = device if use_nccl else torch.device("cpu")
        dist.init_process_group("nccl" if use_nccl else "gloo", rank=rank, world_size=world_size,
                                timeout=timedelta(seconds=worker_timeout_s))
        self.worker_timeout = timedelta(seconds=worker_timeout_s)
        self._lost: dict[int, str] = {}
        # Collective: every rank creates it, in the same order; only a sender of broadcasts and
        # receiver of gathers (the server) posts on it.
        self._liveness = dist.new_group(backend="gloo", timeout=self.worker_timeout)
        self._ended: dict[int, Future] = {}
        self._waits: list[Future] = []

    def broadcast(self, tensors: Tensors, src: int = 0, group: Sequence[int] | None = None) -> Tensors:
        flats = self._flatten(tensors)
        if self.rank != src:
            received: Tensors = {}
            for names, flat in flats:
                for chunk in _chunks(flat):
                    dist.irecv(chunk, src=src).wait(NO_DEADLINE)
                received.update(_unflatten(names, flat, tensors))
            return received
        self._failures = {}
        for rank in self._members(group, src):
            self._exchange(rank, (dist.isend(chunk, dst=rank) for _, flat in flats for chunk in _chunks(flat)),
                           "sending to")
        return tensors

    def gather(self, tensors: Tensors, dst: int = 0,
               group: Sequence[int] | None = None) -> dict[int, Tensors] | None:
        flats = self._flatten(tensors)
        if self.rank != dst:
            for _, flat in flats:
                for chunk in _chunks(flat):
                    dist.isend(chunk, dst=dst).wait(NO_DEADLINE)
            return None
        received: dict[int, Tensors] = {}
        for rank in self._members(group, dst):
            buffers = [(names, torch.empty_like(flat)) for names, flat in flats]
            transfers = (dist.irecv(chunk, src=rank) for _, buffer in buffers for chunk in _chunks(buffer))
            if self._exchange(rank, transfers, "waiting for"):
                received[rank] = {k: v for names, buffer in buffers for k, v in
                                  _unflatten(names, buffer, tensors).items()}
        return received

    def close(self) -> None:
        if dist.is_initialized():
            self._end_waits()
            dist.destroy_process_group()

    def _members(self, group: Sequence[int] | None, root: int) -> list[int]:
        """The group without the root and without workers lost earlier (reported as failed again)."""
        ranks = group_of(group, self.world_size) if group is not None else range(self.world_size)
        members = []
        for rank in ranks:
            if rank in self._lost:
                self._failures[rank] = self._lost[rank]
            elif rank != root:
                members.append(rank)
        return members

    def _exchange(self, rank: int, transfers: Iterator[dist.Work], doing: str) -> bool:
        """Post one worker's transfers one at a time, on a thread of their own, watching the worker.

        A worker that died (before or during the transfers) is lost for good and the others go on.
        One that made no progress within the deadline ends the run: gloo cannot withdraw a posted
        transfer, so a worker that woke up would go on mid-message.
        """
        ended = self._watch(rank)
        error = ended.exception() if ended.done() else self._outcome(rank, self._transfers(transfers), ended)
        if error is None:
            return True
        reason = f"lost while {doing} it ({str(error).splitlines()[0]})"
        self._lost[rank] = reason
        self._failures[rank] = reason
        return False

    def _watch(self, rank: int) -> Future:
        """Done once the worker's connection closed; watched from the first exchange with it on."""
        if rank not in self._ended:
            self._ended[rank] = self._track(in_background(lambda: watch_peer(self._liveness, rank)))
        return self._ended[rank]

    def _track(self, future: Future) -> Future:
        """Keep `future`, a wait on a thread, until it is done: `close` ends those still waiting."""
        self._waits = [waiting for waiting in self._waits if not waiting.done()] + [future]
        return future

    def _end_waits(self) -> None:
        """Fail the gloo waits that the server's threads are in, and let those threads end (SETTLE_S
        at most): a thread that leaves a gloo wait while the interpreter shuts down aborts the
        process, and a worker's watch ends when the worker does, which may be just then. The waits
        that gloo never fails (module docstring) stay where they are, for good."""
        if all(future.done() for future in self._waits):
            return
        peers = [rank for rank in range(self.world_size) if rank != self.rank]
        transfers = [dist.group.WORLD] if dist.get_backend() == "gloo" else []
        for group in [self._liveness, *transfers]:
            expire(group, peers)
        wait(self._waits, timeout=SETTLE_S)

    def _transfers(self, works: Iterator[dist.Work]) -> "Transfers":
        """The transfers started on their thread, whose wait `close` ends if they are left behind."""
        transfers = Transfers(works)
        self._track(transfers.done)
        return transfers

    def _outcome(self, rank: int, transfers: "Transfers", ended: Future) -> BaseException | None:
        """None once the transfers are done; else the error that lost the worker."""
        deadline = self.worker_timeout.total_seconds()
        while not transfers.done.done():
            left = transfers.moved + deadline - time.monotonic()
            if left <= 0:
                raise FederationError(f"{self.describe(rank)}: no answer within {deadline:g} s (--worker-timeout)")
            wait([transfers.done, ended], timeout=left, return_when=FIRST_COMPLETED)
            if ended.done():
                return settled(transfers.done, ended)
        return lost_by(transfers.done)

    def _flatten(self, tensors: Tensors) -> list[tuple[list[str], torch.Tensor]]:
        """One contiguous buffer per dtype, so a round costs few transfers besides the chunks.

        Names are sorted: the buffers carry no names, so sender and receiver must lay them out alike
        whatever order each built its dict in.
        """
        by_dtype: dict[torch.dtype, list[str]] = {}
        for name in sorted(tensors):
            by_dtype.setdefault(tensors[name].dtype, []).append(name)
        return [(names, torch.cat([tensors[n].detach().reshape(-1) for n in names]).to(self.device))
                for _, names in sorted(by_dtype.items(), key=lambda item: str(item[0]))]


class Transfers:
    """One worker's transfers, each posted once the one before is done, on a daemon thread: the
    server watches the worker meanwhile. `moved` is when the last one was done, for the deadline."""

    def __init__(self, works: Iterator[dist.Work]) -> None:
        self.moved = time.monotonic()
        self.done = in_background(lambda: self._run(works))

    def _run(self, works: Iterator[dist.Work]) -> None:
        for work in works:
            work.wait(NO_DEADLINE)
            self.moved = time.monotonic()


def watch_peer(group: dist.ProcessGroup, peer: int) -> NoReturn:
    """Wait on a receive from `peer` that it never answers; gloo fails it when the peer's connection
    closes, which its process's end does."""
    dist.irecv(torch.zeros(1), src=peer, group=group).wait(NO_DEADLINE)
    raise FederationError("it sent a message on the connection that watches it, where none is due")


def expire(group: dist.ProcessGroup, peers: Sequence[int]) -> None:
    """Fail every waiting transfer of `group`: once a deadline passes in a gloo group, gloo fails the
    waiting transfers of all its connections. A receive that no peer answers, given 1 ms, does it;
    a peer whose connection is closed already refuses it at once, and the next one is tried."""
    for peer in peers:
        with contextlib.suppress(RuntimeError):
            dist.irecv(torch.zeros(1), src=peer, group=group, tag=EXPIRY_TAG).wait(timedelta(milliseconds=1))


def settled(transfers: Future, ended: Future) -> BaseException | None:
    """The transfers' outcome once the worker's connection closed: what its last bytes completed
    returns at once, and what was still waiting for it fails, or never returns (gloo)."""
    try:
        transfers.exception(timeout=SETTLE_S)
    except FutureTimeout:
        return ended.exception()
    return lost_by(transfers)


def lost_by(transfers: Future) -> BaseException | None:
    """The transport error that ended finished transfers, None if they went through; another error
    is a fault of this program, raised as it is."""
    error = transfers.exception()
    if error is not None and not isinstance(error, RuntimeError):
        raise error
    return error


def in_background(action: Callable[[], object]) -> Future:
    """`action` on a daemon thread, its outcome in a Future: a gloo wait on a dead peer may never
    return, and must neither block the server nor keep its process from exiting (an executor's
    threads would)."""
    future: Future = Future()

    def run() -> None:
        try:
            future.set_result(action())
        except BaseException as error:  # the waiting thread decides what it means
            future.set_exception(error)

    threading.Thread(target=run, name=WAIT_THREAD, daemon=True).start()
    return future


def local_world_size(world_size: int) -> int:
    """How many ranks share this host: torchrun says so; a one-machine launch has them all here."""
    return int(os.environ.get("LOCAL_WORLD_SIZE", world_size))


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free now, for the rendezvous of a launch on this machine."""
    with socket.socket() as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def _chunks(flat: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Views of a flat buffer of at most CHUNK_BYTES each; sender and receiver cut it alike."""
    return flat.split(max(1, CHUNK_BYTES // flat.element_size()))


def _unflatten(names: list[str], flat: torch.Tensor, templates: Tensors) -> Tensors:
    out: Tensors = {}
    offset = 0
    for name in names:
        template = templates[name]
        size = template.numel()
        out[name] = flat[offset:offset + size].view_as(template).to(template.device)
        offset += size
    return out
