"""One rank of a gloo run: rank 0 is the server, ranks 1..N are the workers.

`main.py --backend gloo` starts every rank on this machine; on several machines, torchrun starts
`main.py` once per rank (see the README), which lands here.
"""
import os
import sys
from multiprocessing.connection import Connection
from pathlib import Path
from typing import NamedTuple

from backends.gloo import GlooCommunicator
from ppsdg import checkpoint, coordination, data, local, output, runtime
from ppsdg.checkpoint import Checkpoint
from ppsdg.config import Config
from ppsdg.job import Job
from ppsdg.errors import DataError, OptionsError, PpsdgError


class RankEnd(NamedTuple):
    """How a rank of main.py's launch ended, for the launcher to print: `line`, and whether it is a
    named error (a cause) or a worker that lost the server (a consequence)."""

    named: bool
    line: str


def run_rank(rank: int, world_size: int, config: Config) -> None:
    """Rank 0 serves, checkpoints every round and writes the output; the others work."""
    run, source = config.run, config.source
    device = runtime.set_up(run.threads, run.use_cuda, int(os.environ.get("LOCAL_RANK", rank)))
    comm = GlooCommunicator(rank, world_size, device, run.worker_timeout)
    job = Job.of_config(config)
    try:
        if rank == 0:
            fixed = config.fixed_options()
            resume = resume_point(config) if run.resume else None
            written = output.RunOutput(run, config.summary(), resume.records if resume else [])
            coordination.announce_start(comm, resume.round if resume else 0)
            point = coordination.serve(
                comm, run, job, local.test_examples(source, job.classifier is not None, device),
                lambda record, point: written.add_round(record, checkpoint.encode(point, fixed)), resume)
            coordination.end_work(comm, point.model, job)
            output.finish_run(written, point, job, source, run.seed)
        else:
            coordination.work(comm, run, job,
                              local.worker_examples(source, config.table, run.workers, run.seed, rank, device))
    finally:
        comm.close()


def run_rank_process(rank: int, world_size: int, config: Config, errors: Connection) -> None:
    """run_rank as a child process of main.py: errors end in one line (`rank_error`), or a worker's in
    the server's loss, and an exit status. The line goes to the launcher through `errors` as a RankEnd,
    for it to print the run's cause last and alone (`main.report_errors`)."""
    try:
        run_rank(rank, world_size, config)
    except PpsdgError as error:
        errors.send(RankEnd(True, rank_error(rank, config.source.data, error)))
        sys.exit(2)
    except RuntimeError as error:
        if rank == 0:
            raise
        errors.send(RankEnd(False, f"worker {rank} stopped: lost the server ({str(error).splitlines()[0]})"))
        sys.exit(3)


def rank_error(rank: int, source: str, error: PpsdgError) -> str:
    """A rank's error as its one line: a worker's names the worker, and a data error the file it read
    (of --data `source`), whose owner is the one to correct it."""
    if rank == 0:
        return str(error)
    files = data.data_files(source)
    source = f" ({files[rank - 1] if len(files) > 1 else files[0]})" if isinstance(error, DataError) else ""
    return f"worker {rank}{source}: {error}"


def resume_point(config: Config) -> Checkpoint:
    """The checkpoint in --output, checked against this run and a fresh model of its job."""
    run = config.run
    job = Job.of_config(config)
    fixed = config.fixed_options()
    return checkpoint.read(checkpoint.load(Path(run.output)), fixed, run, job)


def run_from_env(config: Config) -> None:
    """The rank that torchrun (or any launcher setting RANK and WORLD_SIZE) asked this process to be."""
    rank, world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    if world_size != config.run.num_nodes:
        raise OptionsError(f"the launcher started {world_size} processes but --num-nodes is "
                           f"{config.run.num_nodes}: they must be equal")
    try:
        run_rank(rank, world_size, config)
    except PpsdgError as error:
        raise PpsdgError(rank_error(rank, config.source.data, error)) from error
