"""The vantage6 functions a researcher picks in vantage6's UI, one a job: each describes in the algorithm
store exactly the arguments it accepts, and its defaults run the job the command line runs."""
import inspect
import json
from pathlib import Path
from typing import Any

import pytest

from ppsdg import algorithm, functions, parser, store, tables

STORE_TYPES = {float: "float", int: "integer", str: "string", bool: "boolean", float | None: "float", int | None: "integer",
               list[int] | None: "organization_list", dict[str, Any] | str: "json"}


def test_the_store_file_is_the_one_the_code_describes():
    committed = json.loads((Path(__file__).parent.parent / store.STORE_FILE).read_text())
    assert committed == json.loads(json.dumps(store.describe()))


@pytest.mark.parametrize("name", store.FUNCTIONS)
def test_a_job_function_describes_every_argument_it_accepts_and_nothing_else(name):
    function = store.FUNCTIONS[name][0]
    parameters = dict(inspect.signature(function).parameters)
    assert next(iter(parameters)) == "client"
    parameters.pop("client")
    described = {argument["name"]: argument for argument in store.job_function(name)["arguments"]}
    assert list(described) == list(parameters)
    for argument, parameter in parameters.items():
        entry = described[argument]
        hint = parameter.annotation
        assert entry["type"] == STORE_TYPES[hint] or (entry["type"] == "column" and hint is str), argument
        assert entry.get("has_default_value", False) == (parameter.default is not inspect.Parameter.empty)
        if entry.get("has_default_value"):
            assert entry["default_value"] == store.default_text(parameter.default)


def test_the_table_form_needs_four_fields_for_a_useful_run():
    arguments = store.job_function("synthesize_table")["arguments"]
    assert [a["name"] for a in arguments if not a.get("has_default_value")] == ["schema", "target"]
    assert [a["name"] for a in arguments][:4] == ["schema", "target", "epsilon", "organizations"]
    assert {a["name"]: a["type"] for a in arguments}["target"] == "column"


def called(function, monkeypatch, **arguments) -> dict:
    """The options a job function runs `central`'s rounds with."""
    monkeypatch.setattr(algorithm, "run_central", lambda client, options: options)
    return function(mock_client=object(), **arguments)


def without_organizations(options: dict) -> dict:
    assert options.pop("organizations") is None
    return options


def test_the_table_function_runs_the_command_lines_table_job(monkeypatch, tmp_path):
    table = tmp_path / "people.csv"
    table.write_text("age,smoker,outcome\n" + "".join(f"{20 + i % 50},{'yes' if i % 3 else 'no'},"
                                                      f"{'ill' if i % 4 else 'well'}\n" for i in range(60)))
    schema = tmp_path / "schema.json"
    schema.write_text(tables.draft(tables.read_table(table), "outcome").text())
    options = called(functions.synthesize_table, monkeypatch, schema=json.loads(schema.read_text()), target="outcome")
    chosen = parser.from_mapping({**without_organizations(options), "data": str(table)})
    command_line = parser.parse(["--data", str(table), "--schema", str(schema), "--target", "outcome", "-ldp",
                                 "--target-epsilon", "3"])
    assert (chosen.run, chosen.privacy, chosen.job) == (command_line.run, command_line.privacy, command_line.job)


def test_the_image_function_runs_the_command_lines_synthesis(monkeypatch):
    chosen = parser.from_mapping(without_organizations(called(functions.synthesize_images, monkeypatch)))
    command_line = parser.parse(["--gan", "-ldp", "--target-epsilon", "3", "--moments-basis", "digits"])
    assert (chosen.run, chosen.privacy, chosen.job) == (command_line.run, command_line.privacy, command_line.job)
    wgan = parser.from_mapping(without_organizations(called(functions.synthesize_images, monkeypatch,
                                                             method="wgan", epsilon=5.0)))
    assert wgan.job == parser.parse(["--gan", "--synthesizer", "wgan"]).job
    assert wgan.privacy == parser.parse(["--gan", "-ldp", "--target-epsilon", "5"]).privacy


def test_the_classifier_function_runs_the_default_job_and_dp_sgd_where_a_budget_is_given(monkeypatch):
    chosen = parser.from_mapping(without_organizations(called(functions.train_classifier, monkeypatch)))
    default = parser.parse([])
    assert (chosen.run, chosen.privacy, chosen.job) == (default.run, default.privacy, default.job)
    private = parser.from_mapping(without_organizations(called(functions.train_classifier, monkeypatch,
                                                                epsilon=2.0)))
    assert private.privacy == parser.parse(["-ldp", "--target-epsilon", "2"]).privacy
