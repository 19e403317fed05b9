"""Federated rounds against a Communicator: who takes part, what travels, how updates are combined."""
import hashlib
from collections.abc import Mapping, Sequence

import numpy as np
import torch

from backends import Communicator, Tensors
from ppsdg.errors import FederationError

NUM_SAMPLES = "num_samples"
TRAIN_LOSS = "train_loss"
ROUND = "round"
START = "start_after_round"
EXTRA = "extra."


def derive_seed(*parts: int) -> int:
    """A 63-bit seed from (seed, round, worker, ...): the same on every machine and every backend."""
    digest = hashlib.sha256(",".join(str(int(p)) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def choose_group(seed: int, round_: int, num_workers: int, group_size: int | None) -> list[int]:
    """The workers averaged this round: a seeded random draw, so every rank can compute it alone."""
    if group_size is None or group_size >= num_workers:
        return list(range(1, num_workers + 1))
    rng = np.random.default_rng(derive_seed(seed, round_, 0))
    return sorted(int(r) + 1 for r in rng.choice(num_workers, size=group_size, replace=False))


def participants(group: Sequence[int], num_workers: int, train_all: bool) -> list[int]:
    """The workers that train this round: the group, or everyone with --train-all."""
    return list(range(1, num_workers + 1)) if train_all else list(group)


def weighted_average(messages: Sequence[Mapping[str, torch.Tensor]], weights: Sequence[float],
                     names: Sequence[str]) -> Tensors:
    """FedAvg: the mean of each named tensor weighted by `weights` (sample counts), summed in float64."""
    total = float(sum(weights))
    if not messages or total <= 0:
        raise ValueError("nothing to average: no worker with samples")
    averaged: Tensors = {}
    for name in names:
        acc = torch.zeros_like(messages[0][name], dtype=torch.float64)
        for message, weight in zip(messages, weights):
            acc += message[name].to(torch.float64) * (weight / total)
        averaged[name] = acc.to(messages[0][name].dtype)
    return averaged


def broadcast_model(comm: Communicator, state: Mapping[str, torch.Tensor], round_: int,
                    group: Sequence[int]) -> None:
    """Server side: send the global parameters and the round number to the group."""
    comm.broadcast({ROUND: torch.tensor(round_, dtype=torch.int64), **state}, src=0, group=group)


def announce_start(comm: Communicator, last_round: int) -> None:
    """Server side: tell every worker the last finished round, 0 unless the run resumes."""
    comm.broadcast({START: torch.tensor(last_round, dtype=torch.int64)}, src=0)


def receive_start(comm: Communicator) -> int:
    return int(comm.broadcast({START: torch.tensor(0, dtype=torch.int64)}, src=0)[START])


def receive_model(comm: Communicator, template: Mapping[str, torch.Tensor]) -> tuple[int, Tensors]:
    """Worker side: the round number and the global parameters, checked against `template`."""
    message = comm.broadcast({ROUND: torch.tensor(0, dtype=torch.int64), **template}, src=0)
    round_ = int(message.pop(ROUND))
    return round_, message


def update_message(update: Mapping[str, torch.Tensor], num_samples: int, loss: float,
                   extra: Mapping[str, float] | None = None) -> Tensors:
    """A worker's reply: its parameters or gradients, the count and loss that weight them, and
    named figures (a DP accountant entry, GAN losses) as float64 scalars."""
    figures = {NUM_SAMPLES: num_samples, TRAIN_LOSS: loss,
               **{EXTRA + name: value for name, value in (extra or {}).items()}}
    return {**update, **{name: torch.tensor(float(value), dtype=torch.float64) for name, value in figures.items()}}


def reply_extra(reply: Mapping[str, torch.Tensor]) -> dict[str, float]:
    """The named figures of a reply, as update_message put them."""
    return {name[len(EXTRA):]: float(value) for name, value in reply.items() if name.startswith(EXTRA)}


def send_update(comm: Communicator, message: Tensors) -> None:
    """Worker side: hand the reply to the server."""
    comm.gather(message, dst=0)


def gather_updates(comm: Communicator, template: Mapping[str, torch.Tensor],
                   group: Sequence[int]) -> dict[int, Tensors]:
    """Server side: rank -> reply for every member that answered, ordered by rank."""
    return comm.gather(update_message(template, 0, 0.0), dst=0, group=group) or {}


def check_quorum(comm: Communicator, round_: int, group: Sequence[int], answered: Sequence[int],
                 min_workers: int | None) -> None:
    """Go on without the workers that failed only if enough of the averaged group answered."""
    needed = len(group) if min_workers is None else min(min_workers, len(group))
    present = [rank for rank in group if rank in answered]
    if len(present) >= needed:
        return
    missing = "; ".join(f"{comm.describe(rank)}: {comm.failures.get(rank, 'no answer')}"
                        for rank in group if rank not in answered)
    raise FederationError(f"round {round_}: {len(present)} of {len(group)} workers answered and "
                          f"{needed} are needed (--min-workers) - {missing}")
