"""The DP moments synthesizer: federated statistics equal centralized ones, the sensitivity bound,
the privacy figure against an independent accountant, and the same synthetic data on both backends."""
import json
import math

import numpy as np
import pytest
import torch
from scipy.stats import norm
from vantage6.common import bytes_to_base64s

from backends import codec
from conftest import run_main
from ppsdg import coordination, data, models, output, parser
from ppsdg.config import Config
from ppsdg.errors import FederationError
from ppsdg.privacy import LocalDP
from ppsdg.synthesizers import moments, refiner
from test_vantage6 import TampersWithOrganization1, central, mock_client, organization_of_run, result_of, worker_frames


def config(**overrides) -> Config:
    return parser.from_mapping({"gan": True, "synthesizer": "moments", "data": "embedded", **overrides})


def local_dp(chosen: Config) -> LocalDP | None:
    return LocalDP.of(chosen.privacy, chosen.run.num_rounds)


def synthesizer_of(chosen: Config) -> moments.MomentsSynthesizer:
    return moments.MomentsSynthesizer(chosen.job, chosen.run.num_rounds, local_dp(chosen), chosen.source.data)


def default_model() -> torch.nn.Module:
    """The global model of a moments run with the default options."""
    return models.new_model(synthesizer_of(config()), config().run.seed)


def worker_release(synthesizer, images: data.ImageSet, dp=None):
    inputs, labels = data.to_tensors(images)
    model = synthesizer.new_model()
    update, count, _, figures = synthesizer.local_update(model, inputs, labels, dp, None, 0.0, None)
    return update, count, figures


def test_summed_worker_statistics_equal_those_of_the_union():
    synthesizer = synthesizer_of(config())
    train, _ = data.load("embedded")
    parts = data.partition(train.labels, 3, "dirichlet", seed=4, alpha=0.5)
    summed = [worker_release(synthesizer, train.subset(p))[0] for p in parts]
    union, count, _ = worker_release(synthesizer, train)
    assert count == len(train)
    for name in ("count", "sum", "second"):
        assert torch.allclose(sum(s[name] for s in summed), union[name], atol=1e-9), name
    assert float(union["noise_variance"]) == 0.0


def test_one_example_moves_the_weighted_release_by_at_most_the_sensitivity():
    projection = moments.basis("digits", 40, 8.0)
    train, _ = data.load("embedded")
    pixels = torch.from_numpy(train.pixels.reshape(len(train), -1)).double() / 255
    z = moments.encode(pixels, projection)
    labels = torch.from_numpy(train.labels)
    assert float(z.norm(dim=1).max()) <= 1 + 1e-12
    center, directions = moments.split_of(moments.statistics(z, labels), 2)
    for rows, num_rows in ((labels, data.NUM_CLASSES), (moments.cells(z, labels, center, directions), 40)):
        full = moments.statistics(z, rows, num_rows)
        for index in (0, 7, int(z.norm(dim=1).argmax())):
            keep = torch.arange(len(z)) != index
            fewer = moments.statistics(z[keep], rows[keep], num_rows)
            change = math.sqrt(sum(float(((full[name] - fewer[name]) * weight).square().sum()) for name, weight in
                                   (("count", moments.COUNT_WEIGHT), ("sum", moments.MEAN_WEIGHT),
                                    ("second", moments.SECOND_WEIGHT))))
            assert change <= moments.SENSITIVITY + 1e-9


def analytic_epsilon(mu: float, delta: float) -> float:
    """Epsilon of a mu-Gaussian mechanism at `delta` (Balle and Wang 2018), by bisection."""
    def delta_of(eps: float) -> float:
        return norm.cdf(-eps / mu + mu / 2) - math.exp(eps) * norm.cdf(-eps / mu - mu / 2)
    low, high = 0.0, 100.0
    for _ in range(100):
        low, high = ((low + high) / 2, high) if delta_of((low + high) / 2) > delta else (low, (low + high) / 2)
    return high


