"""Local DP: the epsilon reported is Opacus's composition over every round a worker took part in,
and both backends report the same figures from the same seed."""
import json
import math
import re

import pytest
import torch
from opacus.accountants import create_accountant

from conftest import run_main
from ppsdg import output, privacy
from ppsdg.errors import OptionsError

BATCH = 32


def expected_epsilon(num_samples: int, rounds_taken: int, noise: float, accountant: str,
                     delta: float = 1e-5, epochs: int = 1) -> float:
    """Composition computed here from first principles, with Opacus's accountant."""
    batches = math.ceil(num_samples / BATCH)
    independent = create_accountant(mechanism=accountant)
    independent.history = [(noise, 1 / batches, epochs * batches)] * rounds_taken
    return independent.get_epsilon(delta=delta)


@pytest.mark.parametrize("accountant", ["prv", "rdp"])
def test_reported_epsilon_composes_every_round_a_worker_took_part_in(small_csv, tmp_path, accountant):
    _, records = run_main(tmp_path, "--backend", "vantage6", "--data", str(small_csv), "-ldp", "-bs", str(BATCH),
                          "-nr", "4", "-gs", "1", "--noise-multiplier", "1.3", "--accountant", accountant)
    taken = {1: 0, 2: 0}
    for record in records:
        (worker,) = record["workers"]
        taken[worker["rank"]] += 1
        expected = expected_epsilon(worker["num_samples"], taken[worker["rank"]], 1.3, accountant)
        assert worker["epsilon"] == pytest.approx(expected, rel=1e-9)
        assert record["epsilon"] >= worker["epsilon"]
        assert (record["delta"], record["accountant"]) == (1e-5, accountant)
        assert worker["train_loss"] is None
    assert min(taken.values()) >= 1 and max(taken.values()) >= 2
    summary = json.loads((tmp_path / output.SUMMARY).read_text())
    assert summary["epsilon"] == records[-1]["epsilon"] > records[0]["epsilon"]


def test_gloo_and_vantage6_report_the_same_model_and_epsilon(small_csv, tmp_path, capsys):
    """-ldp alone plans the noise for the default target epsilon, and says so."""
    argv = ["--data", str(small_csv), "-ldp", "-bs", str(BATCH), "-nr", "2"]
    gloo_state, gloo_records = run_main(tmp_path / "gloo", "--backend", "gloo", *argv)
    mock_state, mock_records = run_main(tmp_path / "mock", "--backend", "vantage6", *argv)
    assert capsys.readouterr().err.count("the noise is planned for the default target epsilon 3 over the run's 2 "
                                         "round(s)") == 2
    assert 0.95 * privacy.DEFAULT_TARGET_EPSILON <= gloo_records[-1]["epsilon"] <= privacy.DEFAULT_TARGET_EPSILON
    assert [r["epsilon"] for r in gloo_records] == [r["epsilon"] for r in mock_records]
    assert [r["test_loss"] for r in gloo_records] == [r["test_loss"] for r in mock_records]
    assert all(torch.equal(gloo_state[name], mock_state[name]) for name in gloo_state)


def test_target_epsilon_is_met_by_a_worker_in_every_round(small_csv, tmp_path):
    _, records = run_main(tmp_path, "--backend", "vantage6", "--data", str(small_csv), "-ldp", "-bs", str(BATCH),
                          "-nr", "2", "--target-epsilon", "3")
    assert 2.9 <= records[-1]["epsilon"] <= 3.0


def test_fresh_accountant_per_round_would_under_report():
    """The bug the ledger exists to avoid: a per-round epsilon is far below the composed one."""
    ledger = privacy.Ledger(1e-5, "rdp")
    for _ in range(10):
        ledger.add(1, (1.0, 0.05, 20))
    assert ledger.epsilon_of(1) > 2 * privacy.epsilon([(1.0, 0.05, 20)], 1e-5, "rdp")


