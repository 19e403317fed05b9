"""Training: a worker's local training and testing, the server's and the worker's part of a round,
and the entry point of one rank.

Run one rank by hand (torchrun sets RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT):
    torchrun --nproc-per-node 3 train.py --num-nodes 3
"""
import argparse
import contextlib
import copy
import os
import secrets
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from backends import Communicator, Tensors, codec
from backends.gloo import GlooCommunicator
from backends.vantage6 import CentralCommunicator, node_communicator, node_result
from ppsdg import checkpoint, coordination, data, parser, privacy, synthetic, wgan
from ppsdg.checkpoint import Checkpoint
from ppsdg.errors import FederationError, OptionsError, PpsdgError
from ppsdg.output import RunOutput
from ppsdg.simplemodel import GAN, Net

RoundRecord = dict
Batch = tuple[torch.Tensor, torch.Tensor]
Criterion = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
GAN_KEYS = ("critic_loss", "generator_loss")


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
    """CUDA when asked for and present, else the CPU. On CUDA, kernels are chosen for reproducible
    results (cuDNN and cuBLAS otherwise pick by speed, and some of their picks sum in a varying
    order), so that a run, its rerun and the other backend give the same model from the same seed."""
    if not (options.use_cuda and torch.cuda.is_available()):
        return torch.device("cpu")
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.backends.cudnn.benchmark = False
    torch.use_deterministic_algorithms(True, warn_only=True)
    return torch.device("cuda")


def new_model(options: argparse.Namespace, device: torch.device = torch.device("cpu")) -> nn.Module:
    """The initial global model (the classifier, or the GAN with --gan), the same from the same seed."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(options.seed)
        return (GAN() if options.gan else Net()).to(device)


def round_lr(options: argparse.Namespace, round_: int) -> float:
    """StepLR with one step per round: the server and a stateless node compute the same rate."""
    base = options.gan_learning_rate if options.gan else options.learning_rate
    return base * options.gamma ** (round_ - 1)


def make_optimizer(model: nn.Module, lr: float, momentum: float) -> torch.optim.Optimizer:
    return torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum)


def train_batch(model: nn.Module, optimizer: torch.optim.Optimizer, images: torch.Tensor,
                labels: torch.Tensor, criterion: Criterion = F.nll_loss) -> float:
    """One SGD step; returns the batch's mean loss."""
    optimizer.zero_grad(set_to_none=True)
    loss = criterion(model(images), labels)
    loss.backward()
    optimizer.step()
    return loss.item()


def shuffled_batches(examples: Examples, batch_size: int, generator: torch.Generator) -> Iterator[Batch]:
    """One epoch of batches in a seeded order."""
    order = torch.randperm(len(examples), generator=generator).to(examples.labels.device)
    for start in range(0, len(examples), batch_size):
        batch = order[start:start + batch_size]
        yield examples.images[batch], examples.labels[batch]


def train_epoch(model: nn.Module, optimizer: torch.optim.Optimizer, batches: Iterable[Batch],
                progress: tqdm | None = None, log_interval: int = 10, criterion: Criterion = F.nll_loss) -> float:
    """One pass over `batches`; returns the mean loss per sample.

    An empty batch (Poisson sampling under DP can draw one) still makes its noisy step, the step
    the accountant counts; it adds nothing to the loss.
    """
    model.train()
    total, count = 0.0, 0
    for index, (images, labels) in enumerate(batches):
        loss = train_batch(model, optimizer, images, labels, criterion)
        if len(labels):
            total, count = total + loss * len(labels), count + len(labels)
        if progress is not None:
            progress.update(1)
            if index % log_interval == 0:
                progress.set_postfix(loss=f"{loss:.4f}")
    return total / max(count, 1)


def batch_gradient(model: nn.Module, examples: Examples, batch_size: int,
                   generator: torch.Generator) -> tuple[Tensors, int, float]:
    """FedSGD's local step: the mean gradient over one seeded batch (the whole set if it is smaller)."""
    model.train()
    images, labels = next(shuffled_batches(examples, batch_size, generator))
    model.zero_grad(set_to_none=True)
    loss = F.nll_loss(model(images), labels)
    loss.backward()
    grads = {name: p.grad.detach().clone() for name, p in model.named_parameters()}
    return grads, len(labels), loss.item()


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


