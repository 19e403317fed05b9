"""A real vantage6 4.15.2 federation on this machine, end to end: `python -m federation.harness`.

Docker engine, images (the algorithm from the project's Dockerfile), server, the algorithm store (which
must accept algorithm_store.json), two nodes holding the
workers' CSV partitions (images, and a part of Adult), accounts; then a researcher's training through
`main.py --server-url ...`, checked against the mock client's run of the same options, with where its
rounds' seconds went and what a round of an algorithm that does nothing takes (federation/floor.py);
synthetic images and a synthetic table, each checked against the mock's; two fault runs with a node
stopped, and that node restarted with a node owner's policy (no training without DP, a privacy
budget), for the image job and for the table job.
Everything it starts is removed again, also when a step fails. Run it as root (apt-get, dockerd).
"""
import argparse
import shutil
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from federation import accounts, checks, floor, images, nodes, runs, table_job, timing, toolenv, watch
from federation.engine import DockerEngine, bridge_gateway
from federation.faults import FaultRun
from federation.nodes import Nodes
from federation.policy_runs import PolicyRuns, policy_runs
from federation.server import Server
from federation.store import Store
from federation.shell import say, tail, time_limit

RUN_TIMEOUT_S = 600
FEDERATION_LIMIT_S = 2700
# A fault run's round timeout follows this machine's speed now: short when idle, safe when loaded.
ROUND_TIMEOUT_FACTOR = 3
MIN_ROUND_TIMEOUT_S = 20
SYNTHETIC_EPSILON = 10


def options(argv: list[str] | None = None) -> argparse.Namespace:
    described = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    described.add_argument("--rounds", type=int, default=3, help="rounds of the training compared to the mock")
    described.add_argument("--fault-rounds", type=int, default=2, help="rounds of each fault run")
    described.add_argument("--round-timeout", type=float, default=None,
                           help="seconds a fault run's central waits for the stopped node (default: "
                                f"{ROUND_TIMEOUT_FACTOR} times a round of the real run, at least "
                                f"{MIN_ROUND_TIMEOUT_S} s)")
    described.add_argument("--cache", type=Path, default=Path("/var/cache/ppsdg-federation"),
                           help="where the vantage6 tool environment is kept between runs")
    described.add_argument("--wheels", type=Path, default=Path("/opt/wheels"), help="the local torch wheel")
    described.add_argument("--adult", type=Path, default=Path("/work/shared/data/adult"),
                           help=f"the folder holding UCI Adult's {table_job.TRAIN} and {table_job.TEST}")
    return described.parse_args(argv)


def training(rounds: int) -> list[str]:
    """The options every transport runs with (--threads is part of the result)."""
    return ["-nn", "3", "-nr", str(rounds), "--threads", "1", "-sm"]


def compare_transports(work: Path, server: Server, federation: accounts.Federation, rounds: int) -> float:
    """The researcher's real run, then the same options through the mock client and over gloo;
    returns the real run's mean seconds per round, after saying where they went."""
    common = training(rounds)
    started = time.time()
    real = runs.require_success(runs.main_py(
        "real", [*common, *runs.server_arguments(server, federation), "--task-timeout", str(RUN_TIMEOUT_S)],
        work / "real", RUN_TIMEOUT_S, federation.password))
    timing.measure(accounts.root_client(server.url, server.port), federation.collaboration,
                   timing.Window(started, time.time()), images.ALGORITHM)
    mock = runs.require_success(runs.main_py("mock", [*common, "--backend", "vantage6"], work / "mock",
                                             RUN_TIMEOUT_S))
    gloo = runs.require_success(runs.main_py("gloo", [*common, "--backend", "gloo"], work / "gloo",
                                             RUN_TIMEOUT_S))
    checks.check_training(real, mock, gloo)
    say("seconds per round (mean of metrics.jsonl): " + ", ".join(
        f"{run.name} {run.seconds_per_round():.2f}" for run in (real, mock, gloo)))
    floor.measure(server, federation, common, rounds)
    return real.seconds_per_round()


