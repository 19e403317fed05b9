"""The federated training of main.py in one process, with no transport: the benchmarks' single-process reference.

    python bench/inprocess.py [main.py options]      # e.g. -nn 3 -nr 10 --threads 1 --output /tmp/x

The server's rounds are coordination.serve's and each worker's part is coordination.worker_round, exactly as on
gloo and vantage6; only the transport is gone (gather runs the group's workers in turn, in rank
order). So for equal options and --threads it gives the backends' model bit for bit, and its wall
time is what the same training costs without federation. `--transport-dtype float16` rounds every
message's float tensors through half precision, both ways, to measure what a half-precision
transport would cost in accuracy.
"""
import argparse
import sys
from collections.abc import Callable, Sequence

import torch
from torch import nn

from backends import Communicator, Tensors, group_of
from ppsdg import checkpoint, coordination, local, parser
from ppsdg.checkpoint import Checkpoint
from ppsdg.config import Config
from ppsdg.job import Job
from ppsdg.output import RunOutput, finish_run
from ppsdg.runtime import device_for, set_up
from ppsdg.models import new_model

OnRound = Callable[[dict, Checkpoint], None]


class Mailbox(Communicator):
    """A worker's side of one round: the server's message in, the reply kept."""

    def __init__(self, rank: int, world_size: int, message: Tensors) -> None:
        super().__init__(rank, world_size)
        self.message = message
        self.reply: Tensors | None = None

    def broadcast(self, tensors: Tensors, src: int = 0, group: Sequence[int] | None = None) -> Tensors:
        return dict(self.message)

    def gather(self, tensors: Tensors, dst: int = 0, group: Sequence[int] | None = None) -> None:
        self.reply = tensors


class InProcess(Communicator):
    """The server's side: broadcast keeps the message, gather runs each member's round in turn.

    Messages are copied as a transport would copy them (a reply must not alias a model that trains
    on), and rounded through `transport_dtype` when one is given.
    """

    def __init__(self, config: Config, job: Job, transport_dtype: torch.dtype | None = None) -> None:
        super().__init__(0, config.run.num_nodes)
        self.config, self.job = config, job
        self.transport_dtype = transport_dtype
        self._staged: Tensors = {}
        self._workers: dict[int, tuple[nn.Module, local.Examples]] = {}

    def broadcast(self, tensors: Tensors, src: int = 0, group: Sequence[int] | None = None) -> Tensors:
        self._staged = self._carry(tensors)
        return tensors

    def gather(self, tensors: Tensors, dst: int = 0,
               group: Sequence[int] | None = None) -> dict[int, Tensors]:
        ranks = [r for r in group_of(group or range(1, self.world_size), self.world_size) if r != 0]
        return {rank: self._carry(self._worker_reply(rank)) for rank in ranks}

    def _worker_reply(self, rank: int) -> Tensors:
        """Worker `rank`'s round on its own long-lived model and partition, as a gloo worker keeps them."""
        run = self.config.run
        if rank not in self._workers:
            device = device_for(run.use_cuda)
            self._workers[rank] = (new_model(self.job.synthesizer, run.seed, device),
                                   local.worker_examples(self.config.source, self.config.table, run.workers, run.seed, rank, device))
        model, examples = self._workers[rank]
        mailbox = Mailbox(rank, self.world_size, self._staged)
        coordination.worker_round(mailbox, model, examples, run, self.job)
        return mailbox.reply

    def _carry(self, tensors: Tensors) -> Tensors:
        """What arrives at the other end: a copy, float tensors rounded through the transport dtype."""
        def carried(tensor: torch.Tensor) -> torch.Tensor:
            if self.transport_dtype is None or tensor.dtype != torch.float32:
                return tensor.detach().clone()
            return tensor.detach().to(self.transport_dtype).to(tensor.dtype)
        return {name: carried(tensor) for name, tensor in tensors.items()}


def run(config: Config, on_round: OnRound = lambda record, point: None,
        transport_dtype: torch.dtype | None = None) -> Checkpoint:
    """Train as the backends do, in this process; on_round may raise to stop early."""
    job = Job.of_config(config)
    test_set = local.test_examples(config.source, job.classifier is not None,
                                   set_up(config.run.threads, config.run.use_cuda))
    return coordination.serve(InProcess(config, job, transport_dtype), config.run, job, test_set, on_round)


def main(argv: list[str] | None = None) -> None:
    """main.py's options and output files, one process; the backend option is ignored."""
    cli = argparse.ArgumentParser(add_help=False)
    cli.add_argument("--transport-dtype", choices=("float32", "float16", "bfloat16"), default="float32")
    known, rest = cli.parse_known_args(argv)
    config = parser.prepared(parser.parse(rest))
    dtype = None if known.transport_dtype == "float32" else getattr(torch, known.transport_dtype)
    output = RunOutput(config.run, config.summary())
    fixed = config.fixed_options()
    point = run(config, lambda record, point: output.add_round(record, checkpoint.encode(point, fixed)), dtype)
    finish_run(output, point, Job.of_config(config), config.source, config.run.seed)


if __name__ == "__main__":
    main(sys.argv[1:])
