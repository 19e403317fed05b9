"""DP moments: class-conditional Gaussians in a public linear subspace, each worker's statistics
released once per round under the Gaussian mechanism; the server sums them and samples.

A worker projects its images onto a public basis (the principal directions of public digits and
warped copies of them, or low-frequency 2-D DCT images where nothing is public; its size and scale
follow the run's planned noise), scales and clips each to L2 norm <= 1, and
releases per class the weighted concatenation [a * count, b * sum z, d * sum z z^T] plus Gaussian
noise. Adding or removing one example changes one class's entry by at most sqrt(a^2 + b^2 + d^2)
(||z|| <= 1 and ||z z^T||_F = ||z||^2 <= 1): the mechanism's L2 sensitivity. The noise multiplier
is Opacus's for one full-batch step a round, so the ledger composes these releases like DP-SGD's.
Everything after the release (summing, covariances, sampling) is post-processing: it costs nothing.

Without noise, a class's Gaussian misses its shape (TSTR 0.936 on the MNIST validation split, against
0.9625 from its images' own coordinates). There the server splits each class after round 1: at its
mean, across its two main directions (post-processing of round 1's release), and the later rounds
release each of the four cells' statistics, which the sampler draws as a mixture (0.953). Under DP
each cell's smaller count carries the class's noise, so there the classes stay whole.
"""
import functools
import math
from collections.abc import Callable, Iterable

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from backends import Tensors
from ppsdg import config, data
from ppsdg.errors import FederationError
from ppsdg.privacy import LocalDP
from ppsdg.synthesizers import refiner
from ppsdg.synthesizers.base import (SIGMAS, Batch, ExactRelease, Synthesizer, Update, check_noise_variance,
                                    check_within, summed_std)

COUNT_WEIGHT, MEAN_WEIGHT, SECOND_WEIGHT = 0.3, 1.0, 1.0
# Under secure aggregation a node's coordinates lie on a grid of 1/GRID, so that its sums and second
# moments are whole multiples of the fixed point's unit (secure_aggregation.SCALE = GRID^2).
GRID = 256.0
SENSITIVITY = math.sqrt(COUNT_WEIGHT ** 2 + MEAN_WEIGHT ** 2 + SECOND_WEIGHT ** 2)
STATISTICS = ("count", "sum", "second", "noise_variance")
CELL_PREFIX = "cell_"
SPLIT = ("split_center", "split_directions")
MIN_COUNT = 10.0
# The most a class covariance is shrunk toward the pooled one (`gaussians`): for linear draws, and for
# the refiner's, which draws each class's own shape better, noise and all. On the MNIST validation
# split (6,400 / 1,600), refined, at epsilon 1: TSTR 0.8642 at 0.5, 0.8719 at 0.1, 0.8725 at 0 (seeds
# 1-3; 0.1 was above 0.5 at every seed, 0 not); at epsilon 10 (seed 1): 0.9275 / 0.9338 / 0.9288.
MAX_SHRINK, REFINED_MAX_SHRINK = 0.5, 0.1
EIGEN_FLOOR = 1e-6
PUBLIC_WARPS, WARP_SEED = 20, 0
DCT_SHAPE = (40, 8.0)
LOW_NOISE = 1.0
MAX_ROTATION, SIZE_RANGE, ASPECT_RANGE, MAX_SHEAR, MAX_SHIFT = 10.0, (0.8, 1.1), (0.75, 1.1), 0.3, 2.5
# How much wider than the released Gaussians the refiner's draws are: it pulls each draw toward the
# public digits it learned, so its digits' coordinates spread 10% less than the draws (trace of the
# class covariances, MNIST validation split at epsilon 10); drawn 1.2 times wider, they spread 97% as much.
REFINED_SPREAD = 1.2
# Exact second moments are symmetric and positive semi-definite up to rounding (a few ulps a row): a
# class or cell of fewer images than dimensions has eigenvalues of 0 that come out as -5e-15.
ROUNDING_TOLERANCE = 1e-9
# Each class split across its SPLIT_DIRECTIONS main directions into 2^SPLIT_DIRECTIONS cells, without
# noise only. On the MNIST validation split (6,400 / 1,600, no DP, refined, seeds 1-3): TSTR 0.936
# (0.937, 0.931, 0.940) whole, 0.953 (0.959, 0.951, 0.950) in 4 cells, 0.949 in 8; the same 4 cells
# with the run's noise at epsilon 10: 0.916 against 0.922 whole (seeds 1-2).
SPLIT_DIRECTIONS = 2
# A cell's covariance from n images in d dimensions has its smallest eigenvalues shrunk by about
# (1 - sqrt(d / n))^2 (Marchenko and Pastur): a cell of fewer than 2 d images is drawn from its
# class's Gaussian. The MNIST split's cells hold 2.1-3.3 d images (60 dimensions); the embedded
# digits' 0.5-1.5 d (40): drawing the few above d from their own took TSTR from 0.880 to 0.852.
CELL_IMAGES_PER_DIMENSION = 2


