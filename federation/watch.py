"""What the harness reads from the server, as root, while the federation runs: nodes online, rounds
done; and the clean-up of a round that a stopped node left pending."""
from vantage6.client import UserClient
from vantage6.common.task_status import has_task_finished

from federation.shell import say, wait_until

ROUND_TASK = "ppsdg round"  # the name the central function gives each round's subtask
MANY = 1000


def nodes_online(client: UserClient, collaboration: int) -> int:
    return len(client.node.list(collaboration=collaboration, is_online=True, per_page=MANY)["data"])


def wait_online(client: UserClient, collaboration: int, count: int, timeout_s: float = 120) -> None:
    wait_until(lambda: nodes_online(client, collaboration) == count, timeout_s, f"{count} node(s) online")
    say(f"{count} node(s) online")


def rounds_completed(client: UserClient, collaboration: int) -> int:
    """Counted here: the server answers HTTP 500 to a task list filtered by status."""
    tasks = client.task.list(collaboration=collaboration, name=ROUND_TASK, per_page=MANY)["data"]
    return sum(task["status"] == "completed" for task in tasks)


def unfinished(client: UserClient, collaboration: int) -> list[int]:
    """The collaboration's tasks that have not ended (filtered here: see rounds_completed)."""
    return [task["id"] for task in client.task.list(collaboration=collaboration, per_page=MANY)["data"]
            if not has_task_finished(task["status"])]

