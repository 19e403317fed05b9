"""The Communicator over torch.distributed: gloo on CPU, nccl where every rank has its own GPU."""
from collections.abc import Sequence
from datetime import timedelta

import torch
import torch.distributed as dist

from backends import Communicator, Tensors, group_of


class GlooCommunicator(Communicator):
    """Thin over torch.distributed; tensors of one dtype travel as one flat buffer per call."""

    def __init__(self, rank: int, world_size: int, device: torch.device = torch.device("cpu"),
                 timeout_s: float = 1800.0) -> None:
        use_nccl = device.type == "cuda" and torch.cuda.device_count() >= world_size
        self.device = device if use_nccl else torch.device("cpu")
        dist.init_process_group("nccl" if use_nccl else "gloo", rank=rank, world_size=world_size,
                                timeout=timedelta(seconds=timeout_s))
        self.rank = rank
        self.world_size = world_size
        self._groups: dict[tuple[int, ...], dist.ProcessGroup | None] = {}

    def new_group(self, ranks: Sequence[int] | None) -> dist.ProcessGroup | None:
        """The process group of the server and `ranks`; every rank must ask for the same groups in turn."""
        members = tuple(group_of(ranks, self.world_size)) if ranks is not None else None
        if members is None or len(members) == self.world_size:
            return None
        if members not in self._groups:
            self._groups[members] = dist.new_group(list(members))
        return self._groups[members]

    def sit_out(self, group: Sequence[int]) -> None:
        """torch.distributed creates groups collectively: ranks outside one must still create it."""
        self.new_group(group)

    def broadcast(self, tensors: Tensors, src: int = 0, group: Sequence[int] | None = None) -> Tensors:
        process_group = self.new_group(group)
        received: Tensors = {}
        for names, flat in self._flatten(tensors):
            dist.broadcast(flat, src=src, group=process_group)
            received.update(_unflatten(names, flat, tensors))
        return received

    def gather(self, tensors: Tensors, dst: int = 0,
               group: Sequence[int] | None = None) -> dict[int, Tensors] | None:
        members = group_of(group, self.world_size) if group is not None else list(range(self.world_size))
        process_group = self.new_group(group)
        per_rank: list[Tensors] = [{} for _ in members]
        for names, flat in self._flatten(tensors):
            buffers = [torch.empty_like(flat) for _ in members] if self.rank == dst else None
            dist.gather(flat, gather_list=buffers, dst=dst, group=process_group)
            for slot, buffer in zip(per_rank, buffers or []):
                slot.update(_unflatten(names, buffer, tensors))
        if self.rank != dst:
            return None
        return {rank: message for rank, message in zip(members, per_rank) if rank != dst}

    def close(self) -> None:
        if dist.is_initialized():
            dist.destroy_process_group()

    def _flatten(self, tensors: Tensors) -> list[tuple[list[str], torch.Tensor]]:
        """One contiguous buffer per dtype, so a round costs few collective calls.

        Names are sorted: the buffers carry no names, so sender and receiver must lay them out alike
        whatever order each built its dict in.
        """
        by_dtype: dict[torch.dtype, list[str]] = {}
        for name in sorted(tensors):
            by_dtype.setdefault(tensors[name].dtype, []).append(name)
        return [(names, torch.cat([tensors[n].detach().reshape(-1) for n in names]).to(self.device))
                for _, names in sorted(by_dtype.items(), key=lambda item: str(item[0]))]


def _unflatten(names: list[str], flat: torch.Tensor, templates: Tensors) -> Tensors:
    out: Tensors = {}
    offset = 0
    for name in names:
        template = templates[name]
        size = template.numel()
        out[name] = flat[offset:offset + size].view_as(template).to(template.device)
        offset += size
    return out
