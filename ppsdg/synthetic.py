"""Synthetic data as a run shows it: a per-class sample grid drawn from a synthesizer's state (or taken
from a synthetic set) and saved as a picture, and the synthetic records drawn from a finished run's
checkpoint."""
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from backends import Tensors
from ppsdg import data
from ppsdg.checkpoint import Checkpoint
from ppsdg.models import new_model
from ppsdg.synthesizers.base import Synthesizer

GRID_COLUMNS = 10
SAMPLES = "samples.png"
SAMPLES_MEANING = f"{GRID_COLUMNS} synthetic images of each class, a row per class"


def grid(synthesizer: Synthesizer, state: Tensors, seed: int) -> np.ndarray:
    """GRID_COLUMNS samples of each class drawn from `state`, tiled (`tiled`)."""
    return tiled(synthesizer.sample(state, data.NUM_CLASSES * GRID_COLUMNS, seed))


def tiled(images: data.ImageSet) -> np.ndarray:
    """One row per class (0 at the top), its first GRID_COLUMNS images, black where it has fewer, as one
    uint8 image."""
    side = data.IMAGE_SIDE
    tiles = np.zeros((data.NUM_CLASSES, GRID_COLUMNS, side, side), dtype=np.uint8)
    for label in range(data.NUM_CLASSES):
        chosen = images.pixels[images.labels == label][:GRID_COLUMNS]
        tiles[label, :len(chosen)] = chosen
    return tiles.transpose(0, 2, 1, 3).reshape(data.NUM_CLASSES * side, GRID_COLUMNS * side)


def save_grid(pixels: np.ndarray, path: Path, when: str) -> None:
    """A sample grid (one row per class) large enough to see, each row named by its class."""
    rows = pixels.shape[0] // data.IMAGE_SIDE
    figure = Figure(figsize=(8, 8.4), layout="tight")
    axes = figure.subplots()
    axes.imshow(pixels, cmap="gray", vmin=0, vmax=data.MAX_PIXEL, interpolation="nearest")
    axes.set_yticks([(row + 0.5) * data.IMAGE_SIDE for row in range(rows)], [str(row) for row in range(rows)])
    axes.set_xticks([])
    axes.set(ylabel="class", title=f"Synthetic samples, {when}")
    figure.savefig(path, dpi=100)


def drawn(point: Checkpoint, synthesizer: Synthesizer, seed: int, count: int) -> tuple["data.Dataset", Tensors]:
    """`count` synthetic records from the run's final state (post-processing of what the nodes released:
    no privacy cost), the same from the same seed wherever they are drawn, and the state drawn from."""
    model = new_model(synthesizer, seed)
    model.load_state_dict(point.model)
    state = synthesizer.generator_state(model)
    return synthesizer.sample(state, count, seed), state
