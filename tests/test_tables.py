"""Tables as node data: the schema, encoding, the marginals synthesizer's rounds and privacy, the
evaluation, and the commands, on a small seeded table (and Adult where the figure needs real data)."""
import io
import itertools
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.optimize import brentq
from scipy.stats import norm

import main
from conftest import TABLE_ROWS, people
from backends import codec
from ppsdg import algorithm, central_task, checkpoint, coordination, data, parser, store, table_evaluation, tables
from ppsdg.config import CLIENT_ONLY, Config
from ppsdg.errors import DataError, FederationError, OptionsError
from ppsdg.job import Job
from ppsdg.models import new_model
from ppsdg.policy import PolicyError
from ppsdg.privacy import LocalDP
from ppsdg.synthesizers import marginals



def test_a_drafted_schema_reads_back_and_describes_every_column(table_files):
    schema = tables.Schema.read(table_files["schema"])
    kinds = {column.name: column.kind for column in schema.columns}
    assert kinds == {"age": "numeric", "sex": "categorical", "smoker": "categorical", "weight": "numeric",
                     "region": "categorical", "outcome": "categorical"}
    assert schema.column("region").missing and not schema.column("sex").missing
    assert schema.target == "outcome"
    assert tables.Schema.from_text(schema.text()) == schema


def test_codes_decode_to_the_same_categories_and_numbers_inside_their_bins(table_files):
    schema = tables.Schema.read(table_files["schema"])
    frame = people()
    codes, mapped = tables.encode(frame, schema)
    assert mapped == {} and codes.shape == (TABLE_ROWS, 6)
    decoded = tables.decode(codes, schema, np.random.default_rng(0))
    assert list(decoded.columns) == list(frame.columns)
    for name in ("sex", "smoker", "outcome"):
        assert (decoded[name] == frame[name]).all()
    assert (decoded["region"].isna() == frame["region"].isna()).all()
    edges = np.asarray(schema.column("weight").edges)
    bins = np.clip(np.searchsorted(edges, frame["weight"], side="right") - 1, 0, len(edges) - 2)
    assert ((decoded["weight"] >= edges[bins]) & (decoded["weight"] <= edges[bins + 1])).all()
    assert (tables.encode(decoded, schema)[0] == codes).all()


def test_a_value_outside_the_schema_is_mapped_and_counted_or_named_without_quoting_it():
    schema = tables.Schema.from_json({"columns": [
        {"name": "city", "type": "categorical", "categories": ["Oslo"], "other": True, "missing": False},
        {"name": "size", "type": "numeric", "edges": [0, 10], "clip": True, "missing": False}]})
    codes, mapped = tables.encode(pd.DataFrame({"city": ["Oslo", "Secretville"], "size": [5, 99]}), schema)
    assert codes.tolist() == [[0, 0], [1, 0]] and mapped == {"city": 1, "size": 1}
    strict = tables.Schema.from_json({"columns": [{"name": "city", "type": "categorical", "categories": ["Oslo"]}]})
    with pytest.raises(DataError, match=r"row 1, column 'city': expected a category") as refused:
        tables.encode(pd.DataFrame({"city": ["Oslo", "Secretville"]}), strict)
    assert "Secretville" not in str(refused.value)
    with pytest.raises(DataError, match="missing column"):
        tables.encode(pd.DataFrame({"town": ["Oslo"]}), strict)


@pytest.mark.parametrize("schema, message", [
    ({"columns": []}, "1 to"),
    ({"columns": [{"name": "a", "type": "text"}]}, "'type' must be"),
    ({"columns": [{"name": "a", "type": "numeric", "edges": [3, 1]}]}, "increasing"),
    ({"columns": [{"name": "a", "type": "categorical", "categories": ["x", "x"]}]}, "distinct"),
    ({"columns": [{"name": "a", "type": "categorical", "categories": ["x"]}], "target": "b"}, "target 'b'"),
])
def test_a_bad_schema_is_refused_by_name(schema, message):
    with pytest.raises(tables.SchemaError, match=message):
        tables.Schema.from_json(schema)


