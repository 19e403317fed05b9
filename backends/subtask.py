"""A round as a vantage6 subtask, what is the same on 4.x and 5.x: on the node, the task input's message
in and one reply out as the function's result; in the central function, ranks that are organizations
and a round that is one exchange (how a subtask is created and its results listed is each version's:
`backends/vantage6.py`, `backends/vantage6_v5.py`). Tensors travel as codec text inside vantage6's JSON;
nothing is pickled.
"""
from collections.abc import Mapping, Sequence
from typing import Any

from backends import Communicator, Tensors, codec
from ppsdg.errors import FederationError


class CentralSide(Communicator):
    """Rank 0 in a central function; rank r is the r-th organization of `organizations`; a round is one
    subtask, so only `exchange` (each version's) sends and gathers. `attribution` says how a result is
    matched to its organization (the central function's result repeats it)."""

    attribution: str

    def __init__(self, organizations: Sequence[int], options: Mapping[str, Any]) -> None:
        super().__init__(0, len(organizations) + 1)
        self.organizations = list(organizations)
        self.options = dict(options)

    def organization_of(self, rank: int) -> int:
        return self.organizations[rank - 1]

    def describe(self, rank: int) -> str:
        return f"organization {self.organization_of(rank)} (worker rank {rank})"

    def task_input(self, message: Tensors, organizations: Mapping[int, int]) -> dict[str, Any]:
        """A round's subtask's arguments: the message, each organization's rank, the world, the options."""
        return {"message": codec.encode_text(message), "ranks": {str(o): r for o, r in organizations.items()},
                "world_size": self.world_size, "options": self.options}

    def broadcast(self, tensors: Tensors, src: int = 0, group: Sequence[int] | None = None) -> Tensors:
        raise FederationError("the central function sends a round's message with exchange (one subtask)")

    def gather(self, tensors: Tensors, dst: int = 0,
               group: Sequence[int] | None = None) -> dict[int, Tensors] | None:
        raise FederationError("the central function gathers a round's replies with exchange (one subtask)")


class NodeCommunicator(Communicator):
    """A worker inside a partial function: one round's message in, one reply out."""

    def __init__(self, message: str, rank: int, world_size: int) -> None:
        super().__init__(rank, world_size)
        self._message = message
        self.reply: str | None = None

    def broadcast(self, tensors: Tensors, src: int = 0, group: Sequence[int] | None = None) -> Tensors:
        received, _ = codec.decode_text(self._message, expect=tensors)
        return received

    def carries(self, tensors: Tensors) -> bool:
        """Whether the message is exactly `tensors` (a small fixed request, such as secure aggregation's key
        agreement): told by comparing text, without decoding a round's whole message."""
        return self._message == codec.encode_text(tensors)

    def gather(self, tensors: Tensors, dst: int = 0,
               group: Sequence[int] | None = None) -> dict[int, Tensors] | None:
        self.reply = codec.encode_text(tensors)
        return None


def node_communicator(organization_id: int, task_kwargs: Mapping[str, Any]) -> NodeCommunicator:
    """The node's side of a subtask: its rank comes from the task input, looked up by its organization."""
    ranks = task_kwargs.get("ranks")
    message = task_kwargs.get("message")
    if not isinstance(ranks, dict) or not isinstance(message, str):
        raise FederationError("the task input lacks the round's message or the organizations' ranks")
    rank = ranks.get(str(organization_id))
    if not isinstance(rank, int):
        raise FederationError(f"organization {organization_id} is not among this round's workers")
    world_size = task_kwargs.get("world_size")
    if not isinstance(world_size, int) or not 0 < rank < world_size:
        raise FederationError(f"the task input's world size {world_size!r} does not hold worker rank {rank}")
    return NodeCommunicator(message, rank, world_size)


def node_result(comm: NodeCommunicator) -> dict[str, Any]:
    """The partial function's result: the reply and the rank it answers as. Which organization made
    it is the server's to say (the run), not the node's."""
    return {"rank": comm.rank, "message": comm.reply}
