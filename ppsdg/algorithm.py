"""The vantage6 algorithm: `central` runs the server's rounds, one subtask per round; `partial` runs
one worker's round on the node's own data. Both are thin: the round itself is coordination's."""
import contextlib
import dataclasses
import functools
import os
import sys
from collections.abc import Callable, Iterator
from typing import Any

import pandas as pd

from vantage6.algorithm.tools import decorators
from vantage6.algorithm.tools.mock_client import MockAlgorithmClient
from vantage6.algorithm.tools.util import get_env_var
from vantage6.algorithm.tools.wrappers import load_data

from backends import codec
from backends.mock import ForgetfulMockClient
from backends.vantage6 import CentralCommunicator, node_communicator, node_result
from ppsdg import checkpoint, coordination, data, local, parser, result, runtime, secure_aggregation, tables
from ppsdg.policy import FOLDER, PREFIX, NodePolicy, PolicyError
from ppsdg.checkpoint import Checkpoint
from ppsdg.secure_aggregation import NodeSecrets
from ppsdg.config import Config, Table
from ppsdg.job import Job
from ppsdg.errors import DataError, FederationError, OptionsError, PpsdgError
from ppsdg.models import new_model


@decorators.algorithm_client
def central(client: Any, **kwargs: Any) -> dict[str, Any]:
    """Train over the collaboration; kwargs are main.py's long options with underscores."""
    return run_central(client, kwargs)


def node_database(function: Callable[..., Any]) -> Callable[..., Any]:
    """vantage6's `@data(1)`, except that the function reads the node's database itself, once it knows
    the job (`read_database`), and is handed None; the mock client's frame (`mock_data`) is handed as
    vantage6's own decorator would hand it."""
    @functools.wraps(function)
    def with_database(*args: Any, mock_data: list[pd.DataFrame] | None = None, **kwargs: Any) -> Any:
        return function(mock_data[0] if mock_data else None, *args, **kwargs)

    with_database.wrapped_in_data_decorator = True
    return with_database


@node_database
@decorators.algorithm_client
def partial(client: Any, frame: pd.DataFrame | None, **kwargs: Any) -> dict[str, Any]:
    """One worker round on this node's data (a table, or label + 784 pixel columns); returns the update only."""
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
    comm = CentralCommunicator(client, organizations, round_options(config, job), run.round_timeout)

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


def run_partial(organization: int, frame: pd.DataFrame | None, kwargs: dict[str, Any], on_node: bool = False,
                temporary_folder: str | None = None) -> dict[str, Any]:
    """A worker's round on the node's own data (`frame`, or None: its database, `read_database`), if
    the node's policy (ppsdg/policy.py, read from the node's algorithm environment) admits it; its
    errors name the organization and its rank. On a real node (`on_node`, not the mock client) DP
    noise is secure unless the owner allows the seed, and what its data do not fit stays on the node
    (`owner_only`). `temporary_folder`: the job's folder the mock gives this node, where a real node
    sets it in the environment."""
    comm = node_communicator(organization, kwargs)
    try:
        config = parser.from_mapping(kwargs.get("options") or {})
        run = config.run
        environment = node_environment()
        if temporary_folder is not None:
            environment[FOLDER] = temporary_folder
        policy = NodePolicy.from_environment(environment)
        secure = config.privacy.secure_aggregation
        if secure and secure_aggregation.is_key_request(comm.names()):
            comm.gather(NodeSecrets.fresh(job_folder(environment)).reply())
            return node_result(comm)
        table = config.table
        if table is not None:
            check_table_task(table)
        with owner_only(on_node, table is not None):
            frame = read_database(table is not None) if frame is None else frame
        privacy = dataclasses.replace(config.privacy, secure_noise=policy.secure(config.privacy, on_node))
        job = Job.of(config.job, privacy, run.num_rounds, config.source.data)
        policy.admit(run, job, len(frame), environment, organization)
        device = runtime.set_up(run.threads, run.use_cuda)
        with owner_only(on_node, table is not None):
            examples = local.Examples.from_frame(frame, table, device, quiet=on_node)
        secrets = NodeSecrets.load(job_folder(environment)) if secure else None
        colluders = None if policy.distributed_noise is None else max(policy.distributed_noise, privacy.colluders)
        coordination.worker_round(comm, new_model(job.synthesizer, run.seed, device), examples, run, job, secrets,
                                  colluders)
    except PpsdgError as error:
        kind = PolicyError if isinstance(error, PolicyError) else FederationError
        raise kind(f"organization {organization} (worker rank {comm.rank}): {error}") from error
    return node_result(comm)


