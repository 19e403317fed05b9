"""Training: a worker's local training and testing, the server's and the worker's part of a round,
and the entry point of one rank.

Run one rank by hand (torchrun sets RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT):
    torchrun --nproc-per-node 3 train.py --num-nodes 3
"""
import argparse
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from backends import Communicator, Tensors, codec
from backends.gloo import GlooCommunicator
from backends.vantage6 import CentralCommunicator, node_communicator, node_result
from ppsdg import coordination, data, parser
from ppsdg.errors import FederationError, OptionsError, PpsdgError
from ppsdg.output import RunOutput
from ppsdg.simplemodel import Net

RoundRecord = dict


@dataclass(frozen=True)
class Examples:
    """A worker's training data or the server's test data, as tensors ready for the model."""

    images: torch.Tensor
    labels: torch.Tensor

    @classmethod
    def from_images(cls, images: data.ImageSet, device: torch.device) -> "Examples":
        inputs, labels = data.to_tensors(images)
        return cls(inputs.to(device), labels.to(device))

    def __len__(self) -> int:
        return len(self.labels)


def device_for(options: argparse.Namespace) -> torch.device:
    """CUDA when asked for and present, else the CPU."""
    return torch.device("cuda" if options.use_cuda and torch.cuda.is_available() else "cpu")


def new_model(seed: int, device: torch.device = torch.device("cpu")) -> nn.Module:
    """The initial global model, the same from the same seed on every rank and backend."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return Net().to(device)


def round_lr(options: argparse.Namespace, round_: int) -> float:
    """StepLR with one step per round: the server and a stateless node compute the same rate."""
    return options.learning_rate * options.gamma ** (round_ - 1)


def make_optimizer(model: nn.Module, lr: float, momentum: float) -> torch.optim.Optimizer:
    return torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum)


def train_batch(model: nn.Module, optimizer: torch.optim.Optimizer, images: torch.Tensor,
                labels: torch.Tensor) -> float:
    """One SGD step; returns the batch's mean loss."""
    optimizer.zero_grad(set_to_none=True)
    loss = F.nll_loss(model(images), labels)
    loss.backward()
    optimizer.step()
    return loss.item()


def train_epoch(model: nn.Module, optimizer: torch.optim.Optimizer, examples: Examples, batch_size: int,
                generator: torch.Generator, progress: tqdm | None = None, log_interval: int = 10) -> float:
    """One pass over `examples` in a seeded order; returns the mean loss per sample."""
    model.train()
    order = torch.randperm(len(examples), generator=generator).to(examples.labels.device)
    total = 0.0
    for index, start in enumerate(range(0, len(examples), batch_size)):
        batch = order[start:start + batch_size]
        loss = train_batch(model, optimizer, examples.images[batch], examples.labels[batch])
        total += loss * len(batch)
        if progress is not None:
            progress.update(1)
            if index % log_interval == 0:
                progress.set_postfix(loss=f"{loss:.4f}")
    return total / len(examples)


def batch_gradient(model: nn.Module, examples: Examples, batch_size: int,
                   generator: torch.Generator) -> tuple[Tensors, int, float]:
    """FedSGD's local step: the mean gradient over one seeded batch (the whole set if it is smaller)."""
    model.train()
    batch = torch.randperm(len(examples), generator=generator)[:batch_size].to(examples.labels.device)
    model.zero_grad(set_to_none=True)
    loss = F.nll_loss(model(examples.images[batch]), examples.labels[batch])
    loss.backward()
    grads = {name: p.grad.detach().clone() for name, p in model.named_parameters()}
    return grads, len(batch), loss.item()


@torch.no_grad()
def test(model: nn.Module, examples: Examples, batch_size: int) -> tuple[float, float]:
    """Mean loss per sample and accuracy (0..1) of `model` on `examples`."""
    model.eval()
    loss, correct = 0.0, 0
    for start in range(0, len(examples), batch_size):
        images = examples.images[start:start + batch_size]
        labels = examples.labels[start:start + batch_size]
        output = model(images)
        loss += F.nll_loss(output, labels, reduction="sum").item()
        correct += int((output.argmax(dim=1) == labels).sum())
    return loss / len(examples), correct / len(examples)


def exchanged_state(model: nn.Module, options: argparse.Namespace) -> Tensors:
    """What a worker sends: gradients for FedSGD (so parameters only), the whole state for FedAvg."""
    if options.stochastic_gradient:
        return {name: p.detach() for name, p in model.named_parameters()}
    return dict(model.state_dict())


