"""The launcher and the options: defaults shared with vantage6, and clear errors instead of traces."""
import dataclasses
from pathlib import Path

import pytest

import main
from ppsdg import parser
from ppsdg.config import CLIENT_ONLY, Classifier, Moments, Table, Wgan
from ppsdg.errors import OptionsError

# Options of image synthesis and SGD training, which a table's marginals synthesizer takes none of.
IMAGE_AND_GAN_OPTIONS = {"batch_size", "test_batch_size", "epochs", "learning_rate", "gan_learning_rate", "gamma",
                         "max_grad_norm", "log_interval", "momentum", "stochastic_gradient", "critic_steps",
                         "gradient_penalty", "moments_basis", "moments_dims", "moments_scale", "moments_draw",
                         "sample_every", "tstr_epochs"}
# Settings a researcher's side keeps (CLIENT_ONLY), set away from their defaults to show they stay there.
CLIENT_SIDE = {"output": "runs/elsewhere", "resume": True, "worker_timeout": 30.0, "server_url": "http://v6",
               "server_port": 8443, "api_path": "/v6", "username": "alice", "password": "secret",
               "collaboration": 1, "organizations": "2,3", "image": "ppsdg", "database": "table",
               "task_timeout": 60.0}


@pytest.fixture
def table_csv(tmp_path) -> Path:
    path = tmp_path / "people.csv"
    path.write_text("age,smoker,outcome\n" + "".join(f"{20 + i % 50},{'yes' if i % 3 else 'no'},"
                                                      f"{'ill' if i % 4 else 'well'}\n" for i in range(60)))
    return path


def test_mapping_takes_parser_defaults_and_converts():
    config = parser.from_mapping({"num_rounds": 4, "learning_rate": 1})
    assert config.run.num_rounds == 4 and config.job.learning_rate == 1.0
    assert config.job.batch_size == parser.build_parser().get_default("batch_size")


def test_a_table_runs_summary_holds_no_image_or_gan_option(table_csv):
    summary = parser.parse(["--data", str(table_csv), "--target", "outcome"]).summary()
    assert set(summary) == {"run", "source", "privacy", "table"}
    assert summary["table"] == {"schema": None, "target": "outcome", "synthetic_samples": None}
    assert not IMAGE_AND_GAN_OPTIONS & {name for part in summary.values() for name in part}
    on_vantage6 = parser.parse(["--data", str(table_csv), "--target", "outcome", "--backend", "vantage6",
                                "--password", "secret"]).summary()
    assert set(on_vantage6) == {"run", "source", "privacy", "table", "server"}
    assert on_vantage6["server"]["database"] == "default" and "password" not in on_vantage6["server"]


@pytest.mark.parametrize("values, kind", [
    ({"seed": 7, "num_rounds": 4, "batch_size": 32, "momentum": 0.3, "local_dp": True, "noise_multiplier": 1.5,
      "partition": "dirichlet", "threads": 2}, Classifier),
    ({"gan": True, "moments_dims": 30, "moments_scale": 5.0, "moments_draw": "linear", "sample_every": 2,
      "local_dp": True, "target_epsilon": 4.0, "accountant": "rdp"}, Moments),
    ({"gan": True, "synthesizer": "wgan", "gan_learning_rate": 1e-3, "critic_steps": 3, "gradient_penalty": 5,
      "tstr_epochs": 2, "synthetic_samples": 100, "num_nodes": 4, "group_size": 2, "min_workers": 1}, Wgan),
    ({"target": "outcome", "synthetic_samples": 200, "num_rounds": 4, "delta": 1e-6, "local_dp": True}, Table),
])
def test_task_options_rebuild_the_configuration_but_what_stays_with_the_researcher(values, kind, table_csv):
    values = {**values, "data": str(table_csv)} if kind is Table else values
    config = parser.from_mapping({**values, **CLIENT_SIDE})
    assert isinstance(config.job, kind)
    task = config.task_options()
    assert not set(CLIENT_ONLY) & set(task)
    rebuilt, defaults = parser.from_mapping(task), parser.from_mapping({})
    kept = ("output", "resume", "worker_timeout")
    researchers = {name: getattr(config.run, name) for name in kept}
    assert dataclasses.replace(rebuilt, run=dataclasses.replace(rebuilt.run, **researchers),
                               server=config.server) == config
    assert {name: getattr(rebuilt.run, name) for name in kept} == {name: getattr(defaults.run, name) for name in kept}
    assert rebuilt.server == defaults.server


