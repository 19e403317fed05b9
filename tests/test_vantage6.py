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
from vantage6.common import base64s_to_bytes, bytes_to_base64s

from backends import codec
from backends.mock import ForgetfulMockClient
from backends.vantage6 import CentralCommunicator, no_result
from conftest import run_main
from ppsdg import checkpoint, coordination, data, local, models, parser, store
from ppsdg.config import CLIENT_ONLY, Config
from ppsdg.errors import FederationError
from ppsdg.job import Job

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


def round_message(config: Config) -> tuple[str, dict[str, torch.Tensor]]:
    state = models.new_model(Job.of_config(config).synthesizer, config.run.seed).state_dict()
    return codec.encode_text({coordination.ROUND: torch.tensor(1), **state}), state


def test_partial_runs_through_wrap_algorithm_as_a_docker_node_runs_it(tmp_path, monkeypatch):
    config = parser.from_mapping({"num_nodes": 2, "batch_size": 32})
    message, state = round_message(config)
    frame = worker_frames(count=1)[0]
    frame.to_csv(tmp_path / "data.csv", index=False)
    (tmp_path / "input.json").write_text(json.dumps({"method": "partial", "kwargs": {
        "message": message, "ranks": {"7": 1}, "world_size": 2, "options": config.task_options()}}))
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
    assert (set(result), result["rank"]) == ({"rank", "message"}, 1)
    template = coordination.Reply(state, 0, 0.0, {}).to_message()
    reply, _ = codec.decode_text(result["message"], expect=template)

    job = Job.of_config(config)
    model = models.new_model(job.synthesizer, config.run.seed)
    expected, count, loss, _ = local.local_update(model, local.Examples.from_images(data.from_frame(frame),
                                                                                 torch.device("cpu")),
                                               job, config.run.seed, round_=1, rank=1)
    assert int(reply[coordination.NUM_SAMPLES]) == count == len(frame)
    assert float(reply[coordination.TRAIN_LOSS]) == loss
    assert all(torch.equal(reply[name], expected[name]) for name in expected)


def mock_client(frames: list, client_class=ForgetfulMockClient) -> MockAlgorithmClient:
    return client_class(datasets=[[{"database": f, "db_type": "csv"}] for f in frames], module="ppsdg")


def central(client: MockAlgorithmClient, **kwargs) -> dict:
    task = client.task.create(input_={"method": "central", "kwargs": {"num_rounds": 2, **kwargs}},
                              organizations=[0])
    return client.wait_for_results(task["id"])[0]


def organization_of_run(client: MockAlgorithmClient, run_id: int) -> int:
    return next(run["organization"]["id"] for run in client.runs if run["id"] == run_id)


def result_of(entry: dict) -> dict:
    return json.loads(base64s_to_bytes(entry["result"]))


class ReversedResults(ForgetfulMockClient):
    """Results come back in the opposite order of the organizations, as a real server may send them."""

    def _multi_page_request(self, endpoint: str, params: dict | None = None) -> list:
        return list(reversed(self.tamper(super()._multi_page_request(endpoint, params))))

    def tamper(self, entries: list[dict]) -> list[dict]:
        return entries


class LosesLastResult(ReversedResults):
    """Organization 2's runs end without a result, as when its node fails."""

    def tamper(self, entries: list[dict]) -> list[dict]:
        return [e for e in entries if organization_of_run(self, e["id"]) != 2]


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


def test_vantage6s_own_mock_client_pairs_results_by_order_and_says_so():
    frames = worker_frames(count=3)
    by_run = central(mock_client(frames))
    by_order = central(mock_client(frames, MockAlgorithmClient))
    assert (by_run["attribution"], by_order["attribution"]) == ("run", "mock-order")
    expected, found = final_model(by_run), final_model(by_order)
    assert all(torch.equal(expected[name], found[name]) for name in expected)
    assert comparable(by_order["metrics"]) == comparable(by_run["metrics"])  # each worker's own loss, by rank
    assert [[w["organization"] for w in r["workers"]] for r in by_order["metrics"]] == [[0, 1, 2]] * 2


def test_a_client_that_cannot_name_a_results_run_is_refused():
    with pytest.raises(FederationError, match="cannot list a task's results with their run ids"):
        CentralCommunicator(object(), [1, 2], {})


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


