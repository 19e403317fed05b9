"""ppsdg's launcher: `python main.py --backend gloo|vantage6 [options]` (`--help` lists them), and the
`ppsdg COMMAND` console command (`ppsdg --help` lists its commands)."""
import multiprocessing
import multiprocessing.forkserver
import os
import sys


def start_rank_server() -> None:
    """Start the forkserver that launch_gloo forks the ranks from, if it is not running yet.

    It imports this module once for all ranks, so a launch pays one import (torch, vantage6,
    pandas: about 2 s) instead of one per rank. The import touches no CUDA, so the forked ranks may
    still use it. torch._dynamo, which torch.optim imports at an optimizer's first use, is left to
    the ranks that use one (the WGAN's Adam, FedSGD's server): a worker's classifier trains with
    ppsdg.sgd.LocalSGD, which needs none, and preloading it cost every launch 2 s of CPU.
    """
    multiprocessing.set_forkserver_preload(["__main__", "main"])
    multiprocessing.forkserver.ensure_running()


def gloo_launch_ahead(argv: list[str]) -> bool:
    """Whether this command will launch gloo ranks, judged before its options are parsed: then
    the forkserver starts at once and imports while this process does, not after it."""
    return (not launched_by_torchrun() and argv[:1] not in (["evaluate"], ["schema"], ["sample"])
            and backend_asked(argv) == "gloo"
            and not {"-h", "--help"} & set(argv))


def backend_asked(argv: list[str]) -> str:
    """The value of the last --backend in `argv` (argparse's rule), or the default, gloo."""
    backend = "gloo"
    for index, arg in enumerate(argv):
        if arg == "--backend" and index + 1 < len(argv):
            backend = argv[index + 1]
        elif arg.startswith("--backend="):
            backend = arg.split("=", 1)[1]
    return backend


def launched_by_torchrun() -> bool:
    """torchrun (or a launcher like it) started this process as one rank: it starts no others."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


if __name__ == "__main__" and gloo_launch_ahead(sys.argv[1:]):
    start_rank_server()

# The imports below take about 2 s; the forkserver started above does the same meanwhile.
import contextlib  # noqa: E402
import getpass  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from multiprocessing.connection import Connection  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

from tqdm import tqdm  # noqa: E402

import train  # noqa: E402
from backends import codec  # noqa: E402
from backends.gloo import free_port  # noqa: E402
from ppsdg import checkpoint, commands, data, output, parser, policy, privacy, runtime, tables  # noqa: E402
from ppsdg.config import Config, Server, Source  # noqa: E402
from ppsdg.errors import FederationError, OptionsError, PpsdgError, last_error  # noqa: E402
from ppsdg.job import Job  # noqa: E402

TASKS_PER_PAGE = 1000


def launch_gloo(config: Config) -> int:
    """Under torchrun, be the rank it asked for; otherwise start server and workers on this machine.

    The run lasts as long as the server: it names a worker that dies or hangs, and the workers
    end when it does. Each rank sends its named error here, to be printed last (`report_errors`).
    """
    if launched_by_torchrun():
        train.run_from_env(config)
        return 0
    if config.run.resume:
        train.resume_point(config)
    nodes = config.run.num_nodes
    address = os.environ.get("MASTER_ADDR", "127.0.0.1")
    port = free_port()
    start_rank_server()
    context = multiprocessing.get_context("forkserver")
    pipes = [context.Pipe(duplex=False) for _ in range(nodes)]
    ranks = [context.Process(target=run_rank_at, daemon=rank > 0, args=(
        address, port, rank, nodes, config, pipes[rank][1])) for rank in range(nodes)]
    try:
        for process in ranks:
            process.start()
        ranks[0].join()
    finally:
        for process in ranks[1:]:
            process.join(timeout=10)
            if process.is_alive():
                process.terminate()
    report_errors(ranks[0].exitcode == 0, [ends.recv() if ends.poll() else None for ends, _ in pipes])
    if ranks[0].exitcode not in (0, 2):
        raise FederationError(f"the server process ended with exit code {ranks[0].exitcode}")
    return ranks[0].exitcode


def report_errors(server_finished: bool, ends: list[train.RankEnd | None]) -> None:
    """How the ranks ended (None: well), the server's first, as the run's last lines. A worker's named
    error is the cause of the server's that follows it (a round without its reply) and of the others'
    loss of the server: where the server stopped, the workers' named errors are the run's, in one line;
    where it finished without them (--min-workers), warnings. Else the workers that lost the server
    say so, and the server's error is the last line."""
    workers = [end for end in ends[1:] if end is not None]
    named = [end.line for end in workers if end.named]
    if named and not server_finished:
        raise PpsdgError("; ".join(named))
    for end in workers:
        print(f"ppsdg: {'warning: ' if end.named else ''}{end.line}", file=sys.stderr)
    if ends[0] is not None:
        raise PpsdgError(ends[0].line)


