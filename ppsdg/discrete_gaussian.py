"""Discrete Gaussian noise N_Z(0, sigma^2), in lattice units, for releases summed by secure aggregation.

Secure summation adds integers, so each node's share of the DP noise must be an integer too: the sum
of the nodes' discrete Gaussians then carries, within a negligible divergence, the noise of one
central discrete Gaussian, whose Renyi divergence is at most the continuous Gaussian's (Canonne, Kamath,
Steinke, NeurIPS 2020; Kairouz, Liu, Steinke, ICML 2021); its exact (epsilon, delta) curve (`delta`)
can lie slightly above the continuous one, by a lattice effect that shrinks as 1/sensitivity^2.
Sampling is CKS's Algorithm 3: rejection from a discrete Laplace, the difference of two geometric draws
floor(t * Exp(1)). Probabilities are computed in float64, as TensorFlow Privacy's distributed discrete
Gaussian does, not in CKS's exact rational arithmetic. All randomness comes from the caller's
`generator`: seeded for reproducible runs, or secure (numpy's Generator over randomgen's ChaCha).
"""
import math

import numpy as np

MAX_SIGMA = 1e15
# Lattice points beyond TAILS standard deviations carry under exp(-800) of the mass: zero in float64.
TAILS = 40


def _check(sigma: np.ndarray) -> None:
    """Refuse, by name, a sigma the sampler cannot honour."""
    for bad, problem in ((~np.isfinite(sigma), "is not finite"), (sigma < 0, "is negative"),
                         (sigma > MAX_SIGMA, f"is above {MAX_SIGMA:g}")):
        if bad.any():
            raise ValueError(f"discrete Gaussian sigma {float(sigma[bad].flat[0])!r} {problem}")


def sample(generator: np.random.Generator, sigma: np.ndarray) -> np.ndarray:
    """Discrete Gaussian draws N_Z(0, sigma_i^2), one per entry of `sigma` (float64, >= 0, any shape, in
    lattice units; values up to about 1e15), as int64 of the same shape; an entry whose sigma is 0 is 0."""
    sigma = np.asarray(sigma, dtype=np.float64)
    _check(sigma)
    flat = sigma.ravel()
    draws = np.zeros(flat.shape, dtype=np.int64)
    pending = np.flatnonzero(flat > 0)
    while pending.size:
        scale = flat[pending]
        t = np.floor(scale) + 1.0
        exponentials = generator.standard_exponential((3, pending.size))
        # floor(t * E) is geometric: P[>= k] = exp(-k / t); two of them differ by a discrete Laplace.
        laplace = (np.floor(t * exponentials[0]).astype(np.int64)
                   - np.floor(t * exponentials[1]).astype(np.int64))
        # Accept with probability exp(-(|Y| - sigma^2/t)^2 / (2 sigma^2)), written so that a tiny sigma
        # cannot make 0/0 (overflow to inf only rejects).
        with np.errstate(over="ignore"):
            excess = np.abs(laplace) / scale - scale / t
            accepted = exponentials[2] >= 0.5 * excess * excess
        draws[pending[accepted]] = laplace[accepted]
        pending = pending[~accepted]
    return draws.reshape(sigma.shape)


def delta(sigma: float, sensitivity: int, epsilon: float) -> float:
    """The exact (epsilon, delta) curve of the discrete Gaussian with integer L2 sensitivity (one coordinate):
    CKS 2020 Theorem 7: delta = P[X > eps*sigma^2/Delta - Delta/2] - e^eps * P[X > eps*sigma^2/Delta + Delta/2],
    X ~ N_Z(0, sigma^2)."""
    if not (math.isfinite(sigma) and sigma > 0):
        raise ValueError(f"discrete Gaussian sigma {sigma!r} is not a positive finite number")
    if sensitivity != int(sensitivity) or sensitivity < 1:
        raise ValueError(f"sensitivity {sensitivity!r} is not a positive integer")
    if not (math.isfinite(epsilon) and epsilon >= 0):
        raise ValueError(f"epsilon {epsilon!r} is not a finite number >= 0")
    sensitivity = int(sensitivity)
    variance = sigma * sigma
    reach = math.ceil(TAILS * sigma) + sensitivity
    # The difference of tails is the sum over x > threshold of p(x) - e^eps p(x + Delta): positive terms,
    # each p(x) (1 - e^(eps - loss(x))), so that nothing cancels.
    threshold = epsilon * variance / sensitivity - sensitivity / 2
    low = math.floor(threshold) + 1
    if low > reach:
        return 0.0
    x = np.arange(low, reach + 1, dtype=np.float64)
    loss = (2 * x + sensitivity) * sensitivity / (2 * variance)
    terms = np.exp(-x * x / (2 * variance)) * -np.expm1(epsilon - loss)
    support = np.arange(1, reach + 1, dtype=np.float64)
    normalizer = 1 + 2 * np.exp(-support * support / (2 * variance)).sum()
    return float(terms.sum() / normalizer)
