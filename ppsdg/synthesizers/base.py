"""The `Synthesizer` interface every synthesis method implements, and the bounds their releases share."""
import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import pandas as pd
import torch
from torch import nn
from tqdm import tqdm

from backends import Tensors
from ppsdg import data
from ppsdg.config import LocalTraining
from ppsdg.errors import FederationError
from ppsdg.privacy import LocalDP

Batch = tuple[torch.Tensor, torch.Tensor]
Update = tuple[Tensors, int, float, dict[str, float]]
# How far an honest release's noise may take an entry beyond its exact range, in standard deviations:
# an honest entry lands beyond 6 sigma with probability 2e-9, about 2e-5 for a release of 10,000 entries.
SIGMAS = 6.0


@dataclass(frozen=True)
class ExactRelease:
    """A statistics release before its noise, for secure aggregation to noise, mask and sum: `counts`, the
    node's whole-number statistics, and `std`, each entry's standard deviation of the full noise (0:
    an entry released as it is, a zero); the server multiplies their sum by `scale`. `public` is the
    rest of the reply, which travels in the clear (the declared noise, for the node's `share` of it)."""

    counts: Tensors
    std: Tensors
    scale: float
    public: Tensors


class Synthesizer(ABC):
    """One synthesis method. `aggregation` is how the server folds the replies into the global state:
    "average" (FedAvg, weighted by sample counts) or "sum" (statistics released once per round)."""

    name: str
    figures: tuple[str, ...] = ()
    aggregation = "average"
    sensitivity = 1.0
    # A synthesizer that trains by SGD: its local training (batches, epochs, DP-SGD's clipping).
    training: LocalTraining | None = None
    # The parts of a release that secure aggregation masks (`exact_release`'s counts).
    secret: tuple[str, ...] = ()

    @property
    def releases_statistics(self) -> bool:
        """Whether its workers release statistics once a round (summed by the server, one full-batch
        Gaussian release each for the accountant) rather than train a model that FedAvg averages."""
        return self.aggregation == "sum"

    @abstractmethod
    def new_model(self) -> nn.Module:
        """The initial global state; call under a fixed seed (models.new_model does)."""

    @abstractmethod
    def local_update(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor, dp: LocalDP | None,
                     epoch_batches: Callable[[], Iterable[Batch]], lr: float, progress: tqdm | None) -> Update:
        """A worker's part of a round: its update, sample count, loss and named figures; `epoch_batches`
        and `lr` serve a synthesizer that trains by SGD (its own settings: `training`)."""

    def exact_release(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor, dp: LocalDP,
                      share: float) -> ExactRelease:
        """A worker's release under secure aggregation, before its noise, of which it adds `share` of the
        variance. Only a synthesizer that releases statistics has one (the parser refuses the others)."""
        raise NotImplementedError(f"{self.name} has no release for secure aggregation")

    def completed(self, total: Tensors) -> Tensors:
        """The sum of the members' exact releases (`exact_release`) as the global state holds it: by
        default as it is."""
        return total

    def check_instructions(self, sent: nn.Module) -> None:
        """On the node, before its data are touched: refuse (FederationError) a global state whose
        server-chosen parts would shape a release beyond what the node's ledger charges. The node
        trusts nothing the server sends: a plan or split is checked here, everything else that
        shapes a release (noise, rounds, epochs, batch size) the node derives from the task's options,
        which its policy checks and its ledger charges. By default a synthesizer takes no such part."""

    def after_round(self, model: nn.Module, round_: int) -> None:
        """The server's post-processing of the global state once a round is folded in (a plan for the
        next rounds, say): it sees only what the nodes released, so it costs no privacy."""

    def check_release(self, update: Tensors, num_samples: int, noise_std: float, sent: Tensors) -> None:
        """Refuse a released update that no honest node of `num_samples` rows could have sent under noise
        of standard deviation `noise_std` (`release_std`) in reply to the global state `sent` (which says
        what the round asks for: a survey or a measurement, class or cell statistics):
        FederationError("update rejected: ...").
        The server calls it on every reply of a synthesizer whose aggregation is "sum", whose replies it
        adds to the model as they are; a bound cannot catch a lie within it (README, *Dishonest nodes*)."""
        raise NotImplementedError(f"{self.name} sums its releases but does not bound them")

    def check_sum(self, state: Tensors, rows_by_round: list[list[int]], noise_std: float,
                  shares_by_round: list[list[float]]) -> None:
        """Refuse a summed state (a checkpoint's model or snapshot) that the releases of these rows, each
        with its share of the noise `noise_std` (1: all of it; less under secure aggregation), could not
        have summed to. A sum of releases is one release of their rows with their summed variance, so by
        default the same bounds as `check_release`."""
        rows = [count for counts in rows_by_round for count in counts]
        # A synthesizer whose rounds ask for different kinds of release checks its sum itself.
        self.check_release(state, sum(rows), summed_std(noise_std, shares_by_round), state)

    def release_std(self, dp: LocalDP | None) -> float:
        """The standard deviation of the Gaussian noise on one release's vector of full sensitivity: the
        run's planned noise multiplier (public, the same on the server) times the sensitivity; 0 without DP."""
        return dp.release_noise() * self.sensitivity if dp is not None else 0.0

    @abstractmethod
    def generator_state(self, model: nn.Module) -> Tensors:
        """What it takes to draw synthetic data: kept for snapshots and written as generator.pt."""

    @abstractmethod
    def sample(self, state: Tensors, count: int, seed: int) -> "data.ImageSet | pd.DataFrame":
        """`count` synthetic records, the same from a seed: images with balanced labels (0, 1, ..., 9,
        0, ...), or a table's rows in its own columns."""

def summed_std(noise_std: float, shares_by_round: list[list[float]]) -> float:
    """The noise of a sum of releases, each with its share of the variance of noise `noise_std`."""
    return noise_std * math.sqrt(sum(share for shares in shares_by_round for share in shares))


def check_within(name: str, values: torch.Tensor, low: float, high: float, noise_std: float) -> None:
    """Every entry of a released statistic within [low - SIGMAS * noise_std, high + SIGMAS * noise_std]:
    [low, high] is what the node's own rows allow, the rest what its noise may add. The common bound
    of every statistics synthesizer's `check_release`."""
    slack = SIGMAS * noise_std
    outside = ((values < low - slack) | (values > high + slack)).flatten()
    if bool(outside.any()):
        index = int(outside.nonzero()[0])
        raise FederationError(f"update rejected: {name} {float(values.flatten()[index]):.4g} (entry {index}) is outside "
                              f"[{low - slack:.4g}, {high + slack:.4g}], what the node's rows and the planned noise "
                              f"(standard deviation {noise_std:.4g}) allow")


def check_noise_variance(value: torch.Tensor, noise_std: float) -> None:
    """The noise variance a release declares must be the one the run's public plan implies: a node
    that declares less would make the server trust its noisy figures more."""
    if not math.isclose(float(value), noise_std ** 2, rel_tol=1e-9):
        raise FederationError(f"update rejected: noise_variance {float(value):.4g} is not the planned "
                              f"{noise_std ** 2:.4g}")
