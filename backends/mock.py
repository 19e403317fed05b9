"""vantage6's mock client for runs without a server (`main.py --backend vantage6`, the tests, the
benchmarks), made to forget what a real server would keep in its database instead, and to give each
node a temporary folder per job, as a real node does."""
import copy
from pathlib import Path
from typing import Any

from vantage6.algorithm.tools.mock_client import MockAlgorithmClient
from vantage6.common import bytes_to_base64s


class ForgetfulMockClient(MockAlgorithmClient):
    """vantage6's mock client, except that a subtask's input and results go once they are read, and
    that, given `job_root`, each node has a temporary folder per job.

    The mock keeps every run's input and result for the whole session, where a real server keeps
    them in its database, not in the researcher's process: for the `Net` state and two workers
    that is 30 MiB a round. The central function reads each round's results once, so they may go.

    A real node gives each job (a task the researcher created, with every subtask it creates) one
    TEMPORARY_FOLDER per node, which a node's privacy ledger lives in; vantage6's mock gives none.
    Here a task created from the researcher's side opens the job `job_root/job-<task id>`, and each
    node's folder in it is `node-<node id>` (`temporary_folder`). The caller removes `job_root`.
    """

    def __init__(self, *args: Any, job_root: Path | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.job_root = job_root
        self.job_folder: Path | None = None

    def temporary_folder(self) -> str | None:
        """This node's folder in the running job, shared by the job's subtasks; None without job_root."""
        if self.job_folder is None:
            return None
        folder = self.job_folder / f"node-{self.node_id}"
        folder.mkdir(parents=True, exist_ok=True)
        return str(folder)

    class Task(MockAlgorithmClient.Task):
        def create(self, input_: dict, organizations: list[int], *args: Any, **kwargs: Any) -> dict[str, Any]:
            """Run the task; one created outside a job opens a new job (the mock runs it to its end
            here), whose copies of this client, the job's nodes, carry its folder."""
            client = self.parent
            if client.job_root is None or client.job_folder is not None:
                return super().create(input_, organizations, *args, **kwargs)
            client.job_folder = client.job_root / f"job-{len(client.tasks) + 1}"
            try:
                return super().create(input_, organizations, *args, **kwargs)
            finally:
                client.job_folder = None

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
