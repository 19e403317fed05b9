"""Synthetic data as a run shows it: a per-class sample grid drawn from a synthesizer's state, and the
synthetic records drawn from a finished run's checkpoint."""
import argparse

import numpy as np

from backends import Tensors
from ppsdg import data, synthesizers
from ppsdg.checkpoint import Checkpoint
from ppsdg.models import new_model
from ppsdg.synthesizers import Synthesizer

GRID_COLUMNS = 10


def grid(synthesizer: Synthesizer, state: Tensors, seed: int) -> np.ndarray:
    """One row per class (0 at the top), GRID_COLUMNS samples each, as one uint8 image."""
    images = synthesizer.sample(state, data.NUM_CLASSES * GRID_COLUMNS, seed)
    order = np.argsort(images.labels, kind="stable")
    side = data.IMAGE_SIDE
    tiles = images.pixels[order].reshape(data.NUM_CLASSES, GRID_COLUMNS, side, side)
    return tiles.transpose(0, 2, 1, 3).reshape(data.NUM_CLASSES * side, GRID_COLUMNS * side)


def drawn(point: Checkpoint, options: argparse.Namespace, count: int) -> tuple["data.Dataset", Tensors]:
    """`count` synthetic records from the run's final state (post-processing of what the nodes released:
    no privacy cost), the same from the same seed wherever they are drawn, and the state drawn from."""
    synthesizer = synthesizers.for_options(options)
    model = new_model(options)
    model.load_state_dict(point.model)
    state = synthesizer.generator_state(model)
    return synthesizer.sample(state, count, options.seed), state
