"""Synthetic data drawn from a trained generator: a labelled dataset and a per-class sample grid."""
import numpy as np
import torch

from ppsdg import data
from ppsdg.simplemodel import Generator

GRID_COLUMNS = 10


@torch.no_grad()
def sample(generator: Generator, count: int, seed: int) -> data.ImageSet:
    """`count` images with balanced labels (0, 1, ..., 9, 0, ...), drawn from a seeded noise source."""
    noise_source = torch.Generator().manual_seed(seed)
    labels = torch.arange(count) % data.NUM_CLASSES
    noise = torch.randn(count, generator.latent_dim, generator=noise_source)
    generator.eval()
    return data.from_tensors(generator(noise, labels), labels)


def grid(generator: Generator, seed: int) -> np.ndarray:
    """One row per class, GRID_COLUMNS samples each, as one uint8 image."""
    images = sample(generator, data.NUM_CLASSES * GRID_COLUMNS, seed)
    order = np.argsort(images.labels, kind="stable")
    side = data.IMAGE_SIDE
    tiles = images.pixels[order].reshape(data.NUM_CLASSES, GRID_COLUMNS, side, side)
    return tiles.transpose(0, 2, 1, 3).reshape(data.NUM_CLASSES * side, GRID_COLUMNS * side)
