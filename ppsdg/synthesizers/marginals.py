"""DP marginals: a table's synthetic records from noisy contingency tables that the nodes release,
summed by the server and fitted with a graphical model (Private-PGM, the `mbi` package).

A marginal of a few columns is a sum over records, so the sum of the nodes' noisy marginals is a
noisy marginal of the pooled data. Each round a node releases, for the cliques the round's plan
weights, w_k * (its counts of clique k) + N(0, m^2): one record changes one cell of each clique by
one, so with sum w_k^2 = 1 the release is one Gaussian mechanism of L2 sensitivity 1 and noise
multiplier m, which the ledger composes like a moments release (one full-batch step a round).

Round 1 surveys every 1-way and 2-way marginal (the 1-way ones weighted up: the model is built on
them), and each numeric or date column's fine histogram, from which decoding draws a value inside
its bin. The server then selects, from those noisy tables alone (post-processing: no node's raw
score, no extra privacy cost), the 2-way cliques worth measuring with the target: the edges of a
maximum spanning tree of the noise-corrected dependence of each pair, then the strongest further
pairs, each only where its dependence exceeds the noise its measurement would carry (a column left
out is measured with the target alone), while the graphical model stays small. Later rounds
measure only those and, again, every 1-way marginal, with the rest of the budget. Everything after the releases (selection,
estimation, sampling, decoding) is post-processing.
"""
from __future__ import annotations

import hashlib
import itertools
import math
from dataclasses import dataclass
from collections.abc import Callable, Iterable, Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm import tqdm

from backends import Tensors
from ppsdg import tables
from ppsdg.config import Table
from ppsdg.privacy import LocalDP
from ppsdg.errors import FederationError
from ppsdg.synthesizers.base import (Batch, ExactRelease, Synthesizer, Update, check_noise_variance, check_within,
                                    summed_std)
from ppsdg.tables import Schema

STATISTICS = ("survey", "measured", "plan", "survey_noise", "measure_noise")
NOISE_OF = {"survey": "survey_noise", "measured": "measure_noise"}
ONE_WAY_SHARE = 0.5
# The share of the survey's squared weight that measures the numeric and date columns' fine histograms,
# from which decoding draws a value inside its bin (`tables.Column.fine_edges`), instead of uniformly;
# it comes out of the pairs' share (the selection's). Chosen on the breadth set's validation splits
# (bench_marginals_variants.py: 7 tables, epsilon 3, one node's noise, seeds 1-3; 0, 0.05 and 0.1):
# mean 2-way TVD 0.0631 with none, 0.0624 at 0.05, 0.0621 at 0.1, mean TSTR AUC 0.822, 0.821, 0.822;
# at 0.05 Adult 0.0228 -> 0.0203 and NHIS 0.0211 -> 0.0183, NMES and credit lower too, DoctorContacts,
# colon and pbc within 1% higher. 0.05 and 0.1 are within each other's noise: the smaller share.
FINE_SHARE = 0.05
# The share of a measuring round's squared weight that re-measures every 1-way marginal: the model is
# built on them, and a few thousand rows' 1-way noise is most of their error. Chosen on the breadth
# set's validation splits (7 tables, epsilon 3, seeds 1-2; against none: mean 2-way TVD over
# independent columns' 0.81 -> 0.80, lower on 5 tables and equal on 2; mean TSTR AUC 0.815 -> 0.820).
PLAN_ONE_WAY_SHARE = 0.25
MAX_MODEL_MB = 8.0
ESTIMATION_ITERS = 1000
EXACT_STDDEV = 1.0
# How far above 1 a plan's squared weights may sum by rounding alone: `select` weights n cliques
# 1/sqrt(n) each, whose squares sum to 1 within a few ulps. A sum of 1 + 1e-9 is an L2 sensitivity of
# 1 + 5e-10, far inside the accountant's own precision (an epsilon within 0.01).
PLAN_ROUNDING = 1e-9


