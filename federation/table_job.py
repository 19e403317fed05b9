"""The tabular job on the real federation: each node's second database (label `table`) is a CSV part of
UCI Adult, read at run time from outside the repository, and the marginals synthesizer runs on it
under DP, over the federation and through the mock client, with the same seed and epsilon.
"""
import csv
import io
import json
import os
import sys
import time
from pathlib import Path

from federation import checks, runs
from federation.accounts import Federation
from federation.images import ALGORITHM
from federation.nodes import DISTRIBUTED_NOISE, TABLE
from federation.server import Server
from federation.shell import HarnessError, run, say
from ppsdg import store, tables

RESEARCHER = Path(__file__).with_name("researcher.py")

TRAIN, TEST = "adult-train.csv.gz", "adult-test.csv.gz"
TARGET = "income"
# The harness runs in CI on 2 cores, and the comparison needs no more than a part of Adult: 2,500 of
# its 32,561 training rows per node, as many test rows, and 8 of its 15 columns (the graphical
# model's fit grows with the columns: 50 s for all 15 on a loaded machine, 15 s for these).
ROWS_PER_NODE = 2500
TEST_ROWS = 2500
COLUMNS = ["age", "workclass", "education", "marital-status", "occupation", "sex", "hours-per-week", TARGET]
TARGET_EPSILON = 1
# The records of the largest result the harness sends through the real server and node (the README's figure
# for Adult's 15 columns: 100,000 records, 11.7 MB; these 8 columns make it smaller).
LARGE_RESULT_ROWS = 100_000


def write_job(adult: Path, work: Path, node_count: int) -> runs.Job:
    """The job's files in the work folder: one part of Adult's training file per node (first rows
    first), a test part, the schema, and the nodes' databases made from the parts exactly as the
    mock client makes its organizations' (`main.write_partitions`)."""
    missing = [name for name in (TRAIN, TEST) if not (adult / name).is_file()]
    if missing:
        raise HarnessError(f"Adult's {', '.join(missing)} not found in {adult} (--adult)")
    folder = work / "adult"
    folder.mkdir()
    train = tables.read_table(adult / TRAIN)[COLUMNS]
    # DP needs a public schema (the domain is not covered by the guarantee). The harness has no
    # published one, so it drafts it from the whole training file (those columns), as `ppsdg schema` would.
    schema = folder / "schema.json"
    schema.write_text(tables.draft(train, TARGET).text())
    parts = [folder / f"part{index + 1}.csv" for index in range(node_count)]
    for index, path in enumerate(parts):
        train.iloc[index * ROWS_PER_NODE:(index + 1) * ROWS_PER_NODE].to_csv(path, index=False)
    test = folder / "test.csv"
    tables.read_table(adult / TEST)[COLUMNS].iloc[:TEST_ROWS].to_csv(test, index=False)
    arguments = ["--data", ",".join(map(str, parts)), "--test-data", str(test), "--schema", str(schema),
                 "--target", TARGET, "--threads", "1"]
    return runs.Job("table", arguments, TABLE, runs.write_partitions(arguments, folder))


def compare(work: Path, server: Server, federation: Federation, job: runs.Job, timeout_s: float,
            researcher_python: Path) -> None:
    """The synthetic table over the real federation equals the mock client's, with its evaluation and epsilon;
    and so does the one a researcher without ppsdg gets from the store's `synthesize_table` (`as_researcher`)."""
    common = [*job.arguments, "-ldp", "--target-epsilon", str(TARGET_EPSILON)]
    real = runs.require_success(runs.main_py(
        "real table", [*common, *runs.server_arguments(server, federation, job.database),
                       "--task-timeout", str(timeout_s)], work / "real-table", timeout_s, federation.password))
    mock = runs.require_success(runs.main_py("mock table", [*common, "--backend", "vantage6"], work / "mock-table",
                                             timeout_s))
    checks.check_synthetic(real, mock, TARGET_EPSILON)
    as_researcher(work, server, federation, job, mock, researcher_python, timeout_s)
    secure(work, server, federation, job, timeout_s)


