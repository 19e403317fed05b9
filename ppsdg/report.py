"""What the end of a run or an evaluation says to a person: one line per figure, what it measures and
which way is better, its reference where there is one, and the reason where a figure is missing.
summary.json and `ppsdg evaluate`'s JSON hold the same figures for programs."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ppsdg import data

Line = tuple[str, str, str]
CHANCE = 1 / data.NUM_CLASSES


def block(title: str, lines: Sequence[Line]) -> str:
    """A title and its lines, names and values in aligned columns."""
    names = max(len(name) for name, _, _ in lines)
    values = max(len(value) for _, value, _ in lines)
    return "\n".join([title, *(f"  {name:<{names}}  {value:<{values}}  {meaning}" for name, value, meaning in lines)])


def shown(value: float | None, spec: str = ".4f") -> str:
    return "none" if value is None else format(value, spec)


def figure(name: str, value: float | None, meaning: str, reason: str | None = None, spec: str = ".4f") -> Line:
    """A figure's line; a missing one says why instead of what it would have meant."""
    if value is None:
        return name, "none", reason or "not measured"
    return name, format(value, spec), meaning


def privacy(summary: Mapping[str, Any]) -> Line:
    """The run's guarantee: what any worker's releases together reveal at most."""
    if "epsilon" not in summary:
        return "privacy", "none", "no differential privacy (-ldp): nothing bounds what the releases reveal"
    return ("privacy", f"{summary['epsilon']:.2f}", f"epsilon (delta {summary['delta']:g}) over all of a worker's "
            "releases; lower is more private")


def pictures(meanings: Mapping[str, str]) -> list[Line]:
    """A line per picture: its file and what it shows."""
    return [(name, "", meaning) for name, meaning in meanings.items()]


def table(evaluation: Mapping[str, Any], extra: Sequence[Line] = ()) -> str:
    """The table evaluation's figures (`ppsdg/table_evaluation.py`), then `extra` (privacy, pictures)."""
    why, notes = evaluation["unavailable"], evaluation.get("notes", {})
    independent = evaluation.get("tvd_2way_independent")
    scale = "0 identical" + (f", independent columns {independent:.4f}" if independent is not None else "")
    lines = [figure("TSTR ROC AUC", evaluation["tstr_auc"], "trained on synthetic, tested on real rows; higher is "
                    f"better (real data's own {shown(evaluation['trtr_auc'])}, chance 0.5)"
                    + (f"; {notes['tstr_auc']}" if "tstr_auc" in notes else ""), why.get("tstr_auc")),
             figure("TSTR accuracy", evaluation["tstr_accuracy"], "the same model's right answers; higher is better "
                    f"(real data's own {shown(evaluation['trtr_accuracy'])})", why.get("tstr_accuracy")),
             figure("2-way TVD", evaluation["tvd_2way"], "mean gap to the real shares of column pairs; lower is "
                    f"better ({scale})", why.get("tvd_2way")),
             figure("3-way TVD", evaluation["tvd_3way"], "the same for column triples; lower is better",
                    why.get("tvd_3way")),
             figure("memorized", evaluation["memorized_share"], "rows nearer a training row than 95% of unseen real "
                    "rows are; lower is better (unseen rows: 5%)", why.get("memorized_share"), ".1%"),
             figure("exact copies", evaluation["exact_copy_share"], "rows equal to a training row; lower is better "
                    f"(unseen rows: {shown(evaluation['holdout_exact_copy_share'], '.1%')})",
                    why.get("exact_copy_share"), ".1%")]
    return block("synthetic table:", [*lines, *extra])


def images(evaluation: Mapping[str, Any], extra: Sequence[Line] = ()) -> str:
    """The image evaluation's figures (`ppsdg/evaluate.py`), then `extra` (privacy, pictures)."""
    lines = [figure("TSTR accuracy", evaluation["tstr_accuracy"], "trained on synthetic, tested on real images; "
                    f"higher is better (real data's own {evaluation['trtr_accuracy']:.4f}, chance {CHANCE:g})"),
             figure("Fréchet distance", evaluation["frechet_distance"], "gap to the real test images in a "
                    "classifier's features; lower is better (0 identical)", spec=".2f"),
             figure("precision", evaluation["precision"], "synthetic images that look like real ones; higher is "
                    "better", spec=".3f"),
             figure("recall", evaluation["recall"], "real images the synthetic ones cover (variety); higher is "
                    "better", spec=".3f"),
             figure("memorized", evaluation["memorized_share"], "images nearer a training image than 95% of unseen "
                    "real images are; lower is better (unseen images: 5%)", spec=".1%")]
    return block("synthetic images:", [*lines, *extra])


def classifier(summary: Mapping[str, Any], extra: Sequence[Line] = ()) -> str:
    """A classifier run's end: its test accuracy and loss after the last round."""
    lines = [figure("test accuracy", summary["test_accuracy"], "the real test set's share classified right after "
                    f"the last round; higher is better (best round {shown(summary['best_test_accuracy'])}, chance "
                    f"{CHANCE:g})", "no round was tested"),
             figure("test loss", summary["test_loss"], "negative log-likelihood on the test set; lower is better",
                    "no round was tested")]
    return block("classifier:", [*lines, *extra])