@dataclass(frozen=True)
class Layout:
    """Where each clique's cells lie in the flat vectors that travel: the cliques a round may
    measure (every 1-way marginal, every pair, every pair of other columns with the target, columns
    in schema order within a clique, then each numeric or date column's fine histogram, a 1-way
    marginal of a column of its own after the modelled ones) and the offset of each one's cells (one
    more: the end)."""

    schema: Schema
    target: int
    found: tuple[tuple[int, ...], ...]
    starts: np.ndarray

    @classmethod
    def of(cls, schema: Schema, target: str) -> "Layout":
        column = schema.names.index(target)
        count = len(schema.columns)
        pairs = list(itertools.combinations(range(count), 2))
        triples = [tuple(sorted((a, b, column))) for a, b in pairs if column not in (a, b)]
        fine = [(count + place,) for place in range(len(schema.fine))]
        found = tuple([(c,) for c in range(count)] + pairs + triples + fine)
        shape = schema.shape + schema.fine_shape
        sizes = [int(np.prod([shape[c] for c in clique])) for clique in found]
        return cls(schema, column, found, np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64))

    @property
    def shape(self) -> tuple[int, ...]:
        """The sizes of the modelled columns, then of the fine histograms' columns (`tables.encode`'s
        codes with `fine`)."""
        return self.schema.shape + self.schema.fine_shape

    def is_fine(self, clique: tuple[int, ...]) -> bool:
        return clique[0] >= len(self.schema.columns)

    def fine_weights(self, state: Tensors) -> dict[int, np.ndarray]:
        """The weights decoding gives each fine histogram's cells, by its column's place among the modelled
        columns: the survey's noisy count, negative taken as 0, plus the noise's standard deviation, so
        that where the noise is as large as the counts a bin's cells stay near alike (uniform inside
        the bin) and where the counts stand above it they decide."""
        first, weights = len(self.found) - len(self.schema.fine), self.survey_weights()
        unit = math.sqrt(float(state["survey_noise"]))
        return {column: np.clip(self.part(state["survey"].numpy(), first + place), 0.0, None)
                + unit / weights[first + place] for place, column in enumerate(self.schema.fine)
                if weights[first + place] > 0}

    @property
    def cells(self) -> int:
        return int(self.starts[-1])

    def part(self, vector: np.ndarray, index: int) -> np.ndarray:
        return vector[self.starts[index]:self.starts[index + 1]]

    def domain(self):
        """mbi's domain. Its attributes are the column numbers, not names: mbi keeps them in sets,
        whose order for text follows the process's hash seed, and then two processes (a gloo rank and
        a vantage6 container) would draw different records from the same model."""
        return mbi().Domain(tuple(range(len(self.schema.columns))), self.schema.shape)

    def plannable(self) -> np.ndarray:
        """Whether a measuring round's plan may weight each clique: a 1-way marginal of a modelled
        column, or a pair or triple holding the target (`select` plans nothing else)."""
        return np.array([(len(clique) == 1 and not self.is_fine(clique)) or self.target in clique
                         for clique in self.found])

    def survey_weights(self) -> np.ndarray:
        """Round 1's weights: ONE_WAY_SHARE of the squared weight over the 1-way marginals, FINE_SHARE
        over the fine histograms, the rest over the pairs, none on the triples; their squares sum to 1
        (the release's L2 sensitivity)."""
        columns, fine = len(self.schema.columns), len(self.schema.fine)
        pairs = sum(len(clique) == 2 for clique in self.found)
        fine_share = FINE_SHARE if fine else 0.0
        one_way = ONE_WAY_SHARE if pairs else 1.0 - fine_share
        squares = [fine_share / fine if self.is_fine(c) else one_way / columns if len(c) == 1 else
                   (1 - one_way - fine_share) / pairs if len(c) == 2 else 0.0 for c in self.found]
        return np.sqrt(np.asarray(squares))


