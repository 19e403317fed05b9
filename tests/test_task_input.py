"""A task's input, from whoever created the task: every bad value ends in a named error, in bounded work."""
import pytest
import torch

from backends import codec
from ppsdg import algorithm, coordination, parser
from ppsdg.errors import FederationError, OptionsError
from test_vantage6 import central, mock_client, round_message, worker_frames

ROWS = 60


def partial_task(round_: int = 1, **options) -> dict:
    chosen = parser.from_mapping({"num_nodes": 2, "batch_size": 32})
    message, state = round_message(chosen)
    message = codec.encode_text({coordination.ROUND: torch.tensor(round_, dtype=torch.int64), **state})
    return {"message": message, "ranks": {"7": 1}, "world_size": 2,
            "options": {**chosen.task_options(), **options}}


@pytest.mark.parametrize("round_", [-1000, -10 ** 6, -2 ** 63, 0, 2])
def test_a_message_for_a_round_outside_the_run_is_refused_by_name(round_):
    """RuntimeError and OverflowError before (a seed and a learning rate from the round)."""
    with pytest.raises(FederationError, match=f"organization 7 .*: the server's message is for round {round_}, not "
                                              "one of this run's 1..1"):
        algorithm.run_partial(7, worker_frames(count=1, rows=ROWS)[0], partial_task(round_, num_rounds=1))


@pytest.mark.parametrize("organizations", [[1, 2], 5, "x"])
def test_organizations_in_a_nodes_options_are_refused_by_name(organizations):
    """AttributeError and argparse's ArgumentTypeError before."""
    with pytest.raises(FederationError, match="organization 7 .*: option organizations"):
        algorithm.run_partial(7, worker_frames(count=1, rows=ROWS)[0], partial_task(organizations=organizations))


@pytest.mark.parametrize("organizations, message", [
    (5, "must be a list of distinct organization ids, got 5"), ("x", "got 'x'"), (["a"], "got \\['a'\\]"),
    ([0, 0], "got \\[0, 0\\]"), ([], "got \\[\\]")])
def test_the_centrals_organizations_are_checked(organizations, message):
    with pytest.raises(OptionsError, match=message):
        central(mock_client(worker_frames(count=2, rows=ROWS)), organizations=organizations)


@pytest.mark.parametrize("values, reach", [
    ({"target_epsilon": 0.01, "accountant": "rdp"}, "rdp accountant's reach"),
    ({"target_epsilon": 10.0, "num_rounds": 10 ** 6, "gan": True, "synthesizer": "moments"}, "prv accountant's reach")])
def test_a_target_the_planner_cannot_reach_is_refused_by_name(values, reach):
    """Opacus's ValueError (or 12 s) and a MemoryError before: now the node refuses the round first."""
    result = central(mock_client(worker_frames(count=2, rows=ROWS)), batch_size=32, local_dp=True, **values)
    assert result["error"].startswith(f"round 1: organization 0 (worker rank 1): --target-epsilon {values['target_epsilon']:g}")
    assert f"is out of the {reach}" in result["error"] and result["metrics"] == []


@pytest.mark.parametrize("column, value, message", [
    ("label", 7319, "label at row 5, column 'label' is out of range: labels must be integers 0..9"),
    ("pixel3", "patient-7319", "value at row 5, column 'pixel3' is not a number"),
    ("pixel3", 7319.5, "pixel at row 5, column 'pixel3' is out of range: pixels must be integers 0..255")])
def test_a_nodes_data_error_reaches_the_researcher_without_row_column_or_value(column, value, message, capsys):
    """The error travels in the run's log to the server and the researcher: where and what the cell is
    stays with the node's owner (here, the mock's process: its stderr)."""
    frames = worker_frames(count=2, rows=ROWS)
    frames[1] = frames[1].astype(object) if isinstance(value, str) else frames[1].astype(float)
    frames[1].loc[5, column] = value
    result = central(mock_client(frames), batch_size=32)
    assert "organization 1 (worker rank 2): this node's data do not fit the task" in result["error"]
    assert "7319" not in result["error"] and "row 5" not in result["error"] and f"'{column}'" not in result["error"]
    assert message in capsys.readouterr().err