def test_reported_epsilon_equals_the_exact_gaussian_composition(small_csv, tmp_path):
    """Four releases of multiplier 2 are one Gaussian mechanism of multiplier 1 (mu = sqrt(4) / 2)."""
    _, records = run_main(tmp_path, "--data", str(small_csv), "--gan", "-ldp", "--noise-multiplier", "2",
                          "-nr", "4", "--tstr-epochs", "1", "--moments-draw", "linear")
    expected = analytic_epsilon(math.sqrt(4) / 2, 1e-5)
    assert records[-1]["epsilon"] == pytest.approx(expected, rel=0.02)
    assert [w["epsilon"] for w in records[0]["workers"]] == [records[0]["epsilon"]] * 2


def test_samples_are_balanced_reproducible_and_follow_the_class_statistics():
    synthesizer = synthesizer_of(config())
    train, _ = data.load("embedded")
    model = default_model()
    release, _, _ = worker_release(synthesizer, train)
    model.load_state_dict({**model.state_dict(), **release})
    state = synthesizer.generator_state(model)
    first, again = synthesizer.sample(state, 2000, seed=3), synthesizer.sample(state, 2000, seed=3)
    assert np.array_equal(first.pixels, again.pixels) and np.bincount(first.labels).tolist() == [200] * 10
    real_means = np.stack([train.pixels[train.labels == c].mean(0) for c in range(10)])
    fake_means = np.stack([first.pixels[first.labels == c].mean(0) for c in range(10)])
    distances = np.abs(fake_means[:, None] - real_means[None]).mean(axis=(2, 3))
    assert distances.argmin(axis=1).tolist() == list(range(10))


def embedded_rounds(synthesizer, rounds: int):
    """The global model after `rounds` rounds of two workers (the embedded digits, split in two) without
    DP, as the server folds them in, and each round's state sent and releases."""
    train, _ = data.load("embedded")
    model, releases = synthesizer.new_model(), []
    for round_ in range(1, rounds + 1):
        sent = {name: t.clone() for name, t in model.state_dict().items()}
        replies = [coordination.Reply(*synthesizer.local_update(model, *data.to_tensors(train.subset(part)), None,
                                                                None, 0.0, None))
                   for part in np.array_split(np.arange(len(train)), 2)]
        coordination.aggregate(model, None, replies, 0.0, summed=True)
        synthesizer.after_round(model, round_)
        releases.append((sent, [reply.update for reply in replies]))
    return model, releases


def test_without_noise_round_1_splits_each_class_in_four_cells_that_the_later_rounds_release():
    synthesizer = synthesizer_of(config())
    assert synthesizer.split == 2
    assert synthesizer_of(config(local_dp=True, noise_multiplier=1.0)).split == 0
    model, releases = embedded_rounds(synthesizer, 3)
    state = {name: t.clone() for name, t in model.state_dict().items()}
    center, directions = moments.split_of(state, 2)
    assert torch.equal(state["split_center"], center) and torch.equal(state["split_directions"], directions)
    assert torch.allclose(directions.transpose(1, 2) @ directions, torch.eye(2, dtype=torch.float64).expand(10, 2, 2))
    for round_, (sent, replies) in enumerate(releases, start=1):
        for reply in replies:
            synthesizer.check_release(reply, int(reply["count" if round_ == 1 else "cell_count"].sum()), 0.0, sent)
            assert bool(reply["cell_count"].any()) == (round_ > 1) and bool(reply["count"].any()) == (round_ == 1)
    cells = {name: state["cell_" + name].unflatten(0, (10, 4)) for name in ("count", "sum", "second")}
    for name in ("count", "sum", "second"):  # rounds 2 and 3 release each class once each, cut in four
        assert torch.allclose(cells[name].sum(1), 2 * state[name], atol=1e-9), name
    assert bool((cells["count"] > 0).all())
    rows = [[int(reply["count"].sum()) for reply in releases[0][1]]] * 3
    full = [[1.0] * len(counts) for counts in rows]
    synthesizer.check_sum(state, rows, 0.0, full)
    state["split_directions"][3] = -state["split_directions"][3]
    with pytest.raises(FederationError, match="the split is not the one that round 1's statistics give"):
        synthesizer.check_sum(state, rows, 0.0, full)


