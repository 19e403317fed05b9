"""vantage6's mock client for runs without a server (`main.py --backend vantage6`, the tests, the
benchmarks), made to forget what a real server would keep in its database instead."""
import copy
from typing import Any

from vantage6.algorithm.tools.mock_client import MockAlgorithmClient


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

    def forget(self, task_id: int) -> None:
        """Drop the task's results and its runs' inputs; the runs' status stays."""
        self.results = [result for result in self.results if result["task"]["id"] != task_id]
        for run in self.runs:
            if run["task"]["id"] == task_id:
                run["input"] = None
