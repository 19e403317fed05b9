"""The fault runs: the last node is stopped (`v6 node stop`) once the first round is done.

With --min-workers 1 the training must go on with the other node and record the stopped one as
failed; without it, the run must end within its round timeout with a message naming the missing
organization. Either way nothing may hang.
"""
import time
from dataclasses import dataclass
from pathlib import Path

from vantage6.client import UserClient

from federation import runs, watch
from federation.accounts import Federation
from federation.checks import require
from federation.nodes import Nodes
from federation.runs import Run
from federation.shell import HarnessError, say, stop_process, wait_until

FIRST_ROUND_TIMEOUT_S = 300


@dataclass(frozen=True)
class FaultRun:
    """A federation whose last node can be stopped, and the options every fault run shares."""

    client: UserClient
    federation: Federation
    nodes: Nodes
    arguments: list[str]
    timeout_s: float

    @property
    def stopped_organization(self) -> int:
        return self.federation.organizations[-1]

    def run(self, name: str, extra: list[str], folder: Path) -> Run:
        """Start main.py, stop the last node as soon as a round completed, wait for main.py to end."""
        collaboration = self.federation.collaboration
        baseline = watch.rounds_completed(self.client, collaboration)
        started = time.monotonic()
        process = runs.start(name, [*self.arguments, *extra], folder, self.federation.password)
        try:
            wait_until(lambda: watch.rounds_completed(self.client, collaboration) > baseline
                       or process.poll() is not None, FIRST_ROUND_TIMEOUT_S, "the first round")
            self.nodes.stop(self.federation.node_names[-1])
        except HarnessError:
            stop_process(process)
            raise
        return runs.finish(name, process, folder, started, self.timeout_s)

    def restart_node(self) -> None:
        """Bring the stopped node back for the next run (main.py killed the round it left pending)."""
        self.nodes.start(self.federation.node_names[-1])
        watch.wait_online(self.client, self.federation.collaboration, len(self.federation.organizations))

    def check_nothing_left_running(self, run: Run) -> None:
        """main.py kills the round the stopped node left pending: nothing of the run may still run."""
        left = watch.unfinished(self.client, self.federation.collaboration)
        require(not left and "ppsdg: note: killed the task(s) of this training" in run.printed,
                f"{run.name}: tasks {left} still unfinished after main.py ended:\n{run.printed[-2000:]}")

    def check_goes_on(self, run: Run) -> None:
        """--min-workers 1: every round done, the last one without the stopped node, named in `failed`."""
        require(run.returncode == 0, f"{run.name}: exit {run.returncode}:\n{run.printed[-2000:]}")
        self.check_nothing_left_running(run)
        last = run.records()[-1]
        failed = [(f["organization"], f["reason"]) for f in last["failed"]]
        require([organization for organization, _ in failed] == [self.stopped_organization],
                f"{run.name}: the last round's failed workers are {failed}")
        require([w["organization"] for w in last["workers"]] == self.federation.organizations[:-1],
                f"{run.name}: the last round's workers are {last['workers']}")
        say(f"{run.name}: {len(run.records())} rounds; the last one went on without {failed}")

    def check_stops(self, run: Run) -> None:
        """Without --min-workers: exit status 2 and one line that names the stopped organization."""
        errors = [line for line in run.printed.splitlines() if line.startswith("ppsdg: error:")]
        require(run.returncode == 2 and len(errors) == 1 and "Traceback" not in run.printed,
                f"{run.name}: exit {run.returncode}:\n{run.printed[-2000:]}")
        self.check_nothing_left_running(run)
        require(f"organization {self.stopped_organization} (worker rank" in errors[0],
                f"{run.name}: the message does not name organization {self.stopped_organization}: {errors[0]}")
        say(f"{run.name}: printed: {errors[0]}")
