"""Synthesizers: the methods that turn the workers' private data into a source of synthetic data.

Each one is a module behind the small `Synthesizer` interface: the global model it trains (or
accumulates), a worker's part of a round, how the server folds the replies in, and how synthetic
images are drawn from what the server holds. The rounds, the transports, the accounting and the
evaluation are the same for all of them.
"""
import argparse
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable

import pandas as pd
import torch
from torch import nn
from tqdm import tqdm

from backends import Tensors
from ppsdg import data
from ppsdg.privacy import LocalDP

Batch = tuple[torch.Tensor, torch.Tensor]
Update = tuple[Tensors, int, float, dict[str, float]]


class Synthesizer(ABC):
    """One synthesis method. `aggregation` is how the server folds the replies into the global state:
    "average" (FedAvg, weighted by sample counts) or "sum" (statistics released once per round)."""

    name: str
    figures: tuple[str, ...] = ()
    aggregation = "average"

    @abstractmethod
    def new_model(self) -> nn.Module:
        """The initial global state; call under a fixed seed (models.new_model does)."""

    @abstractmethod
    def local_update(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                     options: argparse.Namespace, dp: LocalDP | None, epoch_batches: Callable[[], Iterable[Batch]],
                     lr: float, progress: tqdm | None) -> Update:
        """A worker's part of a round: its update, sample count, loss and named figures."""

    def after_round(self, model: nn.Module, round_: int) -> None:
        """The server's post-processing of the global state once a round is folded in (a plan for the
        next rounds, say): it sees only what the nodes released, so it costs no privacy."""

    @abstractmethod
    def generator_state(self, model: nn.Module) -> Tensors:
        """What it takes to draw synthetic data: kept for snapshots and written as generator.pt."""

    @abstractmethod
    def sample(self, state: Tensors, count: int, seed: int) -> "data.ImageSet | pd.DataFrame":
        """`count` synthetic records, the same from a seed: images with balanced labels (0, 1, ..., 9,
        0, ...), or a table's rows in its own columns."""


NAMES = ("moments", "wgan", "marginals")


def releases_statistics(options: argparse.Namespace) -> bool:
    """Whether this run's workers release statistics once a round (summed by the server, one full-batch
    Gaussian release each for the accountant) rather than train a model that FedAvg averages."""
    return options.gan and for_options(options).aggregation == "sum"


def for_options(options: argparse.Namespace) -> Synthesizer:
    """The synthesizer --synthesizer names, set up for these options."""
    if options.synthesizer == "marginals":
        from ppsdg.synthesizers.marginals import MarginalsSynthesizer

        return MarginalsSynthesizer(options)
    if options.synthesizer == "moments":
        from ppsdg.synthesizers.moments import MomentsSynthesizer

        return MomentsSynthesizer(options)
    from ppsdg.synthesizers.wgan import WGAN

    return WGAN()
