"""The central function's part, the same on vantage6 4.x and 5.x: the run's options from the task, the
server's rounds (coordination's) over a Communicator of the version's own, and the result a user
reads. The versions' wrappers (`ppsdg/algorithm.py`, `ppsdg/vantage6_v5.py`) only connect it."""
from collections.abc import Callable
from typing import Any

from backends import codec
from backends.subtask import CentralSide
from ppsdg import checkpoint, coordination, local, parser, result, runtime
from ppsdg.checkpoint import Checkpoint
from ppsdg.config import Config
from ppsdg.errors import FederationError, OptionsError
from ppsdg.job import Job
from ppsdg.node_task import check_table_task

# How a version's central function reaches its nodes: (client, organizations in rank order, the options a
# round's subtask carries, the round's timeout) -> its Communicator.
Connect = Callable[[Any, list[int], dict[str, Any], float], CentralSide]


def run_central(client: Any, kwargs: dict[str, Any], communicator: Connect) -> dict[str, Any]:
    """The server's rounds over the collaboration's organizations, each round one subtask made by the
    Communicator `communicator` connects (vantage6 4.x's or 5.x's).

    Rank r is the r-th organization of `organizations` (default: all of them, by id); `checkpoint`
    (codec text from an earlier result) resumes a run.
    """
    kwargs = dict(kwargs)
    resume_text = kwargs.pop("checkpoint", None)
    organizations = organization_ids(kwargs.pop("organizations", None), client)
    kwargs.setdefault("num_nodes", len(organizations) + 1)
    config = parser.from_mapping({**kwargs, "backend": "vantage6"})
    run = config.run
    if run.num_nodes != len(organizations) + 1:
        raise OptionsError(f"num_nodes is {run.num_nodes} but {len(organizations)} organizations "
                           "were given: it must be their number plus one (the server)")
    if config.table is not None:
        check_table_task(config.table)
    device = runtime.set_up(run.threads, run.use_cuda)
    job = Job.of_config(config)
    fixed = config.fixed_options()
    latest = [None if resume_text is None else checkpoint.read(codec.from_text(resume_text), fixed, run, job)]
    comm = communicator(client, organizations, round_options(config, job), run.round_timeout)

    def keep(record: coordination.RoundRecord, point: Checkpoint) -> None:
        for worker in record["workers"] + record["failed"] + record.get("late", []):
            worker["organization"] = comm.organization_of(worker["rank"])
        latest[0] = point

    test_set = local.test_examples(config.source, job.classifier is not None, device)
    try:
        coordination.serve(comm, run, job, test_set, keep, latest[0])
    except FederationError as error:
        return result.central_result(latest[0], config.task_options(), fixed, job, run.seed, organizations,
                                     comm.attribution, error=str(error))
    return result.central_result(latest[0], config.task_options(), fixed, job, run.seed, organizations,
                                 comm.attribution)


def round_options(config: Config, job: Job) -> dict[str, Any]:
    """The options each round's subtask carries to the nodes. A statistics release's noise does not
    depend on a node's data, so a target epsilon becomes here, once, the noise multiplier every node
    would plan for it: a node runs each round in a fresh container, which would otherwise import the
    accountant and search for that noise again, seconds a round. (DP-SGD's noise follows each node's
    row count: its target travels as it is; so does a noise below what a task may ask for, and a
    target out of the planner's reach, which each node refuses by name in round 1.)"""
    task = config.task_options()
    if not (job.dp is not None and job.dp.target_epsilon is not None and job.releases_statistics):
        return task
    try:
        noise = job.dp.release_noise()
    except OptionsError:
        return task
    if noise >= parser.MIN_NOISE_MULTIPLIER:
        task.update(noise_multiplier=noise, target_epsilon=None)
    return task


def organization_ids(given: Any, client: Any) -> list[int]:
    """The workers' organizations in rank order: those given (distinct ids), or all of the collaboration's."""
    if given is None:
        return sorted(o["id"] for o in client.organization.list())
    if not (isinstance(given, list) and given and all(type(i) is int for i in given) and len(set(given)) == len(given)):
        raise OptionsError(f"organizations must be a list of distinct organization ids, got {given!r:.200}")
    return given