@contextlib.contextmanager
def every_core() -> Iterator[None]:
    """Torch threads on every core this process may use, for the server's test: the workers wait
    for the next round meanwhile, so the cores are free. The test's figures do not depend on the
    thread count, so the backends still agree (tested)."""
    threads = torch.get_num_threads()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    torch.set_num_threads(max(threads, cores))
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def exchanged_state(model: nn.Module, options: argparse.Namespace) -> Tensors:
    """What a worker sends: gradients for FedSGD (so parameters only), the whole state for FedAvg."""
    if options.stochastic_gradient:
        return {name: p.detach() for name, p in model.named_parameters()}
    return dict(model.state_dict())


def reply_extras(options: argparse.Namespace) -> tuple[str, ...]:
    """The figures a worker's reply carries beside its update, by what the run trains."""
    return (privacy.ENTRY_KEYS if options.local_dp else ()) + (GAN_KEYS if options.gan else ())


def local_update(model: nn.Module, examples: Examples, options: argparse.Namespace, round_: int,
                 rank: int) -> tuple[Tensors, int, float, dict[str, float]]:
    """A worker's part of a round from the global model already in `model`.

    Every random draw (order, dropout, DP noise and sampling, GAN noise) comes from
    (seed, round, rank), so a stateless node reproduces exactly what a long-lived gloo worker does;
    with --secure-noise, from the operating system's entropy instead.
    """
    seed = secrets.randbits(63) if options.secure_noise else coordination.derive_seed(options.seed, round_, rank)
    generator = torch.Generator().manual_seed(seed)
    device = model_device(model)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        if options.stochastic_gradient:
            return (*batch_gradient(model, examples, options.batch_size, generator), {})
        batches_per_epoch = -(-len(examples) // options.batch_size)
        with tqdm(total=options.epochs * batches_per_epoch, desc=f"worker {rank} round {round_}",
                  position=rank, leave=False, disable=None) as progress:
            if options.gan:
                return wgan.local_update(model, examples.images, examples.labels, options,
                                         lambda: shuffled_batches(examples, options.batch_size, generator),
                                         round_lr(options, round_), progress)
            return classifier_update(model, examples, options, round_lr(options, round_), generator, progress)


def classifier_update(model: nn.Module, examples: Examples, options: argparse.Namespace, lr: float,
                      generator: torch.Generator, progress: tqdm
                      ) -> tuple[Tensors, int, float, dict[str, float]]:
    """FedAvg's local epochs, as DP-SGD on a private copy of the model with --local_dp."""
    if not options.local_dp:
        optimizer = make_optimizer(model, lr, options.momentum)
        losses = [train_epoch(model, optimizer, shuffled_batches(examples, options.batch_size, generator),
                              progress, options.log_interval) for _ in range(options.epochs)]
        return dict(model.state_dict()), len(examples), sum(losses) / len(losses), {}
    plain = copy.deepcopy(model)
    private = privacy.make_private(plain, make_optimizer(plain, lr, options.momentum), examples.images,
                                   examples.labels, options)
    losses = [train_epoch(private.model, private.optimizer, private.loader, progress, options.log_interval,
                          private.criterion) for _ in range(options.epochs)]
    return (dict(plain.state_dict()), len(examples), sum(losses) / len(losses),
            privacy.entry_extra(privacy.round_entry(private.engine)))


def model_device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def worker_round(comm: Communicator, model: nn.Module, examples: Examples, options: argparse.Namespace) -> int:
    """The worker's part of a round, the same on every backend: receive, train, reply."""
    round_, state = coordination.receive_model(comm, model.state_dict())
    model.load_state_dict(state)
    update, num_samples, loss, extra = local_update(model, examples, options, round_, comm.rank)
    if options.local_dp:
        loss, extra = withhold_private_losses(loss, extra)
    coordination.send_update(comm, coordination.update_message(update, num_samples, loss, extra))
    return round_


def withhold_private_losses(loss: float, extra: dict[str, float]) -> tuple[float, dict[str, float]]:
    """Under DP only the noised update may leave a node: a loss measured on the private data is not
    covered by the guarantee, so it is sent as 0 and recorded as unknown. (The generator's loss
    only queries the DP-trained critic, so it may go.)"""
    return 0.0, {**extra, **({"critic_loss": 0.0} if "critic_loss" in extra else {})}


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
                 options: argparse.Namespace, round_: int, test_set: Examples,
                 ledger: privacy.Ledger) -> RoundRecord:
    """The server's part of a round: draw the group, broadcast, gather, aggregate, test, account."""
    started = time.perf_counter()
    num_workers = comm.world_size - 1
    group = coordination.choose_group(options.seed, round_, num_workers, options.group_size)
    members = coordination.participants(group, num_workers, options.train_all)
    template = coordination.update_message(exchanged_state(model, options), 0, 0.0,
                                           dict.fromkeys(reply_extras(options), 0.0))
    try:
        coordination.broadcast_model(comm, model.state_dict(), round_, members)
        replies = coordination.gather_updates(comm, template, members)
    except FederationError as error:
        raise FederationError(f"round {round_}: {error}") from error
    coordination.check_quorum(comm, round_, group, list(replies), options.min_workers)
    aggregate(model, optimizer, [reply for rank, reply in replies.items() if rank in group],
              round_lr(options, round_))
    workers = []
    for rank, reply in replies.items():
        extra = coordination.reply_extra(reply)
        worker = {"rank": rank, "num_samples": int(reply[coordination.NUM_SAMPLES]),
                  "train_loss": float(reply[coordination.TRAIN_LOSS]), "averaged": rank in group,
                  **{k: v for k, v in extra.items() if k in GAN_KEYS}}
        if options.local_dp:
            worker.update({k: None for k in ("train_loss", "critic_loss") if k in worker})
        if options.local_dp:
            ledger.add(rank, privacy.entry_from_extra(extra))
            worker["epsilon"] = ledger.epsilon_of(rank)
        workers.append(worker)
    test_loss, accuracy = None, None
    if not options.gan:
        with every_core():
            test_loss, accuracy = test(model, test_set, options.test_batch_size)
    record = {
        "round": round_, "test_loss": test_loss, "test_accuracy": accuracy, "lr": round_lr(options, round_),
        "group": group, "participants": members, "workers": workers,
        "failed": [{"rank": rank, "reason": comm.failures.get(rank, "no answer")}
                   for rank in members if rank not in replies],
    }
    if options.local_dp:
        record.update(epsilon=ledger.worst(), delta=options.delta, accountant=options.accountant)
    record["seconds"] = time.perf_counter() - started
    return record


