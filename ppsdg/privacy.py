"""Local differential privacy: DP-SGD with Opacus on a worker, and the accounting over all rounds.

A worker's privacy spending composes over every round it takes part in. A vantage6 node keeps
nothing between tasks, so each reply carries the round's accountant entry (noise multiplier,
sample rate, steps) and the server holds every worker's history: the epsilon it reports is the one
Opacus's accountant gives for that whole history, never a per-round figure.

Opacus is imported where it is used: it costs 2.3 s to import, in every vantage6 container of every
round, and a run without --local_dp never needs it.
"""
import enum
import functools
import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from ppsdg import discrete_gaussian
from ppsdg.config import LocalTraining, Privacy
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
# The first block of terms `fractional_log_a` computes at once; each next block is four times larger.
SERIES_CHUNK = 64
# Opacus's noise search: its start, its tolerance in epsilon, and the noise where it gives up; and
# where the bisection stops short of that tolerance when the noise just below is out of reach.
PLAN_START, PLAN_TOLERANCE, MAX_PLANNED_NOISE, PLAN_WIDTH = 10.0, 0.01, 1e6, 1e-6
DOUBLINGS = int(math.log2(MAX_PLANNED_NOISE / PLAN_START))
# The noise planner's bounds on the PRV accountant. Its exact figure costs about 180 bytes and 0.25 to
# 0.9 us a point of its grid (0.9 where half the size is a prime, for the FFT), and 20 ms more:
# PLAN_PRV_POINTS keeps one under 180 MiB and a second; a plan's figures take at most PLAN_WORK
# points, FIGURE_POINTS more a figure (1.6 s at the worst rate). A coarse figure (eps_error 0.1, a
# tenth of the grid) lies within COARSE_SLACK / sqrt(epsilon), and at least MIN_COARSE_SLACK, of the
# exact one (measured on 250 random plans: at most 0.0101 below epsilon 0.05, 0.0085 below 0.2,
# 0.0039 below 0.5, 0.0014 below 2, 0.0011 up to 32). NARROW_STEPS secant steps toward the band start
# a plan; where its answer's grid exceeds SEARCH_POINTS, their answer stands (Opacus's search would
# take an exact figure or two more). The smallest noise in reach is found to REACH_WIDTH of itself.
PLAN_PRV_POINTS, PLAN_WORK, FIGURE_POINTS = 1_000_000, 1_800_000, 50_000
COARSE_EPS_ERROR, COARSE_SLACK, MIN_COARSE_SLACK = 0.1, 0.005, 0.002
NARROW_STEPS, SEARCH_POINTS, REACH_WIDTH = 4, 400_000, 1e-3

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


def default_target_applies(privacy: Privacy) -> bool:
    """Whether -ldp came with neither a noise multiplier nor a target: the noise is then planned
    for DEFAULT_TARGET_EPSILON, never left to a fixed multiplier whose epsilon nobody chose."""
    return privacy.local_dp and privacy.noise_multiplier is None and privacy.target_epsilon is None


def planned_target(privacy: Privacy) -> float | None:
    """The epsilon the noise is planned to spend over the run's rounds; None for a given noise multiplier."""
    return DEFAULT_TARGET_EPSILON if default_target_applies(privacy) else privacy.target_epsilon


