"""Where a real round's seconds go, read after the run from the server's records and Docker's events.

A round is one subtask: the node picks it up and creates its container, Docker starts it, the
container runs (Python's imports, then the round), the node notices that it ended and reports the
result, and the central function notices the results, aggregates them and creates the next round.
Every part of a round is taken along its slowest run, the one the round waited for. Server, nodes and
Docker share this machine's clock.
"""
import json
from dataclasses import dataclass
from datetime import datetime, timezone
from statistics import mean

from vantage6.client import UserClient

from federation.shell import run, say

MANY = 1000
PARTS = ("pick-up", "container start", "container run", "node report", "central")
CONTAINER_EVENTS = ("create", "start", "die")
# What a container imports before its round: the algorithm (torch, vantage6's tools, ppsdg).
IMPORT_PROBE = "import time; started = time.perf_counter(); import ppsdg.algorithm; print(time.perf_counter() - started)"


@dataclass(frozen=True)
class Window:
    """The span of a run, in seconds since the epoch, that Docker's events are read for."""

    since: float
    until: float


def epoch(stamp: str) -> float:
    """A server timestamp (ISO 8601, UTC when it carries no offset) in seconds since the epoch."""
    moment = datetime.fromisoformat(stamp)
    return (moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)).timestamp()


def container_events(window: Window) -> dict[str, dict[str, float]]:
    """Container name -> {create, start, die: seconds since the epoch} within the window."""
    printed = run(["docker", "events", "--since", f"{window.since:.3f}", "--until", f"{window.until:.3f}",
                   "--filter", "type=container", "--format", "{{json .}}"], timeout_s=60).stdout
    events: dict[str, dict[str, float]] = {}
    for line in printed.splitlines():
        event = json.loads(line)
        if event.get("Action") in CONTAINER_EVENTS:
            name = event["Actor"]["Attributes"]["name"]
            events.setdefault(name, {}).setdefault(event["Action"], event["timeNano"] / 1e9)
    return events


def container_of(run_id: int, events: dict[str, dict[str, float]]) -> dict[str, float]:
    """The events of the algorithm container a node named after the run (`vantage6-NODE-run-ID`)."""
    return next(times for name, times in events.items() if name.endswith(f"-run-{run_id}"))


def round_parts(client: UserClient, central_task: int, events: dict[str, dict[str, float]]) -> list[dict[str, float]]:
    """Each round's parts in seconds, in round order; the last round ends when the central's container does."""
    rounds = sorted(client.task.list(parent=central_task, per_page=MANY)["data"], key=lambda task: task["id"])
    central_runs = client.run.from_task(central_task)["data"]
    central_end = container_of(central_runs[0]["id"], events)["die"]
    ends = [epoch(task["created_at"]) for task in rounds[1:]] + [central_end]
    parts = []
    for task, end in zip(rounds, ends):
        slowest = max(client.run.from_task(task["id"])["data"], key=lambda r: epoch(r["finished_at"]))
        container, finished = container_of(slowest["id"], events), epoch(slowest["finished_at"])
        moments = [epoch(task["created_at"]), container["create"], container["start"], container["die"],
                   finished, end]
        parts.append({part: later - earlier for part, earlier, later in zip(PARTS, moments, moments[1:])})
    return parts


def latest_central_task(client: UserClient, collaboration: int) -> int:
    """The researcher's most recent training: the newest task without a parent."""
    tasks = client.task.list(collaboration=collaboration, user_created=True, per_page=MANY)["data"]
    return max(task["id"] for task in tasks)


def import_seconds(image: str) -> float:
    """How long a fresh container of the image takes to import ppsdg.algorithm (what every container
    pays before its round), measured apart, in a container of its own."""
    printed = run(["docker", "run", "--rm", "--entrypoint", "python", image, "-c", IMPORT_PROBE], timeout_s=120)
    return float(printed.stdout.strip().splitlines()[-1])


def report(parts: list[dict[str, float]], imports_s: float) -> None:
    """Say each round's parts and their mean."""
    for index, seconds in enumerate(parts, start=1):
        say(f"real round {index}: {sum(seconds.values()):.2f} s = " + ", ".join(
            f"{part} {value:.2f}" for part, value in seconds.items()))
    means = {part: mean(seconds[part] for seconds in parts) for part in PARTS}
    say(f"real round, mean of {len(parts)}: {sum(means.values()):.2f} s = " + ", ".join(
        f"{part} {value:.2f}" for part, value in means.items()) + f"; the container run includes imports, "
        f"measured apart: ppsdg.algorithm {imports_s:.2f} s")


def measure(client: UserClient, collaboration: int, window: Window, image: str) -> None:
    """Say where the rounds of the researcher's latest run (inside `window`) spent their seconds."""
    events = container_events(window)
    report(round_parts(client, latest_central_task(client, collaboration), events), import_seconds(image))