class Moments(nn.Module):
    """What the server accumulates: per-class noisy counts, sums and second moments in the basis, and
    the summed variance of the noise they carry (public: it follows from the noise multipliers). With
    `split` directions (no noise), these hold round 1's, SPLIT the server's split of each class (zero
    until round 1 is in), and the same statistics after CELL_PREFIX the later rounds' per cell."""

    def __init__(self, dims: int, split: int = 0) -> None:
        super().__init__()
        self.add_statistics("", data.NUM_CLASSES, dims)
        if split:
            self.register_buffer("split_center", torch.zeros(data.NUM_CLASSES, dims, dtype=torch.float64))
            self.register_buffer("split_directions", torch.zeros(data.NUM_CLASSES, dims, split, dtype=torch.float64))
            self.add_statistics(CELL_PREFIX, data.NUM_CLASSES * 2 ** split, dims)

    def add_statistics(self, prefix: str, rows: int, dims: int) -> None:
        self.register_buffer(prefix + "count", torch.zeros(rows, dtype=torch.float64))
        self.register_buffer(prefix + "sum", torch.zeros(rows, dims, dtype=torch.float64))
        self.register_buffer(prefix + "second", torch.zeros(rows, dims, dims, dtype=torch.float64))
        self.register_buffer(prefix + "noise_variance", torch.zeros((), dtype=torch.float64))


@functools.lru_cache(maxsize=4)
def basis(kind: str, dims: int, scale: float) -> Tensors:
    """The public projection z = (x - center) @ vectors / scale, x in [0, 1]^784; free of private data."""
    if kind == "dct":
        return {"center": torch.zeros(data.NUM_PIXELS, dtype=torch.float64), "vectors": dct_vectors(dims),
                "scale": torch.tensor(scale, dtype=torch.float64)}
    pixels, _ = public_digits()
    center = pixels.mean(axis=0)
    _, directions = np.linalg.eigh((pixels - center).T @ (pixels - center))
    vectors = directions[:, ::-1][:, :dims]  # eigh ascends; each sign fixed so its largest entry is positive
    vectors = vectors * np.sign(vectors[np.abs(vectors).argmax(axis=0), np.arange(dims)])
    return {"center": torch.from_numpy(center), "vectors": torch.from_numpy(vectors.copy()),
            "scale": torch.tensor(scale, dtype=torch.float64)}