def serve(comm: Communicator, options: argparse.Namespace, test_set: Examples,
          on_round: Callable[[RoundRecord, Checkpoint], None] = lambda record, point: None,
          resume: Checkpoint | None = None) -> Checkpoint:
    """The server's whole training, from the seeded initial model or from where `resume` stopped.

    After every round `on_round` gets the round's record and the checkpoint to go on from.
    """
    model = new_model(options, test_set.labels.device)
    optimizer = make_optimizer(model, options.learning_rate, options.momentum) \
        if options.stochastic_gradient else None
    ledger = privacy.Ledger(options.delta, options.accountant)
    point = resume or Checkpoint(round=0, model=state_copy(model))
    model.load_state_dict(point.model)
    if optimizer is not None and point.optimizer is not None:
        optimizer.load_state_dict(point.optimizer)
    ledger.restore(point.histories)
    records, snapshots = list(point.records), dict(point.snapshots)
    with tqdm(range(point.round + 1, options.num_rounds + 1), desc="rounds", position=0,
              disable=None) as rounds:
        for round_ in rounds:
            record = server_round(comm, model, optimizer, options, round_, test_set, ledger)
            records.append(record)
            if options.gan and options.sample_every and round_ % options.sample_every == 0:
                snapshots[round_] = state_copy(model.generator)
            point = Checkpoint(round_, state_copy(model), list(records),
                               optimizer.state_dict() if optimizer is not None else None,
                               {rank: list(h) for rank, h in ledger.histories.items()}, dict(snapshots))
            on_round(record, point)
            rounds.set_postfix(progress_figures(record))
    return point


