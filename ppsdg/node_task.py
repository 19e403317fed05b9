"""A worker's round on a vantage6 node, the same on 4.x and 5.x: the node's policy first, then its
data, then coordination's round; what its data do not fit stays with its owner. The versions' wrappers
(`ppsdg/algorithm.py`, `ppsdg/vantage6_v5.py`) hand it the task's input and a way to read the data."""
import contextlib
import dataclasses
import os
import sys
from collections.abc import Callable, Iterator
from typing import Any

import pandas as pd

from vantage6.algorithm.tools.util import get_env_var

from backends.subtask import node_communicator, node_result
from ppsdg import coordination, data, local, parser, runtime, secure_aggregation, tables
from ppsdg.config import Table
from ppsdg.errors import DataError, FederationError, OptionsError, PpsdgError
from ppsdg.job import Job
from ppsdg.models import new_model
from ppsdg.policy import FOLDER, PREFIX, NodePolicy, PolicyError
from ppsdg.secure_aggregation import NodeSecrets


def run_partial(organization: int, read: Callable[[bool], pd.DataFrame], kwargs: dict[str, Any], on_node: bool = False,
                temporary_folder: str | None = None) -> dict[str, Any]:
    """A worker's round on the node's own data (`read(table)`: a table, or images in the node layout), if
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
        if secure and comm.carries(secure_aggregation.key_request()):
            comm.gather(NodeSecrets.fresh(job_folder(environment)).reply())
            return node_result(comm)
        table = config.table
        if table is not None:
            check_table_task(table)
        with owner_only(on_node, table is not None):
            frame = read(table is not None)
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