class Marginals(nn.Module):
    """What the server accumulates: the survey's summed noisy cells, the summed noisy cells of the
    planned cliques, the plan (weights per clique; zero until the survey is in) and the summed
    variance of the unit noise each part carries (public: it follows from the noise multipliers)."""

    def __init__(self, cells: int, num_cliques: int) -> None:
        super().__init__()
        self.register_buffer("survey", torch.zeros(cells, dtype=torch.float64))
        self.register_buffer("measured", torch.zeros(cells, dtype=torch.float64))
        self.register_buffer("plan", torch.zeros(num_cliques, dtype=torch.float64))
        self.register_buffer("survey_noise", torch.zeros((), dtype=torch.float64))
        self.register_buffer("measure_noise", torch.zeros((), dtype=torch.float64))


def release(codes: np.ndarray, layout: Layout, weights: np.ndarray, noise_std: float,
            dp: LocalDP | None) -> np.ndarray:
    """The counts of every weighted clique plus Gaussian noise of std noise_std / w_k, zeros elsewhere."""
    vector = np.zeros(layout.cells, dtype=np.float64)
    for index in np.flatnonzero(weights):
        counts = torch.from_numpy(tables.marginal(codes, layout.shape, layout.found[index]))
        if dp is not None and noise_std > 0:
            counts = counts + dp.gaussian(counts.shape, noise_std / float(weights[index]), counts)
        vector[layout.starts[index]:layout.starts[index + 1]] = counts.numpy()
    return vector


def reply(model: nn.Module, surveying: bool, vector: torch.Tensor, variance: float) -> Tensors:
    """A node's reply: `vector` as the survey's cells or the measured ones, the other part zero, no plan,
    and the noise variance it carries declared for its part."""
    zeros, noise = torch.zeros_like(vector), torch.tensor(variance, dtype=torch.float64)
    return {"survey": vector if surveying else zeros, "measured": zeros if surveying else vector,
            "plan": torch.zeros_like(model.plan.cpu()), "survey_noise": noise if surveying else torch.zeros_like(noise),
            "measure_noise": torch.zeros_like(noise) if surveying else noise}


def dependence(state: Tensors, layout: Layout) -> dict[tuple[int, int], float]:
    """Each pair's distance from independence in the survey, in counts: the L1 distance of its noisy
    table from the product of the noisy 1-way shares, less what the noise alone would add."""
    weights = layout.survey_weights()
    unit = math.sqrt(float(state["survey_noise"]))
    survey = state["survey"].numpy()
    columns = len(layout.schema.columns)
    singles = [np.clip(layout.part(survey, c), 0, None) for c in range(columns)]
    total = max(float(np.mean([s.sum() for s in singles])), 1.0)
    shares = [s / s.sum() if s.sum() > 0 else np.full(len(s), 1 / len(s)) for s in singles]
    scores = {}
    for index, clique in enumerate(layout.found):
        if len(clique) != 2:
            continue
        a, b = clique
        table = layout.part(survey, index)
        expected = total * np.outer(shares[a], shares[b]).ravel()
        scores[clique] = float(np.abs(table - expected).sum()) - unit / weights[index] * math.sqrt(2 / math.pi) * len(table)
    return scores


