"""The table job through vantage6 5.x's mock network (run by tests/test_vantage6_v5.py in a Python 3.13
environment that holds vantage6-algorithm-tools 5.x and not 4.x):

    python tests/vantage6_v5_run.py RESULT_JSON SCHEMA TARGET EPSILON TABLE...

Each TABLE is one organization's database; the central task runs on the first organization over the
session's dataframe that `read_table` made on each; the central's result is written to RESULT_JSON.
"""
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from vantage6.algorithm.mock import MockNetwork  # noqa: E402

LABEL = "table"


def main() -> None:
    out, schema, target, epsilon, *paths = sys.argv[1:]
    network = MockNetwork(module_name="ppsdg.vantage6_v5",
                          datasets=[{LABEL: {"database": path, "db_type": "csv"}} for path in paths])
    client = network.user_client
    frame = client.dataframe.create(label=LABEL, method="read_table", arguments={}, name=LABEL)
    arguments = {"gan": True, "synthesizer": "marginals", "schema": Path(schema).read_text(), "target": target,
                 "local_dp": True, "target_epsilon": float(epsilon)}
    task = client.task.create(method="central", organizations=[network.organization_ids[0]], arguments=arguments,
                              databases=[{"type": "dataframe", "dataframe_id": frame["id"]}])
    Path(out).write_text(json.dumps(client.result.from_task(task["id"])[0]))


if __name__ == "__main__":
    main()