def table_config(files: dict[str, Path], *extra: str) -> Config:
    return parser.prepared(parser.parse(["--data", str(files["all"]), "--schema", str(files["schema"]), *extra]))


def rounds(config: Config, parts: list[pd.DataFrame]) -> dict[str, torch.Tensor]:
    """The server's state after every round, each part one worker, noise from a fixed seed."""
    job = Job.of_config(config)
    synthesizer = job.synthesizer
    model = new_model(synthesizer, config.run.seed)
    schema = tables.Schema.from_text(config.job.schema)
    for round_ in range(1, config.run.num_rounds + 1):
        updates = []
        for rank, part in enumerate(parts, start=1):
            torch.manual_seed(100 * round_ + rank)
            codes = torch.from_numpy(tables.encode(part, schema, fine=True)[0])
            updates.append(synthesizer.local_update(model, codes, codes[:, synthesizer.layout.target], job.dp, None, 0.0, None)[0])
        state = model.state_dict()
        model.load_state_dict({name: state[name] + sum(update[name] for update in updates) for name in state})
        synthesizer.after_round(model, round_)
    return model.state_dict()


def test_federated_marginals_equal_the_pooled_ones_without_noise(table_files):
    config = table_config(table_files)
    frame = people()
    pooled = rounds(config, [frame])
    federated = rounds(config, [frame.iloc[:100], frame.iloc[100:350], frame.iloc[350:]])
    for name in pooled:
        assert torch.allclose(pooled[name], federated[name]), name
    layout = marginals.Layout.of(tables.Schema.from_text(config.job.schema), config.job.target)
    codes = tables.encode(frame, layout.schema, fine=True)[0]
    for index in np.flatnonzero(pooled["plan"].numpy()):
        exact = tables.marginal(codes, layout.shape, layout.found[index])
        assert np.allclose(layout.part(pooled["measured"].numpy(), index), exact)
    assert pooled["plan"].square().sum().item() == pytest.approx(1.0)


def test_the_plan_joins_columns_in_a_triple_only_where_the_survey_shows_more_tie_than_noise():
    """Without noise every pair is measured with the target (the tree and every further pair); with
    noise, only the strongly tied pair keeps its triple, and the columns the survey shows no tie for
    are measured with the target alone: a triple of noise would be read as dependence by the model."""
    rng = np.random.default_rng(0)
    rows = 20_000
    a = rng.integers(0, 4, rows)
    columns = {"a": a, "b": np.where(rng.random(rows) < 0.9, a, rng.integers(0, 4, rows)),
               "c": rng.integers(0, 4, rows), "d": rng.integers(0, 4, rows)}
    frame = pd.DataFrame({name: np.char.add("v", values.astype(str)) for name, values in columns.items()})
    frame["t"] = np.where(rng.random(rows) < 0.2 + 0.2 * a, "yes", "no")
    layout = marginals.Layout.of(tables.draft(frame, "t"), "t")
    survey = marginals.release(tables.encode(frame, layout.schema, fine=True)[0], layout, layout.survey_weights(), 0.0, None)
    zero = torch.zeros((), dtype=torch.float64)

    def planned(survey_noise: float) -> set[tuple[str, ...]]:
        state = {"survey": torch.from_numpy(survey), "measured": torch.zeros(layout.cells, dtype=torch.float64),
                 "plan": torch.zeros(len(layout.found), dtype=torch.float64),
                 "survey_noise": torch.tensor(survey_noise, dtype=torch.float64), "measure_noise": zero}
        plan = marginals.select(state, layout, 2)
        assert np.square(plan).sum() == pytest.approx(1.0) and layout.plannable()[plan > 0].all()
        one_way = plan[[len(clique) == 1 for clique in layout.found]]
        assert np.square(one_way).sum() == pytest.approx(marginals.PLAN_ONE_WAY_SHARE) and (one_way > 0).all()
        return {tuple(layout.schema.names[c] for c in layout.found[i]) for i in np.flatnonzero(plan)
                if len(layout.found[i]) > 1}

    assert planned(0.0) == {(*pair, "t") for pair in itertools.combinations("abcd", 2)}
    assert planned(3 * 20.0 ** 2) == {("a", "b", "t"), ("c", "t"), ("d", "t")}


