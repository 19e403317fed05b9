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
"""
import argparse
import functools
import math
from collections.abc import Callable, Iterable

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from backends import Tensors
from ppsdg import data
from ppsdg.errors import FederationError
from ppsdg.privacy import LocalDP
from ppsdg.synthesizers import SIGMAS, Batch, Synthesizer, Update, check_noise_variance, check_within, refiner

COUNT_WEIGHT, MEAN_WEIGHT, SECOND_WEIGHT = 0.3, 1.0, 1.0
SENSITIVITY = math.sqrt(COUNT_WEIGHT ** 2 + MEAN_WEIGHT ** 2 + SECOND_WEIGHT ** 2)
STATISTICS = ("count", "sum", "second", "noise_variance")
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
# The exact second moments are symmetric up to the order of the sums (a few ulps a row).
SYMMETRY_TOLERANCE = 1e-9


class Moments(nn.Module):
    """What the server accumulates: per-class noisy counts, sums and second moments in the basis, and
    the summed variance of the noise they carry (public: it follows from the noise multipliers)."""

    def __init__(self, dims: int) -> None:
        super().__init__()
        self.register_buffer("count", torch.zeros(data.NUM_CLASSES, dtype=torch.float64))
        self.register_buffer("sum", torch.zeros(data.NUM_CLASSES, dims, dtype=torch.float64))
        self.register_buffer("second", torch.zeros(data.NUM_CLASSES, dims, dims, dtype=torch.float64))
        self.register_buffer("noise_variance", torch.zeros((), dtype=torch.float64))


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


def statistics(z: torch.Tensor, labels: torch.Tensor) -> Tensors:
    """Per-class count, sum and second moment of one worker's coordinates, exactly."""
    onehot = torch.nn.functional.one_hot(labels, data.NUM_CLASSES).double()
    return {"count": onehot.sum(0), "sum": onehot.T @ z, "second": torch.einsum("nc,ni,nj->cij", onehot, z, z)}


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
    """Per-class means and Cholesky factors of the covariances, from the summed noisy statistics.

    Each class covariance is shrunk toward the pooled within-class one by the share of its noise in
    its distance from the pool (Ledoit and Wolf's intensity, with the known DP noise as the error):
    no shrinkage without noise, more for small or noisy classes, but never more than `max_shrink`. A
    class's own shape, noisy as it is, still carries what a classifier needs: on a validation split
    of the MNIST training images at epsilon 1, decoded linearly, pooling completely gave TSTR 0.74,
    half 0.86; drawn by the refiner, a cap of a tenth beat half at every seed (REFINED_MAX_SHRINK).
    """
    count = state["count"].clamp(min=MIN_COUNT)
    means = state["sum"] / count[:, None]
    between = torch.einsum("c,ci,cj->ij", count, means, means)
    pooled = psd((state["second"].sum(0) - between) / count.sum())
    dims = means.shape[1]
    noise_energy = float(state["noise_variance"]) * dims * (dims + 1) / 2 / SECOND_WEIGHT ** 2
    covariances = []
    for label in range(data.NUM_CLASSES):
        raw = psd(state["second"][label] / count[label] - torch.outer(means[label], means[label]))
        distance = float((raw - pooled).square().sum())
        shrink = min(max_shrink, noise_energy / float(count[label]) ** 2 / distance) if distance > 0 else max_shrink
        covariances.append((1 - shrink) * raw + shrink * pooled)
    factors = torch.linalg.cholesky(torch.stack(covariances) + EIGEN_FLOOR * torch.eye(dims, dtype=torch.float64))
    return means, factors


