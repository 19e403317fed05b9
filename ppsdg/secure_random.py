"""Cryptographically secure randomness for the DP mechanisms: Gaussian noise and Poisson sampling
drawn from the ChaCha20 stream cipher (randomgen's ChaCha, 20 rounds), keyed by 256 bits of the
operating system's entropy, fresh for every round.

Why not torch's generator with a random seed: its Mersenne Twister stream is predictable from its
own outputs, and a random seed only hides where it starts. Opacus's secure mode would do this with
torchcsprng, which no longer builds for current torch. As Opacus's secure mode does, each Gaussian
is the sum of 4 draws scaled by 1/2, against floating-point attacks on the noise (Holohan and
Braghin, 2021).
"""
import math
import secrets
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from randomgen import ChaCha
from torch.utils.data import Sampler

DRAWS = 4
KEY_BITS = 256


class SecureRandom:
    """One round's secure stream: unpredictable to anyone, the run's own seed included."""

    def __init__(self) -> None:
        self._generator = np.random.Generator(ChaCha(key=secrets.randbits(KEY_BITS), counter=0, rounds=20))

    @property
    def generator(self) -> np.random.Generator:
        """The stream itself, for a sampler that draws from a numpy Generator (the discrete Gaussian)."""
        return self._generator

    def normal(self, shape: Sequence[int], std: float, like: torch.Tensor) -> torch.Tensor:
        """Gaussian noise N(0, std^2) of `shape`, with the dtype and device of `like`."""
        draws = self._generator.standard_normal((DRAWS, *shape)).sum(axis=0) / math.sqrt(DRAWS)
        return torch.from_numpy(draws * std).to(dtype=like.dtype, device=like.device)

    def poisson_indices(self, num_samples: int, sample_rate: float) -> list[int]:
        """Each of `num_samples` indices kept independently with probability `sample_rate`."""
        return np.flatnonzero(self._generator.random(num_samples) < sample_rate).tolist()


class SecurePoissonSampler(Sampler[list[int]]):
    """Opacus's Poisson batch sampler (UniformWithReplacementSampler) on the secure stream."""

    def __init__(self, num_samples: int, sample_rate: float, steps: int, source: SecureRandom) -> None:
        super().__init__()
        self.num_samples = num_samples
        self.sample_rate = sample_rate
        self.steps = steps
        self.source = source

    def __len__(self) -> int:
        return self.steps

    def __iter__(self) -> Iterator[list[int]]:
        for _ in range(self.steps):
            yield self.source.poisson_indices(self.num_samples, self.sample_rate)