def compare_synthetic(work: Path, server: Server, federation: accounts.Federation, rounds: int) -> None:
    """The default synthesizer under DP over the real federation and through the mock client: the same
    synthetic data, evaluation and epsilon."""
    common = [*training(rounds), "--gan", "-ldp", "--target-epsilon", str(SYNTHETIC_EPSILON)]
    real = runs.require_success(runs.main_py(
        "real synthetic", [*common, *runs.server_arguments(server, federation), "--task-timeout", str(RUN_TIMEOUT_S)],
        work / "real-synthetic", RUN_TIMEOUT_S, federation.password))
    mock = runs.require_success(runs.main_py("mock synthetic", [*common, "--backend", "vantage6"],
                                             work / "mock-synthetic", RUN_TIMEOUT_S))
    checks.check_synthetic(real, mock, SYNTHETIC_EPSILON)


def fault_runs(work: Path, server: Server, federation: accounts.Federation, node_set: Nodes,
               argv: argparse.Namespace, round_timeout_s: float) -> None:
    client = accounts.root_client(server.url, server.port)
    say(f"fault runs: --round-timeout {round_timeout_s:.0f}")
    common = [*training(argv.fault_rounds), *runs.server_arguments(server, federation),
              "--round-timeout", f"{round_timeout_s:.0f}", "--task-timeout", str(RUN_TIMEOUT_S)]
    fault = FaultRun(client, federation, node_set, common, RUN_TIMEOUT_S)
    fault.check_goes_on(fault.run("fault, --min-workers 1", ["--min-workers", "1"], work / "fault-min-workers"))
    fault.restart_node()
    fault.check_stops(fault.run("fault, all workers needed", [], work / "fault-all-needed"))


def federate(work: Path, argv: argparse.Namespace, engine: DockerEngine) -> None:
    engine.start()
    with ThreadPoolExecutor(max_workers=1) as pool:
        tools = pool.submit(toolenv.ensure, argv.cache / "venv")
        researcher = pool.submit(toolenv.ensure, argv.cache / "client-venv", toolenv.CLIENT_REQUIREMENTS)
        images.build_all(runs.REPO, work, argv.wheels)
        python, researcher_python = tools.result(), researcher.result()
    server = Server(python, work, bridge_gateway())
    algorithm_store = Store(python, work, server)
    node_set = Nodes(python, work, server)
    try:
        with time_limit(FEDERATION_LIMIT_S, "the federation's runs"):
            server.start()
            algorithm_store.start()
            algorithm_store.submit()
            names = nodes.node_names(2)
            federation = accounts.create(server.url, server.port, names)
            images_job = runs.Job("images", training(argv.rounds), nodes.IMAGES,
                                  runs.write_partitions(training(argv.rounds), work))
            table = table_job.write_job(argv.adult, work, len(names))
            databases = [{images_job.database: image, table.database: part}
                         for image, part in zip(images_job.partitions, table.partitions)]
            for name, api_key, database in zip(names, federation.api_keys, databases):
                node_set.configure(name, api_key, database, {**nodes.SEEDED_NOISE, **nodes.DISTRIBUTED_NOISE})
                node_set.start(name)
            watch.wait_online(accounts.root_client(server.url, server.port), federation.collaboration,
                              len(names))
            seconds = compare_transports(work, server, federation, argv.rounds)
            compare_synthetic(work, server, federation, argv.rounds)
            table_job.compare(work, server, federation, table, RUN_TIMEOUT_S, researcher_python)
            fault_runs(work, server, federation, node_set, argv,
                       argv.round_timeout or max(MIN_ROUND_TIMEOUT_S, ROUND_TIMEOUT_FACTOR * seconds))
            for job in (images_job, table):
                policy_runs(work, PolicyRuns(server, federation, node_set, databases, job, RUN_TIMEOUT_S))
    except BaseException:
        for name in nodes.node_names(2):
            say(f"last lines of node {name}:\n{tail(node_set.logs(name))}")
        for part in (server, algorithm_store):
            if part.log_path.exists():
                say(f"last lines of {part.log_path.stem}:\n{tail(part.log_path.read_text())}")
        raise
    finally:
        nodes.remove_leftovers()
        algorithm_store.stop()
        server.stop()


def run(argv: list[str] | None = None) -> None:
    arguments = options(argv)
    started = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="ppsdg-federation-"))
    engine = DockerEngine(work / "dockerd.log")
    try:
        federate(work, arguments, engine)
    finally:
        engine.stop()
        shutil.rmtree(work, ignore_errors=True)
    say(f"federation harness passed in {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    run()
