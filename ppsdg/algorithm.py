"""The vantage6 4.x algorithm: `central` runs the server's rounds, one subtask per round
(`ppsdg/central_task.py` over `backends/vantage6.py`); `partial` runs one worker's round on the node's own
data (`ppsdg/node_task.py`). Only what is 4.x's is here: its decorators, its mock client, its data loader."""
import functools
import os
from collections.abc import Callable
from typing import Any

import pandas as pd

from vantage6.algorithm.tools import decorators
from vantage6.algorithm.tools.mock_client import MockAlgorithmClient
from vantage6.algorithm.tools.wrappers import load_data

from backends.mock import ForgetfulMockClient
from backends.vantage6 import CentralCommunicator
from ppsdg import central_task, node_task, tables
from ppsdg.errors import FederationError


@decorators.algorithm_client
def central(client: Any, **kwargs: Any) -> dict[str, Any]:
    """Train over the collaboration; kwargs are main.py's long options with underscores."""
    return run_central(client, kwargs)


def run_central(client: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
    """The server's rounds (`ppsdg/central_task.py`), each round one vantage6 4.x subtask."""
    return central_task.run_central(client, kwargs, CentralCommunicator)


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


def run_partial(organization: int, frame: pd.DataFrame | None, kwargs: dict[str, Any], on_node: bool = False,
                temporary_folder: str | None = None) -> dict[str, Any]:
    """A worker's round (`ppsdg/node_task.py`) on `frame`, or (None) on the node's database (`read_database`)."""
    read = read_database if frame is None else (lambda table: frame)
    return node_task.run_partial(organization, read, kwargs, on_node, temporary_folder)


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