@functools.lru_cache(maxsize=1)
def public_digits() -> tuple[np.ndarray, np.ndarray]:
    """The embedded UCI digits and PUBLIC_WARPS randomly warped copies of each, (N, 784) in 0..1, and
    their labels.

    The UCI digits are upright 8x8 scans stretched to fill MNIST's 20x20 box, so their principal
    directions miss much of how handwriting varies: slant, width, position, stroke. Warping them
    (rotation, scale, aspect, shear, shift, thicker or thinner strokes) fills the basis with those
    directions, and beyond the 64 that 8x8 scans span: on a validation split of the MNIST training
    images TSTR without DP rose from 0.943 (the digits alone, 40 dimensions) to 0.951 (60), and at
    epsilon 1 from 0.841 to 0.850 (40, scale 6). The draws come from a fixed seed, so every party
    computes the same basis; about 3 s, once per process.
    """
    train, test = data.load_embedded()
    images = torch.from_numpy(np.concatenate([train.pixels, test.pixels])).double().div(data.MAX_PIXEL)
    images = images.unsqueeze(1)
    generator = torch.Generator().manual_seed(WARP_SEED)
    copies = [images] + [warp(images, generator) for _ in range(PUBLIC_WARPS)]
    labels = np.tile(np.concatenate([train.labels, test.labels]), len(copies))
    return torch.cat(copies).reshape(-1, data.NUM_PIXELS).clamp(0.0, 1.0).numpy(), labels