def test_the_noise_of_a_release_has_the_planned_spread(table_files):
    config = table_config(table_files, "-ldp", "--noise-multiplier", "2.0")
    state = rounds(config, [people()])
    layout = marginals.Layout.of(tables.Schema.from_text(config.job.schema), config.job.target)
    exact = np.concatenate([tables.marginal(tables.encode(people(), layout.schema, fine=True)[0], layout.shape, clique)
                            for clique in layout.found])
    weights = layout.survey_weights()
    surveyed = np.repeat(weights, np.diff(layout.starts)) > 0
    scaled = (state["survey"].numpy() - exact)[surveyed] * np.repeat(weights, np.diff(layout.starts))[surveyed]
    assert float(state["survey_noise"]) == pytest.approx(4.0)
    assert np.std(scaled) == pytest.approx(2.0, rel=0.1)


def gaussian_epsilon(mu: float, delta: float) -> float:
    """The exact epsilon of a Gaussian mechanism with sensitivity / noise = mu (Balle and Wang 2018)."""
    return brentq(lambda eps: norm.cdf(-eps / mu + mu / 2) - math.exp(eps) * norm.cdf(-eps / mu - mu / 2) - delta,
                  0.0, 100.0)


def synthetic_run(files: dict[str, Path], folder: Path, *extra: str) -> tuple[pd.DataFrame, dict, Path]:
    argv = ["--data", f"{files['a']},{files['b']}", "--test-data", str(files["test"]),
            "--schema", str(files["schema"]), "--output", str(folder), *extra]
    assert main.main(argv) == 0
    return pd.read_csv(folder / "synthetic.csv"), json.loads((folder / "summary.json").read_text()), folder


def summary_config(summary: dict) -> Config:
    """The run's configuration, from its summary's options (by part) less the researcher's own."""
    options = {name: value for part in summary["options"].values() for name, value in part.items()}
    return parser.from_mapping({k: v for k, v in options.items() if k not in CLIENT_ONLY})


@pytest.fixture(scope="module")
def gloo_table(table_files, tmp_path_factory):
    return synthetic_run(table_files, tmp_path_factory.mktemp("gloo-table"), "-ldp", "--target-epsilon", "3")


def test_a_table_run_writes_the_synthetic_table_with_the_inputs_columns(gloo_table, table_files):
    synthetic, summary, folder = gloo_table
    assert list(synthetic.columns) == list(people().columns)
    metadata = json.loads((folder / "metadata.json").read_text())
    assert metadata == tables.Schema.read(table_files["schema"]).to_sdv()
    assert set(metadata["columns"]) == set(synthetic.columns)
    assert len(synthetic) == 500
    assert set(synthetic["sex"]) <= {"F", "M"} and synthetic["region"].isna().any()
    options = summary["options"]
    assert "table" in options and options["run"]["num_nodes"] == 3
    for key in ("tstr_auc", "tstr_accuracy", "trtr_auc", "tvd_1way", "tvd_2way", "tvd_3way", "memorized_share",
                "exact_copy_share", "holdout_exact_copy_share", "closer_to_train_share"):
        assert 0 <= summary["evaluation"][key] <= 1, key


def test_the_reported_epsilon_is_the_exact_composition_of_the_releases(gloo_table):
    config = summary_config(summary := gloo_table[1])
    noise = LocalDP(config.privacy, config.run.num_rounds).release_noise()
    exact = gaussian_epsilon(math.sqrt(config.run.num_rounds) / noise, config.privacy.delta)
    assert summary["epsilon"] <= 3.0
    assert summary["epsilon"] == pytest.approx(exact, abs=0.02)


def test_both_backends_give_the_same_synthetic_table(gloo_table, table_files, tmp_path):
    synthetic, summary, _ = synthetic_run(table_files, tmp_path, "-ldp", "--target-epsilon", "3",
                                          "--backend", "vantage6")
    pd.testing.assert_frame_equal(synthetic, gloo_table[0])
    assert summary["epsilon"] == gloo_table[1]["epsilon"]