@pytest.mark.parametrize("entry", [(1e-300, 1.0, 1), (1e-10, 1.0, 1), (0.01, 1.0, 1), (1.0, 1.0, 10_000_000)])
def test_an_entry_out_of_the_accountants_reach_is_charged_infinity_at_once(entry):
    """ZeroDivisionError, ValueError and allocations of 857 MiB to 81.8 TiB before; now a figure in bounded work."""
    ledger = privacy.Ledger(1e-5, "prv")
    ledger.add(1, (1.0, 1.0, 1))
    ledger.add(1, entry)
    assert ledger.epsilon_of(1) == math.inf
    assert privacy.epsilon([entry], 1e-5, "rdp") > 1e5 if entry[0] >= privacy.NOISE_FLOOR else math.inf


def test_the_prv_accountant_refuses_a_grid_out_of_reach_where_opacus_computes_its_domain():
    """The bound hooks a private method of Opacus's: were it renamed, epsilon would allocate the grid."""
    accountant = privacy.bounded_prv()()
    accountant.history = [(1.0, 1.0, 10_000_000)]
    with pytest.raises(privacy.OutOfReach):
        accountant.get_epsilon(delta=1e-5)
    accountant.history = [(1.0, 1.0, 10)]
    assert accountant.get_epsilon(delta=1e-5) == privacy.epsilon([(1.0, 1.0, 10)], 1e-5, "prv") < math.inf
    assert 0 < privacy.prv_points(accountant.history, 1e-5) <= privacy.MAX_PRV_POINTS


@pytest.mark.parametrize("target, delta, rate, steps, accountant, reason", [
    (0.01, 1e-5, 1.0, 10, "rdp", "no noise multiplier up to 1e+06 reaches it"),
    (10.0, 1e-5, 1.0, 1_000_000, "prv", "its grid would exceed 1,000,000 points"),
    (30.0, 1e-5, 1 / 63, 6300, "prv", "its grid would exceed 1,000,000 points: use --accountant rdp"),
    (0.5, 1e-14, 1 / 63, 630, "prv", "fewer at delta 1e-14, for Opacus's precision"),
    (0.01, 1e-5, 1 / 313, 31_300, "prv", "planning it would take more than 1,800,000 grid points"),
    (1.0, 0.999, 0.5, 20, "prv", "Opacus cannot compute it: Cannot compute epsilon: use --accountant rdp")])
def test_a_target_out_of_the_planners_reach_is_refused_by_name(target, delta, rate, steps, accountant, reason):
    """Refused before any grid is allocated past PLAN_PRV_POINTS, or any work past PLAN_WORK: 18 s and
    1.5 GB for the WGAN-GP's 6,300 steps at epsilon 30 before, Opacus's ValueError or RuntimeError at
    the ends of the delta range."""
    with pytest.raises(OptionsError, match=f"^--target-epsilon {target:g} .*out of the {accountant} accountant's "
                                           f"reach: .*{re.escape(reason)}"):
        privacy.planned_noise(target, delta, rate, steps, accountant)


@pytest.mark.parametrize("target, rate, steps, accountant", [
    (3.0, 1.0, 10, "prv"), (3.0, 1.0, 10, "rdp"), (3.0, 0.1, 100, "prv"), (30.0, 1.0, 3, "prv"),
    (8.0, 1 / 63, 630, "rdp"), (3.0, 0.5, 20, "rdp")])
def test_the_bounded_search_plans_the_noise_opacus_plans(target, rate, steps, accountant):
    """Where the PRV grid is small (SEARCH_POINTS), every accountant's noise is Opacus's own search's,
    bit for bit: its steps, each settled by the cheapest figure that settles it."""
    from opacus.accountants.utils import get_noise_multiplier

    assert privacy.planned_noise(target, 1e-5, rate, steps, accountant) == get_noise_multiplier(
        target_epsilon=target, target_delta=1e-5, sample_rate=rate, steps=steps, accountant=accountant)


@pytest.mark.parametrize("target, delta, rate, steps, accountant", [
    (3.0, 1e-5, 1 / 63, 630, "prv"), (10.0, 1e-5, 1 / 63, 6300, "prv"), (0.01, 1e-5, 0.5, 20, "prv"),
    (0.11, 1e-5, 0.5, 20, "rdp"), (30.0, 1e-5, 0.5, 20, "rdp"), (3.0, 0.5, 1 / 63, 630, "prv"),
    (8.0, 1e-5, 1 / 63, 63_000_000, "rdp")])