def state_copy(model: nn.Module) -> Tensors:
    return {name: t.detach().cpu().clone() for name, t in model.state_dict().items()}


def progress_figures(record: RoundRecord) -> dict[str, str]:
    figures = {k: f"{record[k]:.4f}" for k in ("test_accuracy", "test_loss", "epsilon")
               if record.get(k) is not None}
    losses = [w["generator_loss"] for w in record["workers"] if w.get("generator_loss") is not None]
    return figures or {"generator_loss": f"{sum(losses) / max(len(losses), 1):.4f}"}


def work(comm: Communicator, options: argparse.Namespace, examples: Examples) -> None:
    """A long-lived worker (gloo): from the round the server starts at, take part in the rounds
    whose group holds this rank."""
    model = new_model(options, examples.labels.device)
    num_workers = comm.world_size - 1
    for round_ in range(coordination.receive_start(comm) + 1, options.num_rounds + 1):
        group = coordination.choose_group(options.seed, round_, num_workers, options.group_size)
        if comm.rank in coordination.participants(group, num_workers, options.train_all):
            worker_round(comm, model, examples, options)


def worker_examples(options: argparse.Namespace, rank: int, device: torch.device) -> Examples:
    """Worker `rank`'s partition of the training set, the same one a vantage6 node would hold."""
    train_set, _ = data.load(options.data)
    parts = data.partition(train_set.labels, options.num_nodes - 1, options.partition, options.seed,
                           options.dirichlet_alpha, options.classes_per_worker)
    return Examples.from_images(train_set.subset(parts[rank - 1]), device)


def test_examples(options: argparse.Namespace, device: torch.device) -> Examples:
    _, test_set = data.load(options.data)
    return Examples.from_images(test_set, device)


def tstr_accuracy(synthetic_set: data.ImageSet, options: argparse.Namespace) -> float:
    """Train-on-synthetic, test-on-real: the classifier trained on synthetic data alone, tested on the
    real held-out set. How much of the data's use the synthetic set keeps."""
    classifier_options = argparse.Namespace(**{**vars(options), "gan": False})
    model = new_model(classifier_options)
    optimizer = make_optimizer(model, options.learning_rate, options.momentum)
    examples = Examples.from_images(synthetic_set, torch.device("cpu"))
    generator = torch.Generator().manual_seed(coordination.derive_seed(options.seed, 0, 0))
    for _ in range(options.tstr_epochs):
        train_epoch(model, optimizer, shuffled_batches(examples, options.batch_size, generator))
    return test(model, test_examples(options, torch.device("cpu")), options.test_batch_size)[1]


def finish_run(output: RunOutput, options: argparse.Namespace, point: Checkpoint,
               extra: dict[str, Any] | None = None) -> None:
    """Write a finished run; with --gan, draw the synthetic data and measure their use first.

    Both backends end here, so a run's files do not depend on the transport.
    """
    extra = dict(extra or {})
    if options.gan:
        gan = new_model(options)
        gan.load_state_dict(point.model)
        synthetic_set = synthetic.sample(gan.generator, options.synthetic_samples, options.seed)
        extra["tstr_accuracy"] = tstr_accuracy(synthetic_set, options)
        grids = {}
        for round_, generator_state in point.snapshots.items():
            snapshot = new_model(options).generator
            snapshot.load_state_dict(generator_state)
            grids[round_] = synthetic.grid(snapshot, options.seed)
        grids[None] = synthetic.grid(gan.generator, options.seed)
        output.write_synthetic(synthetic_set, grids, gan.generator.state_dict())
    output.finish(point.model, point.records, extra)