class LocalDP:
    """A run's local DP, decided once from its privacy settings, its rounds and its local training (none
    for a synthesizer that releases statistics): how a worker trains, what its reply may carry, and how
    the server accounts for it. A run without --local_dp has none (`of`)."""

    figures = ENTRY_KEYS
    withheld = ("train_loss", "critic_loss")

    def __init__(self, privacy: Privacy, num_rounds: int, training: LocalTraining | None = None) -> None:
        self.noise = privacy.noise_multiplier
        self.target_epsilon = planned_target(privacy)
        self.delta = privacy.delta
        self.accountant = privacy.accountant
        self.secure = privacy.secure_noise
        # Under secure aggregation, the colluders the run assumes (`secure_aggregation`); None: off.
        self.colluders = privacy.colluders if privacy.secure_aggregation else None
        self.training = training
        self.planned_rounds = num_rounds
        self._source: SecureRandom | None = None

    @classmethod
    def of(cls, privacy: Privacy, num_rounds: int, training: LocalTraining | None = None) -> "LocalDP | None":
        return cls(privacy, num_rounds, training) if privacy.local_dp else None

    def _sgd(self) -> LocalTraining:
        if self.training is None:
            raise FederationError("this run releases statistics: it has no DP-SGD")
        return self.training

    def noise_multiplier(self, num_samples: int) -> float:
        """The noise for this worker: given, or the smallest that keeps all rounds within the target.

        The budget is planned for a worker that takes part in every round, the most it can spend.
        """
        if self.target_epsilon is None:
            return self.noise
        sgd = self._sgd()
        steps = self.planned_rounds * sgd.epochs * batches_per_epoch(num_samples, sgd.batch_size)
        return planned_noise(self.target_epsilon, self.delta, sample_rate(num_samples, sgd.batch_size), steps,
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
        sgd = self._sgd()
        batches = batches_per_epoch(num_samples, sgd.batch_size)
        return self.noise_multiplier(num_samples), sample_rate(num_samples, sgd.batch_size), sgd.epochs * batches

    def wrap(self, model: nn.Module, optimizer: Optimizer, images: torch.Tensor,
             labels: torch.Tensor, per_sample_gradients: bool = True) -> PrivateTraining:
        """Wrap a worker's model, optimizer and data for DP-SGD with Poisson sampling.

        The classifier uses Opacus's ghost clipping: the same flat clipping and noise as per-sample
        gradients, without materializing them (2.1 s against 5.2 s an epoch of 720 samples here).
        With per_sample_gradients=False, Opacus computes none: the caller sets each parameter's
        `grad_sample` itself (the WGAN-GP critic, whose penalty Opacus's hooks cannot differentiate).
        """
        from opacus import PrivacyEngine

        sgd = self._sgd()
        engine = PrivacyEngine(accountant=self.accountant)
        loader = DataLoader(TensorDataset(images, labels), batch_size=sgd.batch_size)
        wrapped = engine.make_private(
            module=model, optimizer=optimizer, data_loader=loader, poisson_sampling=True,
            noise_multiplier=self.noise_multiplier(len(labels)), max_grad_norm=sgd.max_grad_norm,
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

    def integer_noise(self, sigma: np.ndarray, seed: int) -> np.ndarray:
        """Discrete Gaussian noise of standard deviation `sigma` per entry (a secure aggregation share, in
        fixed-point units): from the secure stream under --secure-noise, else seeded by `seed`."""
        generator = self.source().generator if self.secure else np.random.default_rng(seed)
        return discrete_gaussian.sample(generator, sigma)

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


class Verdict(enum.Enum):
    """A noise multiplier against the target, as Opacus's noise search takes it: its epsilon is at the
    target or above; below it by more than the tolerance; or below it by at most the tolerance."""

    FAIL = enum.auto()
    CONTINUE = enum.auto()
    STOP = enum.auto()


def verdict_of(figure: float, target: float) -> Verdict:
    if figure >= target:
        return Verdict.FAIL
    return Verdict.CONTINUE if target - figure > PLAN_TOLERANCE else Verdict.STOP


@functools.lru_cache(maxsize=64)
def planned_noise(target_epsilon: float, delta: float, rate: float, steps: int, accountant: str) -> float:
    """The smallest noise multiplier that keeps `steps` steps at `rate` within the target, to
    PLAN_TOLERANCE: Opacus's own answer (`opacus_search`), except a PRV plan whose exact grid exceeds
    SEARCH_POINTS, answered by secant steps from RDP's answer (`PrvSpending.start`: within the
    tolerance too, not always Opacus's noise). Cached: a node plans it for its policy and again for its
    training in the same round."""
    if accountant == "rdp":
        return opacus_search(RdpSpending(target_epsilon, delta, rate, steps, accountant))
    spending = PrvSpending(target_epsilon, delta, rate, steps)
    answer = spending.start()
    return opacus_search(spending) if answer is None else answer


def opacus_search(spending: "RdpSpending") -> float:
    """Opacus's noise search (get_noise_multiplier: doubling from 20, then bisection until epsilon is
    within the tolerance below the target), the same steps, each step's verdict from `spending`, which
    bounds the work before it calls Opacus: the same answer, as long as epsilon falls as the noise
    grows and a coarse PRV figure lies within its slack of the exact one."""
    low, high, verdict = 0.0, PLAN_START, Verdict.FAIL
    while verdict is Verdict.FAIL:
        high *= 2
        if high > MAX_PLANNED_NOISE:
            raise spending.exhausted()
        verdict = spending.verdict(high)
    while verdict is Verdict.CONTINUE and high - low > PLAN_WIDTH * high:
        middle = (low + high) / 2
        middle_verdict = spending.verdict(middle)
        if middle_verdict is Verdict.FAIL:
            low = middle
        else:
            high, verdict = middle, middle_verdict
    return spending.confirmed(high)


@dataclass
class RdpSpending:
    """The RDP accountant's verdicts: its exact figure, cheap once `rdp_epsilon` skips the orders that
    cannot reach the target."""

    target: float
    delta: float
    rate: float
    steps: int
    accountant: str

    def verdict(self, noise: float) -> Verdict:
        history = [(noise, self.rate, self.steps)]
        return verdict_of(math.inf if below_floor(history) else rdp_epsilon(history, self.delta, self.target),
                          self.target)

    def confirmed(self, noise: float) -> float:
        """The answer, whose verdict was its exact figure's."""
        return noise

    def exhausted(self) -> OptionsError:
        """The refusal of a target that the largest noise the search tries does not reach."""
        return self.refusal(f"at delta {self.delta:g} over {self.steps} step(s) at sample rate {self.rate:g}",
                            f"no noise multiplier up to {MAX_PLANNED_NOISE:g} reaches it")

    def refusal(self, where: str, why: str) -> OptionsError:
        return OptionsError(f"--target-epsilon {self.target:g} {where} is out of the {self.accountant} accountant's "
                            f"reach: {why}")


class PrvSpending(RdpSpending):
    """The PRV accountant's verdicts. Its exact figure costs Opacus's whole grid, so a verdict comes
    from the cheapest that settles it: the figures already measured (epsilon falls as the noise grows:
    below a noise at the target or above, a noise is too; above one below the band, so is a noise); a
    coarse figure (Opacus's with a tenth of the grid) clear of the band by more than its error, where
    the target is large enough for that; the exact figure. A noise whose exact grid exceeds
    PLAN_PRV_POINTS, or below the floor, is too little noise, unless the smallest in reach is below the
    band: the target is then refused, as is a plan whose figures would take more than PLAN_WORK points."""

    def __init__(self, target: float, delta: float, rate: float, steps: int) -> None:
        super().__init__(target, delta, rate, steps, "prv")
        self.bounds: dict[float, tuple[float, float]] = {}
        self.exact: dict[float, float] = {}
        self.reach_from = 0.0
        self.work = 0.0
        self.coarse = coarse_slack(target) < PLAN_TOLERANCE

    def start(self) -> float | None:
        """Figures from RDP's answer, an upper bound of PRV's that RDP plans cheaply (refused where even its
        grid is out of reach), by secant steps on coarse figures toward the middle of the band: the answer,
        where a figure lands there and its exact grid exceeds SEARCH_POINTS (its exact figure in the band
        too); else figures just outside either edge, which settle most of Opacus's search. Nothing where
        RDP cannot reach the target (the doubling's first noise below it then settled: `settle_doubling`),
        nor below the targets a coarse figure can settle, where only Opacus's own steps' figures count."""
        try:
            noise = planned_noise(self.target, self.delta, self.rate, self.steps, "rdp")
        except OptionsError:
            self.settle_doubling()
            return None
        if not self.within_reach(noise):
            raise self.reach_refusal()
        if not self.coarse:
            return None
        self.measure(noise, COARSE_EPS_ERROR)
        landed = self.approach(self.target - PLAN_TOLERANCE / 2, NARROW_STEPS)
        if landed is None:
            return None
        if self.grid(landed, PRV_EPS_ERROR) > SEARCH_POINTS:
            self.measure(landed, PRV_EPS_ERROR)
            return landed if self.known(landed) is Verdict.STOP else None
        margin = 2 * coarse_slack(self.target)
        self.approach(self.target + margin, 1)
        self.approach(self.target - PLAN_TOLERANCE - margin, 1)
        return None

    def settle_doubling(self) -> None:
        """Which of the doubling's noises (20, 40, ... up to MAX_PLANNED_NOISE) is the first below the
        target, by bisection on their count after the first: a few figures, not one a doubling."""
        if self.verdict(2 * PLAN_START) is not Verdict.FAIL:
            return
        low, high = 1, DOUBLINGS
        while high - low > 1:
            middle = (low + high) // 2
            if self.verdict(PLAN_START * 2**middle) is Verdict.FAIL:
                low = middle
            else:
                high = middle

    def approach(self, aim: float, steps: int) -> float | None:
        """Secant steps (`secant`, on log epsilon over log noise) from the figures measured toward `aim`,
        each a coarse figure: the noise whose figure lands within a quarter of the tolerance of it, else
        nothing."""
        for _ in range(steps):
            points = [(math.log(point), math.log(sum(bounds) / 2 / aim))
                      for point, bounds in sorted(self.bounds.items()) if sum(bounds) > 0]
            if not points:
                return None
            noise = math.exp(secant(points))
            if not self.within_reach(noise):
                noise = self.reach_boundary(noise)
            if noise in self.bounds:
                return None
            self.measure(noise, COARSE_EPS_ERROR)
            if noise == self.reach_from and self.known(noise) is Verdict.CONTINUE:
                raise self.reach_refusal()
            if abs(sum(self.bounds[noise]) / 2 - aim) <= PLAN_TOLERANCE / 4:
                return noise
        return None

    def verdict(self, noise: float) -> Verdict:
        if not self.within_reach(noise):
            return self.beyond_reach(noise)
        known = self.known(noise)
        if known is None and self.coarse:
            self.measure(noise, COARSE_EPS_ERROR)
            known = self.known(noise)
        if known is None:
            self.measure(noise, PRV_EPS_ERROR)
            known = self.known(noise)
        return known

    def known(self, noise: float) -> Verdict | None:
        """The verdict the figures measured so far settle, if they do."""
        if noise in self.exact:
            return verdict_of(self.exact[noise], self.target)
        least = max((low for point, (low, _) in self.bounds.items() if point >= noise), default=-math.inf)
        most = min((high for point, (_, high) in self.bounds.items() if point <= noise), default=math.inf)
        if least >= self.target:
            return Verdict.FAIL
        return Verdict.CONTINUE if self.target - most > PLAN_TOLERANCE else None

    def measure(self, noise: float, eps_error: float) -> None:
        """Opacus's figure at `eps_error`, as bounds of the exact one (PRV_EPS_ERROR's): a coarse figure,
        shifted by the difference of the two errors it adds, within `coarse_slack` of it. Refused past
        PLAN_WORK grid points (FIGURE_POINTS more a figure)."""
        self.work += self.grid(noise, eps_error) + FIGURE_POINTS
        if self.work > PLAN_WORK:
            raise self.refusal(f"over {self.steps} step(s)", f"planning it would take more than {PLAN_WORK:,} grid "
                               "points of its figures: use --accountant rdp, or fewer rounds or epochs")
        try:
            figure = prv_epsilon([(noise, self.rate, self.steps)], self.delta, eps_error, PLAN_PRV_POINTS)
        except OutOfReach as error:
            raise self.refusal(f"at delta {self.delta:g} over {self.steps} step(s)", f"{error}: use --accountant "
                               "rdp") from error
        if eps_error == PRV_EPS_ERROR:
            self.exact[noise] = figure
            self.bounds[noise] = figure, figure
        else:
            figure += PRV_EPS_ERROR - eps_error
            self.bounds[noise] = figure - coarse_slack(figure), figure + coarse_slack(figure)

    def grid(self, noise: float, eps_error: float) -> float:
        return grid_size(noise, self.rate, self.steps, eps_error, self.delta / 1000)

    def within_reach(self, noise: float) -> bool:
        """Whether the exact grid of `noise` is within reach; known without it above a noise measured (the
        grid shrinks as the noise grows) and below `reach_from`."""
        if noise < self.reach_from or below_floor([(noise, self.rate, self.steps)]):
            return False
        return any(point <= noise for point in self.bounds) or not grid_beyond(
            self.grid(noise, PRV_EPS_ERROR), self.delta / 1000, PLAN_PRV_POINTS)

    def reach_boundary(self, noise: float) -> float:
        """The smallest noise in reach above `noise` (out of reach), to REACH_WIDTH of it, found on the grid's
        size alone between `noise` and the smallest noise measured above it."""
        low, high = noise, min(point for point in self.bounds if point > noise)
        while high - low > REACH_WIDTH * high:
            middle = (low + high) / 2
            low, high = (low, middle) if self.within_reach(middle) else (middle, high)
        self.reach_from = high
        return high

    def beyond_reach(self, noise: float) -> Verdict:
        """Too little noise (its exact grid is out of reach); but first, unless the figures settle that it
        is, the smallest noise in reach above it must not be below the band, where the answer is out of
        reach."""
        if self.reach_from > 0 or self.known(noise) is Verdict.FAIL or not any(point > noise for point in self.bounds):
            return Verdict.FAIL
        if self.verdict(self.reach_boundary(noise)) is Verdict.CONTINUE:
            raise self.reach_refusal()
        return Verdict.FAIL

    def confirmed(self, noise: float) -> float:
        """The answer, its exact figure below the target: measured where only other figures settled it
        (the search ended short of the band, at the noise floor)."""
        if noise not in self.exact and self.within_reach(noise):
            self.measure(noise, PRV_EPS_ERROR)
        if self.exact.get(noise, math.inf) >= self.target:
            raise self.reach_refusal()
        return noise

    def exhausted(self) -> OptionsError:
        """As RDP's, unless the largest noise the search tries is out of reach: then the grid is the reason."""
        return super().exhausted() if self.within_reach(PLAN_START * 2**DOUBLINGS) else self.reach_refusal()

    def reach_refusal(self) -> OptionsError:
        finer = (f" (fewer at delta {self.delta:g}, for Opacus's precision)"
                 if grid_beyond(PLAN_PRV_POINTS, self.delta / 1000, PLAN_PRV_POINTS) else "")
        return self.refusal(f"over {self.steps} step(s)", f"its grid would exceed {PLAN_PRV_POINTS:,} points{finer}: "
                            "use --accountant rdp, or fewer rounds or epochs")


@functools.lru_cache(maxsize=1024)
def grid_size(noise: float, rate: float, steps: int, eps_error: float, delta_error: float) -> float:
    """The size of Opacus's PRV grid for one entry, infinite above PLAN_PRV_POINTS: cached, as the
    planner asks for it again."""
    try:
        return prv_domain([(noise, rate, steps)], eps_error, delta_error, PLAN_PRV_POINTS).size
    except OutOfReach:
        return math.inf


def coarse_slack(figure: float) -> float:
    """How far the exact figure may lie from a coarse one: COARSE_SLACK / sqrt(epsilon), at least
    MIN_COARSE_SLACK."""
    return max(COARSE_SLACK / math.sqrt(max(figure, PRV_EPS_ERROR)), MIN_COARSE_SLACK)


def secant(points: Sequence[tuple[float, float]]) -> float:
    """Where y crosses 0 on the line through two of `points` (x, y), y falling as x grows (log epsilon
    less its aim, over log noise): the nearest on either side of 0, else the two nearest on the one
    side, else through the one point at slope -1 (epsilon as 1 / noise); kept within the planner's
    noise range, and at the first point's x if the two are level."""
    above, below = [point for point in points if point[1] > 0], [point for point in points if point[1] <= 0]
    pair = [above[-1], below[0]] if above and below else (above[-2:] if above else below[:2])
    (x0, y0), (x1, y1) = pair if len(pair) == 2 else (pair[0], (pair[0][0] + 1, pair[0][1] - 1))
    crossing = x0 - y0 * (x1 - x0) / (y1 - y0) if y1 != y0 else x0
    return min(max(crossing, math.log(NOISE_FLOOR)), math.log(MAX_PLANNED_NOISE))


def prv_points(history: Sequence[HistoryEntry], delta: float) -> int:
    """The size of the grid Opacus's PRV accountant would allocate for `history`: its own safe domain,
    computed without allocating the grid."""
    return prv_domain(history, PRV_EPS_ERROR, delta / 1000).size


def prv_domain(history: Sequence[HistoryEntry], eps_error: float, delta_error: float,
               max_points: float = math.inf) -> Any:
    """Opacus's PRV domain (PRVAccountant._get_domain: compute_safe_domain_size's bound, then the mesh),
    the same figures, with its two RDP epsilons from `rdp_epsilon`: Opacus computes each order of the
    same noise twice, and at sample rate 1/2 one epsilon takes it up to 2.5 s. OutOfReach where the
    grid would exceed `max_points`, told from epsilons computed only as far as that needs."""
    from opacus.accountants.analysis.prv import Domain

    total = sum(int(entry[2]) for entry in history)
    mesh = eps_error / np.sqrt(total * np.log(12 / delta_error) / 2)
    limit = (max_points + 1) * mesh / 2 - 3
    single = max(rdp_epsilon([(noise, rate, 1)], delta_error / (8 * total), limit) for noise, rate, _ in history)
    bound = max(max(rdp_epsilon(history, delta_error / 4, limit), single), eps_error)
    if bound > limit:
        raise OutOfReach(f"its grid would exceed {max_points:,} points")
    return Domain.create_aligned(-(bound + 3), bound + 3, mesh)


def rdp_epsilon(history: Sequence[HistoryEntry], delta: float, bound: float = math.inf) -> float:
    """Opacus's RDP epsilon of `history` (RDPAccountant.get_epsilon, the same figure) where it is at most
    `bound`, and a figure above `bound` where it is not. The orders go from the largest down (Opacus's
    series are longest at the low ones: up to 250,000 terms an order at sample rate 1/2, 2.5 s an
    epsilon), and an order that cannot set the minimum is not computed: its conversion term plus a
    lower bound of its RDP, from the convexity of (order - 1) x RDP in the order through the two
    orders above it, is above the bound or the best order so far."""
    from opacus.accountants import RDPAccountant
    from opacus.accountants.analysis.rdp import get_privacy_spent

    orders = np.atleast_1d(RDPAccountant.DEFAULT_ALPHAS)
    conversion = 0 - (np.log(delta) + np.log(orders)) / (orders - 1) + np.log((orders - 1) / orders)
    rdp = np.full((len(history), len(orders)), np.inf)
    above: list[tuple[float, float]] = []
    for index in reversed(range(len(orders))):
        order = float(orders[index])
        if rdp_floor(above, order) + conversion[index] > bound:
            continue
        rdp[:, index] = [order_rdp(rate, noise, order) for noise, rate, _ in history]
        composed = sum(rdp[row, index] * entry[2] for row, entry in enumerate(history))
        bound = min(bound, composed + conversion[index])
        above.append((order, (order - 1) * composed))
    composed_rdp = sum([orders_rdp * entry[2] for orders_rdp, entry in zip(rdp, history)])
    return float(get_privacy_spent(orders=RDPAccountant.DEFAULT_ALPHAS, rdp=composed_rdp, delta=delta)[0])


def rdp_floor(above: Sequence[tuple[float, float]], order: float) -> float:
    """A lower bound of the composed RDP at `order`, from the last two (order, (order - 1) x RDP) of
    `above`, both larger: (order - 1) x RDP, a log moment generating function, is convex in the order,
    so the line through two of its points lies below it outside them; and it is never negative."""
    if len(above) < 2:
        return 0.0
    (high, high_moment), (low, low_moment) = above[-2:]
    moment = low_moment - (high_moment - low_moment) / (high - low) * (low - order)
    return moment / (order - 1) if moment > 0 else 0.0


@functools.lru_cache(maxsize=1 << 16)
def order_rdp(rate: float, noise: float, order: float) -> float:
    """One step's RDP at one order, Opacus's figure (analysis.rdp._compute_rdp): cached, as a search
    asks for the same noise again, and its fractional orders' series from `fractional_log_a`."""
    from opacus.accountants.analysis.rdp import compute_rdp

    if 0 < rate < 1 and not order.is_integer():
        return fractional_log_a(rate, noise, order) / (order - 1)
    return compute_rdp(q=rate, noise_multiplier=noise, steps=1, orders=order)


def fractional_log_a(rate: float, noise: float, order: float) -> float:
    """Opacus's log A at a fractional order (analysis.rdp._compute_log_a_for_frac_alpha), the same
    figure: its terms computed in numpy by its own formulas, then summed one by one in its order by
    its own _log_add and _log_sub, until the first term below e^-30. Opacus computes each term in
    Python, 8 us; at sample rate 1/2 an order takes up to 250,000 terms, 2.5 s an epsilon."""
    from opacus.accountants.analysis.rdp import _log_add, _log_sub
    from scipy import special

    z0 = noise**2 * math.log(1 / rate - 1) + 0.5
    scale = math.sqrt(2) * noise
    log_a0 = log_a1 = -math.inf
    start, size = 0, SERIES_CHUNK
    while True:
        i = np.arange(start, start + size, dtype=float)
        coef = special.binom(order, i)
        j = order - i
        log_coef = np.fromiter(map(math.log, np.abs(coef).tolist()), float, size)
        log_t0 = log_coef + i * math.log(rate) + j * math.log(1 - rate)
        log_t1 = log_coef + j * math.log(rate) + i * math.log(1 - rate)
        log_e0 = math.log(0.5) + (math.log(2) + special.log_ndtr(-((i - z0) / scale) * 2**0.5))
        log_e1 = math.log(0.5) + (math.log(2) + special.log_ndtr(-((z0 - j) / scale) * 2**0.5))
        log_s0 = log_t0 + (i * i - i) / (2 * (noise**2)) + log_e0
        log_s1 = log_t1 + (j * j - j) / (2 * (noise**2)) + log_e1
        for positive, s0, s1 in zip((coef > 0).tolist(), log_s0.tolist(), log_s1.tolist()):
            if positive:
                log_a0, log_a1 = _log_add(log_a0, s0), _log_add(log_a1, s1)
            else:
                log_a0, log_a1 = _log_sub(log_a0, s0), _log_sub(log_a1, s1)
            if max(s0, s1) < -30:
                return _log_add(log_a0, log_a1)
        start, size = start + size, 4 * size


class OutOfReach(Exception):
    """A PRV grid out of reach (`grid_beyond`), found before it is allocated."""


def grid_beyond(size: int, delta_error: float, max_points: int) -> bool:
    """Whether a PRV grid of `size` points is out of reach: above `max_points`, or so fine that Opacus
    would refuse it once filled, its floating-point error over delta less delta_error (999 delta_error
    at Opacus's default; 900 here, a margin for rounding)."""
    return size > max_points or float(np.finfo(np.longdouble).eps) * size > 900 * delta_error


@functools.cache
def bounded_prv() -> type:
    """Opacus's PRV accountant, refusing a grid out of reach (`grid_beyond`: above `max_points`,
    MAX_PRV_POINTS by default) where it computes its domain, which `prv_domain` computes for it. A
    class made on first use, as Opacus is imported where it is used."""
    from opacus.accountants import PRVAccountant

    class BoundedPRV(PRVAccountant):
        def __init__(self, max_points: int = MAX_PRV_POINTS) -> None:
            super().__init__()
            self.max_points = max_points

        def _get_domain(self, prvs: Sequence[Any], num_self_compositions: Sequence[int], eps_error: float,
                        delta_error: float) -> Any:
            history = [(prv.noise_multiplier, prv.sample_rate, steps)
                       for prv, steps in zip(prvs, num_self_compositions)]
            domain = prv_domain(history, eps_error, delta_error, self.max_points)
            if grid_beyond(domain.size, delta_error, self.max_points):
                raise OutOfReach(f"its grid of {domain.size:,} points is too fine for delta {1000 * delta_error:g}")
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
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        try:
            value = prv_epsilon(history, delta) if accountant == "prv" else rdp_epsilon(history, delta)
        except OutOfReach:
            return math.inf
    return value if math.isfinite(value) else math.inf


def prv_epsilon(history: Sequence[HistoryEntry], delta: float, eps_error: float = PRV_EPS_ERROR,
                max_points: int = MAX_PRV_POINTS) -> float:
    """Opacus's PRV epsilon of `history`, raising OutOfReach before it allocates a grid out of reach, and
    where Opacus cannot compute it (its RuntimeErrors: a delta near 1 leaves no epsilon on the grid)."""
    composed = bounded_prv()(max_points)
    composed.history = [tuple(entry) for entry in history]
    try:
        return float(composed.get_epsilon(delta=delta, eps_error=eps_error))
    except RuntimeError as error:
        raise OutOfReach(f"Opacus cannot compute it: {error}") from error


def out_of_reach(history: Sequence[HistoryEntry], delta: float, accountant: str) -> bool:
    """Whether epsilon is certainly huge or too costly to compute: an entry's noise below NOISE_FLOOR,
    or a PRV grid out of reach (`grid_beyond` MAX_PRV_POINTS). A figure can still be out of reach of
    float arithmetic (RDP's of 10^7 steps at noise 0.1 overflows), or of Opacus's PRV (a delta near 1):
    the caller's `epsilon` then reports it infinite too."""
    if below_floor(history):
        return True
    if accountant != "prv" or not history:
        return False
    try:
        size = prv_domain(history, PRV_EPS_ERROR, delta / 1000, MAX_PRV_POINTS).size
    except OutOfReach:
        return True
    return grid_beyond(size, delta / 1000, MAX_PRV_POINTS)


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