def test_the_vantage6_result_holds_the_synthetic_table_a_user_reads_without_ppsdg(gloo_table, table_files):
    """The central function's result, as vantage6's UI or UserClient hands it over: the synthetic records
    as CSV text (the same as main.py writes for the same seed), the schema, epsilon and delta."""
    config = parser.prepared(parser.parse(["--data", f"{table_files['a']},{table_files['b']}", "--test-data",
                                           str(table_files["test"]), "--schema", str(table_files["schema"]),
                                           "-ldp", "--target-epsilon", "3", "--backend", "vantage6"]))
    databases = main.mock_databases(config.source, config.job.target, config.run.workers, config.run.seed)
    result = json.loads(json.dumps(main.run_on_mock(databases, config.task_options())))
    table = result["synthetic"]
    pd.testing.assert_frame_equal(pd.read_csv(io.StringIO(table["csv"])), gloo_table[0])
    assert table["rows"] == 500 and table["schema"] == json.loads(config.job.schema)
    assert (table["epsilon"], table["delta"]) == (gloo_table[1]["epsilon"], gloo_table[1]["delta"])


def test_the_table_function_gives_a_vantage6_user_the_table_and_its_privacy(gloo_table, table_files, tmp_path):
    """`synthesize_table`, as vantage6's UI creates it (its form's fields only): the same synthetic table as
    main.py's for the same seed, a privacy row a round, a preview, each in the shape the store's
    visualizations name; and `ppsdg sample` draws the same records again from the saved result, or more."""
    config = parser.parse(["--data", f"{table_files['a']},{table_files['b']}", "--test-data", str(table_files["test"]),
                           "--schema", str(table_files["schema"])])
    databases = main.mock_databases(config.source, "outcome", config.run.workers, config.run.seed)
    arguments = {"schema": json.loads(table_files["schema"].read_text()), "target": "outcome", "epsilon": 3.0}
    result = json.loads(json.dumps(main.run_on_mock(databases, arguments, method="synthesize_table")))
    synthetic = pd.read_csv(io.StringIO(result["synthetic"]["csv"]))
    pd.testing.assert_frame_equal(synthetic, gloo_table[0])
    assert result["privacy"] == [{"round": r["round"], "workers": 2, "epsilon": r["epsilon"], "delta": 1e-5}
                                 for r in result["metrics"]]
    assert result["privacy"][-1]["epsilon"] == gloo_table[1]["epsilon"]
    fit = result["synthetic"]["fit"]
    assert fit["released_marginals"] >= len(synthetic.columns) and 0 < fit["mean_tvd"] <= fit["max_tvd"] < 0.5
    preview = pd.read_csv(io.StringIO(pd.DataFrame(result["preview"]).to_csv(index=False)))
    pd.testing.assert_frame_equal(preview, synthetic.head(20))
    shown = {f["name"]: f for f in store.describe()["functions"]}["synthesize_table"]["ui_visualizations"]
    for visualization in shown:
        rows = result[visualization["schema"]["location"][0]]
        columns = visualization["schema"].get("columns", list(synthetic.columns))
        assert rows and all(list(row) == columns for row in rows), visualization["name"]
    saved = tmp_path / "result.json"
    saved.write_text(json.dumps(result))
    assert main.main(["sample", str(saved), "--output", str(tmp_path / "again.csv")]) == 0
    assert (tmp_path / "again.csv").read_text() == result["synthetic"]["csv"]
    assert main.main(["sample", str(saved), "--output", str(tmp_path / "more.csv"), "--rows", "1200"]) == 0
    more = pd.read_csv(tmp_path / "more.csv")
    assert len(more) == 1200 and list(more.columns) == list(synthetic.columns)


def test_sample_refuses_what_is_not_a_result_by_name(tmp_path, capsys):
    (tmp_path / "other.json").write_text(json.dumps({"metrics": []}))
    (tmp_path / "text.json").write_text("not json")
    for name, message in (("other.json", "not a ppsdg central function's result"), ("text.json", "not JSON"),
                          ("missing.json", "no such file")):
        assert main.main(["sample", str(tmp_path / name), "--output", str(tmp_path / "out.csv")]) == 2
        assert message in capsys.readouterr().err
    assert not (tmp_path / "out.csv").exists()


