"""Local differential privacy: DP-SGD with Opacus on a worker, and the accounting over all rounds.

A worker's privacy spending composes over every round it takes part in. A vantage6 node keeps
nothing between tasks, so each reply carries the round's accountant entry (noise multiplier,
sample rate, steps) and the server holds every worker's history: the epsilon it reports is the one
Opacus's accountant gives for that whole history, never a per-round figure.

Opacus is imported where it is used: it costs 2.3 s to import, in every vantage6 container of every
round, and a run without --local_dp never needs it.
"""
import argparse
import functools
import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from ppsdg.errors import FederationError, OptionsError
from ppsdg.secure_random import SecurePoissonSampler, SecureRandom
from ppsdg.sgd import Optimizer

HistoryEntry = tuple[float, float, int]
ENTRY_KEYS = ("dp_noise_multiplier", "dp_sample_rate", "dp_steps")
# The epsilon -ldp plans its noise for when neither --noise-multiplier nor --target-epsilon is given.
# BENCHMARKS.md, synthetic data on the MNIST split: TSTR 0.920 at epsilon 3, against 0.939 at 10 and
# 0.954 without DP, while epsilon 1 costs 4.5 points more (0.875): 3 keeps the data useful at a budget
# a careful user can defend; `--gan -ldp` with the fixed noise multiplier 1.0 spent 17.9 on the embedded digits.
DEFAULT_TARGET_EPSILON = 3.0
MAX_STEPS = 10_000_000
# Below this noise multiplier one release alone spends an epsilon near 100 at delta 1e-5 (70 even
# at a sample rate of 1 / 2^31): no privacy worth the name, and the accountants break down on the
# way to 1e-300 (ZeroDivisionError, arrays of terabytes). Planned noise never comes near it (the
# options keep it above 0.2).
NOISE_FLOOR = 0.1
# The PRV accountant discretizes the privacy loss on a grid whose size grows with epsilon and with
# the square root of the steps: about 200 bytes a point, 3.6 million points (720 MiB, 2.4 s) for
# 62,500 steps at noise 1 and rate 0.008. Beyond this many points its figure is out of reach.
MAX_PRV_POINTS = 4_000_000
PRV_EPS_ERROR = 0.01
# Opacus's noise search: its start, its tolerance in epsilon, and the noise where it gives up; and
# where the bisection stops short of that tolerance when the noise just below is out of reach.
PLAN_START, PLAN_TOLERANCE, MAX_PLANNED_NOISE, PLAN_WIDTH = 10.0, 0.01, 1e6, 1e-6

warnings.filterwarnings("ignore", message="Full backward hook is firing", category=UserWarning)
warnings.filterwarnings("ignore", message="Secure RNG turned off", category=UserWarning)
warnings.filterwarnings("ignore", category=RuntimeWarning, module=r"opacus\.accountants\.analysis\.prv")
warnings.filterwarnings("ignore", message="Optimal order is the (largest|smallest) alpha", category=UserWarning)


def batches_per_epoch(num_samples: int, batch_size: int) -> int:
    return math.ceil(num_samples / batch_size)


def sample_rate(num_samples: int, batch_size: int) -> float:
    """Poisson sampling rate as Opacus derives it from the data loader: 1 / batches per epoch."""
    return 1 / batches_per_epoch(num_samples, batch_size)


@dataclass
class PrivateTraining:
    """A worker's model, optimizer, Poisson data loader and loss as Opacus wrapped them for DP-SGD."""

    engine: Any
    model: nn.Module
    optimizer: torch.optim.Optimizer
    loader: DataLoader
    criterion: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def default_target_applies(options: argparse.Namespace) -> bool:
    """Whether -ldp came with neither a noise multiplier nor a target: the noise is then planned
    for DEFAULT_TARGET_EPSILON, never left to a fixed multiplier whose epsilon nobody chose."""
    return options.local_dp and options.noise_multiplier is None and options.target_epsilon is None


def planned_target(options: argparse.Namespace) -> float | None:
    """The epsilon the noise is planned to spend over the run's rounds; None for a given noise multiplier."""
    return DEFAULT_TARGET_EPSILON if default_target_applies(options) else options.target_epsilon


