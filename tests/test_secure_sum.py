"""Secure summation by pairwise masks: the masks cancel exactly, a node's masked release is uniform
whatever it holds, and a node that leaves after the key agreement is named."""
import numpy as np
import pytest
from scipy.stats import chisquare

from ppsdg import secure_sum
from ppsdg.errors import FederationError

CONTEXT = b"run 1|round 3"


def round_of(values: dict[int, np.ndarray], context: bytes = CONTEXT) -> dict[int, np.ndarray]:
    """Each node's masked release, after a key agreement among all of them."""
    keys = {rank: secure_sum.key_pair() for rank in values}
    public = {rank: key[1] for rank, key in keys.items()}
    return {rank: secure_sum.masked(vector, rank, keys[rank][0], public, context) for rank, vector in values.items()}


def test_the_masks_cancel_exactly_in_the_sum():
    rng = np.random.default_rng(0)
    values = {rank: rng.integers(0, 2**63, size=1000, dtype=np.uint64) for rank in (1, 2, 3, 4, 5)}
    released = round_of(values)
    assert secure_sum.ring_sum(list(released.values())).tolist() == secure_sum.ring_sum(list(values.values())).tolist()
    assert all(not np.array_equal(released[rank], values[rank]) for rank in values)


def test_fixed_point_sums_of_noisy_counts_come_back_within_rounding():
    rng = np.random.default_rng(1)
    counts = {rank: rng.normal(50.0, 30.0, size=200) for rank in (1, 2, 3)}
    scale = 2.0**20
    released = round_of({rank: secure_sum.to_ring(np.rint(vector * scale)) for rank, vector in counts.items()})
    total = secure_sum.from_ring(secure_sum.ring_sum(list(released.values())), scale)
    assert np.abs(total - sum(counts.values())).max() <= 3 * 0.5 / scale
    assert (total < 0).any() == (sum(counts.values()) < 0).any()


@pytest.mark.parametrize("held", ["zeros", "ones", "counts"])
def test_a_single_masked_release_is_uniform_whatever_it_holds(held):
    size = 1 << 15
    vector = {"zeros": np.zeros(size, dtype=np.uint64), "ones": np.full(size, 2**64 - 1, dtype=np.uint64),
              "counts": secure_sum.to_ring(np.arange(size) % 7)}[held]
    released = round_of({1: vector, 2: np.zeros(size, dtype=np.uint64), 3: np.zeros(size, dtype=np.uint64)})[1]
    for shift in (0, 28, 56):
        byte = ((released >> np.uint64(shift)) & np.uint64(255)).astype(np.int64)
        assert chisquare(np.bincount(byte, minlength=256)).pvalue > 1e-4, shift


def test_both_nodes_of_a_pair_derive_one_seed_and_each_round_its_own():
    (first, first_public), (second, second_public) = secure_sum.key_pair(), secure_sum.key_pair()
    seed = secure_sum.pair_seed(first, second_public, CONTEXT, (1, 2))
    assert seed == secure_sum.pair_seed(second, first_public, CONTEXT, (2, 1))
    assert seed != secure_sum.pair_seed(first, second_public, b"run 1|round 4", (1, 2))
    assert seed != secure_sum.pair_seed(first, second_public, CONTEXT, (1, 3))


def test_a_node_missing_after_the_key_agreement_leaves_its_masks_in_the_others_sum():
    """Why a round that lost a member runs again without it (test_secure_aggregation, test_reliability)."""
    values = {rank: np.full(64, rank, dtype=np.uint64) for rank in (1, 2, 3)}
    released = round_of(values)
    without = secure_sum.ring_sum([released[1], released[2]])
    assert not np.array_equal(without, values[1] + values[2])


def test_a_release_outside_the_ring_is_refused():
    for value in (2**62, -(2**62), 2**63 - 1):
        with pytest.raises(FederationError, match="outside what the ring holds"):
            secure_sum.to_ring(np.array([value], dtype=np.int64))
    assert secure_sum.to_ring(np.array([-1])).tolist() == [2**64 - 1]