def test_the_fit_to_the_released_marginals_is_zero_for_the_records_released_and_finds_broken_dependence():
    frame = people(2000, seed=3)
    layout = marginals.Layout.of(tables.draft(frame, "outcome"), "outcome")
    codes = tables.encode(frame, layout.schema, fine=True)[0]
    plan = np.where(layout.plannable() & np.array([len(clique) == 2 for clique in layout.found]), 1.0, 0.0)
    plan /= np.sqrt(np.square(plan).sum())
    state = {"survey": torch.from_numpy(marginals.release(codes, layout, layout.survey_weights(), 0.0, None)),
             "measured": torch.from_numpy(marginals.release(codes, layout, plan, 0.0, None)),
             "plan": torch.from_numpy(plan)}
    fit = marginals.release_fit(state, layout, codes)
    released = len(layout.schema.columns) + len(layout.schema.fine) + int((plan > 0).sum())
    assert fit == {"released_marginals": released, "mean_tvd": 0.0, "max_tvd": 0.0}
    shuffled = codes.copy()
    shuffled[:, layout.target] = np.random.default_rng(0).permutation(shuffled[:, layout.target])
    broken = marginals.release_fit(state, layout, shuffled)
    assert broken["max_tvd"] > 0.05 and broken["mean_tvd"] > 0


def test_each_file_is_one_workers_data(table_files):
    config = parser.parse(["--data", f"{table_files['a']},{table_files['b']}", "--schema",
                           str(table_files["schema"])])
    assert config.run.num_nodes == 3
    parts = data.worker_sets(config.source, config.run.workers, config.run.seed, config.job.target)
    assert [len(part) for part in parts] == [200, 200]
    with pytest.raises(OptionsError, match="--num-nodes must be 3"):
        parser.parse(["--data", f"{table_files['a']},{table_files['b']}", "-nn", "4"])


def test_a_table_refuses_what_only_images_take(table_files):
    with pytest.raises(OptionsError, match="a table takes 'marginals'"):
        parser.parse(["--data", str(table_files["all"]), "--synthesizer", "wgan"])
    with pytest.raises(OptionsError, match="--schema is for a table"):
        parser.parse(["--schema", str(table_files["schema"]), "--data", "embedded", "--target", "x"])


def node_task(config: Config) -> dict:
    """A round-1 subtask's input for organization 7, worker rank 1 of 1."""
    model = new_model(Job.of_config(config).synthesizer, config.run.seed)
    message = codec.encode_text({coordination.ROUND: torch.tensor(1), **model.state_dict()})
    return {"message": message, "ranks": {"7": 1}, "world_size": 2, "options": config.task_options()}


def test_a_node_policy_refuses_a_table_task_without_dp_and_stops_at_its_budget(table_files, tmp_path,
                                                                                monkeypatch):
    monkeypatch.setenv("PPSDG_REQUIRE_DP", "1")
    with pytest.raises(PolicyError, match="PPSDG_REQUIRE_DP"):
        algorithm.run_partial(7, people(), node_task(table_config(table_files, "-nn", "2")))
    monkeypatch.setenv("PPSDG_MAX_EPSILON", "1")
    monkeypatch.setenv("TEMPORARY_FOLDER", str(tmp_path))
    dp_config = table_config(table_files, "-nn", "2", "-ldp", "--noise-multiplier", "1.0")
    with pytest.raises(PolicyError, match="PPSDG_MAX_EPSILON"):
        algorithm.run_partial(7, people(), node_task(dp_config))


def test_schema_and_evaluate_commands_print_json(table_files, gloo_table, tmp_path, capsys):
    assert main.main(["schema", str(table_files["all"]), "--target", "outcome"]) == 0
    assert tables.Schema.from_text(capsys.readouterr().out).target == "outcome"
    synthetic_path = tmp_path / "synthetic.csv"
    gloo_table[0].to_csv(synthetic_path, index=False)
    assert main.main(["evaluate", str(synthetic_path), "--data", f"{table_files['a']},{table_files['b']}",
                      "--test-data", str(table_files["test"]), "--schema", str(table_files["schema"])]) == 0
    figures = json.loads(capsys.readouterr().out)
    assert figures["tvd_2way"] == pytest.approx(gloo_table[1]["evaluation"]["tvd_2way"])