def secure(work: Path, server: Server, federation: Federation, job: runs.Job, timeout_s: float) -> None:
    """The table job under secure aggregation: over the real federation (nodes that allow a share of the
    noise, DISTRIBUTED_NOISE) its synthetic table equals the mock's, each round summed in one attempt with
    each node adding half the noise, and what the central function read of each node was masked."""
    common = [*job.arguments, "-ldp", "--target-epsilon", str(TARGET_EPSILON), "--secure-aggregation"]
    real = runs.require_success(runs.main_py(
        "real table, secure aggregation", [*common, *runs.server_arguments(server, federation, job.database),
                                           "--task-timeout", str(timeout_s)],
        work / "real-secure-table", timeout_s, federation.password))
    mock = runs.require_success(runs.main_py("mock table, secure aggregation", [*common, "--backend", "vantage6"],
                                             work / "mock-secure-table", timeout_s,
                                             extra_environment=DISTRIBUTED_NOISE))
    checks.check_synthetic(real, mock, TARGET_EPSILON)
    shares = {worker["noise_share"] for record in real.records() for worker in record["workers"]}
    attempts = {record["attempts"] for record in real.records()}
    if shares != {0.5} or attempts != {1}:
        raise HarnessError(f"secure aggregation over the real federation: noise shares {sorted(shares)} and attempts "
                           f"{sorted(attempts)}, where each of the 2 nodes adds half the noise in one attempt a round")
    say(f"secure aggregation over the real federation: each node added half the noise, "
        f"{real.seconds_per_round():.1f} s a round")


def as_researcher(work: Path, server: Server, federation: Federation, job: runs.Job, mock: runs.Run,
                  python: Path, timeout_s: float) -> None:
    """federation/researcher.py, in an environment of vantage6-client alone: its CSV is the mock's table; and
    a result of LARGE_RESULT_ROWS records passes through the real server and node."""
    out = work / "researcher.csv"
    started = time.monotonic()
    printed = researcher(out, server, federation, job, python, timeout_s)
    if out.read_bytes() != (mock.folder / "synthetic.csv").read_bytes():
        raise HarnessError("the synthetic table a researcher reads from synthesize_table's result differs from the "
                           "mock run's")
    say(f"researcher with vantage6-client alone, synthesize_table: {printed.strip().splitlines()[-1]} "
        f"({time.monotonic() - started:.0f} s), identical to the mock run's")
    saved = out.with_suffix(".json")
    check_visualizations(json.loads(saved.read_text()))
    again = work / "sampled.csv"
    run([sys.executable, "main.py", "sample", str(saved), "--output", str(again)], timeout_s=timeout_s, cwd=runs.REPO)
    if again.read_bytes() != out.read_bytes():
        raise HarnessError("ppsdg sample on the saved result does not draw the result's own records")
    say("the result has the shape its store visualizations name, and ppsdg sample draws its records again")
    large = work / "researcher-large.csv"
    started = time.monotonic()
    researcher(large, server, federation, job, python, timeout_s, LARGE_RESULT_ROWS)
    records = sum(1 for _ in csv.reader(io.StringIO(large.read_text()))) - 1
    if records != LARGE_RESULT_ROWS:
        raise HarnessError(f"a result of {LARGE_RESULT_ROWS} records came back with {records}")
    say(f"a result of {records} records ({large.with_suffix('.json').stat().st_size / 1e6:.1f} MB) through the "
        f"real server in {time.monotonic() - started:.0f} s")


def researcher(out: Path, server: Server, federation: Federation, job: runs.Job, python: Path, timeout_s: float,
               rows: int | None = None) -> str:
    """Run federation/researcher.py for the table job's schema; what it printed."""
    schema = job.arguments[job.arguments.index("--schema") + 1]
    return run([str(python), str(RESEARCHER), server.url, str(server.port), federation.username,
                str(federation.collaboration), ALGORITHM, schema, TARGET, str(TARGET_EPSILON), str(out),
                *([str(rows)] if rows else [])],
               timeout_s=timeout_s, env={**os.environ, "VANTAGE6_PASSWORD": federation.password}).stdout


def check_visualizations(result: dict) -> None:
    """Each table the store declares for synthesize_table is in the real result where it says, with its columns."""
    function = next(f for f in store.describe()["functions"] if f["name"] == "synthesize_table")
    columns = next(csv.reader(io.StringIO(result["synthetic"]["csv"])))
    for visualization in function["ui_visualizations"]:
        rows = result.get(visualization["schema"]["location"][0])
        wanted = visualization["schema"].get("columns", columns)
        if not (isinstance(rows, list) and rows and all(list(row) == wanted for row in rows)):
            raise HarnessError(f"the result's {visualization['name']} is not the table its store entry declares")