def run_rank(rank: int, world_size: int, options: argparse.Namespace) -> None:
    """One rank of a gloo run: rank 0 serves, checkpoints every round and writes the output."""
    torch.set_num_threads(options.threads)
    device = device_for(options)
    comm = GlooCommunicator(rank, world_size, device, options.worker_timeout)
    try:
        if rank == 0:
            resume = resume_point(options, device) if options.resume else None
            output = RunOutput(options.output, options, resume.records if resume else [])
            coordination.announce_start(comm, resume.round if resume else 0)
            point = serve(comm, options, test_examples(options, device),
                          lambda record, point: output.add_round(record, checkpoint.encode(point, options)),
                          resume)
            finish_run(output, options, point)
        else:
            work(comm, options, worker_examples(options, rank, device))
    finally:
        comm.close()


def run_rank_process(rank: int, world_size: int, options: argparse.Namespace) -> None:
    """run_rank as a child process of main.py: errors end in one line on stderr and an exit status."""
    try:
        run_rank(rank, world_size, options)
    except PpsdgError as error:
        print(f"ppsdg: error: {error}", file=sys.stderr)
        sys.exit(2)
    except RuntimeError as error:
        if rank == 0:
            raise
        print(f"ppsdg: worker {rank} stopped: lost the server ({str(error).splitlines()[0]})", file=sys.stderr)
        sys.exit(3)


def resume_point(options: argparse.Namespace, device: torch.device) -> Checkpoint:
    """The checkpoint in --output, checked against these options and this model."""
    point = checkpoint.decode(checkpoint.load(Path(options.output)), options,
                              new_model(options, device).state_dict())
    if point.round > options.num_rounds:
        raise OptionsError(f"--resume: the checkpoint is at round {point.round}, past --num-rounds "
                           f"{options.num_rounds}")
    return point


def central(client: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
    """The vantage6 central function's work: the server role over the collaboration's organizations.

    Rank r is the r-th organization of `organizations` (default: all of them, by id); `checkpoint`
    (codec text from an earlier result) resumes a run.
    """
    kwargs = dict(kwargs)
    resume_text = kwargs.pop("checkpoint", None)
    organizations = kwargs.pop("organizations", None) or sorted(o["id"] for o in client.organization.list())
    kwargs.setdefault("num_nodes", len(organizations) + 1)
    options = parser.from_mapping({**kwargs, "backend": "vantage6"})
    if options.num_nodes != len(organizations) + 1:
        raise OptionsError(f"num_nodes is {options.num_nodes} but {len(organizations)} organizations "
                           "were given: it must be their number plus one (the server)")
    torch.set_num_threads(options.threads)
    comm = CentralCommunicator(client, organizations, parser.task_options(options), options.round_timeout)
    resume = None
    if resume_text is not None:
        resume = checkpoint.decode(codec.from_text(resume_text), options, new_model(options).state_dict())
    latest = [resume]

    def keep(record: RoundRecord, point: Checkpoint) -> None:
        for worker in record["workers"] + record["failed"]:
            worker["organization"] = comm.organization_of(worker["rank"])
        latest[0] = point

    try:
        serve(comm, options, test_examples(options, device_for(options)), keep, resume)
    except FederationError as error:
        return central_result(latest[0], options, organizations, error=str(error))
    return central_result(latest[0], options, organizations)


def central_result(point: Checkpoint | None, options: argparse.Namespace, organizations: list[int],
                   error: str | None = None) -> dict[str, Any]:
    """What the central function returns: the metrics, the checkpoint to save or resume from, and the
    error that stopped it, if one did (the researcher then still gets every finished round)."""
    result: dict[str, Any] = {"organizations": organizations, "metrics": point.records if point else [],
                              "checkpoint": codec.to_text(checkpoint.encode(point, options)) if point else None}
    if error is not None:
        result["error"] = error
    return result


def partial(client: Any, frame: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
    """The vantage6 partial function's work: one worker round on the node's own data."""
    organization = client.organization_id
    comm = node_communicator(organization, kwargs)
    try:
        options = parser.from_mapping(kwargs.get("options") or {})
        options.secure_noise = options.secure_noise or os.environ.get(parser.SECURE_NOISE_ENV) == "1"
        torch.set_num_threads(options.threads)
        device = device_for(options)
        examples = Examples.from_images(data.from_frame(frame), device)
        worker_round(comm, new_model(options, device), examples, options)
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