def select(state: Tensors, layout: Layout, measuring_rounds: int) -> np.ndarray:
    """The plan of the measuring rounds, from the survey alone (post-processing): a tree-augmented
    naive Bayes where the survey shows the tree, naive Bayes where it does not, then more. A maximum
    spanning tree of the other columns' dependence; each of its edges, strongest first, measured
    together with the target where the pair's dependence exceeds the noise that measurement would
    carry (`noise_l1`), each column that no such triple holds measured with the target alone (a
    triple of weak dependence only adds noise the model reads as dependence); then further pairs,
    strongest first, each with the target, while the same test holds and the model stays within
    MAX_MODEL_MB. All weighted alike, beside every 1-way marginal re-measured with PLAN_ONE_WAY_SHARE
    of the squared weight (squares summing to 1)."""
    scores = dependence(state, layout)
    target = layout.target
    features = [c for c in range(len(layout.schema.columns)) if c != target]
    index = {clique: i for i, clique in enumerate(layout.found)}
    unit = math.sqrt(float(state["survey_noise"]) / max(measuring_rounds, 1))

    def with_target(columns: Iterable[int]) -> int:
        return index[tuple(sorted({*columns, target}))]

    tree = spanning_tree({pair: score for pair, score in scores.items() if target not in pair}, features)
    triples: list[int] = []
    joined: set[int] = set()
    for pair in sorted(tree, key=lambda p: (-scores[p], p)):
        planned = len(triples) + 1 + sum(1 for c in features if c not in joined | set(pair))
        if scores[pair] > noise_l1(layout, with_target(pair), unit, planned):
            triples.append(with_target(pair))
            joined |= set(pair)
    chosen = triples + [with_target((c,)) for c in features if c not in joined]
    for pair in sorted(scores, key=scores.get, reverse=True):
        if target in pair or pair in tree:
            continue
        candidate = with_target(pair)
        if scores[pair] <= noise_l1(layout, candidate, unit, len(chosen) + 1):
            break
        if model_mb(layout, [layout.found[i] for i in chosen + [candidate]]) <= MAX_MODEL_MB:
            chosen.append(candidate)
    plan = np.zeros(len(layout.found))
    plan[chosen] = math.sqrt((1 - PLAN_ONE_WAY_SHARE) / len(chosen))
    columns = len(layout.schema.columns)
    plan[:columns] = math.sqrt(PLAN_ONE_WAY_SHARE / columns)
    return plan


def noise_l1(layout: Layout, index: int, unit: float, planned: int) -> float:
    """The expected L1 size of the noise that measuring clique `index` in a plan of `planned` cliques
    (weights 1/sqrt(planned)) sums into its cells, unit being the measuring rounds' summed noise at
    weight 1: what a pair's dependence must exceed for its measurement to tell more than it blurs."""
    cells = int(layout.starts[index + 1] - layout.starts[index])
    return cells * unit * math.sqrt(planned) * math.sqrt(2 / math.pi)


def spanning_tree(scores: dict[tuple[int, int], float], nodes: Sequence[int]) -> list[tuple[int, int]]:
    """Kruskal's maximum spanning tree over `nodes`, pairs weighted by their score."""
    parent = {node: node for node in nodes}

    def root(node: int) -> int:
        while parent[node] != node:
            parent[node] = parent[parent[node]]
            node = parent[node]
        return node

    tree = []
    for pair in sorted(scores, key=lambda p: (-scores[p], p)):
        a, b = (root(c) for c in pair)
        if a != b:
            parent[a] = b
            tree.append(pair)
    return tree


def mbi():
    """The mbi package, with JAX as mbi advises: float64 (counts in the tens of thousands), and no
    persistent compilation cache (mbi compiles many small programs)."""
    import jax

    jax.config.update("jax_enable_x64", True)
    jax.config.update("jax_enable_compilation_cache", False)
    import mbi as package

    return package


def model_mb(layout: Layout, selected: Sequence[tuple[int, ...]]) -> float:
    singles = [(c,) for c in range(len(layout.schema.columns))]
    return mbi().junction_tree.hypothetical_model_size(layout.domain(), list(selected) + singles)


def measurements(state: Tensors, layout: Layout) -> list:
    """mbi's measurements: the survey's 1-way marginals, and for each planned clique its survey (if
    it had one) and its measured cells, each with the standard deviation of its summed noise."""
    survey_weights = layout.survey_weights()
    plan = state["plan"].numpy()
    survey, measured = state["survey"].numpy(), state["measured"].numpy()
    result = []

    def add(vector: np.ndarray, index: int, unit_variance: float, weight: float) -> None:
        stddev = math.sqrt(unit_variance) / weight if unit_variance > 0 else EXACT_STDDEV
        result.append(mbi().LinearMeasurement(layout.part(vector, index), layout.found[index], stddev=stddev))

    for index, clique in enumerate(layout.found):
        if layout.is_fine(clique):
            continue
        if survey_weights[index] > 0 and (len(clique) == 1 or plan[index] > 0):
            add(survey, index, float(state["survey_noise"]), survey_weights[index])
        if plan[index] > 0:
            add(measured, index, float(state["measure_noise"]), plan[index])
    return result