class LocalDP:
    """A run's local DP, decided once from the options: how a worker trains, what its reply may
    carry, and how the server accounts for it. A run without --local_dp has none (`from_options`)."""

    figures = ENTRY_KEYS
    withheld = ("train_loss", "critic_loss")

    def __init__(self, options: argparse.Namespace) -> None:
        self.noise = options.noise_multiplier
        self.target_epsilon = planned_target(options)
        self.max_grad_norm = options.max_grad_norm
        self.delta = options.delta
        self.accountant = options.accountant
        self.batch_size = options.batch_size
        self.epochs = options.epochs
        self.planned_epochs = options.num_rounds * options.epochs
        self.planned_rounds = options.num_rounds
        self.secure = options.secure_noise
        self._source: SecureRandom | None = None

    @classmethod
    def from_options(cls, options: argparse.Namespace) -> "LocalDP | None":
        return cls(options) if options.local_dp else None

    def noise_multiplier(self, num_samples: int) -> float:
        """The noise for this worker: given, or the smallest that keeps all rounds within the target.

        The budget is planned for a worker that takes part in every round, the most it can spend.
        """
        if self.target_epsilon is None:
            return self.noise
        steps = self.planned_epochs * batches_per_epoch(num_samples, self.batch_size)
        return planned_noise(self.target_epsilon, self.delta, sample_rate(num_samples, self.batch_size), steps,
                             self.accountant)

    def release_noise(self) -> float:
        """The noise multiplier of a worker that releases statistics once a round (a full-batch step,
        sample rate 1): given, or the smallest that keeps every round within the target."""
        if self.target_epsilon is None:
            return self.noise
        return planned_noise(self.target_epsilon, self.delta, 1.0, self.planned_rounds, self.accountant)

    @staticmethod
    def release_spent(noise_multiplier: float) -> dict[str, float]:
        """One release's spending, as the named figures of the worker's reply."""
        return entry_extra(release_entry(noise_multiplier))

    def planned_entry(self, num_samples: int, releases_once: bool) -> HistoryEntry:
        """What a worker's round will spend, known before it reads its data, so that a node can
        refuse the round first: one release (`releases_once`, the moments synthesizer), or DP-SGD's
        Poisson-sampled steps over the round's epochs."""
        if releases_once:
            return release_entry(self.release_noise())
        batches = batches_per_epoch(num_samples, self.batch_size)
        return self.noise_multiplier(num_samples), sample_rate(num_samples, self.batch_size), self.epochs * batches

    def wrap(self, model: nn.Module, optimizer: Optimizer, images: torch.Tensor,
             labels: torch.Tensor, per_sample_gradients: bool = True) -> PrivateTraining:
        """Wrap a worker's model, optimizer and data for DP-SGD with Poisson sampling.

        The classifier uses Opacus's ghost clipping: the same flat clipping and noise as per-sample
        gradients, without materializing them (2.1 s against 5.2 s an epoch of 720 samples here).
        With per_sample_gradients=False, Opacus computes none: the caller sets each parameter's
        `grad_sample` itself (the WGAN-GP critic, whose penalty Opacus's hooks cannot differentiate).
        """
        from opacus import PrivacyEngine

        engine = PrivacyEngine(accountant=self.accountant)
        loader = DataLoader(TensorDataset(images, labels), batch_size=self.batch_size)
        wrapped = engine.make_private(
            module=model, optimizer=optimizer, data_loader=loader, poisson_sampling=True,
            noise_multiplier=self.noise_multiplier(len(labels)), max_grad_norm=self.max_grad_norm,
            criterion=nn.NLLLoss(), grad_sample_mode="ghost" if per_sample_gradients else "no_op")
        if per_sample_gradients:
            private_model, private_optimizer, criterion, private_loader = wrapped
        else:
            (private_model, private_optimizer, private_loader), criterion = wrapped, nn.NLLLoss()
        if self.secure:
            private_loader = self._secure_sampling(private_loader)
            private_optimizer.add_noise = functools.partial(add_secure_noise, private_optimizer, self.source())
        return PrivateTraining(engine, private_model, private_optimizer, private_loader, criterion)

    def source(self) -> SecureRandom:
        """This round's secure stream, made on first use (a worker makes a LocalDP per round)."""
        if self._source is None:
            self._source = SecureRandom()
        return self._source

    def gaussian(self, shape: torch.Size, std: float, like: torch.Tensor) -> torch.Tensor:
        """A release mechanism's noise: from the secure stream under --secure-noise, else from torch's
        generator, which the round's seed set."""
        if self.secure:
            return self.source().normal(shape, std, like)
        return torch.randn(shape, dtype=like.dtype, device=like.device) * std

    def _secure_sampling(self, loader: DataLoader) -> DataLoader:
        """The same Poisson batches as Opacus's loader (its collate keeps empty batches), drawn securely."""
        sampler = loader.batch_sampler
        return DataLoader(loader.dataset, collate_fn=loader.collate_fn, batch_sampler=SecurePoissonSampler(
            sampler.num_samples, sampler.sample_rate, sampler.steps, self.source()))

    @staticmethod
    def spent(private: PrivateTraining) -> dict[str, float]:
        """This round's spending, as the named figures of the worker's reply."""
        return entry_extra(round_entry(private.engine))

    @staticmethod
    def release(loss: float, figures: dict[str, float]) -> tuple[float, dict[str, float]]:
        """What may leave the node: only the noised update. A loss measured on the private data is not
        covered by the guarantee, so it is sent as 0 and recorded as unknown. (The generator's loss
        only queries the DP-trained critic, so it may go.)"""
        return 0.0, {**figures, **({"critic_loss": 0.0} if "critic_loss" in figures else {})}

    def ledger(self) -> "Ledger":
        return Ledger(self.delta, self.accountant)

    @staticmethod
    def entry(figures: dict[str, float]) -> HistoryEntry:
        """A reply's accountant entry, checked: a worker's figures must not stop or fool the ledger."""
        noise, rate, steps = (figures.get(key, math.nan) for key in ENTRY_KEYS)
        if not (math.isfinite(noise) and noise > 0):
            raise FederationError(f"DP noise multiplier {noise!r} is not a positive number")
        if not 0 < rate <= 1:
            raise FederationError(f"DP sample rate {rate!r} is not in (0, 1]")
        if not (math.isfinite(steps) and steps == int(steps) and 1 <= steps <= MAX_STEPS):
            raise FederationError(f"DP steps {steps!r} is not a whole number in 1..{MAX_STEPS}")
        return noise, rate, int(steps)

    def round_figures(self, ledger: "Ledger") -> dict[str, float | str]:
        """The run's guarantee after a round: the largest epsilon of any worker so far."""
        return {"epsilon": ledger.worst(), "delta": self.delta, "accountant": self.accountant}


