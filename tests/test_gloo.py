"""End to end over torch.distributed: the real launcher, a server and two worker processes; and the
transport alone, with a worker that dies in the middle of a transfer."""
import json
import multiprocessing
import os
import signal
import time
from pathlib import Path

import torch
import torch.distributed as dist

from backends.gloo import free_port
from conftest import ROUNDS, run_main
from ppsdg import data, output


def test_gloo_run_learns_far_above_chance_and_writes_its_files(gloo_run):
    directory, state, records = gloo_run
    assert [r["round"] for r in records] == list(range(1, ROUNDS + 1))
    assert records[-1]["test_accuracy"] > 0.6
    for record in records:
        assert {"test_loss", "test_accuracy", "workers", "group"} <= set(record)
        assert [w["rank"] for w in record["workers"]] == [1, 2]
        assert sum(w["num_samples"] for w in record["workers"]) == len(data.load("embedded")[0])
        assert all(w["train_loss"] > 0 for w in record["workers"])
    summary = json.loads((directory / output.SUMMARY).read_text())
    assert summary["test_accuracy"] == records[-1]["test_accuracy"]
    assert summary["options"]["num_rounds"] == ROUNDS
    assert (directory / output.PLOT).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sum(t.numel() for t in state.values()) == 1_199_882


def test_same_seed_gives_bit_identical_parameters(gloo_run, tmp_path):
    _, first, first_records = gloo_run
    second, second_records = run_main(tmp_path, "--backend", "gloo")
    assert first.keys() == second.keys()
    assert all(torch.equal(first[name], second[name]) for name in first)
    assert [r["test_loss"] for r in first_records] == [r["test_loss"] for r in second_records]


def test_subgroups_average_only_the_drawn_workers(tmp_path):
    _, records = run_main(tmp_path, "--backend", "gloo", "-gs", "1", "-ta", "-nr", "2")
    for record in records:
        assert len(record["group"]) == 1
        assert [w["rank"] for w in record["workers"]] == [1, 2]
        assert [w["averaged"] for w in record["workers"]] == [r in record["group"] for r in (1, 2)]


def serve_to_a_stopped_peer(port: int, go, sending, result) -> None:
    """Rank 0: broadcast to rank 1, once it is stopped, a message larger than the sockets can hold."""
    from backends.gloo import GlooCommunicator

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    comm = GlooCommunicator(0, 2, worker_timeout_s=WORKER_TIMEOUT_S)
    go.wait()
    sending.set()
    comm.broadcast({"weights": torch.zeros(MESSAGE_FLOATS)}, src=0, group=[1])
    result.put(comm.failures)


def stop_after_posting_a_receive(port: int) -> None:
    """Rank 1: post the receive of the broadcast's first chunk, as a worker does, then stop."""
    from backends.gloo import GlooCommunicator, _chunks

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    GlooCommunicator(1, 2, worker_timeout_s=WORKER_TIMEOUT_S)
    dist.irecv(_chunks(torch.zeros(MESSAGE_FLOATS))[0], src=0)
    os.kill(os.getpid(), signal.SIGSTOP)


def wait_until_stopped(pid: int) -> None:
    deadline = time.monotonic() + 60
    while Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "T":
        assert time.monotonic() < deadline, "the worker never stopped"
        time.sleep(0.05)


# 64 MB: more than a sending and a receiving socket buffer hold together (8 + 32 MiB at most here).
MESSAGE_FLOATS, WORKER_TIMEOUT_S = 16_000_000, 300.0


def test_a_worker_that_dies_mid_transfer_is_lost_at_once_not_after_the_timeout():
    """Gloo fails a send to a peer that died only while the send waits for the peer's receive. Sent in
    one piece, a message the socket had taken in part waited out the 300 s timeout here."""
    context = multiprocessing.get_context("spawn")
    port, go, sending, result = free_port(), context.Event(), context.Event(), context.Queue()
    server = context.Process(target=serve_to_a_stopped_peer, args=(port, go, sending, result))
    worker = context.Process(target=stop_after_posting_a_receive, args=(port,))
    server.start()
    worker.start()
    try:
        wait_until_stopped(worker.pid)
        go.set()
        assert sending.wait(timeout=60)
        time.sleep(0.5)
        worker.kill()
        failures = result.get(timeout=60)
    finally:
        server.kill()
        worker.kill()
    assert list(failures) == [1] and failures[1].startswith("lost while sending to it"), failures