def test_the_evaluation_scores_a_copy_of_the_training_data_as_memorized(table_files):
    schema = tables.Schema.read(table_files["schema"])
    train, test = people(), people(200, seed=1)
    copied = table_evaluation.privacy_figures(train.iloc[:300], train, test, schema)
    unseen = table_evaluation.privacy_figures(people(300, seed=2), train, test, schema)
    assert copied["exact_copy_share"] == 1.0 and copied["memorized_share"] > 0.9
    assert unseen["memorized_share"] < 0.2
    codes = table_evaluation.binned(train, train, schema)
    assert table_evaluation.mean_tvd(codes, codes, 2) == 0.0


def test_a_release_no_honest_node_could_send_is_rejected(table_files):
    config = table_config(table_files, "-ldp", "--noise-multiplier", "2.0")
    synthesizer = marginals.MarginalsSynthesizer(config.job, config.run.num_rounds)
    codes = torch.from_numpy(tables.encode(people(), synthesizer.layout.schema, fine=True)[0])
    torch.manual_seed(0)
    honest = synthesizer.local_update(new_model(synthesizer, config.run.seed), codes, codes[:, synthesizer.layout.target],
                                      LocalDP(config.privacy, config.run.num_rounds), None, 0.0, None)[0]
    surveying = new_model(synthesizer, config.run.seed).state_dict()
    synthesizer.check_release(honest, TABLE_ROWS, 2.0, surveying)
    poisoned = [{**honest, "survey": honest["survey"] * 1000}, {**honest, "survey": -honest["survey"]},
                {**honest, "survey_noise": torch.tensor(0.0, dtype=torch.float64)},
                {**honest, "plan": torch.ones_like(honest["plan"])},
                {**honest, "measured": honest["survey"]}]
    for update in poisoned:
        with pytest.raises(FederationError, match="update rejected"):
            synthesizer.check_release(update, TABLE_ROWS, 2.0, surveying)
    measuring = {**surveying, "plan": torch.ones_like(surveying["plan"])}
    with pytest.raises(FederationError, match="the round asked for the measurement and the release holds survey cells"):
        synthesizer.check_release(honest, TABLE_ROWS, 2.0, measuring)


def test_a_checkpoint_of_a_table_run_reads_back_and_a_poisoned_one_is_refused(gloo_table):
    config = summary_config(gloo_table[1])
    fixed = config.fixed_options()
    job = Job.of_config(config)
    blob = checkpoint.load(gloo_table[2])
    state = checkpoint.read(blob, fixed, config.run, job).model
    assert state["plan"].any() and state["measured"].any()
    point = checkpoint.read(blob, fixed, config.run, job)
    poisoned = {"plan": torch.flip(state["plan"], [0]), "measured": state["measured"] * 1000,
                "survey": -state["survey"], "measure_noise": state["measure_noise"] / 4}
    for name, value in poisoned.items():
        point.model = {**state, name: value}
        with pytest.raises(checkpoint.CheckpointError, match="not the sum of the releases"):
            checkpoint.read(checkpoint.encode(point, fixed), fixed, config.run, job)


def test_a_rounds_subtask_carries_the_planned_release_noise_not_the_target(table_files):
    config = table_config(table_files, "-nn", "3", "-ldp", "--target-epsilon", "3")
    carried = central_task.round_options(config, Job.of_config(config))
    planned = LocalDP(config.privacy, config.run.num_rounds).release_noise()
    assert carried["target_epsilon"] is None and carried["noise_multiplier"] == planned > 1.0
    rebuilt = parser.from_mapping(json.loads(json.dumps(carried)))
    assert LocalDP(rebuilt.privacy, rebuilt.run.num_rounds).release_noise() == planned
    sgd = parser.parse(["-ldp", "--target-epsilon", "3"])
    assert central_task.round_options(sgd, Job.of_config(sgd))["target_epsilon"] == 3.0
