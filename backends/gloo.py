"""The Communicator over torch.distributed: gloo on CPU, nccl where every rank has its own GPU.

Messages travel point to point between the server and each worker, so that the server can wait
for each worker with its own deadline and name the one that died or hangs. Without a worker that
died, the others go on (as --min-workers allows); one that hangs ends the run.

Each buffer travels in chunks of at most CHUNK_BYTES, each waited for before the next is posted.
Gloo (in torch 2.13) fails a transfer whose peer died only while the transfer waits for the peer;
a send the socket took only in part when the peer died is never failed, and waits out
--worker-timeout (600 s by default). A chunk that fits the socket's buffer is taken whole or not at
all, so a worker that dies mid-round is noticed at once.
"""
import os
import socket
from collections.abc import Iterator, Sequence
from datetime import timedelta

import torch
import torch.distributed as dist

from backends import Communicator, Tensors, group_of
from ppsdg.errors import FederationError

NO_DEADLINE = timedelta(days=7)
# Below Linux's default socket send buffer (net.core.wmem_max, 208 KiB), so that one write takes a
# chunk whole wherever the receiver has read the one before. A model of 4.8 MB is 37 chunks: a few
# milliseconds more a transfer on one machine.
CHUNK_BYTES = 128 * 1024


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
        """Post one worker's transfers one at a time, each waited for up to the deadline.

        A worker that died (here, or already when a transfer is posted) is lost for good and the
        others go on. A timeout ends the run: gloo closes every connection of the process group
        after one, so no other worker could be reached either.
        """
        try:
            for work in transfers:
                work.wait(self.worker_timeout)
            return True
        except RuntimeError as error:
            if "Timed out" in str(error):
                raise FederationError(f"{self.describe(rank)}: no answer within "
                                      f"{self.worker_timeout.total_seconds():g} s (--worker-timeout)") from error
            reason = f"lost while {doing} it ({str(error).splitlines()[0]})"
            self._lost[rank] = reason
            self._failures[rank] = reason
            return False

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