@functools.lru_cache(maxsize=64)
def planned_noise(target_epsilon: float, delta: float, rate: float, steps: int, accountant: str) -> float:
    """The smallest noise multiplier that keeps `steps` steps at `rate` within the target: Opacus's
    search (get_noise_multiplier: doubling from 20, then bisection to 0.01 of epsilon), run on the
    bounded `epsilon`, so that a candidate out of the accountant's reach counts as too little noise
    instead of allocating gigabytes (Opacus's own search tries noise down to half its answer).
    Cached: a node plans it for its policy and again for its training in the same round."""
    def spent(noise: float) -> float:
        figure = epsilon([(noise, rate, steps)], delta, accountant)
        if accountant == "prv" and math.isinf(figure):
            check_prv_reach(target_epsilon, delta, rate, steps)
        return figure

    low, high, spent_high = 0.0, PLAN_START, math.inf
    while spent_high > target_epsilon:
        high *= 2
        if high > MAX_PLANNED_NOISE:
            raise OptionsError(f"--target-epsilon {target_epsilon:g} at delta {delta:g} over {steps} step(s) at "
                               f"sample rate {rate:g} is out of the {accountant} accountant's reach: no noise "
                               f"multiplier up to {MAX_PLANNED_NOISE:g} reaches it")
        spent_high = spent(high)
    while target_epsilon - spent_high > PLAN_TOLERANCE and high - low > PLAN_WIDTH * high:
        middle = (low + high) / 2
        spent_middle = spent(middle)
        if spent_middle < target_epsilon:
            high, spent_high = middle, spent_middle
        else:
            low = middle
    return high


@functools.lru_cache(maxsize=64)
def check_prv_reach(target_epsilon: float, delta: float, rate: float, steps: int) -> None:
    """Refuses a target whose RDP answer (a little more noise than PRV's) is out of PRV's reach. The
    planner asks only once a candidate is out of reach: the grid shrinks as the noise grows, so while
    every candidate is within reach so is RDP's answer, and the check (an RDP search) would only cost time."""
    if prv_points([(planned_noise(target_epsilon, delta, rate, steps, "rdp"), rate, steps)], delta) > MAX_PRV_POINTS:
        raise OptionsError(f"--target-epsilon {target_epsilon:g} over {steps} step(s) is out of the prv accountant's "
                           f"reach (its grid would exceed {MAX_PRV_POINTS:,} points): use --accountant rdp, or fewer "
                           "rounds or epochs")


def prv_points(history: Sequence[HistoryEntry], delta: float) -> int:
    """The size of the grid Opacus's PRV accountant would allocate for `history`: its own safe domain,
    computed without allocating the grid."""
    from opacus.accountants import PRVAccountant
    from opacus.accountants.analysis.prv import PoissonSubsampledGaussianPRV

    return PRVAccountant()._get_domain(
        prvs=[PoissonSubsampledGaussianPRV(rate, noise) for noise, rate, _ in history],
        num_self_compositions=[int(entry[2]) for entry in history], eps_error=PRV_EPS_ERROR,
        delta_error=delta / 1000).size


class OutOfReach(Exception):
    """A PRV grid above MAX_PRV_POINTS, found before it is allocated."""


