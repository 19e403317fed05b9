"""The vantage6 backend: the node's container contract, the mock federation, and its failures."""
import copy
import json
import re
import subprocess
import sys
from pathlib import Path

import jwt
import pytest
import torch
from vantage6.algorithm.tools.mock_client import MockAlgorithmClient
from vantage6.algorithm.tools.wrap import wrap_algorithm

from backends import codec
from backends.mock import ForgetfulMockClient
from conftest import run_main
from ppsdg import checkpoint, coordination, data, local, models, parser

def comparable(records: list[dict]) -> list[dict]:
    return [coordination.comparable(r) for r in records]


def test_mock_run_equals_the_gloo_run_bit_for_bit(gloo_run, tmp_path):
    _, gloo_state, gloo_records = gloo_run
    state, records = run_main(tmp_path, "--backend", "vantage6")
    assert all(torch.equal(state[name], gloo_state[name]) for name in gloo_state)
    assert comparable(records) == comparable(gloo_records)
    assert records[-1]["test_accuracy"] > 0.6
    assert [w["organization"] for w in records[0]["workers"]] == [0, 1]


def worker_frames(count: int = 2, rows: int = 120) -> list:
    train_set, _ = data.load("embedded")
    parts = data.partition(train_set.labels[:rows * count], count, "iid", seed=1)
    return [data.to_frame(train_set.subset(p)) for p in parts]


def round_message(options) -> tuple[str, dict[str, torch.Tensor]]:
    state = models.new_model(options).state_dict()
    return codec.encode_text({coordination.ROUND: torch.tensor(1), **state}), state


def test_partial_runs_through_wrap_algorithm_as_a_docker_node_runs_it(tmp_path, monkeypatch):
    options = parser.from_mapping({"num_nodes": 2, "batch_size": 32})
    message, state = round_message(options)
    frame = worker_frames(count=1)[0]
    frame.to_csv(tmp_path / "data.csv", index=False)
    (tmp_path / "input.json").write_text(json.dumps({"method": "partial", "kwargs": {
        "message": message, "ranks": {"7": 1}, "world_size": 2, "options": parser.task_options(options)}}))
    token = jwt.encode({"sub": {"organization_id": 7, "node_id": 3, "collaboration_id": 1}}, "k" * 32)
    (tmp_path / "token").write_text(token)
    for name, value in {"PKG_NAME": "ppsdg", "INPUT_FILE": tmp_path / "input.json",
                        "OUTPUT_FILE": tmp_path / "output.json", "TOKEN_FILE": tmp_path / "token",
                        "TEMPORARY_FOLDER": tmp_path, "HOST": "http://localhost", "PORT": "80",
                        "API_PATH": "/api", "USER_REQUESTED_DATABASE_LABELS": "default",
                        "DEFAULT_DATABASE_URI": tmp_path / "data.csv", "DEFAULT_DATABASE_TYPE": "csv"}.items():
        monkeypatch.setenv(name, str(value))
    wrap_algorithm()

    result = json.loads((tmp_path / "output.json").read_text())
    assert (result["organization_id"], result["rank"]) == (7, 1)
    template = coordination.Reply(state, 0, 0.0, {}).to_message()
    reply, _ = codec.decode_text(result["message"], expect=template)

    model = models.new_model(options)
    expected, count, loss, _ = local.local_update(model, local.Examples.from_images(data.from_frame(frame),
                                                                                 torch.device("cpu")),
                                               options, round_=1, rank=1)
    assert int(reply[coordination.NUM_SAMPLES]) == count == len(frame)
    assert float(reply[coordination.TRAIN_LOSS]) == loss
    assert all(torch.equal(reply[name], expected[name]) for name in expected)


def mock_client(frames: list, client_class=MockAlgorithmClient) -> MockAlgorithmClient:
    return client_class(datasets=[[{"database": f, "db_type": "csv"}] for f in frames], module="ppsdg")


def central(client: MockAlgorithmClient, **kwargs) -> dict:
    task = client.task.create(input_={"method": "central", "kwargs": {"num_rounds": 2, **kwargs}},
                              organizations=[0])
    return client.wait_for_results(task["id"])[0]


class ReversedResults(MockAlgorithmClient):
    """Results come back in the opposite order of the organizations, as a real server may send them."""

    class Result(MockAlgorithmClient.Result):
        def from_task(self, task_id: int) -> list:
            return list(reversed(super().from_task(task_id)))

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.result = self.Result(self)


class LosesLastResult(ReversedResults):
    """Organization 2's runs end without a result, as when its node fails."""

    class Result(MockAlgorithmClient.Result):
        def from_task(self, task_id: int) -> list:
            return [r for r in super().from_task(task_id) if r.get("organization_id") != 2]


def final_model(result: dict) -> dict[str, torch.Tensor]:
    tensors, _ = codec.decode_text(result["checkpoint"])
    return {name: t for name, t in tensors.items() if name.startswith(checkpoint.MODEL)}


