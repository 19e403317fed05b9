"""The refiner of the moments synthesizer: a network that draws the digit whose coordinates in the
public basis are z, trained on the public digits alone.

A class-conditional Gaussian in a 40-60 dimensional subspace decodes to blurred digits with ghosts
of others: the subspace cannot hold a stroke's edges, and a Gaussian draw mixes shapes. The refiner
learns from the public digits (the embedded UCI digits and their warped copies, `moments.public_digits`)
what a digit of a given label looks like when its coordinates are z; fed the Gaussian's draws, it gives
single, sharp digits whose coordinates stay near the drawn ones, so the statistics the nodes released
still shape the synthetic data. It sees only public data and the public basis, and trains under a fixed
seed: it costs no privacy and every party that trains it gets the same network.
"""
import torch
import torch.nn.functional as F
from torch import nn

from backends import Tensors
from ppsdg import data

HIDDEN = 512
EPOCHS = 30
BATCH_SIZE = 256
LEARNING_RATE = 1e-3
SEED = 0
PREFIX = "refiner."
# The contrast ramps that ink the public digits for training and the refiner's own drawings.
PUBLIC_INK = (0.35, 0.70)
DRAWN_INK = (0.15, 0.85)


class Refiner(nn.Module):
    """Coordinates and a label in, the logits of the 784 pixels out."""

    def __init__(self, dims: int) -> None:
        super().__init__()
        self.layers = nn.Sequential(nn.Linear(dims + data.NUM_CLASSES, HIDDEN), nn.ReLU(),
                                    nn.Linear(HIDDEN, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, data.NUM_PIXELS))

    def forward(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        onehot = F.one_hot(labels, data.NUM_CLASSES).to(z.dtype)
        return self.layers(torch.cat([z, onehot], dim=1))


def fit(coordinates: torch.Tensor, labels: torch.Tensor, pixels: torch.Tensor) -> Refiner:
    """A refiner trained to draw `pixels` (0..1) from their coordinates and labels (cross-entropy per
    pixel), every draw from SEED."""
    generator = torch.Generator().manual_seed(SEED)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED)
        refiner = Refiner(coordinates.shape[1])
    optimizer = torch.optim.Adam(refiner.parameters(), lr=LEARNING_RATE)
    for _ in range(EPOCHS):
        order = torch.randperm(len(labels), generator=generator)
        for batch in order.split(BATCH_SIZE):
            loss = F.binary_cross_entropy_with_logits(refiner(coordinates[batch], labels[batch]), pixels[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    return refiner


def render(pixels: torch.Tensor, ramp: tuple[float, float] = PUBLIC_INK) -> torch.Tensor:
    """Images drawn with a pen's ink: grey levels below the ramp's low end become background, above its
    high end full ink, linearly between.

    The embedded digits are 8x8 scans enlarged to 20x20, so their strokes are wide grey ramps; PUBLIC_INK
    makes them the narrow, saturated strokes of handwriting scanned at 28x28. The refiner's outputs are
    each pixel's probability of ink, grey where it is unsure (a stroke's edge, a draw between two
    shapes): 15% of their pixels are grey against 9% in MNIST; DRAWN_INK brings them to 9%.
    """
    low, high = ramp
    return ((pixels - low) / (high - low)).clamp(0.0, 1.0)


def weights(refiner: Refiner) -> Tensors:
    """The refiner's parameters as they travel in a generator state, each name after PREFIX."""
    return {PREFIX + name: t.detach().clone() for name, t in refiner.state_dict().items()}


def draw(state: Tensors, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Pixels in 0..1 (N, 784) of the digits with coordinates z and these labels, inked (DRAWN_INK)."""
    own = {name[len(PREFIX):]: t for name, t in state.items() if name.startswith(PREFIX)}
    refiner = Refiner(z.shape[1])
    refiner.load_state_dict(own)
    with torch.no_grad():
        return render(torch.sigmoid(refiner(z.float(), labels)), DRAWN_INK)
