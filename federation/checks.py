"""What the real federation's run must show against the mock and gloo runs of the same options."""
import torch

from federation.runs import Run
from federation.shell import HarnessError, say
from ppsdg import coordination

CHANCE = 0.1
MIN_ACCURACY = 0.5


def comparable(records: list[dict]) -> list[dict]:
    """A round's learning figures, without wall time or the organization ids only a federation knows."""
    return [coordination.comparable(r) for r in records]


def layout(run: Run) -> dict:
    """The shape of what a run wrote: its files, the model's tensors, the metrics' fields."""
    return {"files": sorted(p.name for p in run.folder.iterdir()),
            "tensors": {name: (tuple(t.shape), t.dtype) for name, t in run.state().items()},
            "fields": [sorted(record) for record in run.records()]}


def require(condition: bool, message: str) -> None:
    if not condition:
        raise HarnessError(message)


def check_training(real: Run, mock: Run, gloo: Run) -> None:
    """Same files and shapes as the other backends, far above chance, and the mock's model bit for bit."""
    for other in (mock, gloo):
        require(layout(real) == layout(other), f"the real run's output differs in shape from the {other.name} "
                                               f"run's:\n{layout(real)}\n{layout(other)}")
    accuracy = real.records()[-1]["test_accuracy"]
    require(accuracy > MIN_ACCURACY, f"final test accuracy {accuracy:.3f} is not far above chance ({CHANCE})")
    real_state, mock_state = real.state(), mock.state()
    differing = [name for name in mock_state if not torch.equal(real_state[name], mock_state[name])]
    require(not differing, f"the real federation's model differs from the mock's in {differing}")
    require(comparable(real.records()) == comparable(mock.records()),
            "the real federation's metrics differ from the mock's")
    say(f"real run: final accuracy {accuracy:.3f}; model and metrics identical to the mock run's")


def check_synthetic(real: Run, mock: Run, target_epsilon: float) -> None:
    """The real federation's synthetic data, evaluation and privacy figure are the mock run's, and
    the run spent its budget."""
    real_summary, mock_summary = real.summary(), mock.summary()
    require((real.folder / "synthetic.csv").read_bytes() == (mock.folder / "synthetic.csv").read_bytes(),
            "the real federation's synthetic data differ from the mock's")
    require(real_summary["evaluation"] == mock_summary["evaluation"],
            "the real federation's evaluation differs from the mock's")
    require(real_summary["epsilon"] == mock_summary["epsilon"] and
            abs(real_summary["epsilon"] - target_epsilon) <= 0.01 * target_epsilon,
            f"epsilon {real_summary['epsilon']} (mock {mock_summary['epsilon']}) is not the target {target_epsilon}")
    say(f"{real.name}: TSTR accuracy {real_summary['tstr_accuracy']:.3f} at epsilon {real_summary['epsilon']:.2f}, "
        "synthetic data identical to the mock run's")
