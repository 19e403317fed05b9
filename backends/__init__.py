"""The Communicator that federated rounds are written against, and the registry of its transports.

Written in the torch.distributed idiom: rank 0 is the server, ranks 1..N are the workers, and a
message is a dict of named tensors. A receiver passes templates (a model's state, say): what it
receives is checked against them, so a peer cannot slip in other names, shapes or dtypes.
"""
from abc import ABC, abstractmethod
from collections.abc import Sequence

import torch

Tensors = dict[str, torch.Tensor]


class Communicator(ABC):
    """What a round needs from a transport: broadcast to a group, gather from it, in rank order."""

    def __init__(self, rank: int, world_size: int) -> None:
        self.rank = rank
        self.world_size = world_size
        self._failures: dict[int, str] = {}

    @abstractmethod
    def broadcast(self, tensors: Tensors, src: int = 0, group: Sequence[int] | None = None) -> Tensors:
        """Send `tensors` from `src` to the group; elsewhere, return what `src` sent, shaped like them."""

    @abstractmethod
    def gather(self, tensors: Tensors, dst: int = 0,
               group: Sequence[int] | None = None) -> dict[int, Tensors] | None:
        """Send `tensors` to `dst`; on `dst`, return rank -> message for the other members, by rank.

        On `dst`, `tensors` is the template that every member's message must match. A transport that
        can lose a member leaves it out and says why in `failures`.
        """

    def exchange(self, message: Tensors, group: Sequence[int], reply_template: Tensors) -> dict[int, Tensors]:
        """Server side of a round: send `message` to the group, return rank -> reply for those that
        answered. One call, because vantage6 makes a round one subtask whose input is the message
        and whose results are the replies; torch.distributed does it as a broadcast and a gather."""
        self.broadcast(message, src=0, group=group)
        return self.gather(reply_template, dst=0, group=group) or {}

    def late_replies(self) -> dict[int, list[Tensors]]:
        """Server side: replies to earlier rounds that arrived after those rounds had closed, rank ->
        messages. They are not averaged, but what they released must still be accounted for. A
        transport whose late members cannot release anything (gloo: the round's gather is gone) has none."""
        return {}

    @property
    def failures(self) -> dict[int, str]:
        """Why members of the last gather are missing from its result: rank -> reason."""
        return dict(self._failures)

    def describe(self, rank: int) -> str:
        """How a message names a worker to the person who runs the training."""
        return f"worker rank {rank}"

    def close(self) -> None:
        """Release the transport; a no-op where there is nothing to release."""


def group_of(ranks: Sequence[int], world_size: int) -> list[int]:
    """The server and the given workers as a sorted list of distinct ranks, checked against the world."""
    members = sorted({0, *ranks})
    if members[-1] >= world_size or members[0] < 0:
        raise ValueError(f"ranks {list(ranks)} do not fit a world of {world_size}")
    return members