def run_rank_at(address: str, port: int, rank: int, world_size: int, config: Config, errors: Connection) -> None:
    """One rank started by launch_gloo. The ranks fork from a forkserver that imported this module
    once, so a launch does not pay one interpreter start and import per rank; they inherit the
    forkserver's environment, not this launch's, so the rendezvous address comes as arguments. The
    rank sends how it ended through `errors`, for launch_gloo to print last."""
    os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"] = address, str(port)
    train.run_rank_process(rank, world_size, config, errors)


def launch_vantage6(config: Config) -> int:
    """Run the central function on a real server, or through vantage6's mock client; save its result."""
    kwargs = json.loads(json.dumps(config.task_options()))
    if config.run.resume:
        train.resume_point(config)
        kwargs["checkpoint"] = codec.to_text(checkpoint.load(Path(config.run.output)))
    target = config.table.target if config.table is not None else None
    result = (run_on_server(config.server, kwargs) if config.server.server_url else
              run_on_mock(mock_databases(config.source, target, config.run.workers, config.run.seed), kwargs))
    save_central_result(config, result)
    return 0


def write_partitions(source: Source, target: str | None, workers: int, seed: int, folder: Path) -> list[Path]:
    """Worker r's partition as the CSV database a node holds (`worker{r}.csv`), in rank order.

    The mock run and a real federation's nodes take their databases from this one function, so
    both train on identical bytes.
    """
    paths = []
    for rank, images in enumerate(data.worker_sets(source, workers, seed, target), start=1):
        path = folder / f"worker{rank}.csv"
        data.to_frame(images).to_csv(path, index=False)
        paths.append(path)
    return paths


MockDatabases = Callable[[Path], list[list[dict[str, Any]]]]


def mock_databases(source: Source, target: str | None, workers: int, seed: int) -> MockDatabases:
    """The mock client's organizations, one per worker, each holding its partition (written in the
    folder it is given) as the CSV database a node holds; a table's (`target` not None) read as text, as
    a node reads it (`algorithm.read_database`), where the mock would guess its columns' types."""
    def databases(folder: Path) -> list[list[dict[str, Any]]]:
        return [[{"database": tables.read_table(path) if target is not None else str(path), "db_type": "csv"}]
                for path in write_partitions(source, target, workers, seed, folder)]

    return databases


def run_on_mock(databases: MockDatabases, kwargs: dict[str, Any], method: str = "central") -> dict[str, Any]:
    """The central function `method` with these arguments, one mock organization per worker
    (`mock_databases`) with a temporary folder for the job (a node's privacy ledger lives there), as a
    node would."""
    from backends.mock import ForgetfulMockClient

    with tempfile.TemporaryDirectory(prefix="ppsdg-mock-") as folder:
        client = ForgetfulMockClient(datasets=databases(Path(folder)), module="ppsdg", job_root=Path(folder))
        organizations = [o["id"] for o in client.organization.list()]
        with contextlib.redirect_stdout(io.StringIO()):
            task = client.task.create(input_={"method": method, "kwargs": kwargs},
                                      organizations=organizations[:1])
            return client.wait_for_results(task["id"])[0]