def test_results_are_matched_by_organization_not_arrival():
    frames = worker_frames(count=3)
    ordered = central(mock_client(frames))
    shuffled = central(mock_client(frames, ReversedResults))
    expected, found = final_model(ordered), final_model(shuffled)
    assert all(torch.equal(expected[name], found[name]) for name in expected)
    assert ordered["metrics"][-1]["test_loss"] == shuffled["metrics"][-1]["test_loss"]


def test_missing_result_names_the_organization_and_keeps_nothing_unfinished():
    result = central(mock_client(worker_frames(count=3), LosesLastResult))
    assert re.search(r"round 1: 2 of 3 workers answered and 3 are needed .*organization 2 \(worker rank 3\): "
                     r"no result", result["error"])
    assert result["checkpoint"] is None and result["metrics"] == []


def test_round_goes_on_without_a_missing_worker_when_min_workers_allows():
    result = central(mock_client(worker_frames(count=3), LosesLastResult), min_workers=2)
    for record in result["metrics"]:
        assert [w["organization"] for w in record["workers"]] == [0, 1]
        assert record["failed"][0]["organization"] == 2
        assert "no result (run status: completed)" in record["failed"][0]["reason"]


def test_failing_organization_is_named():
    frames = worker_frames(count=2)
    frames[1].iloc[5, 0] = 11
    result = central(mock_client(frames))
    assert re.search(r"organization 1 \(worker rank 2\).*label at row 5.*is 11", result["error"])


def test_central_rejects_a_mismatched_node_count():
    with pytest.raises(Exception, match="num_nodes is 5 but 2 organizations"):
        central(mock_client(worker_frames(count=2)), num_nodes=5)


def test_algorithm_store_lists_every_central_option_with_the_parser_default():
    store = json.loads((Path(__file__).parent.parent / "algorithm_store.json").read_text())
    functions = {f["name"]: f for f in store["functions"]}
    assert set(functions) == {"central", "partial"}
    listed = {a["name"]: a for a in functions["central"]["arguments"]}
    defaults = parser.task_options(parser.build_parser().parse_args([]))
    defaults.pop("backend")
    assert set(listed) == set(defaults) | {"organizations", "checkpoint"}
    for name, default in defaults.items():
        if name != "num_nodes":
            assert listed[name]["default_value"] == default, name


class TampersWithOrganization1(ReversedResults):
    """Organization 1 answers with a damaged update: NaN in its first tensor, or a wrong shape."""

    damage = "nan"

    class Result(MockAlgorithmClient.Result):
        def from_task(self, task_id: int) -> list:
            results = super().from_task(task_id)
            for result in results:
                if result.get("organization_id") == 1:
                    tensors, meta = codec.decode_text(result["message"])
                    first = next(iter(tensors))
                    if type(self.parent).damage == "nan":
                        tensors[first].view(-1)[0] = float("nan")
                    else:
                        tensors[first] = torch.zeros(3)
                    result["message"] = codec.encode_text(tensors, meta)
            return results


class ShrinksOrganization1(TampersWithOrganization1):
    damage = "shape"


@pytest.mark.parametrize("client_class, reason", [(TampersWithOrganization1, "not finite"),
                                                   (ShrinksOrganization1, "does not match the model")])
def test_damaged_update_is_rejected_and_the_round_goes_on_without_it(client_class, reason):
    result = central(mock_client(worker_frames(count=2), client_class), min_workers=1)
    for record in result["metrics"]:
        assert [w["organization"] for w in record["workers"]] == [0]
        (failed,) = record["failed"]
        assert failed["organization"] == 1 and "update rejected" in failed["reason"] and reason in failed["reason"]
    assert "error" not in result


def test_forgetful_mock_client_drops_what_the_central_read_and_keeps_the_status():
    options = parser.from_mapping({"num_nodes": 3, "batch_size": 32})
    message, _ = round_message(options)
    client = ForgetfulMockClient(datasets=[[{"database": frame}] for frame in worker_frames(count=2)],
                                 module="ppsdg")
    task = client.task.create(input_={"method": "partial", "kwargs": {
        "message": message, "ranks": {"0": 1, "1": 2}, "world_size": 3, "options": parser.task_options(options)}},
        organizations=[0, 1])
    assert sorted(r["organization_id"] for r in client.result.from_task(task["id"])) == [0, 1]
    assert client.results == [] and client.result.from_task(task["id"]) == []
    assert [(run["status"], run["input"]) for run in client.run.from_task(task["id"])] == [("completed", None)] * 2
    node_copy = copy.deepcopy(client)
    assert (node_copy.runs, node_copy.results, client.runs != []) == ([], [], True)
    assert node_copy.result.parent is node_copy and node_copy.tasks == client.tasks


def test_ppsdg_data_is_the_submodule_in_a_fresh_interpreter():
    """The package's vantage6 decorators must not hide the submodule of the same name."""
    found = subprocess.run([sys.executable, "-c", "from ppsdg import data; print(len(data.load('embedded')[1]))"],
                           capture_output=True, text=True, cwd=Path(__file__).parent.parent, check=False)
    assert (found.returncode, found.stdout.strip()) == (0, "359"), found.stderr
