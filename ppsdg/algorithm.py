"""The vantage6 algorithm: `central` runs the server's rounds, one subtask per round; `partial` runs
one worker's round on the node's own data. Both are thin: the round itself is coordination's."""
import argparse
import os
from typing import Any

from vantage6.algorithm.tools import decorators
from vantage6.algorithm.tools.mock_client import MockAlgorithmClient
from vantage6.algorithm.tools.util import get_env_var

from backends import codec
from backends.mock import ForgetfulMockClient
from backends.vantage6 import CentralCommunicator, NodeCommunicator, node_communicator, node_result
from ppsdg import checkpoint, coordination, local, parser, privacy, runtime, synthesizers
from ppsdg.policy import FOLDER, PREFIX, NodePolicy, PolicyError
from ppsdg.checkpoint import Checkpoint
from ppsdg.errors import FederationError, OptionsError, PpsdgError
from ppsdg.models import new_model


@decorators.algorithm_client
def central(client: Any, **kwargs: Any) -> dict[str, Any]:
    """Train over the collaboration; kwargs are main.py's long options with underscores."""
    return run_central(client, kwargs)


@decorators.data(1)
@decorators.algorithm_client
def partial(client: Any, frame: Any, **kwargs: Any) -> dict[str, Any]:
    """One worker round on this node's data (label + 784 pixel columns); returns the update only."""
    folder = client.temporary_folder() if isinstance(client, ForgetfulMockClient) else None
    return run_partial(client.organization_id, frame, kwargs, on_node=not isinstance(client, MockAlgorithmClient),
                       temporary_folder=folder)


def run_central(client: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
    """The server's rounds over the collaboration's organizations, each round one subtask.

    Rank r is the r-th organization of `organizations` (default: all of them, by id); `checkpoint`
    (codec text from an earlier result) resumes a run.
    """
    kwargs = dict(kwargs)
    resume_text = kwargs.pop("checkpoint", None)
    organizations = organization_ids(kwargs.pop("organizations", None), client)
    kwargs.setdefault("num_nodes", len(organizations) + 1)
    options = parser.from_mapping({**kwargs, "backend": "vantage6"})
    if options.num_nodes != len(organizations) + 1:
        raise OptionsError(f"num_nodes is {options.num_nodes} but {len(organizations)} organizations "
                           "were given: it must be their number plus one (the server)")
    device = runtime.set_up(options)
    latest = [None if resume_text is None else checkpoint.read(codec.from_text(resume_text), options)]
    comm = CentralCommunicator(client, organizations, round_options(options), options.round_timeout)

    def keep(record: coordination.RoundRecord, point: Checkpoint) -> None:
        for worker in record["workers"] + record["failed"] + record.get("late", []):
            worker["organization"] = comm.organization_of(worker["rank"])
        latest[0] = point

    try:
        coordination.serve(comm, options, local.test_examples(options, device), keep, latest[0])
    except FederationError as error:
        return central_result(latest[0], options, organizations, comm.attribution, error=str(error))
    return central_result(latest[0], options, organizations, comm.attribution)


def round_options(options: argparse.Namespace) -> dict[str, Any]:
    """The options each round's subtask carries to the nodes. A statistics release's noise does not
    depend on a node's data, so a target epsilon becomes here, once, the noise multiplier every node
    would plan for it: a node runs each round in a fresh container, which would otherwise import the
    accountant and search for that noise again, seconds a round. (DP-SGD's noise follows each node's
    row count: its target travels as it is; so does a noise below what a task may ask for, and a
    target out of the planner's reach, which each node refuses by name in round 1.)"""
    task = parser.task_options(options)
    if not (options.local_dp and privacy.planned_target(options) is not None
            and synthesizers.releases_statistics(options)):
        return task
    try:
        noise = privacy.LocalDP(options).release_noise()
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


def central_result(point: Checkpoint | None, options: Any, organizations: list[int], attribution: str,
                   error: str | None = None) -> dict[str, Any]:
    """What the central function returns: the metrics, the checkpoint to save or resume from, how its
    results were attributed to organizations, and the error that stopped it, if one did (the
    researcher then still gets every finished round)."""
    result: dict[str, Any] = {"organizations": organizations, "attribution": attribution,
                              "metrics": point.records if point else [],
                              "checkpoint": codec.to_text(checkpoint.encode(point, options)) if point else None}
    if error is not None:
        result["error"] = error
    return result


def run_partial(organization: int, frame: Any, kwargs: dict[str, Any], on_node: bool = False,
                temporary_folder: str | None = None) -> dict[str, Any]:
    """A worker's round on the node's own data, if the node's policy (ppsdg/policy.py, read from the
    node's algorithm environment) admits it; its errors name the organization and its rank. On a
    real node (`on_node`, not the mock client) DP noise is secure unless the owner allows the seed.
    `temporary_folder`: the job's folder the mock gives this node, where a real node sets it in the
    environment."""
    comm = node_communicator(organization, kwargs)
    try:
        options = parser.from_mapping(kwargs.get("options") or {})
        environment = node_environment()
        if temporary_folder is not None:
            environment[FOLDER] = temporary_folder
        policy = NodePolicy.from_environment(environment)
        policy.admit(options, len(frame), environment, organization)
        options.secure_noise = policy.secure(options, on_node)
        device = runtime.set_up(options)
        examples = local.Examples.from_frame(frame, options, device)
        coordination.worker_round(comm, new_model(options, device), examples, options)
    except PpsdgError as error:
        kind = PolicyError if isinstance(error, PolicyError) else FederationError
        raise kind(f"organization {organization} (worker rank {comm.rank}): {error}") from error
    return node_result(comm)


def node_environment() -> dict[str, str]:
    """The node's algorithm environment as its owner wrote it: a vantage6 node hands each variable to
    the container base32-encoded, and vantage6's own reader decodes it (a plain value, as the mock
    and a hand-started container have, passes unchanged). A value whose decoded bytes are not UTF-8 is
    a refusal that names it."""
    environment = {}
    for name in os.environ:
        if name.startswith(PREFIX) or name == FOLDER:
            try:
                environment[name] = get_env_var(name)
            except UnicodeDecodeError:
                raise PolicyError(f"{name} cannot be read: its value, base32-decoded as a node encodes it, is not "
                                  "UTF-8 text") from None
    return environment

