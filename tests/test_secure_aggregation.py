"""Secure aggregation of a table's marginals: what the server sees of one node, what the sum carries,
who decides the noise, and what happens when a member is lost."""
import io
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.stats import chisquare

import main
from backends import codec
from backends.mock import ForgetfulMockClient
from ppsdg import algorithm, coordination, data, local, output, parser, privacy, secure_aggregation, tables
from ppsdg.config import Config
from ppsdg.errors import FederationError, OptionsError
from ppsdg.job import Job
from ppsdg.models import new_model
from ppsdg.secure_aggregation import NodeSecrets
from conftest import people

SEED = 1


def config_of(files: dict[str, Path], *extra: str) -> Config:
    return parser.prepared(parser.parse(["--data", str(files["all"]), "--schema", str(files["schema"]),
                                         "-ldp", "--noise-multiplier", "2.0", "--secure-aggregation", *extra]))


def parts_of(frame: pd.DataFrame, count: int) -> list[local.Examples]:
    """`count` workers' rows of `frame`, encoded with its schema."""
    schema = tables.Schema.from_text(tables.draft(people(), "outcome").text())
    codes = torch.from_numpy(tables.encode(frame, schema, fine=True)[0])
    return [local.Examples(chunk, chunk[:, schema.names.index("outcome")]) for chunk in torch.tensor_split(codes, count)]


def secure_round(config: Config, parts: list[local.Examples], colluders: int | None,
                 round_: int = 1, attempt: int = 1) -> tuple[dict[int, coordination.Reply], coordination.Reply, Job]:
    """Round 1's replies of every member and their checked sum, as the server folds it in."""
    job = Job.of_config(config)
    model = new_model(job.synthesizer, config.run.seed)
    secrets = {rank: NodeSecrets.fresh() for rank in range(1, len(parts) + 1)}
    keys = {rank: secret.public for rank, secret in secrets.items()}
    message = secure_aggregation.round_message(model.state_dict(), round_, attempt, keys, list(keys), len(parts))
    replies = {}
    for rank, examples in enumerate(parts, start=1):
        peers = secrets[rank].peers(message[secure_aggregation.KEYS], rank)
        reply = coordination.secure_update(model, examples, job, config.run.seed, round_, attempt, rank,
                                           secrets[rank], peers, colluders)
        replies[rank] = coordination.Reply.from_message(reply.to_message())
    return replies, coordination.secure_total(job, replies, model.state_dict()), job


def exact_survey(config: Config, parts: list[local.Examples]) -> np.ndarray:
    job = Job.of_config(config)
    model = new_model(job.synthesizer, config.run.seed)
    return sum(job.synthesizer.exact_release(model, part.images, part.labels, job.dp, 1.0).counts["survey"].numpy()
               for part in parts)


def test_the_masks_cancel_and_the_sum_carries_the_noise_of_one_release(table_files):
    config = config_of(table_files, "-nn", "4")
    parts = parts_of(people(), 3)
    exact, residuals = exact_survey(config, parts), []
    for attempt in range(1, 9):
        replies, total, job = secure_round(config, parts, colluders=0, attempt=attempt)
        layout = job.synthesizer.layout
        weights = layout.survey_weights()
        cell_std = np.repeat(np.divide(2.0, weights, out=np.zeros_like(weights), where=weights > 0),
                             np.diff(layout.starts))
        released = cell_std > 0
        assert not total.update["survey"].numpy()[~released].any()
        residuals.append((total.update["survey"].numpy() - exact)[released] / cell_std[released])
        assert float(total.update["survey_noise"]) == pytest.approx(4.0)
        assert [reply.figures[secure_aggregation.SHARE] for reply in replies.values()] == [pytest.approx(1 / 3)] * 3
    residual = np.concatenate(residuals)
    # One release's noise, not three: three full shares would give a variance of 3. The estimate's
    # standard error is sqrt(2 / n), 0.026 here.
    assert residual.size > 2500
    assert abs(residual.var() - 1.0) < 0.1, residual.var()
    assert abs(residual.mean()) < 0.1