@pytest.mark.parametrize("values, message", [
    ({"num_round": 3}, "unknown option"),
    ({"num_rounds": "3"}, "must be an integer"),
    ({"num_rounds": 0}, "--num-rounds must be at least 1"),
    ({"stochastic_gradient": 1}, "true or false"),
    ({"partition": "zipf"}, "must be one of"),
    ({"group_size": 5}, "--group-size 5 does not fit 2 worker"),
    ({"train_all": True}, "--train-all needs --group-size"),
])
def test_mapping_rejects_bad_values_naming_them(values, message):
    with pytest.raises(OptionsError, match=message):
        parser.from_mapping(values)


def test_original_short_options_are_kept():
    config = parser.parse(["-nn", "4", "-bs", "32", "-tbs", "100", "-lr", "0.1", "-g", "0.5", "-li", "5",
                           "-e", "2", "-nr", "3", "-s", "9", "-gs", "2", "-ta", "-sm", "-sgd", "-gp", "5"])
    assert (config.run.num_nodes, config.job.batch_size, config.job.epochs, config.run.group_size) == (4, 32, 2, 2)
    assert config.run.train_all and config.run.save_model and config.job.stochastic_gradient


@pytest.mark.parametrize("argv, message", [
    (["--gan", "-sgd"], "--gan and --local_dp train with FedAvg"),
    (["-ldp", "--delta", "1.5"], "--delta must be in (0, 1)"),
    (["--data", "/nonexistent/place"], "/nonexistent/place"),
    (["-nn", "3", "-gs", "3"], "does not fit 2 worker"),
    (["--backend", "mpi"], "invalid choice"),
    (["--seed", "-1"], "--seed must be 0 or more"),
    (["--seed", str(2 ** 64)], "--seed must be at most"),
    (["--worker-timeout", "inf"], "--worker-timeout must be a finite number"),
    (["-lr", "nan"], "--learning-rate must be a finite number"),
    (["-e", str(10 ** 9)], "--epochs must be at most 10000"),
    (["--threads", "300000"], "--threads must be at most"),
    (["-ldp", "--target-epsilon", "1000"], "cannot reach 1000"),
    (["-ldp", "--noise-multiplier", "1e-300"], "--noise-multiplier must be at least 0.3"),
    (["-ldp", "--noise-multiplier", "1", "--target-epsilon", "3"], "give --noise-multiplier or --target-epsilon, not both"),
])
def test_main_reports_bad_input_in_one_line(argv, message, capsys, tmp_path):
    assert main.main([*argv, "--output", str(tmp_path)]) == 2
    error = capsys.readouterr().err
    assert error.startswith("ppsdg: error:") and message in error
    assert "Traceback" not in error


@pytest.mark.parametrize("argv, ahead", [
    ([], True),
    (["-nn", "5", "--backend", "gloo"], True),
    (["--backend", "vantage6"], False),
    (["--backend=vantage6", "-nr", "2"], False),
    (["--output", "runs/vantage6"], True),
    (["--backend", "vantage6", "--backend", "gloo"], True),
    (["--help"], False),
])
def test_forkserver_starts_ahead_only_for_a_gloo_launch(argv, ahead, monkeypatch):
    monkeypatch.delenv("RANK", raising=False)
    assert main.gloo_launch_ahead(argv) is ahead
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "3")
    assert main.gloo_launch_ahead(argv) is False


def test_output_that_holds_other_files_is_refused_and_they_stay(tmp_path, capsys):
    (tmp_path / "summary.json").write_text("mine")
    assert main.main(["-nr", "1", "--output", str(tmp_path)]) == 2
    assert "holds files that no ppsdg run made" in capsys.readouterr().err
    assert (tmp_path / "summary.json").read_text() == "mine"


def test_output_that_holds_the_runs_own_data_is_refused(tmp_path, small_csv, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / ".ppsdg-run").touch()
    data = run / "synthetic.csv"
    data.write_bytes(small_csv.read_bytes())
    assert main.main(["-nr", "1", "--data", str(data), "--output", str(run)]) == 2
    assert "lies inside --output" in capsys.readouterr().err and data.read_bytes() == small_csv.read_bytes()