class Organization1ImpersonatesOrganization0(ReversedResults):
    """Organization 1's node answers with a poisoned update and claims, in its result, to be
    organization 0 at organization 0's rank; the server knows which organization ran the run."""

    def tamper(self, entries: list[dict]) -> list[dict]:
        for entry in entries:
            if organization_of_run(self, entry["id"]) == 1:
                result = result_of(entry)
                tensors, meta = codec.decode_text(result["message"])
                poisoned = {name: t.fill_(1e3) if t.is_floating_point() and name.startswith("conv") else t
                            for name, t in tensors.items()}
                claim = {"organization_id": 0, "rank": 1, "message": codec.encode_text(poisoned, meta)}
                entry["result"] = bytes_to_base64s(json.dumps(claim).encode())
        return entries


def test_a_node_cannot_answer_in_another_organizations_place():
    frames = worker_frames(count=2)
    honest = central(mock_client(frames), num_rounds=1)
    attacked = central(mock_client(frames, Organization1ImpersonatesOrganization0), num_rounds=1)
    (record,) = attacked["metrics"]
    assert [(w["organization"], w["rank"]) for w in record["workers"]] == [(0, 1), (1, 2)]
    assert record["workers"][0] == honest["metrics"][0]["workers"][0]
    assert final_model(attacked)["model.conv1.weight"].abs().max() > 1e2


def test_a_crashed_runs_reason_comes_from_its_log():
    log = "Traceback (most recent call last):\n  ...\nppsdg.policy.PolicyError: organization 3 (worker rank 1): " \
          "PPSDG_REQUIRE_DP=1: this node trains only with local DP\n"
    assert no_result({"status": "crashed", "log": log}) == (
        "no result (run status: crashed): PolicyError: organization 3 (worker rank 1): "
        "PPSDG_REQUIRE_DP=1: this node trains only with local DP")
    assert no_result({"status": "active", "log": None}).startswith(
        "no result (run status: active): still running when the round closed")
    assert no_result({"status": "failed", "log": "no error here"}) == "no result (run status: failed)"
    assert no_result(None) == "no result (no run)"


def test_failing_organization_is_named_and_the_detail_stays_with_its_owner(capsys):
    frames = worker_frames(count=2)
    frames[1].iloc[5, 0] = 11
    result = central(mock_client(frames))
    assert re.search(r"organization 1 \(worker rank 2\): this node's data do not fit the task", result["error"])
    assert "label at row 5, column 'label' is out of range" in capsys.readouterr().err
    frames = worker_frames(count=2)
    frames[1]["pixel2"] = frames[1]["pixel2"].astype(object)
    frames[1].loc[9:40, "pixel2"] = "x"
    assert central(mock_client(frames))["error"] == result["error"]
    assert "row 9, column 'pixel2' is not a number" in capsys.readouterr().err


def test_central_rejects_a_mismatched_node_count():
    with pytest.raises(Exception, match="num_nodes is 5 but 2 organizations"):
        central(mock_client(worker_frames(count=2)), num_nodes=5)


def test_algorithm_store_lists_every_central_option_with_the_parser_default():
    described = json.loads((Path(__file__).parent.parent / "algorithm_store.json").read_text())
    functions = {f["name"]: f for f in described["functions"]}
    assert set(functions) == {"central", "partial", "synthesize_table", "synthesize_images", "train_classifier"}
    listed = {a["name"]: a for a in functions["central"]["arguments"]}
    defaults = {k: v for k, v in vars(parser.build_parser().parse_args([])).items() if k not in CLIENT_ONLY}
    defaults.pop("backend")
    assert set(listed) == set(defaults) | {"organizations", "checkpoint"}
    for name, default in defaults.items():
        if name != "num_nodes":
            assert listed[name]["default_value"] == store.default_text(default), name
    assert store.default_text(False) == "false" and store.default_text(1e-5) == "1e-05"


