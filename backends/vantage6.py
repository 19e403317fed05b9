"""The Communicator over vantage6 4.x, the server's side: a round is one subtask on the group's
organizations. Inside the central function, `exchange` creates the round's subtask with the message as
its input, waits, decodes every reply against the template and returns them ordered by rank. The
node's side is `backends/subtask.py`.
"""
import hashlib
import json
import time
from collections.abc import Mapping, Sequence
from typing import Any

from vantage6.algorithm.tools.mock_client import MockAlgorithmClient
from vantage6.common import base64s_to_bytes
from vantage6.common.task_status import has_task_finished

from backends import Tensors, codec, group_of
from backends.subtask import CentralSide
from ppsdg.errors import FederationError, last_error

WORKER_METHOD = "partial"
POLL_SECONDS = 0.5
# How a result is matched to the organization that made it (the central function's result says which).
BY_RUN = "run"
BY_MOCK_ORDER = "mock-order"


def attribution_of(client: Any) -> str:
    """BY_RUN where the client lists the server's results with their run ids (vantage6's
    AlgorithmClient, through its `_multi_page_request`; ppsdg's ForgetfulMockClient imitates it);
    BY_MOCK_ORDER for vantage6's own MockAlgorithmClient, which lists results without run ids but
    makes each run and its result together, one organization after the other. Any other client is
    refused: pairing by order on a real server would let results land on the wrong organization."""
    if callable(getattr(client, "_multi_page_request", None)):
        return BY_RUN
    if isinstance(client, MockAlgorithmClient):
        return BY_MOCK_ORDER
    raise FederationError(f"the algorithm client ({type(client).__name__}) cannot list a task's results with "
                          "their run ids, so no result could be attributed to its organization")