@pytest.mark.parametrize("make, message", [
    (lambda root: (root / "file").write_text("x") and root / "file", "is a file"),
    (lambda root: (root / "file").write_text("x") and root / "file" / "below", "which is a file"),
    (lambda root: (root / "link").symlink_to(root / "nothing") or root / "link", "is a link to nothing"),
    (lambda root: Path("/proc/ppsdg-out/run"), "cannot be created: No such file or directory"),
    (lambda root: root / "new" / ("x" * 300), "cannot be created: File name too long"),
])
def test_unusable_output_is_refused_before_training(tmp_path, capsys, make, message):
    output = make(tmp_path)
    before = sorted(tmp_path.rglob("*"))
    assert main.main(["-nr", "1", "--output", str(output)]) == 2
    error = capsys.readouterr().err
    assert error.startswith("ppsdg: error:") and message in error and "Traceback" not in error
    assert sorted(tmp_path.rglob("*")) == before


class TaskServer:
    """A researcher's view of one training's tasks: the central (1), and its rounds, some unfinished."""

    def __init__(self, central: str, rounds: list[str], refuse: bool = False) -> None:
        self.statuses = {1: central, **{10 + i: status for i, status in enumerate(rounds)}}
        self.killed: list[int] = []
        self.refuse = refuse
        self.task = self

    def get(self, task_id: int) -> dict:
        return {"id": task_id, "status": self.statuses[task_id]}

    def list(self, parent: int, page: int, per_page: int) -> dict:
        children = [{"id": i, "status": s} for i, s in self.statuses.items() if i != parent]
        return {"data": children[(page - 1) * per_page:page * per_page]}

    def request(self, endpoint: str, method: str, json: dict) -> dict:
        assert (endpoint, method) == ("kill/task", "post")
        if self.refuse:
            return {"msg": "You lack the permission to do that!"}
        self.killed.append(json["id"])
        self.statuses[json["id"]] = "killed"
        return {"msg": "Nodes have been instructed to kill"}


@pytest.mark.parametrize("per_page", [1, 2, 1000])
def test_the_researcher_kills_what_the_training_left_running(per_page, monkeypatch):
    monkeypatch.setattr(main, "TASKS_PER_PAGE", per_page)
    server = TaskServer("completed", ["completed", "pending", "completed", "active"])
    assert main.stop_unfinished(server, 1) == server.killed == [11, 13]
    server = TaskServer("active", ["crashed", "completed"])
    assert main.stop_unfinished(server, 1) == [1]
    server = TaskServer("active", ["active"])
    assert main.stop_unfinished(server, 1) == [10, 1]


def test_a_kill_the_server_refuses_is_a_warning_that_says_what_is_needed(capsys):
    assert main.stop_unfinished(TaskServer("completed", ["pending"], refuse=True), 1) == [10]
    warning = capsys.readouterr().err
    assert "could not kill task 10 of this training (You lack the permission to do that!)" in warning
    assert "event, collaboration scope, send" in warning


class ResearcherClient(TaskServer):
    """vantage6's UserClient as run_on_server uses it, against a server whose central task completed."""

    created: list[dict] = []

    def __init__(self, *address: object, log_level: str) -> None:
        super().__init__("completed", [])
        self.result = self

    def authenticate(self, username: str, password: str) -> None:
        assert (username, password) == ("alice", "secret")

    def setup_encryption(self, key: None) -> None:
        assert key is None

    def create(self, **task: object) -> dict:
        ResearcherClient.created.append(task)
        return {"id": 1}

    def from_task(self, task_id: int) -> dict:
        return {"data": [{"result": '{"metrics": []}'}]}


def test_the_task_reads_the_node_database_that_database_names(monkeypatch):
    import vantage6.client

    monkeypatch.setattr(vantage6.client, "UserClient", ResearcherClient)
    server = ["--backend", "vantage6", "--server-url", "http://v6", "--username", "alice", "--password", "secret",
              "--collaboration", "1", "--organizations", "2,3", "--image", "ppsdg"]
    for extra, label in (([], "default"), (["--database", "table"], "table")):
        config = parser.parse([*server, *extra])
        assert main.run_on_server(config.server, config.task_options()) == {"metrics": []}
        assert ResearcherClient.created[-1]["databases"] == [{"label": label}]
        assert "database" not in ResearcherClient.created[-1]["input_"]["kwargs"]