def run_on_server(server: Server, kwargs: dict[str, Any]) -> dict[str, Any]:
    """Create the central task on a real vantage6 server as a researcher, wait, return its result."""
    from vantage6.client import UserClient

    missing = [flag for flag, value in (("--username", server.username), ("--collaboration",
               server.collaboration), ("--image", server.image)) if value is None]
    if missing:
        raise OptionsError(f"--server-url also needs {', '.join(missing)}")
    client = UserClient(server.server_url, server.server_port, server.api_path, log_level="warn")
    client.authenticate(server.username, server.password or os.environ.get("VANTAGE6_PASSWORD")
                        or getpass.getpass(f"vantage6 password for {server.username}: "))
    client.setup_encryption(None)
    organizations = server.organizations or sorted(
        o["id"] for o in client.organization.list(collaboration=server.collaboration, per_page=1000)["data"])
    kwargs = {**kwargs, "organizations": organizations, "num_nodes": len(organizations) + 1}
    task = client.task.create(collaboration=server.collaboration, organizations=organizations[:1],
                              name="ppsdg", image=server.image, description="ppsdg federated training",
                              input_={"method": "central", "kwargs": kwargs}, databases=[{"label": server.database}])
    try:
        wait_for_task(client, task["id"], server.task_timeout)
    finally:
        stopped = stop_unfinished(client, task["id"])
        if stopped:
            print(f"ppsdg: note: killed the task(s) of this training still running when it ended "
                  f"({', '.join(map(str, stopped))}): a node that comes back must not train on them", file=sys.stderr)
    results = client.result.from_task(task["id"])["data"]
    if not results or not results[0].get("result"):
        raise FederationError(f"task {task['id']} finished without a result: see the central node's log")
    return json.loads(results[0]["result"])


def wait_for_task(client: Any, task_id: int, timeout_s: float, interval_s: float = 1.0) -> None:
    """Poll the task at a fixed short interval, with progress, up to `timeout_s`."""
    from vantage6.common.task_status import has_task_finished

    deadline = time.monotonic() + timeout_s
    with tqdm(desc=f"vantage6 task {task_id}", unit="poll", disable=None) as progress:
        while not has_task_finished(status := client.task.get(task_id)["status"]):
            if time.monotonic() > deadline:
                raise FederationError(f"task {task_id} still '{status}' after {timeout_s:.0f} s")
            progress.set_postfix(status=status)
            progress.update(1)
            time.sleep(interval_s)
    if status != "completed":
        raise FederationError(f"task {task_id} ended '{status}': {central_error(client, task_id)}")


def stop_unfinished(client: Any, task_id: int) -> list[int]:
    """Kill the training's tasks that are still running: the central task if the wait gave up on
    it, and round subtasks its rounds closed without (a node offline past --round-timeout). vantage6
    lets a user kill a task, not the algorithm; left alone, such a subtask runs when its node comes
    back and releases an update that no ledger of this run counts."""
    from vantage6.common.task_status import has_task_finished

    tasks, page = [], 1
    while True:
        listed = client.task.list(parent=task_id, page=page, per_page=TASKS_PER_PAGE)["data"]
        tasks += listed
        if len(listed) < TASKS_PER_PAGE:
            break
        page += 1
    # The rounds first: killing the central task would take its unfinished rounds along, and a
    # second kill of a task that has ended is an error on the server.
    tasks.append(client.task.get(task_id))
    unfinished = [task["id"] for task in tasks if not has_task_finished(task["status"])]
    for unfinished_id in unfinished:
        answer = client.request("kill/task", method="post", json={"id": unfinished_id})
        if not has_task_finished(client.task.get(unfinished_id)["status"]):
            print(f"ppsdg: warning: could not kill task {unfinished_id} of this training ({answer.get('msg')}): "
                  "it may still run when its node comes back; your vantage6 user needs the rule to send kill "
                  "signals (event, collaboration scope, send), or an administrator can kill it",
                  file=sys.stderr)
    return unfinished


def central_error(client: Any, task_id: int) -> str:
    """The central function's own error, read from its run's log: the researcher has no node access.

    The node's wrapper prints the traceback there; its last `Name...Error: message` line is the one
    the central function raised.
    """
    logs = "\n".join(run.get("log") or "" for run in client.run.from_task(task_id)["data"])
    return last_error(logs) or "the central function left no error message: see the central node's log"


