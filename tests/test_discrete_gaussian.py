"""The discrete Gaussian: the right integers, reproducibly, and the privacy that secure aggregation's
accounting relies on (its (epsilon, delta) curve, its Renyi divergence, and a sum of shares)."""
import math
import re

import numpy as np
import pytest
from randomgen import ChaCha
from scipy.special import log_ndtr, logsumexp
from scipy.stats import chisquare

from ppsdg import discrete_gaussian

SENSITIVITIES = (1, 4, 64)
MULTIPLIERS = (0.7, 1.0, 2.0, 5.0)
EPSILONS = (0.1, 0.5, 1.0, 2.0, 4.0, 8.0)
# Measured: at these (Delta, m): epsilons the exact discrete curve lies ABOVE the continuous Gaussian's
# (by more than 1e-12). It is a lattice effect, either sign with where eps*sigma^2/Delta falls between
# integers, shrinking as 1/Delta^2 at a fixed m (on 80 epsilons in [0.01, 16]: at most 4.6e-2 at
# Delta 1, 3.0e-3 at 4, 1.2e-5 at 64, 4.5e-8 at 1024). The Renyi divergence, below, never exceeds.
ABOVE_CONTINUOUS = {(1, 0.7): (0.1, 0.5, 2.0, 4.0), (1, 1.0): (0.1, 1.0, 2.0, 4.0), (1, 2.0): (0.5, 1.0, 2.0),
                    (1, 5.0): (1.0,), (4, 0.7): (4.0, 8.0), (4, 1.0): (0.1,), (4, 2.0): (0.1,),
                    (64, 0.7): (0.5, 1.0, 2.0, 4.0), (64, 1.0): (0.1,), (64, 2.0): (0.1,)}
# The largest of those excesses on EPSILONS: 4.6e-2 (Delta 1, m 0.7, eps 0.1), 8.4e-4 (4, 1, 0.1), 9.0e-6 (64, 0.7, 1).
LATTICE_EXCESS = {1: 5e-2, 4: 1e-3, 64: 1e-5}


def lattice_pmf(sigma: float, reach: int | None = None) -> np.ndarray:
    """N_Z(0, sigma^2) on -reach..reach, normalized there (40 sigma leave nothing out in float64)."""
    reach = math.ceil(40 * sigma) + 1 if reach is None else reach
    x = np.arange(-reach, reach + 1, dtype=np.float64)
    weights = np.exp(-x * x / (2 * sigma * sigma))
    return weights / weights.sum()


def lattice_moments(sigma: float) -> tuple[float, float]:
    """E[X^2] and E[X^4] of N_Z(0, sigma^2). Beyond sigma 1e3 the continuous Gaussian's: by Poisson
    summation they differ by a relative O(sigma^2 exp(-2 pi^2 sigma^2)), nothing in float64."""
    if sigma > 1e3:
        return sigma ** 2, 3 * sigma ** 4
    pmf = lattice_pmf(sigma)
    x = np.arange(pmf.size, dtype=np.float64) - (pmf.size - 1) // 2
    return float((pmf * x ** 2).sum()), float((pmf * x ** 4).sum())


def continuous_delta(sigma: float, sensitivity: float, epsilon: float) -> float:
    """The Gaussian mechanism's exact curve (Balle and Wang, 2018)."""
    return (math.exp(log_ndtr(-epsilon * sigma / sensitivity + sensitivity / (2 * sigma)))
            - math.exp(epsilon + log_ndtr(-epsilon * sigma / sensitivity - sensitivity / (2 * sigma))))


def hockey_stick(pmf: np.ndarray, sensitivity: int, epsilon: float) -> float:
    """delta(eps) between a lattice pmf and the same shifted by `sensitivity`, summed point by point."""
    p = np.concatenate([pmf, np.zeros(sensitivity)])
    q = np.concatenate([np.zeros(sensitivity), pmf])
    return float(np.maximum(p - math.exp(epsilon) * q, 0).sum())


def assert_moments(draws: np.ndarray, sigma: float) -> None:
    """Mean 0 and variance N_Z's, each within 6 standard errors of its estimate."""
    variance, fourth = lattice_moments(sigma)
    values = draws.astype(np.float64)
    assert abs(values.mean()) < 6 * math.sqrt(variance / values.size)
    assert abs((values ** 2).mean() - variance) < 6 * math.sqrt((fourth - variance ** 2) / values.size)


