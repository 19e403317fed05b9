"""The vantage6 5.x algorithm, as thin as 4.x's (`ppsdg/algorithm.py`): a `data_extraction` step that
reads a node's table as text into the session's dataframe, `partial` (a `federated_compute` step: one
worker's round, `ppsdg/node_task.py`) and `central` (a `central_compute` step: the server's rounds,
`ppsdg/central_task.py`, over `backends/vantage6_v5.py`). Needs Python >= 3.13 and
vantage6-algorithm-tools 5.x, without vantage6 4.x's packages (README, *vantage6 5.x*)."""
from typing import Any

import pandas as pd

from vantage6.algorithm.decorator import algorithm_client, central as central_compute, data_extraction, dataframe
from vantage6.algorithm.decorator import federated
from vantage6.algorithm.mock.client import MockAlgorithmClient

from backends.vantage6_v5 import CentralCommunicator
from ppsdg import central_task, node_task, tables


@data_extraction
def read_table(connection_details: dict[str, Any]) -> pd.DataFrame:
    """The node's table (CSV, Parquet or Excel) as text, so that codes, flags and leading zeros reach the
    schema as written."""
    return tables.read_table(connection_details["uri"])


@federated
@dataframe(1)
@algorithm_client
def partial(client: Any, frame: pd.DataFrame, **kwargs: Any) -> dict[str, Any]:
    """One worker round on the session's dataframe of this node; returns the update only."""
    return node_task.run_partial(client.organization_id, lambda table: frame, kwargs,
                                 on_node=not isinstance(client, MockAlgorithmClient))


@central_compute
@algorithm_client
def central(client: Any, **kwargs: Any) -> dict[str, Any]:
    """Train over the collaboration; kwargs are main.py's long options with underscores."""
    return central_task.run_central(client, kwargs, CentralCommunicator)