def test_the_moments_sum_carries_one_releases_noise_and_symmetric_second_moments():
    config = parser.parse(["--gan", "-ldp", "--noise-multiplier", "2.0", "--secure-aggregation", "-nn", "4"])
    train_set, _ = data.load("embedded")
    parts = [local.Examples.from_images(train_set.subset(part), torch.device("cpu"))
             for part in data.partition(train_set.labels[:900], 3, "iid", seed=1)]
    replies, total, job = secure_round(config, parts, colluders=0)
    synthesizer = job.synthesizer
    model = new_model(synthesizer, config.run.seed)
    exact = [synthesizer.exact_release(model, part.images, part.labels, job.dp, 1.0) for part in parts]
    second = total.update["second"]
    assert torch.equal(second, second.transpose(1, 2))
    residuals = []
    for name in synthesizer.secret:
        std = exact[0].std[name].numpy()
        found = (total.update[name].numpy() - sum(release.counts[name].numpy() for release in exact))[std > 0]
        residuals.append(found / std[std > 0])
    residual = np.concatenate(residuals)
    # One release's noise, not three; the estimate's standard error sqrt(2 / n) is 0.015 here.
    assert residual.size > 8000
    assert abs(residual.var() - 1.0) < 0.06, residual.var()
    assert float(total.update["noise_variance"]) == pytest.approx(synthesizer.release_std(job.dp) ** 2)


def test_without_masks_the_replies_would_be_the_counts_the_server_never_sees(table_files):
    """A member's masked words: uniform bytes whatever its counts, and the same counts masked twice (two
    rounds) look unrelated: their correlation within five standard errors (1 / sqrt(words)) of zero,
    where one mask used twice would make it near 1."""
    config = config_of(table_files, "-nn", "4")
    words = []
    for frame in (people(), people().assign(outcome="ill", sex="F", smoker="yes")):
        replies, _, _ = secure_round(config, parts_of(frame, 3), colluders=0)
        words.append(replies[2].update["survey"].numpy().view(np.uint64))
    for released in words:
        for shift in (0, 24, 56):
            byte = ((released >> np.uint64(shift)) & np.uint64(255)).astype(np.int64)
            assert chisquare(np.bincount(byte, minlength=256)).pvalue > 1e-4, shift
    correlation = np.corrcoef(words[0] >> np.uint64(40), words[1] >> np.uint64(40))[0, 1]
    assert abs(correlation) < 5 / math.sqrt(len(words[0])), correlation


@pytest.mark.parametrize("members, run, node, share", [
    (3, 0, 0, 1 / 3), (3, 1, 0, 1 / 2), (3, 0, 1, 1 / 2), (5, 2, None, 1.0), (3, 0, 2, 1.0), (2, 0, 0, 1 / 2)])
def test_a_members_share_follows_the_colluders_the_run_or_its_owner_assumes(members, run, node, share):
    colluders = None if node is None else max(node, run)
    assert secure_aggregation.share_of(members, colluders) == pytest.approx(share)


def test_a_share_below_the_plan_is_rejected_and_a_dishonest_sum_is_refused(table_files, monkeypatch):
    with pytest.raises(FederationError, match=r"noise share 0.2 is not in \[0.3333, 1\]"):
        secure_aggregation.check_figures({secure_aggregation.SHARE: 0.2}, 3, 0)
    secure_aggregation.check_figures({secure_aggregation.SHARE: 1.0}, 3, 0)
    config = config_of(table_files, "-nn", "4")
    job = Job.of_config(config)
    honest = type(job.synthesizer).exact_release

    def inflated(self, model, images, labels, dp, share):
        release = honest(self, model, images, labels, dp, share)
        return release if len(images) != 200 else type(release)(
            {name: counts * 50 for name, counts in release.counts.items()}, release.std, release.scale, release.public)

    monkeypatch.setattr(type(job.synthesizer), "exact_release", inflated)
    with pytest.raises(FederationError, match="the sum of the members' releases is update rejected.*cannot tell which"):
        secure_round(config, parts_of(people().iloc[:600], 3), colluders=0)


