"""The Communicator over vantage6: a round is one subtask on the group's organizations.

Server side (inside the central function): `exchange` creates the round's subtask with the message
as its input, waits, decodes every reply against the template and returns them ordered by rank.
Node side (inside the partial function): `broadcast` returns the task's message, `gather` keeps the
reply as the function's result. Tensors travel as codec text inside vantage6's JSON; nothing is
pickled.
"""
import json
import time
from collections.abc import Mapping, Sequence
from typing import Any

from vantage6.common.task_status import has_task_finished

from backends import Communicator, Tensors, codec, group_of
from ppsdg.errors import FederationError

WORKER_METHOD = "partial"
POLL_SECONDS = 0.5


class CentralCommunicator(Communicator):
    """Rank 0 in a central function; rank r is the r-th organization of `organizations`."""

    def __init__(self, client: Any, organizations: Sequence[int], options: Mapping[str, Any],
                 round_timeout_s: float = 3600.0, poll_s: float = POLL_SECONDS) -> None:
        super().__init__(0, len(organizations) + 1)
        self.client = client
        self.organizations = list(organizations)
        self.options = dict(options)
        self.round_timeout_s = round_timeout_s
        self.poll_s = poll_s

    def organization_of(self, rank: int) -> int:
        return self.organizations[rank - 1]

    def describe(self, rank: int) -> str:
        return f"organization {self.organization_of(rank)} (worker rank {rank})"

    def broadcast(self, tensors: Tensors, src: int = 0, group: Sequence[int] | None = None) -> Tensors:
        raise FederationError("the central function sends a round's message with exchange (one subtask)")

    def gather(self, tensors: Tensors, dst: int = 0,
               group: Sequence[int] | None = None) -> dict[int, Tensors] | None:
        raise FederationError("the central function gathers a round's replies with exchange (one subtask)")

    def exchange(self, message: Tensors, group: Sequence[int], reply_template: Tensors) -> dict[int, Tensors]:
        ranks = [r for r in group_of(group, self.world_size) if r != 0]
        organizations = {self.organization_of(r): r for r in ranks}
        task_input = json.loads(json.dumps({"method": WORKER_METHOD, "kwargs": {
            "message": codec.encode_text(message), "ranks": {str(o): r for o, r in organizations.items()},
            "world_size": self.world_size, "options": self.options}}))
        task = self.client.task.create(input_=task_input, organizations=list(organizations),
                                       name="ppsdg round", description="ppsdg: one federated round")
        status = self._wait(task["id"], list(organizations))
        replies = self._results_by_organization(task["id"], organizations)
        self._failures = {}
        decoded: dict[int, Tensors] = {}
        for organization, rank in organizations.items():
            if organization not in replies:
                self._failures[rank] = f"no result (run status: {status.get(organization, 'unknown')})"
                continue
            try:
                decoded[rank] = self._decode(replies[organization], reply_template)
            except FederationError as error:
                self._failures[rank] = f"update rejected: {error}"
        return decoded

    def _wait(self, task_id: int, organizations: list[int]) -> dict[int, str]:
        """Poll the runs at a short fixed interval until each has finished or the round times out."""
        deadline = time.monotonic() + self.round_timeout_s
        while True:
            status = {run["organization"]["id"]: run.get("status", "unknown")
                      for run in self.client.run.from_task(task_id)}
            done = all(has_task_finished(status.get(o, "pending")) for o in organizations)
            if done or time.monotonic() >= deadline:
                return status
            time.sleep(self.poll_s)

    def _results_by_organization(self, task_id: int, organizations: Mapping[int, int]) -> dict[int, Any]:
        """Match results to organizations by the id each node reports, never by arrival order."""
        replies: dict[int, Any] = {}
        for result in self.client.result.from_task(task_id):
            organization = result.get("organization_id") if isinstance(result, dict) else None
            if organization in organizations and organization not in replies:
                replies[organization] = result
        return replies

    @staticmethod
    def _decode(reply: Mapping[str, Any], template: Tensors) -> Tensors:
        message = reply.get("message")
        if not isinstance(message, str):
            raise FederationError("the result holds no message")
        try:
            tensors, _ = codec.decode_text(message, expect=template, require_finite=False)
        except codec.CodecError as error:
            raise FederationError(str(error)) from error
        return tensors


class NodeCommunicator(Communicator):
    """A worker inside a partial function: one round's message in, one reply out."""

    def __init__(self, message: str, rank: int, world_size: int) -> None:
        super().__init__(rank, world_size)
        self._message = message
        self.reply: str | None = None

    def broadcast(self, tensors: Tensors, src: int = 0, group: Sequence[int] | None = None) -> Tensors:
        received, _ = codec.decode_text(self._message, expect=tensors)
        return received

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


def node_result(organization_id: int, comm: NodeCommunicator) -> dict[str, Any]:
    """The partial function's result: the reply, tagged with the organization that made it."""
    return {"organization_id": organization_id, "rank": comm.rank, "message": comm.reply}
