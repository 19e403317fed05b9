"""End to end over torch.distributed: the real launcher, a server and two worker processes; and the
transport alone, with a worker that dies in the middle of a transfer."""
import json
import multiprocessing
import os
import signal
import threading
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from backends import gloo
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
    assert summary["options"]["run"]["num_rounds"] == ROUNDS
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


# 64 MB: more than a sending and a receiving socket buffer hold together (8 + 32 MiB at most here).
MESSAGE_FLOATS, WORKER_TIMEOUT_S = 16_000_000, 300.0
# Chunk sizes: the transport's own, and the whole message in one piece, which the sockets take only
# in part. Gloo never fails a send it wrote in part, nor a receive it read in part, when the peer dies.
CHUNKINGS = {"chunked": gloo.CHUNK_BYTES, "one-piece": MESSAGE_FLOATS * 4}


def message() -> dict[str, torch.Tensor]:
    return {"weights": torch.zeros(MESSAGE_FLOATS)}


def join_as(rank: int, port: int, chunk_bytes: int) -> gloo.GlooCommunicator:
    """This process as `rank` of a world of 2, its transfers cut in chunks of `chunk_bytes`."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    gloo.CHUNK_BYTES = chunk_bytes
    return gloo.GlooCommunicator(rank, 2, worker_timeout_s=WORKER_TIMEOUT_S)


def serve(port: int, chunk_bytes: int, direction: str, go, started, result) -> None:
    """Rank 0: once `go` is set, broadcast the message to rank 1 or gather it from rank 1; put the
    failures and the seconds it took."""
    comm = join_as(0, port, chunk_bytes)
    go.wait()
    started.set()
    began = time.monotonic()
    if direction == "broadcast":
        comm.broadcast(message(), src=0, group=[1])
    else:
        comm.gather(message(), dst=0, group=[1])
    result.put((comm.failures, time.monotonic() - began))


def stop_after_posting_a_receive(port: int, chunk_bytes: int, started) -> None:
    """Rank 1: post the receive of the broadcast's first chunk, as a worker does, then stop, before
    the server sends (`started` is not waited for)."""
    join_as(1, port, chunk_bytes)
    dist.irecv(gloo._chunks(message()["weights"])[0], src=0)
    os.kill(os.getpid(), signal.SIGSTOP)


def stop_after_sending_in_part(port: int, chunk_bytes: int, started) -> None:
    """Rank 1: once the server waits for its reply, post the send of the reply's first chunk, then
    stop: the socket has taken what it holds of the chunk, the rest waits in gloo."""
    join_as(1, port, chunk_bytes)
    started.wait()
    time.sleep(0.5)
    dist.isend(gloo._chunks(message()["weights"])[0], dst=0)
    os.kill(os.getpid(), signal.SIGSTOP)


def wait_until_stopped(pid: int) -> None:
    deadline = time.monotonic() + 60
    while Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "T":
        assert time.monotonic() < deadline, "the worker never stopped"
        time.sleep(0.05)


WORKERS = {"broadcast": stop_after_posting_a_receive, "gather": stop_after_sending_in_part}


@pytest.mark.parametrize("chunking", CHUNKINGS)
@pytest.mark.parametrize("direction", WORKERS)
def test_a_worker_that_dies_mid_transfer_is_lost_at_once_not_after_the_timeout(direction, chunking):
    """The worker stops in the middle of a transfer and is killed there. Gloo fails a transfer to a
    peer that died only while it waits for the peer; one-piece messages, which the sockets took in
    part, waited out the 300 s timeout here before the server watched its workers' connections."""
    context = multiprocessing.get_context("spawn")
    port, go, started, result = free_port(), context.Event(), context.Event(), context.Queue()
    server = context.Process(target=serve, args=(port, CHUNKINGS[chunking], direction, go, started, result))
    worker = context.Process(target=WORKERS[direction], args=(port, CHUNKINGS[chunking], started))
    server.start()
    worker.start()
    try:
        if direction == "broadcast":  # the worker stops with its receive posted before the server sends
            wait_until_stopped(worker.pid)
        go.set()
        assert started.wait(timeout=60)
        wait_until_stopped(worker.pid)  # gather: the worker stops once the server has its reply in part
        time.sleep(0.5)
        worker.kill()
        failures, seconds = result.get(timeout=60)
    finally:
        server.kill()
        worker.kill()
    doing = "sending to" if direction == "broadcast" else "waiting for"
    assert list(failures) == [1] and failures[1].startswith(f"lost while {doing} it"), failures
    assert seconds < 30


def serve_and_close(port: int, result) -> None:
    """Rank 0: one broadcast, which starts the watch on rank 1, then close; put the names of the
    threads still waiting on gloo."""
    comm = join_as(0, port, gloo.CHUNK_BYTES)
    comm.broadcast({"weights": torch.zeros(10)}, src=0)
    comm.close()
    result.put([thread.name for thread in threading.enumerate() if thread.name == gloo.WAIT_THREAD])


def receive_and_linger(port: int) -> None:
    """Rank 1: receive the broadcast, then outlive the server's close."""
    comm = join_as(1, port, gloo.CHUNK_BYTES)
    comm.broadcast({"weights": torch.zeros(10)}, src=0)
    time.sleep(30)


def test_the_server_closes_with_no_thread_left_in_a_gloo_wait():
    """A thread that leaves a gloo wait while the interpreter shuts down aborts the process
    ("terminate called without an active exception"): a worker's watch ends as the worker does,
    which may be while the server exits. close ends the watch of a worker still running."""
    context = multiprocessing.get_context("spawn")
    port, result = free_port(), context.Queue()
    server = context.Process(target=serve_and_close, args=(port, result))
    worker = context.Process(target=receive_and_linger, args=(port,))
    server.start()
    worker.start()
    try:
        assert result.get(timeout=60) == []
    finally:
        server.kill()
        worker.kill()
