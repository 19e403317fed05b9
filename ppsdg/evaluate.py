"""How much of the real data's use a synthetic set keeps, measured the way the literature does.

Every figure comes from one fixed protocol, so that figures of different runs compare:

* TSTR (train on synthetic, test on real): a fresh `Net` trained on the synthetic set alone with
  Adam (lr 1e-3), batch 64, 5 epochs, every draw from the seed, then tested once on the real test set.
  Nothing is chosen on the test set (no early stopping, no best epoch).
* TRTR (train on real, test on real): the same recipe on the real training set; the ceiling of TSTR.
* Feature space: the 128 ReLU outputs of fc1 of a `Net` trained with the same recipe on the REAL
  training set. The literature's Inception network needs a download that a node cannot make, and a
  digit classifier's features are the usual substitute for MNIST (nothing is cached on disk).
* Fréchet distance between the real test set's and the synthetic set's features.
* Precision and recall (Kynkäänniemi et al. 2019) and coverage (Naeem et al. 2020) with k=3
  nearest-neighbour manifolds in feature space; the real side is the test set.
* Memorization: each image's L2 pixel distance (pixels/255) to its nearest real training image of any
  class (a copy leaks whatever label it is given). A synthetic image counts as memorized if it is at
  least as close as the 5th percentile of the real test images' distances, so real test images come
  out about 5% memorized and copies of training images 100%.

Per class, synthetic images of class c are compared with real test images of class c.
"""
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from ppsdg import data, local, progress, report, sdmetrics_reports, synthetic, table_evaluation, table_plots
from ppsdg.errors import DataError
from ppsdg.runtime import derive_seed
from ppsdg.simplemodel import Net

LEARNING_RATE = 1e-3
BATCH_SIZE = 64
EPOCHS = 5
TEST_BATCH_SIZE = 1000
NEIGHBOURS = 3
MEMORIZATION_QUANTILE = 0.05
CHUNK = 1024
CPU = torch.device("cpu")
HEADLINE = ("tstr_accuracy", "frechet_distance", "memorized_share")
# What `ppsdg evaluate` reads: beyond MNIST's 60,000 training images, in a CSV of at most 4 KiB a row
# (785 cells of up to three digits and a comma), so that time and memory stay bounded (10^6 rows
# once took 30 s and 10.7 GB before failing).
MAX_SYNTHETIC_ROWS = 100_000
MAX_SYNTHETIC_BYTES = MAX_SYNTHETIC_ROWS * 4096


