"""vantage6's own cost of a round: what a round of an algorithm that does nothing takes on this federation.

The echo image (federation/docker/echo.Dockerfile) hands each node's input message straight back. A
round of it moves the same message as a ppsdg round (the global model's codec text) the same way:
the researcher creates a task for both nodes, polls its status at the central function's interval,
and reads the results. What is left is the node's pick-up, the container, the node's report and the
server's transfers: the floor under any algorithm's round here, since a node starts a fresh
container for every task.
"""
import time
from statistics import mean

import torch
from vantage6.client import UserClient

from backends import codec
from backends.vantage6 import POLL_SECONDS
from federation.accounts import Federation
from federation.images import ECHO
from federation.nodes import IMAGES
from federation.server import API_PATH, Server
from federation.shell import HarnessError, say
from main import wait_for_task
from ppsdg import coordination, models, parser
from ppsdg.job import Job

ROUND_TIMEOUT_S = 300


def round_message(argv: list[str]) -> str:
    """The codec text of round 1's message for these options: the size a ppsdg round moves."""
    config = parser.parse(argv)
    synthesizer = Job.of_config(config).synthesizer
    model = models.new_model(synthesizer, config.run.seed)
    return codec.encode_text({coordination.ROUND: torch.tensor(1), **model.state_dict()})


def echo_round(client: UserClient, federation: Federation, message: str) -> float:
    """One round of the echo algorithm on every node; its seconds, from creating the task to holding
    every node's answer."""
    started = time.monotonic()
    task = client.task.create(collaboration=federation.collaboration, organizations=federation.organizations,
                              name="echo", image=ECHO, description="vantage6's own cost of a round",
                              input_={"method": "partial", "kwargs": {"message": message}},
                              databases=[{"label": IMAGES}])
    wait_for_task(client, task["id"], ROUND_TIMEOUT_S, POLL_SECONDS)
    answers = [result for result in client.result.from_task(task["id"])["data"] if result.get("result")]
    if len(answers) != len(federation.organizations):
        raise HarnessError(f"echo task {task['id']}: {len(answers)} of {len(federation.organizations)} nodes answered")
    return time.monotonic() - started


def measure(server: Server, federation: Federation, argv: list[str], rounds: int) -> None:
    """Say the seconds of `rounds` echo rounds carrying the message of `argv`'s model."""
    client = UserClient(server.url, server.port, API_PATH, log_level="warn")
    client.authenticate(federation.username, federation.password)
    client.setup_encryption(None)
    message = round_message(argv)
    seconds = [echo_round(client, federation, message) for _ in range(rounds)]
    say(f"vantage6 alone (the echo image, a {len(message) / 1e6:.1f} MB message to {len(federation.organizations)} "
        f"nodes and back): " + ", ".join(f"{s:.2f}" for s in seconds) + f" s a round, mean {mean(seconds):.2f} s")