class CentralCommunicator(CentralSide):
    """The central function's side over vantage6 4.x."""

    def __init__(self, client: Any, organizations: Sequence[int], options: Mapping[str, Any],
                 round_timeout_s: float = 3600.0, poll_s: float = POLL_SECONDS) -> None:
        super().__init__(organizations, options)
        self.client = client
        self.round_timeout_s = round_timeout_s
        self.poll_s = poll_s
        self.attribution = attribution_of(client)
        # Subtasks that were still running when their round closed: task id -> (organization -> rank,
        # the reply template). vantage6 4 lets no algorithm kill a task (only a user may), so such a
        # run may still release its update; `late_replies` collects it once it does.
        self._unsettled: dict[int, tuple[dict[int, int], Tensors]] = {}
        # Under DP, the digest of every reply taken in this run -> the organization that sent it.
        self._seen: dict[str, int] = {}

    def exchange(self, message: Tensors, group: Sequence[int], reply_template: Tensors) -> dict[int, Tensors]:
        ranks = [r for r in group_of(group, self.world_size) if r != 0]
        organizations = {self.organization_of(r): r for r in ranks}
        task_input = json.loads(json.dumps({"method": WORKER_METHOD,
                                            "kwargs": self.task_input(message, organizations)}))
        task = self.client.task.create(input_=task_input, organizations=list(organizations),
                                       name="ppsdg round", description="ppsdg: one federated round")
        runs = self._wait(task["id"], list(organizations))
        replies = self._results_by_organization(task["id"], runs)
        self._failures = {}
        decoded: dict[int, Tensors] = {}
        for organization, rank in organizations.items():
            if organization not in replies:
                self._failures[rank] = no_result(runs.get(organization))
                continue
            try:
                decoded[rank] = self._fresh(self._decode(replies[organization], reply_template), organization)
            except FederationError as error:
                self._failures[rank] = f"update rejected: {error}"
        # A run whose result came in is settled even if the server still listed it as running (its result
        # may land between the two requests): collecting it again later would charge its release twice.
        running = {o: r for o, r in organizations.items() if o not in replies and not finished(runs.get(o))}
        if running:
            self._unsettled[task["id"]] = (running, reply_template)
        return decoded

    def late_replies(self) -> dict[int, list[Tensors]]:
        """Collect the replies of runs that were still running when their round closed and have since
        finished; a run that finished without a result released nothing and is dropped."""
        late: dict[int, list[Tensors]] = {}
        for task_id, (running, template) in list(self._unsettled.items()):
            runs = self._runs(task_id)
            done = {o: r for o, r in running.items() if finished(runs.get(o))}
            if not done:
                continue
            replies = self._results_by_organization(task_id, {o: runs[o] for o in done})
            for organization, rank in done.items():
                try:
                    late.setdefault(rank, []).append(self._fresh(self._decode(replies.get(organization), template),
                                                                 organization))
                except FederationError:
                    continue
            still = {o: r for o, r in running.items() if o not in done}
            if still:
                self._unsettled[task_id] = (still, template)
            else:
                del self._unsettled[task_id]
        return late

    def _wait(self, task_id: int, organizations: list[int]) -> dict[int, dict[str, Any]]:
        """Poll the task's status at a short fixed interval until each run has finished or the round
        times out; return the runs by the organization the server says each belongs to.

        The runs are listed only once the task has ended (or the round is over): the server lists each
        run with its input, the whole round's message, so listing them every poll moved megabytes per
        poll through the server and the node's proxy while the nodes trained on the same cores."""
        deadline = time.monotonic() + self.round_timeout_s
        while True:
            timed_out = time.monotonic() >= deadline
            if timed_out or self._may_have_ended(task_id):
                runs = self._runs(task_id)
                if timed_out or all(finished(runs.get(o)) for o in organizations):
                    return runs
            time.sleep(self.poll_s)

    def _may_have_ended(self, task_id: int) -> bool:
        """Whether the server says the task has ended, or cannot say: vantage6's mock does not find the
        subtasks that its organizations' copies of the client made, which ended as they were made.
        A real server is asked for the status alone (`task/ID/status`), half the server's work of
        the whole task."""
        request = getattr(self.client, "request", None)
        answer = request(f"task/{task_id}/status") if callable(request) else self.client.task.get(task_id)
        status = answer.get("status")
        return status is None or has_task_finished(status)

    def _runs(self, task_id: int) -> dict[int, dict[str, Any]]:
        """The task's runs by the organization the server says each belongs to."""
        return {run["organization"]["id"]: run for run in self.client.run.from_task(task_id)}

    def _results_by_organization(self, task_id: int, runs: Mapping[int, Mapping[str, Any]]) -> dict[int, Any]:
        """Attribute each result to the organization the server says ran it (by its run id, or on
        vantage6's mock by the order it made them in), never to what a node writes into its result:
        a node cannot answer in another organization's place."""
        if self.attribution == BY_MOCK_ORDER:
            return self._results_by_mock_order(task_id, runs)
        organization_of_run = {run["id"]: organization for organization, run in runs.items()}
        replies: dict[int, Any] = {}
        for entry in self.client._multi_page_request("result", params={"task_id": task_id}):
            organization = organization_of_run.get(entry.get("id"))
            if organization is not None and organization not in replies and entry.get("result"):
                replies[organization] = self._payload(entry)
        return replies

    def _results_by_mock_order(self, task_id: int, runs: Mapping[int, Mapping[str, Any]]) -> dict[int, Any]:
        """vantage6's mock runs a task's organizations one after the other and keeps each run and its
        result in that order: the i-th result is the i-th run's."""
        listed = self.client.run.from_task(task_id)
        results = self.client.result.from_task(task_id)
        if len(listed) != len(results):
            raise FederationError(f"the mock client lists {len(listed)} runs but {len(results)} results for task "
                                  f"{task_id}: they cannot be paired")
        return {run["organization"]["id"]: result for run, result in zip(listed, results)
                if run["organization"]["id"] in runs}

    def _payload(self, entry: Mapping[str, Any]) -> Any:
        """A result as the node's proxy hands it over (base64 of JSON), or None if it is not one: a
        result that is no text at all (a number, a list) is not one either."""
        if not isinstance(entry["result"], str):
            return None
        try:
            if entry.get("blob_storage_used"):
                return json.loads(self.client._download_run_data_from_server(entry["result"]))
            return json.loads(base64s_to_bytes(entry["result"]))
        except (ValueError, TypeError):
            return None

    def _fresh(self, reply: Tensors, organization: int) -> Tensors:
        """The reply, unless it repeats one taken earlier in this run: under DP each release draws its noise
        afresh, so a reply equal tensor for tensor to an earlier one (of this node or another) is replayed,
        and would have the server count one draw of noise as two."""
        if not self.options.get("local_dp"):
            return reply
        digest = hashlib.sha256()
        for name, tensor in sorted(reply.items()):
            digest.update(f"{name}:{tensor.dtype}:{list(tensor.shape)}:".encode() + tensor.numpy().tobytes())
        key = digest.hexdigest()
        if key in self._seen:
            raise FederationError(f"the result repeats, tensor for tensor, one that organization {self._seen[key]} "
                                  "sent earlier in this run: a DP release draws its noise afresh, so this one is "
                                  "replayed")
        self._seen[key] = organization
        return reply

    @staticmethod
    def _decode(reply: Any, template: Tensors) -> Tensors:
        message = reply.get("message") if isinstance(reply, dict) else None
        if not isinstance(message, str):
            raise FederationError("the result holds no message")
        try:
            tensors, _ = codec.decode_text(message, expect=template, require_finite=False)
        except codec.CodecError as error:
            raise FederationError(str(error)) from error
        return tensors


def finished(run: Mapping[str, Any] | None) -> bool:
    """Whether a run has ended (completed, crashed, killed...); a run not listed yet has not."""
    return has_task_finished((run or {}).get("status", "pending"))


def no_result(run: Mapping[str, Any] | None) -> str:
    """Why an organization has no result: its run's status and, if it crashed, the error its log
    ends with (a node that refuses a round by its policy says why there)."""
    if run is None:
        return "no result (no run)"
    reason = f"no result (run status: {run.get('status', 'unknown')})"
    if not finished(run):
        return reason + (": still running when the round closed (--round-timeout); vantage6 lets no algorithm "
                         "stop it: if it finishes while the training goes on, a later round charges its "
                         "release, and its node's own ledger counts it in any case")
    error = last_error(run["log"]) if isinstance(run.get("log"), str) else None
    if error is not None:
        reason += f": {error}"
    return reason
