"""One rank of a gloo run: rank 0 is the server, ranks 1..N are the workers.

`main.py --backend gloo` starts every rank on this machine; on several machines, torchrun starts
`main.py` once per rank (see the README), which lands here.
"""
import argparse
import os
import sys
from multiprocessing.connection import Connection
from pathlib import Path

from backends.gloo import GlooCommunicator
from ppsdg import checkpoint, coordination, local, output, runtime
from ppsdg.checkpoint import Checkpoint
from ppsdg.errors import OptionsError, PpsdgError


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


def run_rank_process(rank: int, world_size: int, options: argparse.Namespace,
                     errors: Connection | None = None) -> None:
    """run_rank as a child process of main.py: errors end in one line and an exit status. The server's
    line goes to `errors` where the launcher gives one, so that it prints it after every worker's
    (a worker that lost the server says so as it ends): the named error is the run's last line."""
    try:
        run_rank(rank, world_size, options)
    except PpsdgError as error:
        if errors is None:
            print(f"ppsdg: error: {error}", file=sys.stderr)
        else:
            errors.send(str(error))
        sys.exit(2)
    except RuntimeError as error:
        if rank == 0:
            raise
        print(f"ppsdg: worker {rank} stopped: lost the server ({str(error).splitlines()[0]})", file=sys.stderr)
        sys.exit(3)


def resume_point(options: argparse.Namespace) -> Checkpoint:
    """The checkpoint in --output, checked against these options and this model."""
    return checkpoint.read(checkpoint.load(Path(options.output)), options)


def run_from_env(options: argparse.Namespace) -> None:
    """The rank that torchrun (or any launcher setting RANK and WORLD_SIZE) asked this process to be."""
    rank, world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    if world_size != options.num_nodes:
        raise OptionsError(f"the launcher started {world_size} processes but --num-nodes is "
                           f"{options.num_nodes}: they must be equal")
    run_rank(rank, world_size, options)
