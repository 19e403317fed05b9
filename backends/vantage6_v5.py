"""The Communicator over vantage6 5.x, the server's side, as far as vantage6 5's mock network runs it
here: a round is one `federated_compute` subtask on the group's organizations, over the session's
dataframe that the central task was given. The node's side is `backends/subtask.py`, as on 4.x.

A real 5.x hub (Kubernetes nodes) cannot run on this machine, so only the mock's client is taken: it
makes a subtask's runs one organization after the other and lists their results in that order, which
is how a result is attributed here. Another client is refused by name rather than paired by order.
"""
from collections.abc import Mapping, Sequence
from typing import Any

from vantage6.algorithm.mock.client import MockAlgorithmClient

from backends import Tensors, codec, group_of
from backends.subtask import CentralSide
from ppsdg.errors import FederationError

WORKER_METHOD = "partial"
BY_MOCK_ORDER = "mock-order"


class CentralCommunicator(CentralSide):
    """The central function's side over vantage6 5.x's mock network, which runs a subtask to its end as
    it is made: `round_timeout_s` (4.x's wait) has nothing to bound."""

    attribution = BY_MOCK_ORDER

    def __init__(self, client: Any, organizations: Sequence[int], options: Mapping[str, Any],
                 round_timeout_s: float = 3600.0) -> None:
        if not isinstance(client, MockAlgorithmClient):
            raise FederationError(f"vantage6 5.x: only the mock network's client is supported (this machine runs "
                                  f"no 5.x hub to attribute a real one's results by run), not "
                                  f"{type(client).__name__}")
        super().__init__(organizations, options)
        self.client = client

    def exchange(self, message: Tensors, group: Sequence[int], reply_template: Tensors) -> dict[int, Tensors]:
        ranks = [r for r in group_of(group, self.world_size) if r != 0]
        organizations = {self.organization_of(r): r for r in ranks}
        task = self.client.task.create(method=WORKER_METHOD, organizations=list(organizations), name="ppsdg round",
                                       description="ppsdg: one federated round",
                                       arguments=self.task_input(message, organizations))
        results = self.client.wait_for_results(task_id=task["id"])
        if len(results) != len(organizations):
            raise FederationError(f"the mock lists {len(results)} results for {len(organizations)} organizations")
        self._failures = {}
        replies = {}
        for (organization, rank), reply in zip(organizations.items(), results):
            text = reply.get("message") if isinstance(reply, dict) else None
            try:
                replies[rank], _ = codec.decode_text(text, expect=reply_template, require_finite=False)
            except codec.CodecError as error:
                self._failures[rank] = f"update rejected: {error}"
        return replies