def test_the_planned_noise_meets_the_target_within_the_tolerance(target, delta, rate, steps, accountant):
    """By Opacus's own accountant, as the ledger charges it: below the target, by at most PLAN_TOLERANCE.
    The WGAN-GP's 6,300 steps at epsilon 10 take a secant's answer (its grid exceeds SEARCH_POINTS)."""
    noise = privacy.planned_noise(target, delta, rate, steps, accountant)
    independent = create_accountant(mechanism=accountant)
    independent.history = [(noise, rate, steps)]
    spent = independent.get_epsilon(delta=delta)
    assert target - privacy.PLAN_TOLERANCE <= spent < target


@pytest.mark.parametrize("history", [
    [(1.3, 0.5, 20)], [(150.0, 0.5, 2_000_000)], [(0.7, 1 / 63, 630), (2.0, 1.0, 1), (1.3, 1 / 63, 630)],
    [(5.0, 1e-5, 10**9)], [(0.4, 1.0, 10)]])
@pytest.mark.parametrize("delta", [1e-5, 1e-12])
def test_the_fast_figures_are_opacus_s_bit_for_bit(history, delta):
    """rdp_epsilon skips the orders that cannot set the minimum and sums Opacus's fractional series in
    numpy; prv_domain computes the PRV accountant's domain from it: the same figures either way."""
    from opacus.accountants import PRVAccountant, RDPAccountant
    from opacus.accountants.analysis.prv import PoissonSubsampledGaussianPRV

    opacus = RDPAccountant()
    opacus.history = history
    exact = opacus.get_epsilon(delta=delta)
    assert privacy.rdp_epsilon(history, delta) == privacy.rdp_epsilon(history, delta, bound=exact) == exact
    assert privacy.rdp_epsilon(history, delta, bound=exact / 2) >= exact
    domain = PRVAccountant()._get_domain(prvs=[PoissonSubsampledGaussianPRV(rate, noise) for noise, rate, _ in history],
                                         num_self_compositions=[steps for *_, steps in history], eps_error=0.01,
                                         delta_error=delta / 1000)
    assert privacy.prv_domain(history, 0.01, delta / 1000) == domain


def test_the_ledger_charges_infinity_where_opacus_cannot_compute_the_prv_figure():
    """Opacus's ValueError (a delta too small for its grid's precision) and RuntimeError (a delta near
    1) stopped the server before."""
    assert privacy.epsilon([(1.0, 1 / 63, 630)], 1e-15, "prv") == math.inf
    assert privacy.epsilon([(1.0, 0.5, 20)], 0.999, "prv") == math.inf


def test_a_node_reporting_unreachable_figures_stops_the_run_by_name():
    from test_vantage6 import central, mock_client, worker_frames
    from test_moments import PoisonsOrganization1

    class ReportsTinyNoise(PoisonsOrganization1):
        def poison(self, tensors: dict) -> None:
            tensors["extra.dp_noise_multiplier"].fill_(1e-300)

    result = central(mock_client(worker_frames(count=2), ReportsTinyNoise), local_dp=True, noise_multiplier=1.0,
                     gan=True, synthesizer="moments", num_rounds=2)
    assert result["metrics"] == [] and result["checkpoint"] is None
    assert re.fullmatch(r"round 1: the DP spending of organization 1 .* out of the prv accountant's reach: charged "
                        r"epsilon inf, the run stops .*", result["error"]), result["error"]


def test_a_rejected_release_with_unreachable_figures_is_charged_infinity_without_an_exception():
    """ZeroDivisionError before, in the charge of a release the round rejected."""
    from ppsdg import coordination, parser

    config = parser.from_mapping({"local_dp": True})
    dp = privacy.LocalDP(config.privacy, config.run.num_rounds, config.job)
    ledger = dp.ledger()
    figures = {"dp_noise_multiplier": 1e-300, "dp_sample_rate": 1.0, "dp_steps": 1.0}
    assert coordination.charge(dp, ledger, 2, figures) == "charged: epsilon inf"
    assert ledger.worst() == math.inf