def budget_noise(options: argparse.Namespace) -> float:
    """The noise multiplier of one release that spends the run's whole budget, 0 without DP: the
    rounds' releases of multiplier m sum to one of m / sqrt(rounds). Public: it follows from the options."""
    dp = LocalDP.from_options(options)
    return 0.0 if dp is None else dp.release_noise() / math.sqrt(options.num_rounds)


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

    def __init__(self, options: argparse.Namespace) -> None:
        kind = options.moments_basis
        if kind == "auto":
            kind = "dct" if options.data == "embedded" else "digits"
        dims, scale = DCT_SHAPE if kind == "dct" else digits_shape(budget_noise(options))
        self.projection = basis(kind, options.moments_dims or dims, options.moments_scale or scale)
        self.refined = kind == "digits" and options.moments_draw == "refined"

    def new_model(self) -> nn.Module:
        return Moments(self.projection["vectors"].shape[1])

    def local_update(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                     options: argparse.Namespace, dp: LocalDP | None, epoch_batches: Callable[[], Iterable[Batch]],
                     lr: float, progress: tqdm | None) -> Update:
        """This worker's statistics, noised under DP; its noise comes from the round's seeded generator."""
        pixels = (images.cpu().reshape(len(images), -1).double() * data.STD + data.MEAN).clamp(0.0, 1.0)
        exact = statistics(encode(pixels, self.projection), labels.cpu())
        update = release(exact, self.release_std(dp), dp)
        figures = dp.release_spent(dp.release_noise()) if dp is not None else {}
        return {name: update[name].to(images.device) for name in STATISTICS}, len(labels), 0.0, figures

    def check_release(self, update: Tensors, num_samples: int, noise_std: float) -> None:
        """Each image adds 1 to one class's count, a vector of norm <= 1 to its sum and z z^T (entries in
        [-1, 1], diagonal in [0, 1], positive semi-definite) to its second moment; the noise of each
        part is noise_std over its weight, the second moment's symmetric with extreme eigenvalues about
        sqrt(2 * dims) of its standard deviation. A sum of releases (the server's state) is a release
        of their rows with their summed variance, so the same check reads a checkpoint."""
        rows = float(num_samples)
        count, second = update["count"], update["second"]
        check_within("class count", count, 0.0, rows, noise_std / COUNT_WEIGHT)
        check_within("total count", count.sum(), rows, rows, noise_std / COUNT_WEIGHT * math.sqrt(len(count)))
        check_within("class sum", update["sum"], -rows, rows, noise_std / MEAN_WEIGHT)
        check_within("second moment", second, -rows, rows, noise_std / SECOND_WEIGHT)
        check_within("second moment's diagonal", second.diagonal(dim1=1, dim2=2), 0.0, rows, noise_std / SECOND_WEIGHT)
        asymmetry = float((second - second.transpose(1, 2)).abs().max())
        if asymmetry > SYMMETRY_TOLERANCE * max(rows, 1.0):
            raise FederationError(f"update rejected: a second moment is not symmetric (by {asymmetry:.4g})")
        dims = second.shape[-1]
        spread = (math.sqrt(2 * dims) + SIGMAS) / SIGMAS * noise_std / SECOND_WEIGHT
        check_within("second moment's smallest eigenvalue", torch.linalg.eigvalsh(second).min(), 0.0, rows, spread)
        check_noise_variance(update["noise_variance"], noise_std)

    def generator_state(self, model: nn.Module) -> Tensors:
        """The summed statistics, the basis and, where the basis is public digits', the refiner."""
        state = {**{name: t.detach().cpu().clone() for name, t in model.state_dict().items()}, **self.projection}
        if self.refined:
            dims, scale = self.projection["vectors"].shape[1], float(self.projection["scale"])
            state.update(refiner_weights(dims, scale))
        return state

    def sample(self, state: Tensors, count: int, seed: int) -> data.ImageSet:
        """Balanced labels; coordinates drawn from the class's Gaussian with a seeded generator, drawn as
        digits by the refiner (from a Gaussian REFINED_SPREAD times wider) where the state holds one,
        else decoded linearly."""
        refined = any(name.startswith(refiner.PREFIX) for name in state)
        means, factors = gaussians(state, REFINED_MAX_SHRINK if refined else MAX_SHRINK)
        labels = torch.arange(count) % data.NUM_CLASSES
        noise = torch.randn(count, means.shape[1], generator=torch.Generator().manual_seed(seed),
                            dtype=torch.float64)
        spread = REFINED_SPREAD if refined else 1.0
        z = means[labels] + spread * torch.einsum("nij,nj->ni", factors[labels], noise)
        pixels = refiner.draw(state, z, labels) if refined else decode(z, state)
        pixels = (pixels * data.MAX_PIXEL).round().to(torch.uint8)
        return data.ImageSet(pixels.reshape(count, data.IMAGE_SIDE, data.IMAGE_SIDE).numpy(), labels.numpy())