def warp(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Images (N, 1, 28, 28) each under its own random affine map and stroke width (bilinear)."""
    def uniform(low: float, high: float) -> torch.Tensor:
        return low + (high - low) * torch.rand(len(images), generator=generator, dtype=torch.float64)

    angle = uniform(-MAX_ROTATION, MAX_ROTATION) * math.pi / 180
    size = uniform(*SIZE_RANGE)
    width = size * uniform(*ASPECT_RANGE)
    shear = uniform(-MAX_SHEAR, MAX_SHEAR)
    shift = torch.stack([uniform(-MAX_SHIFT, MAX_SHIFT), uniform(-MAX_SHIFT, MAX_SHIFT)], dim=1)
    cos, sin = angle.cos(), angle.sin()
    rotation = torch.stack([torch.stack([cos, -sin], 1), torch.stack([sin, cos], 1)], 1)
    stretch = torch.zeros(len(images), 2, 2, dtype=torch.float64)
    stretch[:, 0, 0], stretch[:, 0, 1], stretch[:, 1, 1] = width, shear * size, size
    inverse = torch.linalg.inv(rotation @ stretch)
    offset = -(inverse @ (shift * 2 / data.IMAGE_SIDE).unsqueeze(2))
    grid = torch.nn.functional.affine_grid(torch.cat([inverse, offset], 2), list(images.shape),
                                           align_corners=False)
    warped = torch.nn.functional.grid_sample(images, grid, padding_mode="zeros", align_corners=False)
    return stroke(warped, uniform(-1.0, 1.0))


def stroke(images: torch.Tensor, amount: torch.Tensor) -> torch.Tensor:
    """Thicker strokes for amount > 0 (toward a 3x3 grey dilation), thinner for < 0 (erosion)."""
    dilated = torch.nn.functional.max_pool2d(images, 3, 1, 1)
    eroded = -torch.nn.functional.max_pool2d(-images, 3, 1, 1)
    weight = amount.view(-1, 1, 1, 1)
    return torch.where(weight > 0, images + weight * (dilated - images), images - weight * (eroded - images))


@functools.lru_cache(maxsize=2)
def refiner_weights(dims: int, scale: float) -> Tensors:
    """The refiner of the digits basis of this shape, trained on the inked public digits' coordinates;
    the same network for every party, once per process (about two minutes on one core)."""
    pixels, labels = public_digits()
    inked = refiner.render(torch.from_numpy(pixels))
    z = encode(inked, basis("digits", dims, scale)).float()
    return refiner.weights(refiner.fit(z, torch.from_numpy(labels), inked.float()))


def dct_vectors(dims: int) -> torch.Tensor:
    """The `dims` lowest-frequency orthonormal 2-D DCT-II images (by u + v, then u), as columns."""
    side = data.IMAGE_SIDE
    n = np.arange(side)
    cosines = np.sqrt(2.0 / side) * np.cos(np.pi * (2 * n[None, :] + 1) * n[:, None] / (2 * side))
    cosines[0] /= np.sqrt(2.0)
    order = sorted(((u, v) for u in range(side) for v in range(side)), key=lambda p: (p[0] + p[1], p[0]))
    return torch.from_numpy(np.stack([np.outer(cosines[u], cosines[v]).ravel() for u, v in order[:dims]], axis=1))


def encode(pixels: torch.Tensor, projection: Tensors) -> torch.Tensor:
    """Images in 0..1 (N, 784) to basis coordinates clipped to L2 norm <= 1: what bounds the sensitivity."""
    z = (pixels.double() - projection["center"]) @ projection["vectors"] / projection["scale"]
    return z / z.norm(dim=1, keepdim=True).clamp(min=1.0)


def decode(z: torch.Tensor, projection: Tensors) -> torch.Tensor:
    """Basis coordinates back to images in 0..1 (N, 784)."""
    return (projection["center"] + projection["scale"] * z @ projection["vectors"].T).clamp(0.0, 1.0)


def statistics(z: torch.Tensor, rows: torch.Tensor, num_rows: int = data.NUM_CLASSES) -> Tensors:
    """Per-row (class or cell) count, sum and second moment of one worker's coordinates, exactly."""
    onehot = torch.nn.functional.one_hot(rows, num_rows).double()
    return {"count": onehot.sum(0), "sum": onehot.T @ z, "second": torch.einsum("nc,ni,nj->cij", onehot, z, z)}


def row_moments(state: Tensors) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Each row's (class or cell) count floored at MIN_COUNT, mean and covariance, from summed statistics."""
    count = state["count"].clamp(min=MIN_COUNT)
    means = state["sum"] / count[:, None]
    return count, means, state["second"] / count[:, None, None] - torch.einsum("ci,cj->cij", means, means)


def split_of(state: Tensors, directions: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per class, the released mean and the `directions` main axes of the released covariance (each
    sign fixed so that its largest entry is positive): where the server splits the class."""
    _, means, covariances = row_moments(state)
    _, vectors = torch.linalg.eigh((covariances + covariances.transpose(1, 2)) / 2)
    axes = vectors.flip(2)[:, :, :directions]
    largest = axes.abs().argmax(dim=1, keepdim=True)
    return means, axes * torch.gather(axes, 1, largest).sign()


def cells(z: torch.Tensor, labels: torch.Tensor, center: torch.Tensor, directions: torch.Tensor) -> torch.Tensor:
    """Each example's cell: its class's, and on which side of the class's center it lies along each
    of the class's split directions (bit i for direction i)."""
    sides = (torch.einsum("ni,nik->nk", z - center[labels], directions[labels]) > 0).long()
    bits = 2 ** torch.arange(directions.shape[2])
    return labels * 2 ** directions.shape[2] + (sides * bits).sum(1)


def release(exact: Tensors, noise_std: float, dp: LocalDP | None) -> Tensors:
    """The Gaussian mechanism on the weighted concatenation, returned unweighted; its noise is the
    run's DP noise (secure under --secure-noise), none without DP.

    The second moments are symmetric, so each is released as its upper triangle: the noise matrix is
    (G + G^T) / 2, whose diagonal has the full variance and off-diagonal entries half of it.
    """
    def noise(shape: torch.Size) -> torch.Tensor:
        like = exact["count"]
        return dp.gaussian(shape, noise_std, like) if dp is not None else torch.zeros(shape, dtype=like.dtype)

    square = noise(exact["second"].shape)
    return {"count": exact["count"] + noise(exact["count"].shape) / COUNT_WEIGHT,
            "sum": exact["sum"] + noise(exact["sum"].shape) / MEAN_WEIGHT,
            "second": exact["second"] + (square + square.transpose(1, 2)) / 2 / SECOND_WEIGHT,
            "noise_variance": torch.tensor(noise_std ** 2, dtype=torch.float64)}


def psd(matrix: torch.Tensor) -> torch.Tensor:
    """The nearest positive semi-definite matrix (eigenvalues floored), for noisy covariances."""
    values, vectors = torch.linalg.eigh((matrix + matrix.T) / 2)
    return (vectors * values.clamp(min=EIGEN_FLOOR)) @ vectors.T


def gaussians(state: Tensors, max_shrink: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row (class or cell) means and Cholesky factors of the covariances, from the summed noisy
    statistics.

    Each class covariance is shrunk toward the pooled within-class one by the share of its noise in
    its distance from the pool (Ledoit and Wolf's intensity, with the known DP noise as the error):
    no shrinkage without noise, more for small or noisy classes, but never more than `max_shrink`. A
    class's own shape, noisy as it is, still carries what a classifier needs: on a validation split
    of the MNIST training images at epsilon 1, decoded linearly, pooling completely gave TSTR 0.74,
    half 0.86; drawn by the refiner, a cap of a tenth beat half at every seed (REFINED_MAX_SHRINK).
    """
    count, means, raw_covariances = row_moments(state)
    between = torch.einsum("c,ci,cj->ij", count, means, means)
    pooled = psd((state["second"].sum(0) - between) / count.sum())
    dims = means.shape[1]
    noise_energy = float(state["noise_variance"]) * dims * (dims + 1) / 2 / SECOND_WEIGHT ** 2
    covariances = []
    for label in range(len(count)):
        raw = psd(raw_covariances[label])
        distance = float((raw - pooled).square().sum())
        shrink = min(max_shrink, noise_energy / float(count[label]) ** 2 / distance) if distance > 0 else max_shrink
        covariances.append((1 - shrink) * raw + shrink * pooled)
    factors = torch.linalg.cholesky(torch.stack(covariances) + EIGEN_FLOOR * torch.eye(dims, dtype=torch.float64))
    return means, factors


def check_part(released: Tensors, rows: float, noise_std: float, kind: str = "class") -> None:
    """The bounds of `rows` rows' statistics per `kind` (class or cell) under noise of standard deviation
    noise_std: FederationError("update rejected: ...") naming the first one broken."""
    count, second = released["count"], released["second"]
    check_within(f"{kind} count", count, 0.0, rows, noise_std / COUNT_WEIGHT)
    check_within("total count", count.sum(), rows, rows, noise_std / COUNT_WEIGHT * math.sqrt(len(count)))
    check_within(f"{kind} sum", released["sum"], -rows, rows, noise_std / MEAN_WEIGHT)
    check_within("second moment", second, -rows, rows, noise_std / SECOND_WEIGHT)
    check_within("second moment's diagonal", second.diagonal(dim1=1, dim2=2), 0.0, rows, noise_std / SECOND_WEIGHT)
    asymmetry = float((second - second.transpose(1, 2)).abs().max())
    rounding = ROUNDING_TOLERANCE * max(rows, 1.0)
    if asymmetry > rounding:
        raise FederationError(f"update rejected: a second moment is not symmetric (by {asymmetry:.4g})")
    dims = second.shape[-1]
    spread = (math.sqrt(2 * dims) + SIGMAS) / SIGMAS * noise_std / SECOND_WEIGHT
    check_within("second moment's smallest eigenvalue", torch.linalg.eigvalsh(second).min(), -rounding, rows, spread)
    check_noise_variance(released["noise_variance"], noise_std)


def part(state: Tensors, prefix: str) -> Tensors:
    """The class (prefix "") or cell (CELL_PREFIX) statistics of a state or release, by their plain names."""
    return {name: state[prefix + name] for name in STATISTICS}


def class_totals(state: Tensors) -> Tensors:
    """Round 1's class statistics plus the later rounds' cells of each class: all that was released."""
    totals = part(state, "")
    if CELL_PREFIX + "count" not in state:
        return totals
    per_class = len(state[CELL_PREFIX + "count"]) // data.NUM_CLASSES
    summed = {name: totals[name] + state[CELL_PREFIX + name].unflatten(0, (data.NUM_CLASSES, per_class)).sum(1)
              for name in ("count", "sum", "second")}
    return {**summed, "noise_variance": totals["noise_variance"] + per_class * state[CELL_PREFIX + "noise_variance"]}


def mixture(state: Tensors, labels: torch.Tensor, max_shrink: float,
            generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The Gaussians (means, Cholesky factors) and each draw's row of them: its class's, or where the
    state holds cells, a cell of its class drawn by the cells' released counts. A cell of too few
    images for its dimensions (CELL_IMAGES_PER_DIMENSION; round 1's class count times the cell's
    share) is drawn from its class's Gaussian: its own covariance would be flat, its draws near
    copies of its few images."""
    classes = class_totals(state)
    class_means, class_factors = gaussians(classes, max_shrink)
    if not bool(state.get(CELL_PREFIX + "count", torch.zeros(1)).any()):
        return class_means, class_factors, labels
    cell_state = part(state, CELL_PREFIX)
    means, factors = gaussians(cell_state, max_shrink)
    per_class = len(means) // data.NUM_CLASSES
    class_of = torch.arange(len(means)) // per_class
    counts = cell_state["count"].clamp(min=0.0).view(data.NUM_CLASSES, per_class)
    shares = (counts / counts.sum(1, keepdim=True).clamp(min=MIN_COUNT)).flatten()
    few = state["count"].clamp(min=0.0)[class_of] * shares < CELL_IMAGES_PER_DIMENSION * means.shape[1]
    means[few], factors[few] = class_means[class_of[few]], class_factors[class_of[few]]
    weights = counts + (counts.sum(1, keepdim=True) == 0).double()
    return means, factors, labels * per_class + torch.multinomial(weights[labels], 1, generator=generator).squeeze(1)


def budget_noise(dp: LocalDP | None, num_rounds: int) -> float:
    """The noise multiplier of one release that spends the run's whole budget, 0 without DP: the
    rounds' releases of multiplier m sum to one of m / sqrt(rounds). Public: it follows from the options."""
    return 0.0 if dp is None else dp.release_noise() / math.sqrt(num_rounds)


def digits_shape(noise: float) -> tuple[int, float]:
    """Dimensions and scale of the digits basis for a run's planned noise (one-release multiplier).

    A smaller scale lifts the signal against the fixed noise at the cost of clipping more images;
    each dimension adds noise to every class's covariance, so more than 40 pay only without noise.
    On a validation split of the MNIST training images (6,400 private, 1,600 validation; TSTR, mean
    over seeds): epsilon 1, 40 dimensions, scale 6: 0.850 (3 seeds; scale 5: 0.852, 30 dimensions:
    0.838); epsilon 10, scale 8: 0.933 (3 seeds; scale 7: 0.933, 60 dimensions: 0.909); no DP, 60
    dimensions: 0.951 (2 seeds; 40: 0.944, 80: 0.950, 120: 0.946, 200: 0.936, one seed).
    """
    if noise == 0:
        return 60, 14.0
    if noise < LOW_NOISE:
        return 40, 8.0
    return 40, 6.0


class MomentsSynthesizer(Synthesizer):
    """Gaussians per class in a public subspace: one noisy release per worker and round, summed."""

    name = "moments"
    aggregation = "sum"
    sensitivity = SENSITIVITY
    secret = ("count", "sum", "second")

    def __init__(self, moments: config.Moments, num_rounds: int, dp: LocalDP | None, source: str) -> None:
        kind = moments.basis
        if kind == "auto":
            kind = "dct" if source == "embedded" else "digits"
        dims, scale = DCT_SHAPE if kind == "dct" else digits_shape(budget_noise(dp, num_rounds))
        self.projection = basis(kind, moments.dims or dims, moments.scale or scale)
        self.refined = kind == "digits" and moments.draw == "refined"
        self.split = 0 if dp is not None else SPLIT_DIRECTIONS

    def new_model(self) -> nn.Module:
        return Moments(self.projection["vectors"].shape[1], self.split)

    def local_update(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor, dp: LocalDP | None,
                     epoch_batches: Callable[[], Iterable[Batch]], lr: float, progress: tqdm | None) -> Update:
        """This worker's statistics, per class or, once the server has split the classes, per cell;
        noised under DP, its noise from the round's seeded generator. Every other entry is zero."""
        pixels = (images.cpu().reshape(len(images), -1).double() * data.STD + data.MEAN).clamp(0.0, 1.0)
        z, labels = encode(pixels, self.projection), labels.cpu()
        template = {name: torch.zeros_like(t) for name, t in model.state_dict().items()}
        if self.split and bool(model.split_directions.any()):
            center, directions = (model.get_buffer(name).cpu() for name in SPLIT)
            prefix, rows = CELL_PREFIX, cells(z, labels, center, directions)
        else:
            prefix, rows = "", labels
        update = release(statistics(z, rows, len(template[prefix + "count"])), self.release_std(dp), dp)
        figures = dp.release_spent(dp.release_noise()) if dp is not None else {}
        released = {prefix + name: update[name] for name in STATISTICS}
        update = {name: released.get(name, zero).to(images.device) for name, zero in template.items()}
        return update, len(labels), 0.0, figures

    def exact_release(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor, dp: LocalDP,
                      share: float) -> ExactRelease:
        """The class statistics of coordinates truncated to a grid (GRID, toward zero: the norm stays at
        most 1, and with it the sensitivity), so that they are whole multiples of the fixed point's unit;
        of the second moments the upper triangle only, whose sum the server mirrors (`completed`). Each
        entry's noise is `release`'s: the diagonal's full variance, the off-diagonal's half."""
        pixels = (images.cpu().reshape(len(images), -1).double() * data.STD + data.MEAN).clamp(0.0, 1.0)
        z = torch.trunc(encode(pixels, self.projection) * GRID) / GRID
        exact = statistics(z, labels.cpu(), len(model.count))
        dims = exact["sum"].shape[1]
        upper = torch.triu(torch.ones(dims, dims, dtype=torch.float64))
        half = torch.where(torch.eye(dims, dtype=torch.bool), 1.0, 1 / math.sqrt(2)).double() * upper
        noise = self.release_std(dp)
        std = {"count": torch.full_like(exact["count"], noise / COUNT_WEIGHT),
               "sum": torch.full_like(exact["sum"], noise / MEAN_WEIGHT),
               "second": (half * noise / SECOND_WEIGHT).expand_as(exact["second"]).clone()}
        public = {name: torch.zeros_like(t.cpu()) for name, t in model.state_dict().items() if name not in self.secret}
        public["noise_variance"] = torch.tensor(noise ** 2 * share, dtype=torch.float64)
        return ExactRelease({**exact, "second": exact["second"] * upper}, std, 1.0, public)

    def completed(self, total: Tensors) -> Tensors:
        """The summed upper triangles mirrored into symmetric second moments, as `release` makes them."""
        second = total["second"]
        return {**total, "second": torch.triu(second) + torch.triu(second, 1).transpose(1, 2)}

    def check_instructions(self, sent: nn.Module) -> None:
        """The split is the server's one instruction (without DP only). Whatever its center and
        directions, `cells` puts each image in exactly one cell, so a release's sensitivity stays the
        class statistics' own: the node checks only that the split is made of numbers. The basis, its
        dimensions and scale the node computes itself from the task's options, and `encode` clips every
        image's coordinates to norm 1 whatever they are."""
        if self.split and not all(bool(torch.isfinite(sent.get_buffer(name)).all()) for name in SPLIT):
            raise FederationError("the server's split is refused: its center and directions must be finite")

    def check_release(self, update: Tensors, num_samples: int, noise_std: float, sent: Tensors) -> None:
        """A release holds one round's statistics per class or, once the split `sent` is set, per cell,
        never the other kind, and never a split: the split is the server's. Each image adds 1 to one
        row's count, a vector of norm <= 1 to its sum and z z^T (entries in [-1, 1], diagonal in [0, 1],
        positive semi-definite) to its second moment; the noise of each part is noise_std over its
        weight, the second moment's symmetric with extreme eigenvalues about sqrt(2 * dims) of its
        standard deviation."""
        if not self.split:
            check_part(part(update, ""), float(num_samples), noise_std)
            return
        if any(bool(update[name].any()) for name in SPLIT):
            raise FederationError("update rejected: a node's release carries a split, which only the server makes")
        in_cells = bool(sent["split_directions"].any())
        prefix, other = (CELL_PREFIX, "") if in_cells else ("", CELL_PREFIX)
        if any(bool(update[other + name].any()) for name in STATISTICS):
            asked, held = ("cell", "class") if in_cells else ("class", "cell")
            raise FederationError(f"update rejected: the round asked for statistics per {asked} and the release "
                                  f"holds {held} statistics")
        check_part(part(update, prefix), float(num_samples), noise_std, "cell" if in_cells else "class")

    def check_sum(self, state: Tensors, rows_by_round: list[list[int]], noise_std: float,
                  shares_by_round: list[list[float]]) -> None:
        """The server's state: the releases up to the first round with rows summed per class (round 1's
        but for failures), the later rounds' per cell, and the split the one that those class statistics
        give (post-processing, so it is recomputed). A sum of releases is one release of their rows with
        their summed variance."""
        if not self.split:
            super().check_sum(state, rows_by_round, noise_std, shares_by_round)
            return
        first = next((i + 1 for i, counts in enumerate(rows_by_round) if sum(counts) > 0), len(rows_by_round))
        parts = (("", "class", slice(None, first)), (CELL_PREFIX, "cell", slice(first, None)))
        for prefix, kind, rounds in parts:
            rows = [count for counts in rows_by_round[rounds] for count in counts]
            check_part(part(state, prefix), float(sum(rows)), summed_std(noise_std, shares_by_round[rounds]), kind)
        split = split_of(state, self.split)
        if not bool(state["count"].any()):
            split = tuple(torch.zeros_like(value) for value in split)
        if not all(torch.allclose(state[name], value, rtol=0.0, atol=ROUNDING_TOLERANCE)
                   for name, value in zip(SPLIT, split)):
            raise FederationError("update rejected: the split is not the one that round 1's statistics give")

    def after_round(self, model: nn.Module, round_: int) -> None:
        """Once round 1's class statistics are in, the server splits each class (post-processing)."""
        if self.split and not bool(model.split_directions.any()) and bool(model.count.any()):
            state = {name: t.detach().cpu() for name, t in model.state_dict().items()}
            for name, value in zip(SPLIT, split_of(state, self.split)):
                model.get_buffer(name).copy_(value)

    def generator_state(self, model: nn.Module) -> Tensors:
        """The summed statistics, the basis and, where the basis is public digits', the refiner."""
        state = {**{name: t.detach().cpu().clone() for name, t in model.state_dict().items()}, **self.projection}
        if self.refined:
            dims, scale = self.projection["vectors"].shape[1], float(self.projection["scale"])
            state.update(refiner_weights(dims, scale))
        return state

    def sample(self, state: Tensors, count: int, seed: int) -> data.ImageSet:
        """Balanced labels; coordinates drawn from the class's (or a cell's) Gaussian with a seeded
        generator, drawn as digits by the refiner (from a Gaussian REFINED_SPREAD times wider) where the
        state holds one, else decoded linearly."""
        refined = any(name.startswith(refiner.PREFIX) for name in state)
        labels = torch.arange(count) % data.NUM_CLASSES
        generator = torch.Generator().manual_seed(seed)
        noise = torch.randn(count, state["sum"].shape[1], generator=generator, dtype=torch.float64)
        means, factors, rows = mixture(state, labels, REFINED_MAX_SHRINK if refined else MAX_SHRINK, generator)
        spread = REFINED_SPREAD if refined else 1.0
        z = means[rows] + spread * torch.einsum("nij,nj->ni", factors[rows], noise)
        pixels = refiner.draw(state, z, labels) if refined else decode(z, state)
        pixels = (pixels * data.MAX_PIXEL).round().to(torch.uint8)
        return data.ImageSet(pixels.reshape(count, data.IMAGE_SIDE, data.IMAGE_SIDE).numpy(), labels.numpy())