def local_update(model: nn.Module, examples: Examples, options: argparse.Namespace, round_: int,
                 rank: int) -> tuple[Tensors, int, float]:
    """A worker's part of a round from the global model already in `model`.

    Every random draw (order, dropout) comes from (seed, round, rank), so a stateless node
    reproduces exactly what a long-lived gloo worker does.
    """
    seed = coordination.derive_seed(options.seed, round_, rank)
    generator = torch.Generator().manual_seed(seed)
    devices = [model_device(model)] if model_device(model).type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        if options.stochastic_gradient:
            return batch_gradient(model, examples, options.batch_size, generator)
        optimizer = make_optimizer(model, round_lr(options, round_), options.momentum)
        batches = -(-len(examples) // options.batch_size)
        with tqdm(total=options.epochs * batches, desc=f"worker {rank} round {round_}", position=rank,
                  leave=False, disable=None) as progress:
            losses = [train_epoch(model, optimizer, examples, options.batch_size, generator, progress,
                                  options.log_interval) for _ in range(options.epochs)]
        return dict(model.state_dict()), len(examples), sum(losses) / len(losses)


def model_device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def worker_round(comm: Communicator, model: nn.Module, examples: Examples, options: argparse.Namespace,
                 group: Sequence[int] | None = None) -> int:
    """The worker's part of a round, the same on every backend: receive, train, reply."""
    round_, state = coordination.receive_model(comm, model.state_dict(), group)
    model.load_state_dict(state)
    update, num_samples, loss = local_update(model, examples, options, round_, comm.rank)
    coordination.send_update(comm, coordination.update_message(update, num_samples, loss), group)
    return round_


def aggregate(model: nn.Module, optimizer: torch.optim.Optimizer | None, replies: Sequence[Tensors],
              lr: float) -> None:
    """Fold the group's replies into the global model: FedAvg, or FedSGD's averaged gradient step."""
    weights = [float(reply[coordination.NUM_SAMPLES]) for reply in replies]
    if optimizer is None:
        names = list(model.state_dict())
        model.load_state_dict(coordination.weighted_average(replies, weights, names))
        return
    params = dict(model.named_parameters())
    gradient = coordination.weighted_average(replies, weights, list(params))
    for name, p in params.items():
        p.grad = gradient[name].to(p.device)
    for group in optimizer.param_groups:
        group["lr"] = lr
    optimizer.step()


def server_round(comm: Communicator, model: nn.Module, optimizer: torch.optim.Optimizer | None,
                 options: argparse.Namespace, round_: int, test_set: Examples) -> RoundRecord:
    """The server's part of a round: draw the group, broadcast, gather, aggregate, test."""
    started = time.perf_counter()
    num_workers = comm.world_size - 1
    group = coordination.choose_group(options.seed, round_, num_workers, options.group_size)
    members = coordination.participants(group, num_workers, options.train_all)
    coordination.broadcast_model(comm, model.state_dict(), round_, members)
    replies = coordination.gather_updates(comm, exchanged_state(model, options), members)
    coordination.check_quorum(comm, round_, group, list(replies), options.min_workers)
    averaged = [reply for rank, reply in replies.items() if rank in group]
    aggregate(model, optimizer, averaged, round_lr(options, round_))
    test_loss, accuracy = test(model, test_set, options.test_batch_size)
    return {
        "round": round_, "test_loss": test_loss, "test_accuracy": accuracy, "lr": round_lr(options, round_),
        "group": group, "participants": members,
        "workers": [{"rank": rank, "num_samples": int(reply[coordination.NUM_SAMPLES]),
                     "train_loss": float(reply[coordination.TRAIN_LOSS]), "averaged": rank in group}
                    for rank, reply in replies.items()],
        "failed": [{"rank": rank, "reason": comm.failures.get(rank, "no answer")}
                   for rank in members if rank not in replies],
        "seconds": time.perf_counter() - started,
    }


def serve(comm: Communicator, options: argparse.Namespace, test_set: Examples,
          on_round: Callable[[RoundRecord], None] = lambda record: None) -> tuple[nn.Module, list[RoundRecord]]:
    """The server's whole training: every round, from the seeded initial model."""
    model = new_model(options.seed, test_set.labels.device)
    optimizer = make_optimizer(model, options.learning_rate, options.momentum) \
        if options.stochastic_gradient else None
    records = []
    with tqdm(range(1, options.num_rounds + 1), desc="rounds", position=0, disable=None) as rounds:
        for round_ in rounds:
            record = server_round(comm, model, optimizer, options, round_, test_set)
            records.append(record)
            on_round(record)
            rounds.set_postfix(accuracy=f"{record['test_accuracy']:.3f}", loss=f"{record['test_loss']:.4f}")
    return model, records


def work(comm: Communicator, options: argparse.Namespace, examples: Examples) -> None:
    """A long-lived worker (gloo): take part in the rounds whose group holds this rank."""
    model = new_model(options.seed, examples.labels.device)
    num_workers = comm.world_size - 1
    for round_ in range(1, options.num_rounds + 1):
        group = coordination.choose_group(options.seed, round_, num_workers, options.group_size)
        members = coordination.participants(group, num_workers, options.train_all)
        if comm.rank in members:
            worker_round(comm, model, examples, options, members)
        else:
            comm.sit_out(members)


def worker_examples(options: argparse.Namespace, rank: int, device: torch.device) -> Examples:
    """Worker `rank`'s partition of the training set, the same one a vantage6 node would hold."""
    train_set, _ = data.load(options.data)
    parts = data.partition(train_set.labels, options.num_nodes - 1, options.partition, options.seed,
                           options.dirichlet_alpha, options.classes_per_worker)
    return Examples.from_images(train_set.subset(parts[rank - 1]), device)


def test_examples(options: argparse.Namespace, device: torch.device) -> Examples:
    _, test_set = data.load(options.data)
    return Examples.from_images(test_set, device)


def run_rank(rank: int, world_size: int, options: argparse.Namespace) -> None:
    """One rank of a gloo run: rank 0 serves and writes the output, the others work."""
    torch.set_num_threads(options.threads)
    device = device_for(options)
    comm = GlooCommunicator(rank, world_size, device)
    try:
        if rank == 0:
            output = RunOutput(options.output, options)
            model, records = serve(comm, options, test_examples(options, device), output.add_round)
            output.finish(model.state_dict(), records)
        else:
            work(comm, options, worker_examples(options, rank, device))
    finally:
        comm.close()


def central(client: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
    """The vantage6 central function's work: the server role over the collaboration's organizations.

    Rank r is the r-th organization of `organizations` (default: all of them, by id).
    """
    kwargs = dict(kwargs)
    organizations = kwargs.pop("organizations", None) or sorted(o["id"] for o in client.organization.list())
    kwargs.setdefault("num_nodes", len(organizations) + 1)
    options = parser.from_mapping({**kwargs, "backend": "vantage6"})
    if options.num_nodes != len(organizations) + 1:
        raise OptionsError(f"num_nodes is {options.num_nodes} but {len(organizations)} organizations "
                           "were given: it must be their number plus one (the server)")
    torch.set_num_threads(options.threads)
    comm = CentralCommunicator(client, organizations, parser.task_options(options), options.round_timeout)
    model, records = serve(comm, options, test_examples(options, torch.device("cpu")))
    for record in records:
        for worker in record["workers"] + record["failed"]:
            worker["organization"] = comm.organization_of(worker["rank"])
    return {"model": codec.encode_text(model.state_dict()), "metrics": records, "organizations": organizations}


def partial(client: Any, frame: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
    """The vantage6 partial function's work: one worker round on the node's own data."""
    organization = client.organization_id
    comm = node_communicator(organization, kwargs)
    try:
        options = parser.from_mapping(kwargs.get("options") or {})
        torch.set_num_threads(options.threads)
        examples = Examples.from_images(data.from_frame(frame), torch.device("cpu"))
        worker_round(comm, new_model(options.seed), examples, options)
    except PpsdgError as error:
        raise FederationError(f"organization {organization} (worker rank {comm.rank}): {error}") from error
    return node_result(organization, comm)


def run_from_env(options: argparse.Namespace) -> None:
    """The rank that torchrun (or any launcher setting RANK and WORLD_SIZE) asked this process to be."""
    rank, world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    if world_size != options.num_nodes:
        raise OptionsError(f"the launcher started {world_size} processes but --num-nodes is "
                           f"{options.num_nodes}: they must be equal")
    run_rank(rank, world_size, options)


if __name__ == "__main__":
    run_from_env(parser.parse())
