"""ppsdg's launcher: `python main.py --backend gloo|vantage6 [options]`; `--help` lists them."""
import contextlib
import getpass
import io
import json
import os
import re
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import torch.multiprocessing as mp
from tqdm import tqdm
from vantage6.common.task_status import has_task_finished

import train
from backends import codec
from ppsdg import data, parser
from ppsdg.errors import FederationError, OptionsError, PpsdgError
from ppsdg.output import RunOutput

ERROR_LINE = re.compile(r"^(?:\w+\.)*(\w+(?:Error|Exception)): (.+)$")


def launch_gloo(options) -> None:
    """Under torchrun, be the rank it asked for; otherwise spawn server and workers on this machine."""
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        train.run_from_env(options)
        return
    check_data(options)
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ["MASTER_PORT"] = str(free_port())
    mp.spawn(train.run_rank, args=(options.num_nodes, options), nprocs=options.num_nodes, join=True)


def check_data(options) -> None:
    """Load and partition once here, so a bad file or partitioning fails with a message, not in a child."""
    train_set, _ = data.load(options.data)
    data.partition(train_set.labels, options.num_nodes - 1, options.partition, options.seed,
                   options.dirichlet_alpha, options.classes_per_worker)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def launch_vantage6(options) -> None:
    """Run the central function on a real server, or through vantage6's mock client; save its result."""
    kwargs = json.loads(json.dumps(parser.task_options(options)))
    result = run_on_server(options, kwargs) if options.server_url else run_on_mock(options, kwargs)
    save_central_result(options, result)


def write_partitions(options, folder: Path) -> list[Path]:
    """Worker r's partition as the CSV database a node holds (`worker{r}.csv`), in rank order.

    The mock run and a real federation's nodes take their databases from this one function, so
    both train on identical bytes.
    """
    train_set, _ = data.load(options.data)
    parts = data.partition(train_set.labels, options.num_nodes - 1, options.partition, options.seed,
                           options.dirichlet_alpha, options.classes_per_worker)
    paths = []
    for rank, indices in enumerate(parts, start=1):
        path = folder / f"worker{rank}.csv"
        data.to_frame(train_set.subset(indices)).to_csv(path, index=False)
        paths.append(path)
    return paths


def run_on_mock(options, kwargs: dict[str, Any]) -> dict[str, Any]:
    """One mock organization per worker, each holding its partition as a CSV database, as a node would."""
    from vantage6.algorithm.tools.mock_client import MockAlgorithmClient

    with tempfile.TemporaryDirectory(prefix="ppsdg-mock-") as folder:
        databases = [[{"database": str(path), "db_type": "csv"}]
                     for path in write_partitions(options, Path(folder))]
        client = MockAlgorithmClient(datasets=databases, module="ppsdg")
        organizations = [o["id"] for o in client.organization.list()]
        with contextlib.redirect_stdout(io.StringIO()):
            task = client.task.create(input_={"method": "central", "kwargs": kwargs},
                                      organizations=organizations[:1])
            return client.wait_for_results(task["id"])[0]


def run_on_server(options, kwargs: dict[str, Any]) -> dict[str, Any]:
    """Create the central task on a real vantage6 server as a researcher, wait, return its result."""
    from vantage6.client import UserClient

    missing = [flag for flag, value in (("--username", options.username), ("--collaboration",
               options.collaboration), ("--image", options.image)) if value is None]
    if missing:
        raise OptionsError(f"--server-url also needs {', '.join(missing)}")
    client = UserClient(options.server_url, options.server_port, options.api_path, log_level="warn")
    client.authenticate(options.username, options.password or os.environ.get("VANTAGE6_PASSWORD")
                        or getpass.getpass(f"vantage6 password for {options.username}: "))
    client.setup_encryption(None)
    organizations = options.organizations or sorted(
        o["id"] for o in client.organization.list(collaboration=options.collaboration, per_page=1000)["data"])
    kwargs = {**kwargs, "organizations": organizations, "num_nodes": len(organizations) + 1}
    task = client.task.create(collaboration=options.collaboration, organizations=organizations[:1],
                              name="ppsdg", image=options.image, description="ppsdg federated training",
                              input_={"method": "central", "kwargs": kwargs}, databases=[{"label": "default"}])
    wait_for_task(client, task["id"], options.task_timeout)
    results = client.result.from_task(task["id"])["data"]
    if not results or not results[0].get("result"):
        raise FederationError(f"task {task['id']} finished without a result: see the central node's log")
    return json.loads(results[0]["result"])


def wait_for_task(client: Any, task_id: int, timeout_s: float, interval_s: float = 1.0) -> None:
    """Poll the task at a fixed short interval, with progress, up to `timeout_s`."""
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


def central_error(client: Any, task_id: int) -> str:
    """The central function's own error, read from its run's log: the researcher has no node access.

    The node's wrapper prints the traceback there; its last `Name...Error: message` line is the one
    the central function raised.
    """
    lines = [line.strip() for run in client.run.from_task(task_id)["data"]
             for line in (run.get("log") or "").splitlines()]
    errors = [f"{match[1]}: {match[2]}" for match in map(ERROR_LINE.match, lines) if match]
    return errors[-1] if errors else "the central function left no error message: see the central node's log"


def save_central_result(options, result: dict[str, Any]) -> None:
    """Write the central function's model and metrics exactly as a gloo run writes its own."""
    torch.set_num_threads(options.threads)
    model = train.new_model(options)
    try:
        state, _ = codec.decode_text(result["model"], expect=model.state_dict())
        snapshots = {int(r): codec.decode_text(text, expect=model.generator.state_dict())[0]
                     for r, text in result.get("snapshots", {}).items()}
        records = result["metrics"]
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        raise FederationError(f"the central function's result is not usable: {error!r}") from error
    output = RunOutput(options.output, options)
    for record in records:
        output.add_round(record)
    train.finish_run(output, options, state, records, snapshots, {"organizations": result.get("organizations")})


def main(argv: list[str] | None = None) -> int:
    try:
        options = parser.parse(argv)
        if options.local_dp and not options.secure_noise:
            print("ppsdg: note: the DP noise is drawn from --seed so that runs are reproducible; anyone who "
                  "knows the seed can remove it. Deploy with --secure-noise.", file=sys.stderr)
        if options.backend == "gloo":
            launch_gloo(options)
        else:
            launch_vantage6(options)
    except PpsdgError as error:
        print(f"ppsdg: error: {error}", file=sys.stderr)
        return 2
    print(f"results in {options.output}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
