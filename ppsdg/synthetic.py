"""Synthetic data as a run shows it: a per-class sample grid drawn from a synthesizer's state."""
import numpy as np

from backends import Tensors
from ppsdg import data
from ppsdg.synthesizers import Synthesizer

GRID_COLUMNS = 10


def grid(synthesizer: Synthesizer, state: Tensors, seed: int) -> np.ndarray:
    """One row per class (0 at the top), GRID_COLUMNS samples each, as one uint8 image."""
    images = synthesizer.sample(state, data.NUM_CLASSES * GRID_COLUMNS, seed)
    order = np.argsort(images.labels, kind="stable")
    side = data.IMAGE_SIDE
    tiles = images.pixels[order].reshape(data.NUM_CLASSES, GRID_COLUMNS, side, side)
    return tiles.transpose(0, 2, 1, 3).reshape(data.NUM_CLASSES * side, GRID_COLUMNS * side)