def test_a_release_with_a_split_or_of_the_kind_the_round_did_not_ask_for_is_rejected_by_name():
    synthesizer = synthesizer_of(config())
    model, ((before, (first, _)), (after, (later, _))) = embedded_rounds(synthesizer, 2)
    rows = int(first["count"].sum())
    with pytest.raises(FederationError, match="carries a split, which only the server makes"):
        synthesizer.check_release({**first, "split_center": model.split_center}, rows, 0.0, before)
    with pytest.raises(FederationError, match="asked for statistics per cell and the release holds class statistics"):
        synthesizer.check_release(first, rows, 0.0, after)
    with pytest.raises(FederationError, match="asked for statistics per class and the release holds cell statistics"):
        synthesizer.check_release(later, rows, 0.0, before)
    with pytest.raises(FederationError, match="total count"):
        synthesizer.check_release(later, rows + 1, 0.0, after)


def test_draws_take_cells_by_their_counts_and_a_cell_of_few_examples_its_class():
    synthesizer = synthesizer_of(config(moments_dims=4))
    model, _ = embedded_rounds(synthesizer, 2)
    state = synthesizer.generator_state(model)
    labels = torch.arange(40_000) % data.NUM_CLASSES
    means, _, rows = moments.mixture(state, labels, moments.MAX_SHRINK, torch.Generator().manual_seed(0))
    assert torch.equal(rows // 4, labels)
    shares = torch.bincount(rows, minlength=40).double().view(10, 4) / 4000
    counts = state["cell_count"].view(10, 4)
    assert torch.allclose(shares, counts / counts.sum(1, keepdim=True), atol=0.03)
    assert torch.allclose(means[13], state["cell_sum"][13] / state["cell_count"][13])
    state["cell_count"][13] = 4 * counts[3].sum() / state["count"][3]  # about 5 images in 4 dimensions
    few_means, _, _ = moments.mixture(state, labels, moments.MAX_SHRINK, torch.Generator().manual_seed(0))
    class_means, _ = moments.gaussians(moments.class_totals(state), moments.MAX_SHRINK)
    assert torch.equal(few_means[13], class_means[3]) and torch.equal(few_means[12], means[12])


def test_the_refiner_is_the_same_from_its_seed():
    public, labels = (torch.from_numpy(part[::80]) for part in moments.public_digits())
    inked = refiner.render(public)
    z = moments.encode(inked, moments.basis("digits", 40, 6.0)).float()
    first, again = (refiner.weights(refiner.fit(z, labels, inked.float())) for _ in range(2))
    assert first.keys() == again.keys() and all(torch.equal(first[name], again[name]) for name in first)


def test_the_ink_ramp_sends_unsure_grey_to_background_or_ink():
    probabilities = torch.tensor([0.0, 0.1, 0.15, 0.5, 0.85, 0.95])
    assert refiner.render(probabilities, refiner.DRAWN_INK).tolist() == pytest.approx([0, 0, 0, 0.5, 1, 1])


def pixels(images: data.ImageSet) -> torch.Tensor:
    """Pixels in 0..1."""
    return torch.from_numpy(images.pixels).double() / 255


def grey_share(pixels: torch.Tensor) -> float:
    """The share of pixels (0..1) that are neither background nor ink: what blur and ghosts add."""
    return float(((pixels > 0.1) & (pixels < 0.9)).double().mean())


def test_refined_samples_are_sharper_than_linear_ones_and_of_their_class():
    synthesizer = synthesizer_of(config(data="mnist", local_dp=True, noise_multiplier=4.0))
    train, _ = data.load("embedded")
    model = default_model()
    release, _, _ = worker_release(synthesizer, train)
    model.load_state_dict({**model.state_dict(), **release})
    state = synthesizer.generator_state(model)
    assert any(name.startswith(refiner.PREFIX) for name in state)
    refined, again = synthesizer.sample(state, 1000, seed=3), synthesizer.sample(state, 1000, seed=3)
    assert np.array_equal(refined.pixels, again.pixels) and np.bincount(refined.labels).tolist() == [100] * 10
    linear_state = {name: t for name, t in state.items() if not name.startswith(refiner.PREFIX)}
    linear = synthesizer.sample(linear_state, 1000, seed=3)
    assert grey_share(pixels(refined)) < 0.7 * grey_share(pixels(linear))
    assert grey_share(pixels(refined)) < 0.12  # inked as handwriting: MNIST's share is 0.09
    real_means = np.stack([train.pixels[train.labels == c].mean(0) for c in range(10)])
    fake_means = np.stack([refined.pixels[refined.labels == c].mean(0) for c in range(10)])
    distances = np.abs(fake_means[:, None] - real_means[None]).mean(axis=(2, 3))
    assert distances.argmin(axis=1).tolist() == list(range(10))


def test_moments_run_gives_the_same_synthetic_data_on_both_backends(small_csv, tmp_path):
    argv = ["--data", str(small_csv), "--gan", "-ldp", "--target-epsilon", "5", "-nr", "2", "--tstr-epochs", "1"]
    gloo_state, gloo_records = run_main(tmp_path / "gloo", "--backend", "gloo", *argv)
    mock_state, mock_records = run_main(tmp_path / "mock", "--backend", "vantage6", *argv)
    assert all(torch.equal(gloo_state[name], mock_state[name]) for name in gloo_state)
    assert [r["epsilon"] for r in gloo_records] == [r["epsilon"] for r in mock_records]
    assert gloo_records[0]["epsilon"] < gloo_records[1]["epsilon"] == pytest.approx(5.0, rel=0.01)
    assert (tmp_path / "gloo" / output.SYNTHETIC).read_bytes() == (tmp_path / "mock" / output.SYNTHETIC).read_bytes()
    summary = json.loads((tmp_path / "gloo" / output.SUMMARY).read_text())
    assert len(data.load_csv(tmp_path / "gloo" / output.SYNTHETIC)) == summary["evaluation"]["train_images"] == 240
    assert all(w["train_loss"] is None for r in gloo_records for w in r["workers"])


def test_without_dp_both_backends_split_the_classes_alike_and_check_the_split(small_csv, tmp_path):
    argv = ["--data", str(small_csv), "--gan", "-nr", "3", "--tstr-epochs", "1", "--moments-draw", "linear"]
    gloo_state, _ = run_main(tmp_path / "gloo", "--backend", "gloo", *argv)
    mock_state, _ = run_main(tmp_path / "mock", "--backend", "vantage6", *argv)
    assert all(torch.equal(gloo_state[name], mock_state[name]) for name in gloo_state)
    assert (tmp_path / "gloo" / output.SYNTHETIC).read_bytes() == (tmp_path / "mock" / output.SYNTHETIC).read_bytes()
    assert bool(gloo_state["split_directions"].any())
    assert torch.equal(gloo_state["cell_count"].view(10, 4).sum(1), 2 * gloo_state["count"])


def test_the_digits_basis_is_orthonormal_and_the_same_from_its_seed():
    projection = moments.basis("digits", 60, 14.0)
    vectors = projection["vectors"]
    assert torch.allclose(vectors.T @ vectors, torch.eye(60, dtype=torch.float64), atol=1e-9)
    images = torch.from_numpy(data.load_embedded()[0].pixels[:50]).double().div(255).unsqueeze(1)
    first, again = (moments.warp(images, torch.Generator().manual_seed(7)) for _ in range(2))
    assert torch.equal(first, again) and not torch.equal(first, images)
    assert len(moments.public_digits()[0]) == (moments.PUBLIC_WARPS + 1) * 1797


def test_the_digits_basis_follows_the_planned_noise_unless_given():
    def shape(**overrides):
        projection = synthesizer_of(config(**{"data": "mnist", **overrides})).projection
        return projection["vectors"].shape[1], float(projection["scale"])

    assert shape() == (60, 14.0)
    assert shape(local_dp=True, target_epsilon=10.0) == (40, 8.0)
    assert shape(local_dp=True, target_epsilon=1.0) == (40, 6.0)
    assert shape(local_dp=True, target_epsilon=1.0, moments_dims=30, moments_scale=5.0) == (30, 5.0)
    assert shape(data="embedded") == moments.DCT_SHAPE

    def budget(rounds: int) -> float:
        chosen = config(local_dp=True, target_epsilon=3.0, num_rounds=rounds)
        return moments.budget_noise(local_dp(chosen), rounds)

    assert budget(5) == pytest.approx(budget(1), rel=0.02)  # Gaussian releases compose exactly


POISON = {  # a node of 100 rows, released at noise multiplier 1 (noise variance 2.09), then altered
    "count -1e6": lambda u: u["count"].index_fill_(0, torch.tensor([3]), -1e6),
    "count 10x the rows": lambda u: u["count"].index_fill_(0, torch.tensor([3]), 1000.0),
    "every statistic x1000": lambda u: [u[k].mul_(1000) for k in ("count", "sum", "second")],
    "every statistic negated": lambda u: [u[k].neg_() for k in moments.STATISTICS],
    "class sum 1e6": lambda u: u["sum"][2].fill_(1e6),
    "second moment 1e308": lambda u: u["second"][0, 0].fill_(1e308),
    "second moment not symmetric": lambda u: u["second"][1, 0, 1].add_(5.0),
    "second moment negative definite": lambda u: u["second"][1].copy_(-torch.eye(u["second"].shape[-1]) * 20),
    "noise variance 0": lambda u: u["noise_variance"].fill_(0.0),
    "noise variance -1": lambda u: u["noise_variance"].fill_(-1.0),
    "noise variance 1e6": lambda u: u["noise_variance"].fill_(1e6),
    "count 1e300": lambda u: u["count"].index_fill_(0, torch.tensor([0]), 1e300),
    "noise variance -1e6": lambda u: u["noise_variance"].fill_(-1e6),
}


def dp_release(rows: int = 100, seed: int = 0):
    """A release of `rows` embedded digits at noise multiplier 1, and the noise std the server plans."""
    chosen = config(local_dp=True, noise_multiplier=1.0)
    synthesizer = synthesizer_of(chosen)
    dp = local_dp(chosen)
    train, _ = data.load("embedded")
    inputs, labels = data.to_tensors(train.subset(np.arange(seed, seed + rows)))
    torch.manual_seed(seed)
    update, count, _, _ = synthesizer.local_update(synthesizer.new_model(), inputs, labels, dp, None, 0.0, None)
    return synthesizer, update, count, synthesizer.release_std(dp)


def test_honest_releases_pass_the_bounds():
    for seed in range(5):
        synthesizer, update, count, noise_std = dp_release(seed=seed)
        assert noise_std ** 2 == pytest.approx(2.09)
        synthesizer.check_release(update, count, noise_std, synthesizer.new_model().state_dict())
    synthesizer = synthesizer_of(config())
    update, count, _ = worker_release(synthesizer, data.load("embedded")[0])
    sent = synthesizer.new_model().state_dict()
    synthesizer.check_release(update, count, 0.0, sent)
    with pytest.raises(FederationError, match="total count 1438 .* outside \\[1437, 1437\\]"):
        synthesizer.check_release(update, count - 1, 0.0, sent)


@pytest.mark.parametrize("case", POISON)
def test_a_poisoned_release_is_rejected_by_name(case):
    synthesizer, update, count, noise_std = dp_release()
    POISON[case](update)
    with pytest.raises(FederationError, match="update rejected: "):
        synthesizer.check_release(update, count, noise_std, synthesizer.new_model().state_dict())


class PoisonsOrganization1(TampersWithOrganization1):
    """Organization 1 releases class counts of -1e6."""

    def poison(self, tensors: dict) -> None:
        tensors["count"].fill_(-1e6)

    def tamper(self, entries: list[dict]) -> list[dict]:
        for entry in entries:
            if organization_of_run(self, entry["id"]) == 1:
                result = result_of(entry)
                tensors, meta = codec.decode_text(result["message"])
                self.poison(tensors)
                entry["result"] = bytes_to_base64s(json.dumps({**result, "message": codec.encode_text(tensors, meta)})
                                                   .encode())
        return entries


def test_a_poisoned_release_is_left_out_charged_and_recorded():
    result = central(mock_client(worker_frames(count=2), PoisonsOrganization1), min_workers=1, local_dp=True,
                     noise_multiplier=1.0, gan=True, synthesizer="moments", num_rounds=1)
    (record,) = result["metrics"]
    ((worker,), (failed,)) = record["workers"], record["failed"]
    assert failed["organization"] == 1 and "update rejected: class count -1e+06" in failed["reason"]
    assert f"charged: epsilon {worker['epsilon']:.4g}" in failed["reason"]
    tensors, meta = codec.decode_text(result["checkpoint"])
    assert float(tensors["model.count"].sum()) == pytest.approx(worker["num_samples"], abs=60)
    assert meta["histories"]["1"] == meta["histories"]["2"]


class IgnoresTheSplit(PoisonsOrganization1):
    """Organization 1 answers the rounds after the split with its class statistics: its cells summed back."""

    def poison(self, tensors: dict) -> None:
        if bool(tensors["cell_count"].any()):
            for name in ("count", "sum", "second"):
                tensors[name] = tensors["cell_" + name].unflatten(0, (data.NUM_CLASSES, 4)).sum(1)
                tensors["cell_" + name] = torch.zeros_like(tensors["cell_" + name])


def test_class_statistics_after_the_split_are_left_out_and_named():
    result = central(mock_client(worker_frames(count=2), IgnoresTheSplit), min_workers=1, gan=True,
                     synthesizer="moments", moments_draw="linear", num_rounds=2)
    first, second = result["metrics"]
    assert first["failed"] == [] and len(second["workers"]) == 1
    (failed,) = second["failed"]
    assert failed["organization"] == 1
    assert "the round asked for statistics per cell and the release holds class statistics" in failed["reason"]


def test_a_noisy_class_covariance_is_shrunk_toward_the_pool_as_far_as_the_cap_and_an_exact_one_not_at_all():
    generator = torch.Generator().manual_seed(0)
    labels = torch.arange(2000) % data.NUM_CLASSES
    z = 0.05 * torch.randn(2000, 4, generator=generator, dtype=torch.float64)
    z[labels == 3] *= 4
    exact = moments.statistics(z, labels)
    own = torch.cov(z[labels == 3].T, correction=0)
    rows = (labels[:, None] == torch.arange(data.NUM_CLASSES)).double()
    means = exact["sum"] / exact["count"][:, None]
    pooled = (z - rows @ means).T @ (z - rows @ means) / len(z)
    floor = moments.EIGEN_FLOOR * torch.eye(4, dtype=torch.float64)
    for noise_variance, cap in ((0.0, 0.5), (1e6, 0.0), (1e6, 0.1), (1e6, 0.5)):
        state = {**exact, "noise_variance": torch.tensor(noise_variance, dtype=torch.float64)}
        shrink = cap if noise_variance else 0.0
        _, factors = moments.gaussians(state, cap)
        assert torch.allclose(factors[3] @ factors[3].T, (1 - shrink) * own + shrink * pooled + floor, atol=1e-12)