class TampersWithOrganization1(ReversedResults):
    """Organization 1 answers with a damaged update: NaN in its first tensor, or a wrong shape."""

    damage = "nan"

    def tamper(self, entries: list[dict]) -> list[dict]:
        for entry in entries:
            if organization_of_run(self, entry["id"]) == 1:
                result = result_of(entry)
                tensors, meta = codec.decode_text(result["message"])
                first = next(iter(tensors))
                if self.damage == "nan":
                    tensors[first].view(-1)[0] = float("nan")
                else:
                    tensors[first] = torch.zeros(3)
                entry["result"] = bytes_to_base64s(json.dumps({**result, "message": codec.encode_text(tensors, meta)})
                                                   .encode())
        return entries


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
    config = parser.from_mapping({"num_nodes": 3, "batch_size": 32})
    message, _ = round_message(config)
    client = ForgetfulMockClient(datasets=[[{"database": frame}] for frame in worker_frames(count=2)],
                                 module="ppsdg")
    task = client.task.create(input_={"method": "partial", "kwargs": {
        "message": message, "ranks": {"0": 1, "1": 2}, "world_size": 3, "options": config.task_options()}},
        organizations=[0, 1])
    assert sorted(r["rank"] for r in client.result.from_task(task["id"])) == [1, 2]
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


def test_a_rejected_dp_update_is_charged_by_the_server():
    result = central(mock_client(worker_frames(count=2), TampersWithOrganization1), min_workers=1, local_dp=True,
                     noise_multiplier=1.5, batch_size=32)
    for record in result["metrics"]:
        (worker,) = record["workers"]
        (failed,) = record["failed"]
        assert "not finite" in failed["reason"]
        assert f"charged: epsilon {worker['epsilon']:.4g}" in failed["reason"]
        assert record["epsilon"] == worker["epsilon"]
    tensors, meta = codec.decode_text(result["checkpoint"])
    histories = meta["histories"]
    assert histories["1"] == histories["2"] and len(histories["2"]) == 2


class LateRun:
    """A fake algorithm client: organization 5's run of task 1 is still active at first, then done."""

    def __init__(self, reply: dict) -> None:
        self.status = "active"
        self.reply = reply
        self.run = self
        self.task = self

    def from_task(self, task_id: int) -> list[dict]:
        return [{"id": 11, "organization": {"id": 4}, "status": "completed", "log": None},
                {"id": 12, "organization": {"id": 5}, "status": self.status, "log": None}]

    def _multi_page_request(self, endpoint: str, params: dict) -> list[dict]:
        entries = [{"id": 11, "result": bytes_to_base64s(json.dumps(self.reply).encode())}]
        if self.status == "completed":
            entries.append({"id": 12, "result": bytes_to_base64s(json.dumps(self.reply).encode())})
        return entries


def test_a_run_that_outlives_its_round_is_collected_when_it_finishes():
    template = {"w": torch.zeros(2)}
    client = LateRun({"rank": 1, "message": codec.encode_text({"w": torch.ones(2)})})
    client.create = lambda **task: {"id": 1}
    comm = CentralCommunicator(client, [4, 5], {}, round_timeout_s=0.0, poll_s=0.0)
    replies = comm.exchange(template, [1, 2], template)
    assert list(replies) == [1]
    assert "still running when the round closed" in comm.failures[2]
    assert comm.late_replies() == {}
    client.status = "completed"
    late = comm.late_replies()
    assert list(late) == [2] and torch.equal(late[2][0]["w"], torch.ones(2))
    assert comm.late_replies() == {}


class SlowRound(LateRun):
    """A fake server whose round task stays active for three polls of its status, then completes;
    it counts how often the runs (each listed with the round's whole message) were listed."""

    def __init__(self, reply: dict) -> None:
        super().__init__(reply)
        self.polls = 0
        self.listings = 0

    def request(self, endpoint: str) -> dict:
        assert endpoint == "task/1/status"
        self.polls += 1
        if self.polls > 3:
            self.status = "completed"
        return {"status": self.status if self.polls > 3 else "active"}

    def from_task(self, task_id: int) -> list[dict]:
        self.listings += 1
        return super().from_task(task_id)


def test_the_central_lists_a_rounds_runs_once_it_has_ended_not_at_every_poll():
    template = {"w": torch.zeros(2)}
    client = SlowRound({"rank": 1, "message": codec.encode_text({"w": torch.ones(2)})})
    client.create = lambda **task: {"id": 1}
    comm = CentralCommunicator(client, [4, 5], {}, round_timeout_s=60.0, poll_s=0.0)
    replies = comm.exchange(template, [1, 2], template)
    assert sorted(replies) == [1, 2] and torch.equal(replies[2]["w"], torch.ones(2))
    assert client.polls == 4 and client.listings == 1
