"""A dishonest central against a node: the node follows no instruction that would release more than its
ledger charges, its refusals say nothing of its data, and it reads its table as written. Played on the
vantage6 node's partial function and on a gloo worker process; and, for every synthesizer, what a
node releases measured against what its ledger charges."""
import dataclasses
import json
import math
import multiprocessing
import os
import re

import pandas as pd
import pytest
import torch

import main
from backends import codec
from backends.gloo import free_port
from ppsdg import algorithm, coordination, local, parser, privacy, tables
from ppsdg.config import Config
from ppsdg.errors import FederationError
from ppsdg.models import new_model
from ppsdg.policy import FOLDER, MAX_ROUNDS, NodeLedger
from ppsdg.synthesizers import marginals
from ppsdg.job import Job
from conftest import people
from test_vantage6 import worker_frames

ORGANIZATION = 7
NOISE = 2.0
TARGET = "outcome"


@pytest.fixture
def node(monkeypatch, tmp_path):
    """A node whose owner keeps a ledger (a bound of rounds, far off: the tests read what it charges)."""
    for name in [name for name in os.environ if name.startswith("PPSDG_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv(FOLDER, str(tmp_path))
    monkeypatch.setenv(MAX_ROUNDS, "1000000")
    return tmp_path


def table_options(**values) -> Config:
    schema = tables.draft(people(), TARGET).text()
    return parser.from_mapping({"num_nodes": 2, "synthesizer": "marginals", "schema": schema, "target": TARGET,
                                "num_rounds": 3, "local_dp": True, "noise_multiplier": NOISE, **values})


def task(config: Config, state: dict[str, torch.Tensor], round_: int = 2) -> dict:
    """A subtask's input as the central writes it, carrying `state` as the global model."""
    message = codec.encode_text({coordination.ROUND: torch.tensor(round_), **state})
    return {"message": message, "ranks": {str(ORGANIZATION): 1}, "world_size": 2, "options": config.task_options()}


def initial_model(config: Config) -> torch.nn.Module:
    """The global model a run of `config` starts from."""
    return new_model(Job.of_config(config).synthesizer, config.run.seed)


def initial_state(config: Config) -> dict[str, torch.Tensor]:
    """The global state a run of `config` starts from."""
    return initial_model(config).state_dict()


def with_plan(config: Config, weights: dict[tuple[int, ...], float]) -> dict[str, torch.Tensor]:
    """The initial global state with a plan of these weights per clique."""
    layout = marginals.Layout.of(tables.Schema.from_text(config.job.schema), config.job.target)
    state = initial_state(config)
    for clique, weight in weights.items():
        state["plan"][layout.found.index(clique)] = weight
    return state


def attacks() -> dict[str, dict[tuple[int, ...], float]]:
    """Plans that no honest server makes, each measured against one record, from the issue that found them."""
    layout = marginals.Layout.of(tables.Schema.from_text(table_options().job.schema), TARGET)
    plannable = [clique for clique, allowed in zip(layout.found, layout.plannable()) if allowed]
    survey = dict(zip(layout.found, 30 * layout.survey_weights()))
    return {"one clique at weight 1000": {plannable[0]: 1000.0},
            "weight 1 on every clique a plan may weight": dict.fromkeys(plannable, 1.0),
            "weight 1 on every triple": {c: 1.0 for c in plannable if len(c) == 3},
            "the survey's weights times 30": {c: w for c, w in survey.items() if w > 0},
            "a pair without the target": {next(c for c in layout.found if len(c) == 2 and layout.target not in c): 1.0},
            "a fine histogram": {next(c for c in layout.found if layout.is_fine(c)): 1.0},
            "a negative weight": {plannable[0]: -0.5},
            "a weight that is not a number": {plannable[0]: math.nan}}


@pytest.mark.parametrize("name", list(attacks()))
def test_a_node_refuses_a_plan_that_would_release_more_than_its_ledger_charges(name, node):
    config = table_options()
    refusal = "the server's plan is refused|tensor 'plan' holds NaN"  # a vantage6 node's codec refuses NaN first
    with pytest.raises(FederationError, match=f"organization {ORGANIZATION} .*({refusal})"):
        algorithm.run_partial(ORGANIZATION, people(), task(config, with_plan(config, attacks()[name])))


def test_a_node_follows_the_plan_that_its_survey_selects(node):
    config = table_options()
    layout = marginals.Layout.of(tables.Schema.from_text(config.job.schema), TARGET)
    survey = algorithm.run_partial(ORGANIZATION, people(), task(config, initial_state(config), 1))
    state = {**initial_state(config), **codec.decode_text(survey["message"])[0]}
    plan = marginals.select({k: state[k] for k in marginals.STATISTICS}, layout, config.run.num_rounds - 1)
    state = {**initial_state(config), "plan": torch.from_numpy(plan)}
    reply = codec.decode_text(algorithm.run_partial(ORGANIZATION, people(), task(config, state))["message"])[0]
    assert bool(reply["measured"].any()) and not bool(reply["survey"].any())


def serve_a_plan(port: int, state: dict[str, torch.Tensor], result) -> None:
    """Rank 0, dishonest: send `state` as round 2's global model; put what came back."""
    from backends.gloo import GlooCommunicator

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    comm = GlooCommunicator(0, 2, worker_timeout_s=60)
    config = table_options()
    replies = comm.exchange({coordination.ROUND: torch.tensor(2), **state}, [1],
                            coordination.reply_template(initial_model(config), Job.of_config(config)))
    result.put((sorted(replies), comm.failures))


def work_a_round(port: int, result) -> None:
    """Rank 1, a gloo worker on its table: one round, as `coordination.work` runs each."""
    from backends.gloo import GlooCommunicator

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    comm = GlooCommunicator(1, 2, worker_timeout_s=60)
    config = table_options()
    examples = local.Examples.from_set(people(), config.job, torch.device("cpu"))
    try:
        coordination.worker_round(comm, initial_model(config), examples, config.run, Job.of_config(config))
        result.put("released")
    except FederationError as error:
        result.put(str(error))
    finally:
        comm.close()


def test_a_gloo_worker_refuses_the_plan_and_releases_nothing():
    state = with_plan(table_options(), attacks()["one clique at weight 1000"])
    context = multiprocessing.get_context("spawn")
    port, served, worked = free_port(), context.Queue(), context.Queue()
    ranks = [context.Process(target=serve_a_plan, args=(port, state, served)),
             context.Process(target=work_a_round, args=(port, worked))]
    for rank in ranks:
        rank.start()
    try:
        assert worked.get(timeout=120).startswith("the server's plan is refused: its squared weights sum to 1e+06")
        replies, failures = served.get(timeout=120)
    finally:
        for rank in ranks:
            rank.kill()
    assert replies == [] and list(failures) == [1]


def strict_schema(frame: pd.DataFrame, column: str, categories: list[str]) -> str:
    """The frame's drafted schema, with `column` listing only `categories` and no `other` bucket: a
    schema that asks the node which of its rows hold any other value."""
    schema = tables.draft(frame, TARGET).to_json()
    for entry in schema["columns"]:
        if entry["name"] == column:
            entry.update(type="categorical", categories=categories, other=False)
            entry.pop("edges", None), entry.pop("integer", None), entry.pop("clip", None)
    return json.dumps(schema)


@pytest.mark.parametrize("on_node", [True, False])
def test_a_refusal_is_the_same_words_whatever_the_data_hold(on_node, node, capsys):
    """A schema listing one category asks which rows hold another: the node's answer is one bit, the
    same sentence for 1 row as for 300, in any column. The detail is the owner's: said on the process's
    stderr where the process is the owner's, never in a real node's log (which goes to the server)."""
    frame = people()
    errors = []
    for column, categories in (("sex", ["F"]), ("smoker", ["no"]), ("region", ["north", "south"])):
        config = table_options(schema=strict_schema(frame, column, categories))
        with pytest.raises(FederationError) as refused:
            algorithm.run_partial(ORGANIZATION, frame, task(config, initial_state(config), 1), on_node)
        errors.append(str(refused.value))
    assert len(set(errors)) == 1 and "do not fit the task" in errors[0]
    assert not any(character.isdigit() for character in errors[0].replace(str(ORGANIZATION), "").replace("1)", ""))
    detail = capsys.readouterr().err
    assert ("more row(s), column 'sex'" in detail) != on_node


def test_the_owner_finds_what_the_refusal_leaves_out_with_the_command_it_names(tmp_path, capsys):
    frame = people()
    frame.to_csv(tmp_path / "data.csv", index=False)
    (tmp_path / "strict.json").write_text(strict_schema(frame, "sex", ["F"]))
    assert main.main(["schema", str(tmp_path / "data.csv"), "--check", str(tmp_path / "strict.json")]) == 2
    assert re.search(r"line \d+ and \d+ more row\(s\), column 'sex': expected a category", capsys.readouterr().err)
    (tmp_path / "fits.json").write_text(tables.draft(frame, TARGET).text())
    assert main.main(["schema", str(tmp_path / "data.csv"), "--check", str(tmp_path / "fits.json")]) == 0
    assert capsys.readouterr().out.startswith(f"the table fits the schema ({len(frame)} rows)")


def test_a_node_says_nothing_of_the_cells_its_schema_maps_where_its_log_goes_to_the_server(node, capsys):
    frame = people()
    schema = json.loads(strict_schema(frame, "smoker", ["no"]))
    next(entry for entry in schema["columns"] if entry["name"] == "smoker")["other"] = True
    config = table_options(schema=json.dumps(schema))
    for on_node in (True, False):
        algorithm.run_partial(ORGANIZATION, frame, task(config, initial_state(config), 1), on_node)
        assert ("cells the schema mapped" in capsys.readouterr().err) != on_node


CODED = pd.DataFrame({"grade": ["1", "2", None, "2", "1", "1"], "flag": ["true", "false", "true", "true", "false", "true"],
                      "code": ["007", "010", "007", "7", "010", "007"], TARGET: ["ill", "well", "well", "ill", "well", "ill"]})


def coded_options() -> Config:
    """A schema whose categories are codes as a registry writes them: digits, flags, leading zeros."""
    schema = {"columns": [
        {"name": "grade", "type": "categorical", "categories": ["1", "2"], "missing": True},
        {"name": "flag", "type": "categorical", "categories": ["false", "true"], "missing": False},
        {"name": "code", "type": "categorical", "categories": ["007", "010", "7"], "missing": False},
        {"name": TARGET, "type": "categorical", "categories": ["ill", "well"], "missing": False}]}
    return table_options(schema=json.dumps(schema), local_dp=False, noise_multiplier=None)


def test_a_real_node_reads_its_table_database_as_written(node, monkeypatch):
    """Through vantage6's container wrapper, as a Docker node runs the partial: codes with leading zeros,
    'true'/'false' and digits in a column with a missing cell each keep their category."""
    from vantage6.algorithm.tools.wrap import wrap_algorithm
    import jwt

    config = coded_options()
    CODED.to_csv(node / "data.csv", index=False)
    (node / "input.json").write_text(json.dumps({"method": "partial", "kwargs": task(
        config, initial_state(config), 1)}))
    (node / "token").write_text(jwt.encode({"sub": {"organization_id": ORGANIZATION, "node_id": 3,
                                                    "collaboration_id": 1}}, "k" * 32))
    for name, value in {"PKG_NAME": "ppsdg", "INPUT_FILE": node / "input.json", "OUTPUT_FILE": node / "output.json",
                        "TOKEN_FILE": node / "token", "HOST": "http://localhost", "PORT": "80", "API_PATH": "/api",
                        "USER_REQUESTED_DATABASE_LABELS": "table", "TABLE_DATABASE_URI": node / "data.csv",
                        "TABLE_DATABASE_TYPE": "csv"}.items():
        monkeypatch.setenv(name, str(value))
    wrap_algorithm()
    survey = codec.decode_text(json.loads((node / "output.json").read_text())["message"])[0]["survey"].numpy()
    layout = marginals.Layout.of(tables.Schema.from_text(config.job.schema), TARGET)
    expected = [[3, 2, 1], [2, 4], [3, 2, 1], [3, 3]]
    assert [layout.part(survey, index).tolist() for index in range(4)] == expected


def test_the_mock_nodes_read_their_table_databases_as_written(tmp_path):
    """The mock client's organizations get their parts as a node reads them, not as pandas guesses them."""
    CODED.to_csv(tmp_path / "coded.csv", index=False)
    config = parser.parse(["--data", str(tmp_path / "coded.csv"), "--schema", coded_options().job.schema,
                           "--target", TARGET, "-nn", "2"])
    databases = main.mock_databases(config.source, config.job.target, config.run.workers, config.run.seed)(tmp_path)
    pd.testing.assert_frame_equal(databases[0][0]["database"], tables.read_table(tmp_path / "worker1.csv"))
    assert set(databases[0][0]["database"]["code"]) <= {"007", "010", "7"}


# What a node releases against what its ledger charges. A release is Gaussian noise on a vector of
# statistics; its privacy is the L2 norm of (release(D) - release(D')) / noise std, entry by entry,
# for neighbouring tables D and D' (one record less), which the ledger's noise multiplier m bounds
# by 1 / m. Measured: the difference with the same noise seed, the noise std over seeds.
SEEDS = 120


def released(config: Config, frame, state: dict[str, torch.Tensor], seed: int) -> torch.Tensor:
    """A node's release, with the run's seed `seed`, as one vector of its distinct entries (a second
    moment's upper triangle)."""
    seeded = dataclasses.replace(config, run=dataclasses.replace(config.run, seed=seed))
    reply = codec.decode_text(algorithm.run_partial(ORGANIZATION, frame, task(seeded, state, 1))["message"])[0]
    parts = []
    for name, value in sorted(reply.items()):
        if name.endswith("second"):
            rows, columns = torch.triu_indices(value.shape[-1], value.shape[-1])
            value = value[..., rows, columns]
        if value.is_floating_point() and value.numel() > 1:
            parts.append(value.flatten().double())
    return torch.cat(parts)


def sensitivity_over_noise(config: Config, frame, neighbour, state) -> float:
    """The L2 norm of the difference of two neighbouring releases over each entry's noise std."""
    draws = torch.stack([released(config, frame, state, seed) for seed in range(SEEDS)])
    difference = released(config, frame, state, 0) - released(config, neighbour, state, 0)
    noisy = draws.std(0) > 0
    assert not bool(difference[~noisy].any()), "an entry released without noise differs between neighbours"
    return float((difference[noisy] / draws.std(0)[noisy]).norm())


def charged_noise(folder) -> float:
    entries = NodeLedger(folder / f"ppsdg-ledger-{ORGANIZATION}.json").rounds
    assert len({entry for entry in entries}) == 1
    return entries[0][0]


@pytest.mark.parametrize("kind", ["marginals survey", "marginals measurement", "moments"])
def test_a_statistics_release_never_exceeds_what_the_ledger_charges(kind, node):
    """The marginals' one record changes one cell of each clique: the bound is met exactly. A digit's
    coordinates are clipped to norm 1: at most met."""
    if kind == "moments":
        config = parser.from_mapping({"num_nodes": 2, "gan": True, "local_dp": True, "noise_multiplier": NOISE})
        frame = worker_frames(count=1, rows=40)[0]
        neighbour = frame.iloc[1:]
        state = initial_state(config)
    else:
        config = table_options()
        frame, neighbour = people(), people().iloc[1:]
        layout = marginals.Layout.of(tables.Schema.from_text(config.job.schema), TARGET)
        triples = [c for c, allowed in zip(layout.found, layout.plannable()) if allowed and len(c) == 3]
        plan = dict.fromkeys(triples[:4], 0.5) if kind == "marginals measurement" else {}
        state = with_plan(config, plan)
    measured = sensitivity_over_noise(config, frame, neighbour, state)
    assert measured <= 1.1 / charged_noise(node)
    assert kind == "moments" or measured >= 0.9 / charged_noise(node)


def test_the_measure_finds_a_plan_that_releases_more_than_it_is_charged(node, monkeypatch):
    """The same measure on a node that skipped its check: a plan of squared weights 4 is twice the
    charged ratio; the check is what stands between the two."""
    config = table_options()
    layout = marginals.Layout.of(tables.Schema.from_text(config.job.schema), TARGET)
    triples = [c for c, allowed in zip(layout.found, layout.plannable()) if allowed and len(c) == 3]
    monkeypatch.setattr(marginals.MarginalsSynthesizer, "check_instructions", lambda self, sent: None)
    measured = sensitivity_over_noise(config, people(), people().iloc[1:], with_plan(config, dict.fromkeys(triples[:4], 1.0)))
    assert measured >= 1.8 / charged_noise(node)


@pytest.mark.parametrize("values", [{}, {"gan": True, "synthesizer": "wgan", "epochs": 1}],
                         ids=["classifier", "wgan"])
def test_dp_sgd_releases_what_the_ledger_charges(values, node):
    """DP-SGD's mechanism is Opacus's: the accountant entry of what its optimizer ran (noise multiplier,
    Poisson sample rate, noisy steps) is the entry the node charged before it read its data."""
    config = parser.from_mapping({"num_nodes": 2, "batch_size": 16, "local_dp": True, "noise_multiplier": NOISE,
                                  **values})
    reply = algorithm.run_partial(ORGANIZATION, worker_frames(count=1, rows=60)[0],
                                  task(config, initial_state(config), 1))
    figures = coordination.reply_figures(codec.decode_text(reply["message"])[0])
    ran = (figures["dp_noise_multiplier"], figures["dp_sample_rate"], int(figures["dp_steps"]))
    assert NodeLedger(node / f"ppsdg-ledger-{ORGANIZATION}.json").rounds == [ran]
    assert ran == (NOISE, privacy.sample_rate(60, 16), 4 * config.job.epochs)


@pytest.mark.parametrize("missing, message", [({"schema": None}, "needs its schema"),
                                              ({"target": None}, "needs its target"),
                                              ({"schema": None, "target": None}, "needs its schema and target"),
                                              ({"target": "income"}, "target 'income' is not a column")])
def test_a_table_task_without_its_schema_or_target_is_refused_by_name(missing, message, node):
    config = table_options()
    kwargs = task(config, initial_state(config), 1)
    kwargs["options"].update(missing)
    with pytest.raises(FederationError, match=f"organization {ORGANIZATION} .*{message}"):
        algorithm.run_partial(ORGANIZATION, people(), kwargs)
