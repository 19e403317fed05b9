"""The node owner's policy on a real node, for each job (images, the table): the last node is
reconfigured with `algorithm_env` (the way an owner sets it in the node's configuration file) and
restarted with a budget for one of the job's rounds; then the job's task without local DP must be
refused by that node, and a DP run must stop at its budget where the mock run stops. That
node does not allow seeded noise, so its DP noise comes from the secure stream, as on a real node by
default: the budget run's model must differ from the mock's, and its accounting must not.
"""
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch

from backends import codec
from federation import runs, watch
from federation.accounts import Federation, root_client
from federation.checks import require
from federation.nodes import Nodes
from federation.runs import Run
from federation.server import Server
from federation.shell import say
from ppsdg import checkpoint, privacy
from ppsdg.job import Job
from ppsdg.policy import MAX_EPSILON, REQUIRE_DP

NOISE_MULTIPLIER = 1.5
ROUNDS = 3


@dataclass(frozen=True)
class PolicyRuns:
    """The policy runs of one job; `databases` are every node's databases by label, by rank (the
    guarded node is restarted with all of its own)."""

    server: Server
    federation: Federation
    nodes: Nodes
    databases: list[dict[str, Path]]
    job: runs.Job
    timeout_s: float

    @property
    def guarded_organization(self) -> int:
        return self.federation.organizations[-1]

    def dp_arguments(self) -> list[str]:
        return ["-ldp", "--noise-multiplier", str(NOISE_MULTIPLIER), "-nr", str(ROUNDS)]

    def budget(self) -> float:
        """Between what one round and two rounds of the guarded node's releases spend: room for one."""
        config = runs.configuration([*self.job.arguments, *self.dp_arguments()])
        job = Job.of_config(config)
        entry = job.dp.planned_entry(len(pd.read_csv(self.job.partitions[-1])), job.releases_statistics)
        one, two = (privacy.epsilon([entry] * rounds, config.privacy.delta, config.privacy.accountant)
                    for rounds in (1, 2))
        return (one + two) / 2

    def guard(self, environment: dict[str, str]) -> None:
        """(Re)start the last node with the owner's `algorithm_env` (the fault runs left it stopped;
        main.py killed the round they left pending)."""
        name, index = self.federation.node_names[-1], len(self.federation.node_names) - 1
        client = root_client(self.server.url, self.server.port)
        if self.nodes.running(name):
            self.nodes.stop(name)
        self.nodes.configure(name, self.federation.api_keys[index], self.databases[index], environment)
        self.nodes.start(name)
        watch.wait_online(client, self.federation.collaboration, len(self.federation.organizations))

    def real(self, name: str, extra: list[str], folder: Path) -> Run:
        return runs.main_py(name, [*self.job.arguments, *runs.server_arguments(self.server, self.federation,
                                                                               self.job.database),
                                   "--task-timeout", str(self.timeout_s), *extra],
                            folder, self.timeout_s, self.federation.password)

    def check_refused(self, run: Run, variable: str) -> str:
        """Exit 2 and one error line that names the guarded organization and its policy variable."""
        errors = [line for line in run.printed.splitlines() if line.startswith("ppsdg: error:")]
        require(run.returncode == 2 and len(errors) == 1 and "Traceback" not in run.printed,
                f"{run.name}: exit {run.returncode}:\n{run.printed[-2000:]}")
        require(f"organization {self.guarded_organization} (worker rank" in errors[0] and variable in errors[0],
                f"{run.name}: the message does not name organization {self.guarded_organization} and "
                f"{variable}: {errors[0]}")
        say(f"{run.name}: printed: {errors[0]}")
        return errors[0]

    def check_budget(self, real: Run, mock: Run) -> None:
        """Both runs stop after the round the budget allows, with the same accounting; the real one's
        model is not the mock's, because the guarded node's noise is not the seed's."""
        self.check_refused(real, MAX_EPSILON)
        require(mock.returncode == 2 and MAX_EPSILON in mock.printed, f"{mock.name}: exit {mock.returncode}:\n"
                                                                      f"{mock.printed[-2000:]}")
        real_records, mock_records = real.records(), mock.records()
        require(len(real_records) == len(mock_records) == 1 and accounting(real_records) == accounting(mock_records),
                f"the real budget run's rounds differ from the mock's: {accounting(real_records)} and "
                f"{accounting(mock_records)}")
        require(not models_equal(real.folder, mock.folder), "the guarded node's DP noise is the seed's: its "
                                                            "round equals the mock's bit for bit")
        say(f"budget runs: both stopped after round {real_records[-1]['round']} at epsilon "
            f"{real_records[-1]['epsilon']:.3f}; the guarded node's noise was not the seed's")


def accounting(records: list[dict]) -> list[tuple]:
    """What a round spent, worker by worker: independent of the noise's values."""
    return [(r["round"], r["epsilon"], [(w["rank"], w["epsilon"]) for w in r["workers"]]) for r in records]


def models_equal(first: Path, second: Path) -> bool:
    """The models of two runs' checkpoints (what a stopped run keeps), compared bit for bit."""
    models = []
    for folder in (first, second):
        tensors, _ = codec.decode(checkpoint.load(folder), max_meta_bytes=checkpoint.META_BYTES)
        models.append({name: t for name, t in tensors.items() if name.startswith(checkpoint.MODEL)})
    return all(torch.equal(models[0][name], models[1][name]) for name in models[0])


def policy_runs(work: Path, policy: PolicyRuns) -> None:
    """The job's task without DP refused by name on the guarded node, then a DP run stopped at its budget."""
    budget = policy.budget()
    job = policy.job.name
    say(f"{job} policy runs: {REQUIRE_DP}=1 and {MAX_EPSILON}={budget:.6f} on the last node")
    policy.guard({REQUIRE_DP: "1", MAX_EPSILON: f"{budget:.6f}"})
    policy.check_refused(policy.real(f"{job} policy, no DP", ["-nr", "2"], work / f"{job}-policy-no-dp"), REQUIRE_DP)
    real = policy.real(f"{job} policy, budget", policy.dp_arguments(), work / f"{job}-policy-budget")
    mock = runs.main_py(f"{job} policy, budget, mock",
                        [*policy.job.arguments, "--backend", "vantage6", *policy.dp_arguments()],
                        work / f"{job}-policy-budget-mock", policy.timeout_s,
                        extra_environment={MAX_EPSILON: f"{budget:.6f}"})
    policy.check_budget(real, mock)