def test_a_node_refuses_keys_without_its_own_a_lone_member_and_a_mask_twice():
    secrets, other = NodeSecrets.fresh(), NodeSecrets.fresh()
    state = {}
    stranger = secure_aggregation.round_message(state, 1, 1, {1: other.public, 2: NodeSecrets.fresh().public}, [1, 2], 2)
    with pytest.raises(FederationError, match="do not hold this node's own key"):
        secrets.peers(stranger[secure_aggregation.KEYS], 1)
    alone = secure_aggregation.round_message(state, 1, 1, {1: secrets.public}, [1], 2)
    with pytest.raises(FederationError, match="no other member"):
        secrets.peers(alone[secure_aggregation.KEYS], 1)
    repeated = secure_aggregation.round_message(state, 1, 1, {1: secrets.public, 2: secrets.public}, [1, 2], 2)
    with pytest.raises(FederationError, match="repeat a key"):
        secrets.peers(repeated[secure_aggregation.KEYS], 1)
    secrets.use(secure_aggregation.context(2, 1))
    with pytest.raises(FederationError, match="a mask serves once"):
        secrets.use(secure_aggregation.context(2, 1))


def test_a_nodes_key_and_spent_contexts_live_in_its_job_folder(tmp_path):
    with pytest.raises(FederationError, match="took no part in the run's key agreement"):
        NodeSecrets.load(str(tmp_path))
    made = NodeSecrets.fresh(str(tmp_path))
    made.use(secure_aggregation.context(1, 1))
    loaded = NodeSecrets.load(str(tmp_path))
    assert loaded.public == made.public and loaded.used == [secure_aggregation.context(1, 1)]
    with pytest.raises(FederationError, match="a mask serves once"):
        loaded.use(secure_aggregation.context(1, 1))
    assert (tmp_path / secure_aggregation.KEY_FILE).stat().st_mode & 0o077 == 0


@pytest.mark.parametrize("extra, message", [
    ((), "--secure-aggregation needs --local_dp"),
    (("-ldp", "--colluders", "2"), r"--colluders must be in 0..1 for 2 workers"),
    (("-ldp", "-nn", "2"), "at least 2 workers"),
])
def test_secure_aggregation_is_refused_where_it_cannot_work(table_files, extra, message):
    with pytest.raises(OptionsError, match=message):
        parser.parse(["--data", str(table_files["all"]), "--schema", str(table_files["schema"]), "--secure-aggregation",
                      *extra])
    with pytest.raises(OptionsError, match="with --train-all the workers outside the group"):
        parser.parse(["--gan", "-ldp", "--secure-aggregation", "-nn", "4", "--group-size", "2", "--train-all"])
    for job in (["--gan", "--synthesizer", "wgan"], []):
        with pytest.raises(OptionsError, match="the classifier and the WGAN-GP train by DP-SGD"):
            parser.parse([*job, "-ldp", "--secure-aggregation"])
    with pytest.raises(OptionsError, match="--colluders is for --secure-aggregation"):
        parser.parse(["--colluders", "1"])


def test_a_vantage6_node_without_a_job_folder_refuses_the_key_agreement(table_files, monkeypatch):
    monkeypatch.delenv("TEMPORARY_FOLDER", raising=False)
    config = config_of(table_files, "-nn", "3")
    task = {"message": codec.encode_text(secure_aggregation.key_request()), "ranks": {"7": 1}, "world_size": 3,
            "options": config.task_options()}
    with pytest.raises(FederationError, match="organization 7 .*keeps this node's key in the job's folder"):
        algorithm.run_partial(7, people(), task)


def table_run(files: dict[str, Path], folder: Path, *extra: str) -> tuple[pd.DataFrame, list[dict]]:
    argv = ["--data", f"{files['a']},{files['b']}", "--schema", str(files["schema"]), "--output", str(folder),
            "-ldp", "--target-epsilon", "3", "--synthetic-samples", "200", *extra]
    assert main.main(argv) == 0
    records = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    return pd.read_csv(folder / "synthetic.csv"), records


@pytest.fixture(scope="module")
def gloo_secure(table_files, tmp_path_factory):
    return table_run(table_files, tmp_path_factory.mktemp("secure-gloo"), "--secure-aggregation")


def test_both_backends_give_the_same_table_under_secure_aggregation(gloo_secure, table_files, tmp_path,
                                                                     monkeypatch):
    monkeypatch.setenv("PPSDG_DISTRIBUTED_NOISE", "0")
    synthetic, records = table_run(table_files, tmp_path, "--secure-aggregation", "--backend", "vantage6")
    pd.testing.assert_frame_equal(synthetic, gloo_secure[0])
    assert [coordination.comparable(r) for r in records] == [coordination.comparable(r) for r in gloo_secure[1]]
    assert all(w["noise_share"] == 0.5 for record in records for w in record["workers"])


