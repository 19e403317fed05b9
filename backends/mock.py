"""vantage6's mock client for runs without a server (`main.py --backend vantage6`, the tests, the
benchmarks), made to forget what a real server would keep in its database instead."""
import copy
from typing import Any

from vantage6.algorithm.tools.mock_client import MockAlgorithmClient
from vantage6.common import bytes_to_base64s


class ForgetfulMockClient(MockAlgorithmClient):
    """vantage6's mock client, except that a subtask's input and results go once they are read.

    The mock keeps every run's input and result for the whole session, where a real server keeps
    them in its database, not in the researcher's process: for the `Net` state and two workers
    that is 30 MiB a round. The central function reads each round's results once, so they may go.
    """

    def __deepcopy__(self, memo: dict[int, Any]) -> "ForgetfulMockClient":
        """The client the mock hands each node (a deep copy, per node and task), without the earlier
        runs and results: the copies form reference cycles, so whatever they hold stays until a
        full garbage collection, and a node needs no other node's messages."""
        copied = type(self).__new__(type(self))
        memo[id(self)] = copied
        for name, value in vars(self).items():
            setattr(copied, name, [] if name in ("runs", "results") else copy.deepcopy(value, memo))
        return copied

    class Result(MockAlgorithmClient.Result):
        def from_task(self, task_id: int) -> list[Any]:
            results = super().from_task(task_id)
            self.parent.forget(task_id)
            return results

    def _multi_page_request(self, endpoint: str, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        """The server's result listing (`GET /result?task_id=`) as a node's proxy hands it to an
        algorithm: each entry's run id and its result as base64 of JSON; then the task is forgotten."""
        task_id = (params or {}).get("task_id")
        if endpoint != "result" or task_id is None:
            raise NotImplementedError(f"the mock client serves only the result listing, not {endpoint!r}")
        entries = [{"id": entry["run"]["id"], "result": bytes_to_base64s(entry["result"].encode()),
                    "blob_storage_used": False} for entry in self.results if entry["task"]["id"] == task_id]
        self.forget(task_id)
        return entries

    def forget(self, task_id: int) -> None:
        """Drop the task's results and its runs' inputs; the runs' status stays."""
        self.results = [result for result in self.results if result["task"]["id"] != task_id]
        for run in self.runs:
            if run["task"]["id"] == task_id:
                run["input"] = None