def save_central_result(config: Config, result: dict[str, Any]) -> None:
    """Write the central function's rounds and checkpoint as a gloo run writes its own; if an error
    stopped it, keep every finished round and say how to go on."""
    run = config.run
    runtime.set_up(run.threads, run.use_cuda)
    job = Job.of_config(config)
    fixed = config.fixed_options()
    try:
        text, error = result.get("checkpoint"), result.get("error")
        point = None if text is None else checkpoint.read(codec.from_text(text), fixed, run, job)
    except (AttributeError, TypeError, codec.CodecError) as failure:
        raise FederationError(f"the central function's result is not usable: {failure}") from failure
    if point is None:
        raise FederationError(error or "the central function returned no checkpoint")
    written = output.RunOutput(run, config.summary())
    for index, record in enumerate(point.records):
        written.add_round(record, checkpoint.encode(point, fixed) if index == len(point.records) - 1 else None)
    if error is not None:
        raise FederationError(f"{error}. Rounds 1..{point.round} are saved in {run.output}: go on "
                              "with --resume")
    output.finish_run(written, point, job, config.source, run.seed,
                      {"organizations": result.get("organizations"), "attribution": result.get("attribution")})


def main(argv: list[str] | None = None) -> int:
    """`python main.py [options]` runs a job, as it always has (with no option, the default one); a first
    word of parser.COMMANDS runs that command. Started as the `ppsdg` console command, it is that command."""
    if argv is None and Path(sys.argv[0]).name == "ppsdg":
        return ppsdg_command(sys.argv[1:])
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] and argv[0] in parser.COMMANDS:
        return command(argv[0], argv[1:])
    return run(argv)


def ppsdg_command(argv: list[str]) -> int:
    """`ppsdg COMMAND [options]`. Bare, it prints its help, which lists the commands, instead of starting
    the default job; options without a command run a job, as they did before there were commands."""
    if not argv or argv[0] in ("-h", "--help"):
        print(parser.command_help(), end="")
        return 0 if argv else 2
    if argv[0].startswith("-"):
        return run(argv, "ppsdg run")
    if argv[0] not in parser.COMMANDS:
        print(f"ppsdg: error: {argv[0]!r} is not a command: the commands are {', '.join(parser.COMMANDS)} "
              "(`ppsdg --help` says what each does)", file=sys.stderr)
        return 2
    return command(argv[0], argv[1:])


def command(name: str, argv: list[str]) -> int:
    """One of parser.COMMANDS, with its own options."""
    if name == "schema":
        return commands.schema(argv)
    if name == "evaluate":
        return commands.evaluate_command(argv)
    if name == "sample":
        return commands.sample(argv)
    return run(argv, "ppsdg run")


def run(argv: list[str], prog: str = "main.py") -> int:
    """A job: its options and then its inputs checked (`data.check_inputs`) before any worker starts, so
    that a mistake is named in seconds; then the launch. `prog` is the command its help shows."""
    try:
        config = parser.prepared(parser.parse(argv, prog))
        run, dp = config.run, config.privacy
        if dp.local_dp and not dp.secure_noise and config.server.server_url is None:
            print("ppsdg: note: the DP noise is drawn from --seed so that runs are reproducible; anyone who "
                  "knows the seed can remove it. Deploy with --secure-noise (a real vantage6 node draws it "
                  "securely unless its owner allows the seed).", file=sys.stderr)
        if (dp.secure_aggregation and run.backend == "vantage6" and config.server.server_url is None
                and policy.DISTRIBUTED_NOISE not in os.environ):
            print(f"ppsdg: note: under --secure-aggregation each mock node adds all of the noise, as a real node does "
                  f"unless its owner allows a share; {policy.DISTRIBUTED_NOISE}=0 in the environment rehearses "
                  "nodes that allow one", file=sys.stderr)
        if privacy.default_target_applies(dp):
            print(f"ppsdg: note: -ldp without --noise-multiplier or --target-epsilon: the noise is planned for the "
                  f"default target epsilon {privacy.DEFAULT_TARGET_EPSILON:g} over the run's {run.num_rounds} "
                  "round(s)", file=sys.stderr)
        output.check_directory(run.output, config.source.data)
        if config.server.server_url is None:
            data.check_inputs(config.source, config.table, run.workers, run.seed)
        code = launch_gloo(config) if run.backend == "gloo" else launch_vantage6(config)
    except PpsdgError as error:
        print(f"ppsdg: error: {error}", file=sys.stderr)
        return 2
    if code == 0 and int(os.environ.get("RANK", "0")) == 0:
        print(f"results in {run.output}/")
    return code


if __name__ == "__main__":
    sys.exit(main())
