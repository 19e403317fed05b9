"""The harness's breakdown of a real round, from the server's records and Docker's events."""
from datetime import datetime, timezone

import pytest

from federation import timing

START = 1_800_000_000.0  # seconds since the epoch: 2027-01-15T08:00:00Z


def stamp(offset: float) -> str:
    """The server's way of writing a moment: ISO 8601 in UTC, without an offset."""
    return datetime.fromtimestamp(START + offset, timezone.utc).replace(tzinfo=None).isoformat()


class Server:
    """A central task (1, run 10) with two rounds (tasks 2 and 3), each run by two nodes (runs 20-23)."""

    def __init__(self) -> None:
        self.task = self.run = self
        self.tasks = {2: stamp(0.0), 3: stamp(10.0)}
        self.runs = {1: [(10, stamp(20.0))], 2: [(20, stamp(6.0)), (21, stamp(7.0))],
                     3: [(22, stamp(15.0)), (23, stamp(14.0))]}

    def list(self, parent: int, per_page: int) -> dict:
        assert parent == 1
        return {"data": [{"id": task, "created_at": created} for task, created in reversed(self.tasks.items())]}

    def from_task(self, task_id: int) -> dict:
        return {"data": [{"id": run, "finished_at": finished} for run, finished in self.runs[task_id]]}


def container(create: float, start: float, die: float) -> dict[str, float]:
    return {"create": START + create, "start": START + start, "die": START + die}


def test_each_round_is_split_along_its_slowest_run():
    events = {"vantage6-n1-run-10": container(-3.0, -2.5, 19.0), "vantage6-n1-run-20": container(1.0, 1.5, 5.0),
              "vantage6-n2-run-21": container(0.5, 1.0, 6.0), "vantage6-n1-run-22": container(11.0, 11.5, 14.0),
              "vantage6-n2-run-23": container(11.0, 11.2, 13.0)}
    first, second = timing.round_parts(Server(), 1, events)
    assert first == pytest.approx({"pick-up": 0.5, "container start": 0.5, "container run": 5.0,
                                   "node report": 1.0, "central": 3.0})
    assert second == pytest.approx({"pick-up": 1.0, "container start": 0.5, "container run": 2.5,
                                    "node report": 1.0, "central": 4.0})


def test_a_timestamp_with_an_offset_is_read_as_such():
    assert timing.epoch("2027-01-15T09:00:00+01:00") == timing.epoch("2027-01-15T08:00:00") == START