def job_folder(environment: dict[str, str]) -> str:
    """The job's folder on this node, where secure aggregation keeps the node's key between rounds."""
    folder = environment.get(FOLDER)
    if not folder:
        raise FederationError(f"secure aggregation keeps this node's key in the job's folder, and the node gives "
                              f"none ({FOLDER})")
    return folder


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


def check_table_task(table: Table) -> None:
    """A table task carries its schema and target: the node maps its rows with them, and never drafts
    a schema of its own, which would read the domain off its private rows. Their marginals must fit
    (`tables.check_cells`) before the central or a node allocates them."""
    if table.schema is None or table.target is None:
        missing = " and ".join(name for name in ("schema", "target") if getattr(table, name) is None)
        raise OptionsError(f"a table task needs its {missing} (the task's options 'schema' and 'target'): a node "
                           "never drafts a schema from its own rows")
    schema = tables.Schema.from_text(table.schema)
    if table.target not in schema.names:
        raise OptionsError(f"the task's target {table.target!r} is not a column of its schema")
    tables.check_cells(schema, table.target)


class DataRefusal(FederationError):
    """A node's data that do not fit the task, said without a word about the data."""


@contextlib.contextmanager
def owner_only(on_node: bool, table: bool) -> Iterator[None]:
    """Read or encode the node's data; if they do not fit (a DataError, or any error of the reading
    itself), refuse with one sentence that is the same whatever the data hold. The detail of such an
    error names rows, counts of rows or values: an exact, uncharged answer to a question the task's
    author chose (which rows fall outside a schema that lists one category?). A real node's log goes
    to the server with the run, so there the detail is dropped, and its owner finds it with the
    command the refusal names, on the same file; elsewhere (the mock client, in the process of the
    person who holds every part) it is said on stderr. A refusal tells the server one bit."""
    try:
        yield
    except DataError as error:
        refuse(error, on_node, table)
    except PpsdgError:
        raise
    except (OSError, ValueError, LookupError) as error:
        refuse(error, on_node, table)


def refuse(error: Exception, on_node: bool, table: bool) -> None:
    """Raise the refusal, which says nothing of `error`; say `error` only where the process is the owner's."""
    if not on_node:
        print(f"ppsdg: the node's data do not fit the task: {error}", file=sys.stderr)
    fits, finder = (("its schema", "`ppsdg schema DATA --check SCHEMA`") if table else
                    (f"images: a label and {data.NUM_PIXELS} pixels a row", "`ppsdg --data DATA`, which reads the "
                     "file as the node does"))
    raise DataRefusal(f"this node's data do not fit the task ({fits}); what does not fit stays on the node: its "
                      f"owner finds it with {finder}") from None


def read_database(table: bool) -> pd.DataFrame:
    """The node's first requested database, as the node's configuration names it. A table (CSV or
    Parquet; Excel) is read as text, so that codes, flags and leading zeros reach the schema as
    written; images, and any other database type, through vantage6's own loader."""
    label = os.environ.get("USER_REQUESTED_DATABASE_LABELS", "").split(",")[0].upper()
    uri = os.environ.get(f"{label}_DATABASE_URI")
    if not label or uri is None:
        raise FederationError("the node hands this task no database (USER_REQUESTED_DATABASE_LABELS and "
                              "<LABEL>_DATABASE_URI): create the task with one of the node's database labels")
    kind = os.environ.get(f"{label}_DATABASE_TYPE", "csv").lower()
    sheet = os.environ.get(f"{label}_SHEET_NAME")
    if table and kind in tables.TABLE_FORMATS:
        return tables.read_table(uri, kind, sheet)
    return load_data(uri, kind, query=os.environ.get(f"{label}_QUERY"), sheet_name=sheet)