def train_classifier(images: data.ImageSet, seed: int, epochs: int = EPOCHS) -> Net:
    """The protocol's one recipe (Adam, fixed batch and epochs), its initialization, order and dropout
    all drawn from `seed`, so a figure depends on the images alone. A bar counts its batches (MNIST's
    60,000 images: minutes)."""
    examples = local.Examples.from_images(images, CPU)
    generator = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]), tqdm(total=epochs * -(-len(images) // BATCH_SIZE),
                                                 desc="training a classifier", unit="batch", leave=False,
                                                 disable=None) as batches:
        torch.manual_seed(seed)
        model = Net()
        optimizer = torch.optim.Adam(model.parameters(), lr=LEARNING_RATE)
        for _ in range(epochs):
            local.train_epoch(model, optimizer, local.shuffled_batches(examples, BATCH_SIZE, generator), batches)
    return model


def accuracy(model: Net, images: data.ImageSet) -> float:
    """Accuracy on real images, through the same test loop the federated runs report."""
    return local.test(model, local.Examples.from_images(images, CPU), TEST_BATCH_SIZE)[1]


def classifier_seed(seed: int) -> int:
    """The seed of the protocol's classifiers, derived as a run derives its draws."""
    return derive_seed(seed, 0, 0)


@torch.no_grad()
def features(model: Net, images: data.ImageSet) -> torch.Tensor:
    """Penultimate features: what fc1's ReLU hands to the last dropout (the identity in eval mode)."""
    model.eval()
    inputs, _ = data.to_tensors(images)
    captured: list[torch.Tensor] = []
    hook = model.dropout2.register_forward_hook(lambda _module, _inputs, output: captured.append(output))
    try:
        for chunk in inputs.split(TEST_BATCH_SIZE):
            model(chunk)
    finally:
        hook.remove()
    return torch.cat(captured)


def frechet_distance(first: torch.Tensor, second: torch.Tensor) -> float:
    """|m1 - m2|^2 + tr(S1 + S2 - 2 (S1 S2)^1/2) of Gaussians fitted to two feature sets, in float64.

    tr (S1 S2)^1/2 is taken as the sum of the square roots of the eigenvalues of S1^1/2 S2 S1^1/2,
    a symmetric matrix, so no complex parts arise and the distance of a set to itself is ~0.
    """
    first, second = first.double(), second.double()
    if min(len(first), len(second)) < 2:
        raise DataError("the Fréchet distance needs at least 2 images in each set")
    cov_first, cov_second = torch.cov(first.T), torch.cov(second.T)
    root_first = _psd_sqrt(cov_first)
    cross = torch.linalg.eigvalsh(root_first @ cov_second @ root_first).clamp(min=0).sqrt().sum()
    mean_term = (first.mean(0) - second.mean(0)).square().sum()
    return max(float(mean_term + cov_first.trace() + cov_second.trace() - 2 * cross), 0.0)


def _psd_sqrt(matrix: torch.Tensor) -> torch.Tensor:
    """Square root of a covariance matrix; rounding's tiny negative eigenvalues count as 0."""
    values, vectors = torch.linalg.eigh(matrix)
    return vectors @ torch.diag(values.clamp(min=0).sqrt()) @ vectors.T


def _distance_blocks(queries: torch.Tensor, references: torch.Tensor) -> Iterator[torch.Tensor]:
    """L2 distances of CHUNK queries at a time to every reference, so memory stays bounded."""
    references = references.float()
    for chunk in queries.float().split(CHUNK):
        yield torch.cdist(chunk, references, compute_mode="use_mm_for_euclid_dist")


def nearest_distances(queries: torch.Tensor, references: torch.Tensor, k: int = 1) -> torch.Tensor:
    """Each query's distance to its k-th nearest reference."""
    return torch.cat([block.topk(k, dim=1, largest=False).values[:, -1]
                      for block in _distance_blocks(queries, references)])


def inside_balls(queries: torch.Tensor, centres: torch.Tensor, radii: torch.Tensor) -> torch.Tensor:
    """Whether each query lies in at least one ball: the k-NN manifold estimate of both papers."""
    return torch.cat([(block <= radii).any(dim=1) for block in _distance_blocks(queries, centres)])


def neighbour_radii(points: torch.Tensor) -> torch.Tensor:
    """Distance of each point to its NEIGHBOURS-th nearest other point (the point itself is nearest)."""
    return nearest_distances(points, points, NEIGHBOURS + 1)


def manifold_figures(real: torch.Tensor, synthetic: torch.Tensor) -> dict[str, float]:
    """Precision (synthetic inside the real manifold), recall (real inside the synthetic manifold) and
    coverage (real balls that hold a synthetic point)."""
    real_radii = neighbour_radii(real)
    return {
        "precision": _share(inside_balls(synthetic, real, real_radii)),
        "recall": _share(inside_balls(real, synthetic, neighbour_radii(synthetic))),
        "coverage": _share(nearest_distances(real, synthetic) <= real_radii),
    }


def _share(mask: torch.Tensor) -> float:
    """The share of True in a mask, counted exactly rather than averaged in float32."""
    return int(mask.sum()) / len(mask)


def _flat_pixels(images: data.ImageSet) -> torch.Tensor:
    """Pixels as 784-vectors in 0..1, so distances do not depend on the classifier's normalization."""
    return torch.from_numpy(images.pixels.reshape(len(images), -1)).float() / data.MAX_PIXEL


def memorization(synthetic: data.ImageSet, train: data.ImageSet,
                 test: data.ImageSet) -> tuple[torch.Tensor, float]:
    """Which synthetic images are memorized, and the threshold: the MEMORIZATION_QUANTILE of the real
    test images' distances to the training set, i.e. as close as only that share of unseen real
    images comes by chance."""
    reference = _flat_pixels(train)
    threshold = float(torch.quantile(nearest_distances(_flat_pixels(test), reference), MEMORIZATION_QUANTILE))
    return nearest_distances(_flat_pixels(synthetic), reference) <= threshold, threshold


def evaluate(synthetic: data.ImageSet, train: data.ImageSet, test: data.ImageSet, seed: int,
             epochs: int = EPOCHS) -> dict[str, Any]:
    """Every figure of the protocol for `synthetic`, given the real data it was made from (`train`,
    which it must not copy) and the real test set, as plain JSON values."""
    for name, images in (("synthetic", synthetic), ("training", train), ("test", test)):
        if len(images) <= NEIGHBOURS:
            raise DataError(f"the {name} set holds {len(images)} images; the evaluation needs at least "
                            f"{NEIGHBOURS + 1}")
    with progress.Steps("measuring the synthetic images", 4) as steps:
        steps.step("TSTR classifier")
        tstr_model = train_classifier(synthetic, classifier_seed(seed), epochs)
        steps.step("the real data's classifier")
        extractor = train_classifier(train, classifier_seed(seed), epochs)
        steps.step("features and memorization")
        real_features, synthetic_features = features(extractor, test), features(extractor, synthetic)
        memorized, threshold = memorization(synthetic, train, test)
        steps.step("figures, overall and per class")
        return {
            "synthetic_images": len(synthetic), "train_images": len(train), "test_images": len(test),
            "tstr_accuracy": accuracy(tstr_model, test),
            "trtr_accuracy": accuracy(extractor, test),
            "frechet_distance": frechet_distance(real_features, synthetic_features),
            **manifold_figures(real_features, synthetic_features),
            "memorized_share": _share(memorized),
            "memorization_threshold": threshold,
            "memorization_quantile": MEMORIZATION_QUANTILE,
            "per_class": {str(label): class_figures(label, tstr_model, test, synthetic, real_features,
                                                    synthetic_features, memorized)
                          for label in range(data.NUM_CLASSES)},
            "protocol": {"optimizer": "Adam", "learning_rate": LEARNING_RATE, "batch_size": BATCH_SIZE,
                         "epochs": epochs, "seed": seed, "neighbours": NEIGHBOURS},
        }


def class_figures(label: int, tstr_model: Net, test: data.ImageSet, synthetic: data.ImageSet,
                  real_features: torch.Tensor, synthetic_features: torch.Tensor,
                  memorized: torch.Tensor) -> dict[str, Any]:
    """One class's figures; those a class has too few images for are null, and `note` says why. A class
    missing from the synthetic set has recall and coverage 0: the generator gives none of it."""
    real_rows = torch.from_numpy(np.flatnonzero(test.labels == label))
    synthetic_rows = torch.from_numpy(np.flatnonzero(synthetic.labels == label))
    figures: dict[str, Any] = {
        "synthetic_images": len(synthetic_rows), "test_images": len(real_rows),
        "missing": len(synthetic_rows) == 0,
        "tstr_accuracy": accuracy(tstr_model, test.subset(real_rows.numpy())) if len(real_rows) else None,
        "memorized_share": _share(memorized[synthetic_rows]) if len(synthetic_rows) else None,
        "frechet_distance": None, "precision": None, "recall": None, "coverage": None,
    }
    if figures["missing"]:
        return {**figures, "recall": 0.0, "coverage": 0.0,
                "note": "no synthetic images of this class: none of its real images is recalled or covered"}
    if min(len(real_rows), len(synthetic_rows)) <= NEIGHBOURS:
        return {**figures, "note": f"{len(synthetic_rows)} synthetic and {len(real_rows)} test images of "
                                   f"this class; its distances need at least {NEIGHBOURS + 1} of each"}
    real, fake = real_features[real_rows], synthetic_features[synthetic_rows]
    return {**figures, "frechet_distance": frechet_distance(real, fake), **manifold_figures(real, fake)}


def check_synthetic_file(path: str) -> None:
    """A synthetic file is read in bounded time and memory only if it is a regular file (/dev/zero would
    be read for ever, a FIFO waited on for ever) of at most MAX_SYNTHETIC_BYTES."""
    try:
        status = os.stat(path)
    except OSError as error:
        raise DataError(f"{path}: {error.strerror}") from None
    if not stat.S_ISREG(status.st_mode):
        raise DataError(f"{path}: not a regular file")
    if status.st_size > MAX_SYNTHETIC_BYTES:
        raise DataError(f"{path}: {status.st_size} bytes, more than the {MAX_SYNTHETIC_BYTES} a synthetic set of "
                        f"{MAX_SYNTHETIC_ROWS} rows may take")


def read_synthetic(path: str) -> data.ImageSet:
    """The synthetic images to score: at most MAX_SYNTHETIC_ROWS, from a file check_synthetic_file passed."""
    images = data.load_csv(path)
    if len(images.labels) > MAX_SYNTHETIC_ROWS:
        raise DataError(f"{path}: {len(images.labels)} images, more than {MAX_SYNTHETIC_ROWS}")
    return images


def evaluate_table(synthetic_path: str, source: str, test_data: str | None, schema_path: str | None,
                   target: str | None, folder: Path | None, sdmetrics: bool = False) -> tuple[dict[str, Any], str]:
    """A synthetic table's figures and what they mean; in `folder` its pictures (`ppsdg.table_plots`). With
    `sdmetrics`, SDV's reports too (`ppsdg.sdmetrics_reports`), measured first: a missing extra is refused
    before the minutes of the protocol."""
    synthetic, train, test, schema, target = table_evaluation.read_parts(
        synthetic_path, source, test_data, schema_path, target, MAX_SYNTHETIC_ROWS)
    scored, why = sdmetrics_reports.reports(synthetic, train, schema) if sdmetrics else ({}, {})
    figures = table_evaluation.evaluate(synthetic, train, test, schema, target)
    figures = {**figures, **scored, "unavailable": {**figures["unavailable"], **why}}
    extra = sdmetrics_reports.lines(figures) if sdmetrics else []
    if folder is None:
        return figures, report.table(figures, extra)
    empty = table_evaluation.empty_part({"the synthetic table": synthetic, "the training part": train})
    if empty:
        return figures, report.table(figures, [*extra, ("pictures", "none", empty)])
    table_plots.plot(synthetic, train, schema, folder)
    return figures, report.table(figures, [*extra, *report.pictures(table_plots.MEANINGS)])


def evaluate_images(synthetic_path: str, source: str, seed: int, folder: Path | None) -> tuple[dict[str, Any], str]:
    """Synthetic images' figures and what they mean; in `folder` the first of each class (`synthetic.tiled`)."""
    images = read_synthetic(synthetic_path)
    train, test = data.load(source)
    figures = evaluate(images, train, test, seed)
    if folder is None:
        return figures, report.images(figures)
    synthetic.save_grid(synthetic.tiled(images), folder / synthetic.SAMPLES,
                        f"the first of each class in {Path(synthetic_path).name}")
    return figures, report.images(figures, report.pictures({synthetic.SAMPLES: synthetic.SAMPLES_MEANING}))

