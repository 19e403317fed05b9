"""A researcher who has only `vantage6-client` asks a collaboration for a synthetic table, as the README
shows: log in with vantage6's `UserClient`, create a task of the store's `synthesize_table` function
with its form's fields, wait, and write the synthetic records the result holds as CSV, and the whole
result as JSON beside it (what `ppsdg sample` draws more from).

    python researcher.py SERVER_URL PORT USERNAME COLLABORATION IMAGE SCHEMA_JSON TARGET EPSILON OUT_CSV [ROWS]

(the password in the VANTAGE6_PASSWORD environment variable). It imports nothing of ppsdg: the harness
runs it in a virtual environment that holds vantage6-client alone.
"""
import json
import os
import sys

from vantage6.client import UserClient

url, port, username, collaboration, image, schema_file, target, epsilon, out, *rows = sys.argv[1:]
client = UserClient(url, int(port), "/api", log_level="warn")
client.authenticate(username, os.environ["VANTAGE6_PASSWORD"])
client.setup_encryption(None)
organizations = sorted(o["id"] for o in client.organization.list(collaboration=int(collaboration))["data"])
with open(schema_file) as handle:
    schema = json.load(handle)
task = client.task.create(
    collaboration=int(collaboration), organizations=organizations[:1], name="synthetic table", image=image,
    description="a DP synthetic table", databases=[{"label": "table"}],
    input_={"method": "synthesize_table",
            "kwargs": {"schema": schema, "target": target, "epsilon": float(epsilon), "organizations": organizations,
                       **({"rows": int(rows[0])} if rows else {})}})
result = json.loads(client.wait_for_results(task["id"])["data"][0]["result"])
table = result["synthetic"]
with open(out, "w") as handle:
    handle.write(table["csv"])
with open(out.removesuffix(".csv") + ".json", "w") as handle:
    json.dump(result, handle)
print(f"{table['rows']} synthetic records at epsilon {table['epsilon']:.3g} in {out}")