def release_fit(state: Tensors, layout: Layout, codes: np.ndarray) -> dict[str, float | int]:
    """How closely records (codes) follow the marginals the nodes released and the model was fitted on:
    each planned clique's measured cells, and each 1-way marginal of the survey, as shares (negative noisy
    cells taken as 0). The mean and the largest total variation distance over them. It reads released
    figures only, no data: a researcher's check that the fit converged, not a measure of fidelity (the
    released marginals carry the DP noise)."""
    plan, weights = state["plan"].numpy(), layout.survey_weights()
    gaps = []
    for index, clique in enumerate(layout.found):
        if plan[index] > 0:
            released = layout.part(state["measured"].numpy(), index)
        elif len(clique) == 1 and weights[index] > 0:
            released = layout.part(state["survey"].numpy(), index)
        else:
            continue
        shares = np.clip(released, 0.0, None)
        if shares.sum() > 0:
            counts = tables.marginal(codes, layout.shape, clique)
            gaps.append(0.5 * float(np.abs(shares / shares.sum() - counts / max(counts.sum(), 1.0)).sum()))
    return {"released_marginals": len(gaps), "mean_tvd": float(np.mean(gaps)) if gaps else 0.0,
            "max_tvd": max(gaps, default=0.0)}


_FITTED: dict[str, object] = {}


def fitted(state: Tensors, layout: Layout) -> object:
    """The graphical model that best explains the measurements (mirror descent), kept for the last
    state: a run draws its synthetic set and its snapshots from the same state. A bar shows the fit's
    progress (a block is mbi's 50 iterations; the first one also compiles) where stderr is a terminal."""
    digest = hashlib.sha256(layout.schema.text().encode() + bytes([layout.target])
                            + b"".join(state[name].numpy().tobytes() for name in STATISTICS)).hexdigest()
    if digest not in _FITTED:
        _FITTED.clear()
        estimation = mbi().estimation
        with tqdm(total=math.ceil(ESTIMATION_ITERS / estimation.CALLBACK_EVERY), desc="fitting the graphical model",
                  unit="block", disable=None) as progress:
            _FITTED[digest] = estimation.MirrorDescent().estimate(
                layout.domain(), measurements(state, layout), iters=ESTIMATION_ITERS,
                callback_fn=lambda _: progress.update(1))
    return _FITTED[digest]


def sample_codes(state: Tensors, layout: Layout, count: int, seed: int) -> np.ndarray:
    """`count` synthetic records as codes, drawn from the fitted model; mbi draws from numpy's global
    generator, so it is seeded here and restored after."""
    model = fitted(state, layout)
    saved = np.random.get_state()
    np.random.seed(seed % (1 << 32))
    try:
        synthetic = model.synthetic_data(rows=count)
    finally:
        np.random.set_state(saved)
    return np.stack([np.asarray(synthetic.data[c]) for c in range(len(layout.schema.columns))], axis=1).astype(np.int64)


