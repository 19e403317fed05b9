"""A worker's local learning on its own data: batches, epochs, the FedSGD gradient, the test, the
classifier's round, and the hand-over to the synthesizer's round with --gan.

Every random draw of a worker's round comes from (seed, round, rank), so a stateless vantage6 node
reproduces exactly what a long-lived gloo worker does.
"""
import copy
import sys
from collections.abc import Callable, Iterable, Iterator
from typing import Any
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from backends import Tensors
from ppsdg import data, tables
from ppsdg.config import Classifier, Source, Table
from ppsdg.job import Job
from ppsdg.privacy import LocalDP
from ppsdg.runtime import derive_seed
from ppsdg.sgd import LocalSGD, Optimizer

Batch = tuple[torch.Tensor, torch.Tensor]
Criterion = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Update = tuple[Tensors, int, float, dict[str, float]]


@dataclass(frozen=True)
class Examples:
    """A worker's training data or the server's test data, as tensors ready for the model: images
    and their labels, or a table's rows as integer codes under its schema (rows x columns) and the
    target column's codes."""

    images: torch.Tensor
    labels: torch.Tensor

    @classmethod
    def from_images(cls, images: data.ImageSet, device: torch.device) -> "Examples":
        inputs, labels = data.to_tensors(images)
        return cls(inputs.to(device), labels.to(device))

    @classmethod
    def from_set(cls, dataset: data.Dataset, table: Table | None, device: torch.device,
                 quiet: bool = False) -> "Examples":
        """Images as they are; a table encoded with the run's schema. How many cells the schema mapped
        (to its other or missing bucket, or into its bounds) is said on this process's stderr, its
        owner's screen, unless `quiet` (a real vantage6 node, whose log goes to the server): counts of
        the owner's records are not the researcher's to read."""
        if isinstance(dataset, data.ImageSet):
            return cls.from_images(dataset, device)
        schema = tables.Schema.from_text(table.schema)
        codes, mapped = tables.encode(dataset, schema, fine=True)
        if mapped and not quiet:
            print(f"ppsdg: note: cells the schema mapped: {mapped}", file=sys.stderr)
        codes_tensor = torch.from_numpy(codes).to(device)
        return cls(codes_tensor, codes_tensor[:, schema.names.index(table.target)])

    @classmethod
    def from_frame(cls, frame: Any, table: Table | None, device: torch.device, quiet: bool = False) -> "Examples":
        """A node's database: a table under the task's schema, or (`table` None) images in the node layout."""
        if table is not None:
            return cls.from_set(frame, table, device, quiet)
        return cls.from_images(data.from_frame(frame), device)

    def __len__(self) -> int:
        return len(self.labels)


def worker_examples(source: Source, table: Table | None, workers: int, seed: int, rank: int,
                    device: torch.device) -> Examples:
    """Worker `rank`'s partition of the training set, the same one a vantage6 node would hold."""
    target = table.target if table is not None else None
    return Examples.from_set(data.worker_sets(source, workers, seed, target)[rank - 1], table, device)


def test_examples(source: Source, classifier: bool, device: torch.device) -> Examples:
    """The server's test set for the classifier; a synthesizer's rounds test nothing (empty)."""
    if not classifier:
        return Examples(torch.empty(0, device=device), torch.empty(0, dtype=torch.int64, device=device))
    _, test_set = data.load(source.data)
    return Examples.from_images(test_set, device)


def make_optimizer(model: nn.Module, lr: float, momentum: float) -> torch.optim.Optimizer:
    """The server's FedSGD optimizer: long-lived, checkpointed with its state_dict."""
    return torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum)


def train_batch(model: nn.Module, optimizer: Optimizer, images: torch.Tensor,
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


def train_epoch(model: nn.Module, optimizer: Optimizer, batches: Iterable[Batch],
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
                   generator: torch.Generator) -> Update:
    """FedSGD's local step: the mean gradient over one seeded batch (the whole set if it is smaller)."""
    model.train()
    images, labels = next(shuffled_batches(examples, batch_size, generator))
    model.zero_grad(set_to_none=True)
    loss = F.nll_loss(model(images), labels)
    loss.backward()
    grads = {name: p.grad.detach().clone() for name, p in model.named_parameters()}
    return grads, len(labels), loss.item(), {}


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


def local_update(model: nn.Module, examples: Examples, job: Job, seed: int, round_: int, rank: int) -> Update:
    """A worker's part of a round from the global model already in `model`: its update, sample
    count, loss, and named figures (the DP spending, the GAN's losses).

    Every random draw (order, dropout, DP noise and sampling, GAN noise) comes from
    (seed, round, rank); with --secure-noise, the DP mechanism's own (noise, Poisson sampling) come
    from a cryptographically secure stream instead (ppsdg/secure_random.py): what hides the data.
    """
    synthesizer, training = job.synthesizer, job.training
    if synthesizer is not None:
        synthesizer.check_instructions(model)
    round_seed = derive_seed(seed, round_, rank)
    generator = torch.Generator().manual_seed(round_seed)
    device = examples.labels.device
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(round_seed)
        if job.federated_sgd:
            return batch_gradient(model, examples, training.batch_size, generator)
        steps = 1 if training is None else training.epochs * -(-len(examples) // training.batch_size)
        with tqdm(total=steps, desc=f"worker {rank} round {round_}", position=rank, leave=False,
                  disable=None) as progress:
            if synthesizer is not None:
                batch_size = training.batch_size if training is not None else len(examples)
                update = synthesizer.local_update(
                    model, examples.images, examples.labels, job.dp,
                    lambda: shuffled_batches(examples, batch_size, generator), job.lr(round_), progress)
                progress.update(progress.total - progress.n)
                return update
            return classifier_update(model, examples, job.classifier, job.dp, job.lr(round_), generator, progress)


def classifier_update(model: nn.Module, examples: Examples, settings: Classifier, dp: LocalDP | None,
                      lr: float, generator: torch.Generator, progress: tqdm) -> Update:
    """FedAvg's local epochs, as DP-SGD on a private copy of the model under local DP."""
    if dp is None:
        optimizer = LocalSGD(model, lr, settings.momentum)
        losses = [train_epoch(model, optimizer, shuffled_batches(examples, settings.batch_size, generator),
                              progress, settings.log_interval) for _ in range(settings.epochs)]
        return dict(model.state_dict()), len(examples), sum(losses) / len(losses), {}
    plain = copy.deepcopy(model)
    private = dp.wrap(plain, LocalSGD(plain, lr, settings.momentum), examples.images, examples.labels)
    losses = [train_epoch(private.model, private.optimizer, private.loader, progress, settings.log_interval,
                          private.criterion) for _ in range(settings.epochs)]
    return dict(plain.state_dict()), len(examples), sum(losses) / len(losses), dp.spent(private)