def test_both_backends_give_the_same_moments_under_secure_aggregation(tmp_path, monkeypatch):
    monkeypatch.setenv("PPSDG_DISTRIBUTED_NOISE", "0")
    states = []
    for backend in ("gloo", "vantage6"):
        folder = tmp_path / backend
        assert main.main(["--gan", "-ldp", "--target-epsilon", "3", "--secure-aggregation", "-nr", "2", "-sm",
                          "--synthetic-samples", "60", "--tstr-epochs", "1", "--backend", backend,
                          "--output", str(folder)]) == 0
        states.append(torch.load(folder / output.MODEL, weights_only=True))
    assert all(torch.equal(states[0][name], states[1][name]) for name in states[0])


def test_a_node_whose_owner_allows_no_share_adds_all_the_noise_and_the_round_says_so(gloo_secure, table_files,
                                                                                      tmp_path, monkeypatch):
    monkeypatch.delenv("PPSDG_DISTRIBUTED_NOISE", raising=False)
    _, records = table_run(table_files, tmp_path, "--secure-aggregation", "--backend", "vantage6")
    assert all(w["noise_share"] == 1.0 for record in records for w in record["workers"])
    # The privacy each node is charged is the same either way: its guarantee is one release a round.
    assert records[-1]["epsilon"] == gloo_secure[1][-1]["epsilon"] <= 3.0


class LosesRank3InRound2(ForgetfulMockClient):
    """The server gets no result from organization 2 (worker rank 3) for round 2's first attempt, as
    when its node goes away after the key agreement."""

    listings: list[int] = []

    def _multi_page_request(self, endpoint: str, params: dict | None = None) -> list:
        entries = super()._multi_page_request(endpoint, params)
        listings = type(self).listings
        listings.append(params["task_id"])
        if len(listings) == 3:  # the key agreement, round 1, round 2's first attempt
            runs = {run["id"]: run["organization"]["id"] for run in self.runs}
            entries = [entry for entry in entries if runs[entry["id"]] != 2]
        return entries


def test_a_member_lost_after_the_key_agreement_costs_an_attempt_not_the_run(table_files, tmp_path,
                                                                            monkeypatch):
    monkeypatch.setenv("PPSDG_DISTRIBUTED_NOISE", "0")
    monkeypatch.setattr(LosesRank3InRound2, "listings", [])
    frames = [tables.read_table(table_files[name]) for name in ("a", "b", "a")]
    client = LosesRank3InRound2(datasets=[[{"database": f, "db_type": "csv"}] for f in frames], module="ppsdg",
                                job_root=tmp_path)
    kwargs = {"gan": True, "synthesizer": "marginals", "num_rounds": 3, "schema": table_files["schema"].read_text(), "target": "outcome", "local_dp": True,
              "noise_multiplier": 3.0, "secure_aggregation": True, "min_workers": 2, "synthetic_samples": 200}
    task = client.task.create(input_={"method": "central", "kwargs": kwargs}, organizations=[0])
    result = client.wait_for_results(task["id"])[0]
    assert "error" not in result, result.get("error")
    records = result["metrics"]
    second = records[1]
    assert second["attempts"] == 2
    assert [w["rank"] for w in second["workers"]] == [1, 2]
    assert [w["noise_share"] for w in second["workers"]] == [0.5, 0.5]
    assert second["failed"][0]["rank"] == 3
    assert "attempt 1; the round ran again without it" in second["failed"][0]["reason"]
    assert records[0]["attempts"] == records[2]["attempts"] == 1
    # Members 1 and 2 released twice in round 2: the discarded attempt is charged (3 releases by then).
    three = privacy.epsilon([privacy.release_entry(3.0)] * 3, 1e-5, "prv")
    assert [w["epsilon"] for w in second["workers"]] == [pytest.approx(three, rel=1e-9)] * 2
    # The member lost takes no part in later rounds: it would cost the others an attempt again.
    assert [w["rank"] for w in records[2]["workers"]] == [1, 2]
    assert records[2]["failed"] == [{"rank": 3, "organization": 2, "reason": "no key: it took no part in the run's "
                                     "key agreement, or was lost in an earlier secure round"}]
    assert len(pd.read_csv(io.StringIO(result["synthetic"]["csv"]))) == 200