@functools.cache
def bounded_prv() -> type:
    """Opacus's PRV accountant, refusing a grid above MAX_PRV_POINTS where it computes its domain, so
    that the domain (nearly all of an epsilon's cost: 0.41 of 0.44 s) is computed once, not twice. A
    class made on first use, as Opacus is imported where it is used."""
    from opacus.accountants import PRVAccountant

    class BoundedPRV(PRVAccountant):
        def _get_domain(self, **arguments: Any) -> Any:
            domain = super()._get_domain(**arguments)
            if domain.size > MAX_PRV_POINTS:
                raise OutOfReach(domain.size)
            return domain

    return BoundedPRV


def add_secure_noise(optimizer: Any, source: SecureRandom) -> None:
    """Opacus's DPOptimizer.add_noise with the noise from `source`: what its secure mode does when
    torchcsprng exists. Installed on the optimizer instance by LocalDP.wrap."""
    from opacus.optimizers.optimizer import _check_processed_flag, _mark_as_processed

    for p in optimizer.params:
        _check_processed_flag(p.summed_grad)
        noise = source.normal(p.summed_grad.shape, optimizer.noise_multiplier * optimizer.max_grad_norm,
                              p.summed_grad)
        p.grad = (p.summed_grad + noise).view_as(p)
        _mark_as_processed(p.summed_grad)


def release_entry(noise_multiplier: float) -> HistoryEntry:
    """One Gaussian release of full sensitivity: a single full-batch step (sample rate 1)."""
    return noise_multiplier, 1.0, 1


def round_entry(engine: Any) -> HistoryEntry:
    """This round's spending as one accountant entry (Opacus merges equal consecutive steps)."""
    steps = sum(entry[2] for entry in engine.accountant.history)
    noise, rate, _ = engine.accountant.history[-1]
    return float(noise), float(rate), int(steps)


def epsilon(history: Sequence[HistoryEntry], delta: float, accountant: str) -> float:
    """Epsilon of the composition of every entry in `history`, by Opacus's own accountant; infinite
    where it is out of the accountant's reach (`out_of_reach`), in bounded time and memory."""
    if not history:
        return 0.0
    if below_floor(history):
        return math.inf
    from opacus.accountants import RDPAccountant

    composed = bounded_prv()() if accountant == "prv" else RDPAccountant()
    composed.history = [tuple(entry) for entry in history]
    precision = {"eps_error": PRV_EPS_ERROR} if accountant == "prv" else {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        try:
            value = float(composed.get_epsilon(delta=delta, **precision))
        except OutOfReach:
            return math.inf
    return value if math.isfinite(value) else math.inf


def out_of_reach(history: Sequence[HistoryEntry], delta: float, accountant: str) -> bool:
    """Whether epsilon is certainly huge or too costly to compute: an entry's noise below NOISE_FLOOR,
    or a PRV grid above MAX_PRV_POINTS. A figure can still be out of reach of float arithmetic (RDP's
    of 10^7 steps at noise 0.1 overflows): the caller's `epsilon` then reports it infinite too."""
    if below_floor(history):
        return True
    return accountant == "prv" and bool(history) and prv_points(history, delta) > MAX_PRV_POINTS


def below_floor(history: Sequence[HistoryEntry]) -> bool:
    """Whether an entry's noise is below NOISE_FLOOR (or not a number)."""
    return any(not entry[0] >= NOISE_FLOOR for entry in history)


def entry_extra(entry: HistoryEntry) -> dict[str, float]:
    """An accountant entry as the named figures of a worker's reply."""
    return dict(zip(ENTRY_KEYS, map(float, entry)))


def entry_from_extra(extra: dict[str, float]) -> HistoryEntry:
    noise, rate, steps = (extra[key] for key in ENTRY_KEYS)
    return noise, rate, int(steps)


class Ledger:
    """Every worker's accountant history on the server, and the epsilon each has spent so far."""

    def __init__(self, delta: float, accountant: str) -> None:
        self.delta = delta
        self.accountant = accountant
        self.histories: dict[int, list[HistoryEntry]] = {}
        self._epsilons: dict[int, float] = {}

    def add(self, rank: int, entry: HistoryEntry) -> None:
        self.histories.setdefault(rank, []).append(entry)
        self._epsilons[rank] = epsilon(self.histories[rank], self.delta, self.accountant)

    def restore(self, histories: dict[int, list[HistoryEntry]]) -> None:
        """Take over the histories of a checkpoint."""
        for rank, history in histories.items():
            self.histories[rank] = list(history)
            self._epsilons[rank] = epsilon(history, self.delta, self.accountant)

    def epsilon_of(self, rank: int) -> float:
        return self._epsilons.get(rank, 0.0)

    def worst(self) -> float:
        """The largest epsilon of any worker: the run's privacy guarantee for every data owner."""
        return max(self._epsilons.values(), default=0.0)