class MarginalsSynthesizer(Synthesizer):
    """Noisy marginals per node and round, summed, selected, and fitted with a graphical model."""

    name = "marginals"
    aggregation = "sum"
    secret = tuple(NOISE_OF)

    def __init__(self, table: Table, num_rounds: int) -> None:
        self.layout = Layout.of(Schema.from_text(table.schema), table.target)
        self.rounds = num_rounds

    def new_model(self) -> nn.Module:
        return Marginals(self.layout.cells, len(self.layout.found))

    def local_update(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor, dp: LocalDP | None,
                     epoch_batches: Callable[[], Iterable[Batch]], lr: float, progress: tqdm | None) -> Update:
        """The survey while the plan is empty, else the planned cliques: this node's noisy counts,
        divided by the number of measuring rounds, so that their sum over the rounds is one noisy count."""
        codes = images.cpu().numpy()
        surveying, weights, share = self.asked(model)
        noise_multiplier = dp.release_noise() if dp is not None else 0.0
        vector = torch.from_numpy(release(codes, self.layout, weights, noise_multiplier, dp)) * share
        update = reply(model, surveying, vector, (noise_multiplier * share) ** 2)
        figures = dp.release_spent(noise_multiplier) if dp is not None else {}
        return update, len(codes), 0.0, figures

    def exact_release(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor, dp: LocalDP,
                      share: float) -> ExactRelease:
        """The round's counts as they are, each weighted clique's cells with the noise std m / w_k, and
        the noise variance declared for the node's `share` of it; the server scales their sum as
        `local_update` scales a release."""
        surveying, weights, scale = self.asked(model)
        noise_multiplier = dp.release_noise()
        counts = reply(model, surveying, torch.from_numpy(release(images.cpu().numpy(), self.layout, weights, 0.0, None)),
                       (noise_multiplier * scale) ** 2 * share)
        inverse = np.divide(1.0, weights, out=np.zeros_like(weights), where=weights > 0)
        std = reply(model, surveying, torch.from_numpy(np.repeat(inverse * noise_multiplier, np.diff(self.layout.starts))),
                    0.0)
        return ExactRelease({name: counts[name] for name in NOISE_OF}, {name: std[name] for name in NOISE_OF}, scale,
                            {name: counts[name] for name in counts if name not in NOISE_OF})

    def asked(self, model: nn.Module) -> tuple[bool, np.ndarray, float]:
        """What the global state asks a node for: the survey (while the plan is empty) or the planned
        cliques; their weights; and the share of the budget each of its releases carries."""
        plan = model.plan.cpu().numpy()
        surveying = not plan.any()
        return (surveying, self.layout.survey_weights() if surveying else plan,
                1.0 if surveying else 1.0 / (self.rounds - 1))

    def check_instructions(self, sent: nn.Module) -> None:
        """The plan is the server's one instruction: the node follows it only if it is one that `select`
        could have made, weights that are finite, non-negative, on cliques the layout lets a plan weight,
        and whose squares sum to at most 1. Each record changes one cell of each weighted clique by one,
        so the release's L2 sensitivity is the root of that sum: above 1, the node would release more
        than its ledger charges (one Gaussian release of sensitivity 1). An empty plan asks for the
        survey, whose weights the node computes itself."""
        plan = sent.plan.detach().cpu().numpy()
        if not np.isfinite(plan).all() or (plan < 0).any():
            raise FederationError("the server's plan is refused: its weights must be finite and not negative")
        stray = np.flatnonzero((plan > 0) & ~self.layout.plannable())
        if stray.size:
            raise FederationError(f"the server's plan is refused: it weights {len(stray)} clique(s) that a plan "
                                  f"may not, such as {self.layout.found[stray[0]]} (a plan weights 1-way "
                                  "marginals, and pairs and triples that hold the target)")
        squares = float(np.square(plan).sum())
        if squares > 1 + PLAN_ROUNDING:
            raise FederationError(f"the server's plan is refused: its squared weights sum to {squares:.6g}, above "
                                  "1, the sensitivity this node's ledger charges a release")

    def check_release(self, update: Tensors, num_samples: int, noise_std: float, sent: Tensors) -> None:
        """A release is the survey (survey cells, its noise variance) while the plan `sent` is empty, a
        measurement (measured cells, its noise variance) once it is not, and never a plan: the plan is
        the server's."""
        if bool(update["plan"].any()):
            raise FederationError("update rejected: a node's release carries a plan, which only the server makes")
        surveying = not bool(sent["plan"].any())
        part, other = ("survey", "measured") if surveying else ("measured", "survey")
        if bool(update[other].any()) or float(update[NOISE_OF[other]]) != 0:
            raise FederationError(f"update rejected: the round asked for the {'survey' if surveying else 'measurement'}"
                                  f" and the release holds {'measured' if surveying else 'survey'} cells")
        share = 1.0 if surveying else 1.0 / (self.rounds - 1)
        self._check_part(update, part, num_samples * share, noise_std * share)

    def check_sum(self, state: Tensors, rows_by_round: list[list[int]], noise_std: float,
                  shares_by_round: list[list[float]]) -> None:
        """The server's state: round 1's releases summed in the survey, the later rounds' in the measured
        cells, and the plan the one that the survey selects (post-processing, so it is recomputed)."""
        surveyed, measuring = rows_by_round[:1], rows_by_round[1:]
        plan = state["plan"].numpy()
        if measuring and plan.any():
            share = 1.0 / (self.rounds - 1)
            rows = [count for counts in measuring for count in counts]
            self._check_part(state, "measured", sum(rows) * share,
                             summed_std(noise_std, shares_by_round[1:]) * share)
        elif bool(state["measured"].any()) or float(state["measure_noise"]) != 0:
            raise FederationError("update rejected: measured cells without a measuring round that planned them")
        if surveyed and surveyed[0]:
            self._check_part(state, "survey", sum(surveyed[0]), summed_std(noise_std, shares_by_round[:1]))
        elif bool(state["survey"].any()) or float(state["survey_noise"]) != 0 or plan.any():
            raise FederationError("update rejected: survey cells or a plan without a surveying round")
        if plan.any() and not np.array_equal(plan, select(state, self.layout, self.rounds - 1)):
            raise FederationError("update rejected: the plan is not the one that the survey selects")

    def _check_part(self, state: Tensors, part: str, rows: float, noise_std: float) -> None:
        """Each clique's cells hold counts of `rows` rows: each within [0, rows] and their total equal to
        rows, up to the noise, whose standard deviation per cell is `noise_std` over the clique's weight
        (for a measurement, bounded by equal weights over every clique: the plan is the server's)."""
        surveying = part == "survey"
        check_noise_variance(state[NOISE_OF[part]], noise_std)
        weights = self.layout.survey_weights() if surveying else np.full(len(self.layout.found),
                                                                         1 / math.sqrt(len(self.layout.found)))
        vector = state[part]
        for index, weight in enumerate(weights):
            cells = torch.from_numpy(self.layout.part(vector.numpy(), index))
            if not surveying and not bool(cells.any()):
                continue
            if weight == 0:
                if bool(cells.any()):
                    raise FederationError(f"update rejected: the survey holds cells of {self.layout.found[index]}, "
                                          "which it does not measure")
                continue
            cell_std = noise_std / weight
            check_within("a marginal's cell", cells, 0.0, rows, cell_std)
            check_within("a marginal's total", cells.sum(), rows, rows, cell_std * math.sqrt(len(cells)))

    def after_round(self, model: nn.Module, round_: int) -> None:
        """Once the survey is in, the server plans the measuring rounds (post-processing)."""
        if not model.plan.any() and model.survey.any():
            state = {name: t.detach().cpu() for name, t in model.state_dict().items()}
            model.plan.copy_(torch.from_numpy(select(state, self.layout, self.rounds - round_)))

    def generator_state(self, model: nn.Module) -> Tensors:
        return {name: t.detach().cpu().clone() for name, t in model.state_dict().items()}

    def release_fit(self, state: Tensors, records: pd.DataFrame) -> dict[str, float | int]:
        """The synthetic records' distance to the released marginals (`release_fit`)."""
        return release_fit(state, self.layout, tables.encode(records, self.layout.schema, fine=True)[0])

    def sample(self, state: Tensors, count: int, seed: int) -> pd.DataFrame:
        """`count` synthetic records in the table's own columns, a number drawn inside its bin from the
        survey's fine histogram of its column."""
        codes = sample_codes(state, self.layout, count, seed)
        return tables.decode(codes, self.layout.schema, np.random.default_rng(seed),
                             self.layout.fine_weights(state))