def test_draws_are_integers_of_the_same_shape_reproducible_from_the_seed():
    sigma = np.random.default_rng(0).uniform(1e3, 1e4, (3, 4, 5))
    sigma[0, 1, :] = 0.0
    draws = discrete_gaussian.sample(np.random.default_rng(7), sigma)
    assert draws.dtype == np.int64 and draws.shape == (3, 4, 5)
    assert (draws[0, 1, :] == 0).all() and np.count_nonzero(draws) > 50
    assert np.array_equal(draws, discrete_gaussian.sample(np.random.default_rng(7), sigma))
    assert not np.array_equal(draws, discrete_gaussian.sample(np.random.default_rng(8), sigma))
    chacha = [discrete_gaussian.sample(np.random.Generator(ChaCha(key=key, counter=0, rounds=20)), sigma)
              for key in (5, 5, 6)]
    assert np.array_equal(chacha[0], chacha[1]) and not np.array_equal(chacha[0], chacha[2])
    scalar = discrete_gaussian.sample(np.random.default_rng(1), np.array(0.0))
    assert scalar.shape == () and scalar == 0


@pytest.mark.parametrize("sigma", [0.5, 3.0, 1e3, 1e7])
def test_mean_is_zero_and_variance_is_the_discrete_gaussians(sigma):
    # At sigma 0.5 N_Z's variance is 0.215, not 0.25; at 3 a rounded continuous Gaussian's would be
    # 9.083, 0.9% off where the tolerance is 0.6%.
    draws = discrete_gaussian.sample(np.random.default_rng(11), np.full(2_000_000, sigma))
    assert_moments(draws, sigma)


def test_largest_sigma_keeps_its_spread_without_overflow():
    draws = discrete_gaussian.sample(np.random.default_rng(12), np.full(100_000, discrete_gaussian.MAX_SIGMA))
    assert draws.std() == pytest.approx(1e15, rel=0.02)


def test_small_sigma_matches_the_discrete_gaussian_pmf():
    sigma, count = 2.0, 200_000
    draws = discrete_gaussian.sample(np.random.default_rng(13), np.full(count, sigma))
    pmf = lattice_pmf(sigma)
    centre = (pmf.size - 1) // 2
    # -6..6 one value a bin, and the two tails lumped (at least 87 expected in each).
    expected = np.concatenate([[pmf[:centre - 6].sum()], pmf[centre - 6:centre + 7], [pmf[centre + 7:].sum()]])
    observed = np.bincount(np.clip(draws, -7, 7) + 7, minlength=15)
    assert chisquare(observed, expected * count).pvalue > 1e-4


def test_mixed_sigmas_in_one_call_each_get_their_own_variance():
    sigmas = np.array([0.5, 3.0, 1e3, 1e7])
    draws = discrete_gaussian.sample(np.random.default_rng(14), np.tile(sigmas, (500_000, 1)))
    for column, sigma in enumerate(sigmas):
        assert_moments(draws[:, column], sigma)


@pytest.mark.parametrize("sensitivity, multiplier, epsilon", [(1, 0.7, 0.1), (4, 2.0, 1.0), (64, 5.0, 0.5),
                                                              (1, 5.0, 2.0), (3, 0.2, 0.0)])
def test_delta_is_the_hockey_stick_divergence_of_the_pmf(sensitivity, multiplier, epsilon):
    sigma = multiplier * sensitivity
    expected = hockey_stick(lattice_pmf(sigma, math.ceil(40 * sigma) + sensitivity), sensitivity, epsilon)
    assert discrete_gaussian.delta(sigma, sensitivity, epsilon) == pytest.approx(expected, rel=1e-9, abs=1e-15)


@pytest.mark.parametrize("sensitivity", SENSITIVITIES)
@pytest.mark.parametrize("multiplier", MULTIPLIERS)
def test_delta_is_at_most_the_continuous_gaussians_except_where_measured(sensitivity, multiplier):
    sigma = multiplier * sensitivity
    for epsilon in EPSILONS:
        excess = (discrete_gaussian.delta(sigma, sensitivity, epsilon)
                  - continuous_delta(sigma, sensitivity, epsilon))
        if epsilon in ABOVE_CONTINUOUS.get((sensitivity, multiplier), ()):
            assert 1e-12 < excess <= LATTICE_EXCESS[sensitivity], (epsilon, excess)
        else:
            assert excess <= 1e-12, (epsilon, excess)


