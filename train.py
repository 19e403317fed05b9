"""One rank of a gloo run: rank 0 is the server, ranks 1..N are the workers.

`main.py --backend gloo` starts every rank on this machine; on several machines, torchrun starts
`main.py` once per rank (see the README), which lands here.
"""
import argparse
import os
import sys
from multiprocessing.connection import Connection
from pathlib import Path
from typing import NamedTuple

from backends.gloo import GlooCommunicator
from ppsdg import checkpoint, coordination, data, local, output, runtime
from ppsdg.checkpoint import Checkpoint
from ppsdg.errors import DataError, OptionsError, PpsdgError


class RankEnd(NamedTuple):
    """How a rank of main.py's launch ended, for the launcher to print: `line`, and whether it is a
    named error (a cause) or a worker that lost the server (a consequence)."""

    named: bool
    line: str


def run_rank(rank: int, world_size: int, options: argparse.Namespace) -> None:
    """Rank 0 serves, checkpoints every round and writes the output; the others work."""
    device = runtime.set_up(options, int(os.environ.get("LOCAL_RANK", rank)))
    comm = GlooCommunicator(rank, world_size, device, options.worker_timeout)
    try:
        if rank == 0:
            resume = resume_point(options) if options.resume else None
            run = output.RunOutput(options.output, options, resume.records if resume else [])
            coordination.announce_start(comm, resume.round if resume else 0)
            point = coordination.serve(
                comm, options, local.test_examples(options, device),
                lambda record, point: run.add_round(record, checkpoint.encode(point, options)), resume)
            output.finish_run(run, options, point)
        else:
            coordination.work(comm, options, local.worker_examples(options, rank, device))
    finally:
        comm.close()


def run_rank_process(rank: int, world_size: int, options: argparse.Namespace, errors: Connection) -> None:
    """run_rank as a child process of main.py: errors end in one line (`rank_error`), or a worker's in
    the server's loss, and an exit status. The line goes to the launcher through `errors` as a RankEnd,
    for it to print the run's cause last and alone (`main.report_errors`)."""
    try:
        run_rank(rank, world_size, options)
    except PpsdgError as error:
        errors.send(RankEnd(True, rank_error(rank, options, error)))
        sys.exit(2)
    except RuntimeError as error:
        if rank == 0:
            raise
        errors.send(RankEnd(False, f"worker {rank} stopped: lost the server ({str(error).splitlines()[0]})"))
        sys.exit(3)


def rank_error(rank: int, options: argparse.Namespace, error: PpsdgError) -> str:
    """A rank's error as its one line: a worker's names the worker, and a data error the file it read,
    whose owner is the one to correct it."""
    if rank == 0:
        return str(error)
    files = data.data_files(options.data)
    source = f" ({files[rank - 1] if len(files) > 1 else files[0]})" if isinstance(error, DataError) else ""
    return f"worker {rank}{source}: {error}"


def resume_point(options: argparse.Namespace) -> Checkpoint:
    """The checkpoint in --output, checked against these options and this model."""
    return checkpoint.read(checkpoint.load(Path(options.output)), options)


def run_from_env(options: argparse.Namespace) -> None:
    """The rank that torchrun (or any launcher setting RANK and WORLD_SIZE) asked this process to be."""
    rank, world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    if world_size != options.num_nodes:
        raise OptionsError(f"the launcher started {world_size} processes but --num-nodes is "
                           f"{options.num_nodes}: they must be equal")
    try:
        run_rank(rank, world_size, options)
    except PpsdgError as error:
        raise PpsdgError(rank_error(rank, options, error)) from error