@pytest.mark.parametrize("sensitivity", SENSITIVITIES)
@pytest.mark.parametrize("multiplier", MULTIPLIERS)
def test_renyi_divergence_is_at_most_the_continuous_gaussians(sensitivity, multiplier):
    # CKS 2020 Proposition 5: D_alpha(N_Z(0, s^2) || N_Z(Delta, s^2)) <= alpha Delta^2 / (2 s^2), with
    # equality at whole alpha: what an RDP accountant may take for the continuous Gaussian's.
    sigma = multiplier * sensitivity
    for alpha in (1.5, 2.0, 2.5, 10.5, 32.0):
        reach = math.ceil(40 * sigma + 40 * alpha * sensitivity)
        x = np.arange(-reach, reach + 1, dtype=np.float64)
        log_p, log_q = -x * x / (2 * sigma ** 2), -(x - sensitivity) ** 2 / (2 * sigma ** 2)
        divergence = (logsumexp(alpha * log_p + (1 - alpha) * log_q) - logsumexp(log_p)) / (alpha - 1)
        continuous = alpha * sensitivity ** 2 / (2 * sigma ** 2)
        assert divergence <= continuous * (1 + 1e-12)
        if alpha.is_integer():
            assert divergence == pytest.approx(continuous, rel=1e-12)


def test_three_shares_sum_to_the_central_discrete_gaussian():
    sigma, sensitivity, shares = 30.0, 10, 3
    # Kairouz, Liu, Steinke 2021: the sum's divergence from N_Z(0, sigma^2) is at most tau.
    tau = 10 * sum(math.exp(-2 * math.pi ** 2 * sigma ** 2 / shares * k / (k + 1)) for k in range(1, shares))
    assert tau < 1e-12
    share = lattice_pmf(sigma / math.sqrt(shares))
    summed = np.convolve(np.convolve(share, share), share)
    assert np.abs(summed - lattice_pmf(sigma, (summed.size - 1) // 2)).max() < 1e-15
    for epsilon in (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0):
        summed_delta = hockey_stick(summed, sensitivity, epsilon)
        assert summed_delta == pytest.approx(discrete_gaussian.delta(sigma, sensitivity, epsilon), rel=1e-9)
        excess = summed_delta - continuous_delta(sigma, sensitivity, epsilon)
        if epsilon in (0.05, 0.25):
            # Measured: the lattice puts N_Z(0, 30^2) itself above the continuous curve here, by 6.2e-6
            # and 5.2e-6 (below it by 1.2e-5 at 0.1 and 5.1e-6 at 0.5).
            assert 1e-9 < excess < 1e-5, (epsilon, excess)
        else:
            assert excess <= 1e-9, (epsilon, excess)
    draws = discrete_gaussian.sample(np.random.default_rng(15), np.full((shares, 1_000_000), sigma / math.sqrt(shares)))
    total = draws.sum(axis=0).astype(np.float64)
    assert (total ** 2).mean() == pytest.approx(sigma ** 2, abs=6 * math.sqrt(2 / total.size) * sigma ** 2)


@pytest.mark.parametrize("sigma, message", [(-1.0, "-1.0 is negative"), (float("nan"), "nan is not finite"),
                                            (float("inf"), "inf is not finite"), (1e16, "1e+16 is above 1e+15")])
def test_bad_sigma_is_refused_by_name(sigma, message):
    with pytest.raises(ValueError, match=re.escape(f"sigma {message}")):
        discrete_gaussian.sample(np.random.default_rng(0), np.array([1.0, sigma, 2.0]))


@pytest.mark.parametrize("arguments, name", [((0.0, 1, 1.0), "sigma"), ((1.0, 0, 1.0), "sensitivity"),
                                             ((1.0, 1.5, 1.0), "sensitivity"), ((1.0, 1, -1.0), "epsilon")])
def test_delta_refuses_what_has_no_curve(arguments, name):
    with pytest.raises(ValueError, match=name):
        discrete_gaussian.delta(*arguments)
