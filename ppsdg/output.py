"""What a run leaves in its output directory, the same for every backend.

metrics.jsonl (one line per round, written as rounds finish), summary.json, a plot of test accuracy
and loss per round, and with --save-model the final state_dict as model.pt.
"""
import itertools
import json
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ppsdg import checkpoint, data, evaluate, report, synthetic, table_evaluation, table_plots, tables
from ppsdg.checkpoint import Checkpoint
from ppsdg.config import ImageSynthesis, JobPart, Run, Source, Table, Wgan
from ppsdg.job import Job
from ppsdg.synthesizers.base import Synthesizer
from ppsdg.errors import OptionsError
from ppsdg.files import write_atomically

METRICS = "metrics.jsonl"
SUMMARY = "summary.json"
PLOT = "accuracy_loss.png"
MODEL = "model.pt"
GENERATOR = "generator.pt"
SYNTHETIC = "synthetic.csv"
METADATA = "metadata.json"
SAMPLES = synthetic.SAMPLES
ROUND_SAMPLES = "samples_round*.png"
PRIVACY_KEYS = ("epsilon", "delta", "accountant")
MARKER = ".ppsdg-run"
STALE = (checkpoint.FILE, SUMMARY, PLOT, MODEL, GENERATOR, SYNTHETIC, METADATA, SAMPLES, table_plots.COLUMNS_PLOT,
         table_plots.DEPENDENCE_PLOT)
TABLE_HEADLINE = ("tstr_auc", "tstr_accuracy", "tvd_2way", "memorized_share")


class RunOutput:
    """The output directory of one run.

    Nothing is written before the first round finishes, so a run refused for bad input leaves no
    files behind. A fresh run then clears what an earlier ppsdg run left there (the directory holds
    MARKER; `check_directory` refused any other non-empty one before training); a resumed one
    rewrites metrics.jsonl from the checkpoint's records and goes on appending.
    """

    def __init__(self, run: Run, settings: Mapping[str, Any],
                 earlier_records: Sequence[Mapping[str, Any]] = ()) -> None:
        """`settings`: the run's configuration as summary.json lists it (`Config.summary`)."""
        self.directory = Path(run.output)
        self.resume, self.keep_model = run.resume, run.save_model
        self.settings = settings
        self.started = time.perf_counter()
        self._earlier = list(earlier_records)
        self._opened = False

    def add_round(self, record: Mapping[str, Any], checkpoint_blob: bytes | None = None) -> None:
        """Append a round's line; the checkpoint goes first, so it is never behind the metrics."""
        self.open()
        if checkpoint_blob is not None:
            checkpoint.save(checkpoint_blob, self.directory)
        with open(self.directory / METRICS, "a", encoding="utf-8") as metrics:
            metrics.write(json.dumps(record) + "\n")

    def open(self) -> None:
        """Make the directory a run's (once): until then a refused run has written nothing."""
        if self._opened:
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        (self.directory / MARKER).touch()
        if not self.resume:
            for path in stale_files(self.directory):
                path.unlink(missing_ok=True)
        (self.directory / METRICS).write_text("".join(json.dumps(r) + "\n" for r in self._earlier))
        self._opened = True

    def write_synthetic(self, images: data.ImageSet, grids: Mapping[int | None, np.ndarray],
                        generator_state: Mapping[str, torch.Tensor]) -> None:
        """The synthetic dataset (node CSV layout), the sample grids (None: after training), the generator."""
        data.to_frame(images).to_csv(self.directory / SYNTHETIC, index=False)
        for round_, pixels in grids.items():
            name = SAMPLES if round_ is None else ROUND_SAMPLES.replace("*", f"{round_:04d}")
            synthetic.save_grid(pixels, self.directory / name,
                                "after training" if round_ is None else f"round {round_}")
        save_model(generator_state, self.directory / GENERATOR)

    def finish(self, state: Mapping[str, torch.Tensor], records: Sequence[Mapping[str, Any]],
               extra: Mapping[str, Any] | None = None, curves: bool = True) -> dict[str, Any]:
        """Write the summary, the plot of the rounds (`curves`) and (if asked) the model; return the summary."""
        self.open()
        summary = summarize(self.settings, records, time.perf_counter() - self.started, extra or {})
        write_atomically(self.directory / SUMMARY, (json.dumps(summary, indent=2, allow_nan=False) + "\n").encode())
        if curves:
            plot(records, self.directory / PLOT)
        if self.keep_model:
            save_model(state, self.directory / MODEL)
        return summary


def stale_files(directory: Path) -> list[Path]:
    """What an earlier run left in `directory` that a fresh run deletes before writing its own."""
    return [directory / name for name in STALE] + list(directory.glob(ROUND_SAMPLES))


def check_directory(output: str, source: str) -> None:
    """Refuse, before anything trains, an --output a run could not write or must not touch: a file,
    a path below a file, a dangling link, a folder without write permission, a folder holding files
    that no ppsdg run made (a run never deletes or overwrites what it did not create), or one that
    holds the run's own --data."""
    directory = Path(output)
    if directory.is_symlink() and not directory.exists():
        raise OptionsError(f"--output {directory} is a link to nothing")
    if directory.exists() and not directory.is_dir():
        raise OptionsError(f"--output {directory} is a file, not a directory")
    existing = next(parent for parent in (directory, *directory.parents) if parent.exists())
    if not existing.is_dir():
        raise OptionsError(f"--output {directory} lies below {existing}, which is a file")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise OptionsError(f"--output {directory}: {existing} is not writable")
    _check_creatable(directory, existing)
    if directory.exists() and any(directory.iterdir()) and not (directory / MARKER).exists():
        raise OptionsError(f"--output {directory} holds files that no ppsdg run made: choose an empty or new "
                           "directory (a run never deletes or overwrites files it did not create)")
    if directory.is_dir():
        _check_run_files(directory)
    data_path = Path(source)
    if source != "embedded" and data_path.exists() and directory.resolve() in (
            data_path.resolve(), *data_path.resolve().parents):
        raise OptionsError(f"--data {source} lies inside --output {directory}: the run would replace it")


def _check_creatable(directory: Path, existing: Path) -> None:
    """Create the missing folders of --output and remove them again: permissions do not tell all (a
    root process may "write" to /proc, where no folder can be made, and a name may be too long), and
    the run writes nothing until its first round has finished."""
    missing = list(itertools.takewhile(lambda folder: folder != existing, (directory, *directory.parents)))
    made: list[Path] = []
    try:
        for folder in reversed(missing):
            folder.mkdir()
            made.append(folder)
    except OSError as error:
        raise OptionsError(f"--output {directory} cannot be created: {error.strerror or error}") from None
    finally:
        for folder in reversed(made):
            folder.rmdir()


def _check_run_files(directory: Path) -> None:
    """A name a run deletes, writes or appends to must be a plain file of an earlier run: a folder there
    would stop the run half-way, and through a link the run would change a file outside --output."""
    for path in [directory / MARKER, directory / METRICS, *stale_files(directory)]:
        if path.is_symlink() or (path.exists() and not path.is_file()):
            raise OptionsError(f"--output {directory} holds {path.name}, which is not a file a ppsdg run wrote "
                               "(a folder or a link): choose an empty or new directory")


def finish_run(output: RunOutput, point: Checkpoint, job: Job, source: Source, seed: int,
               extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Write a finished run and print its end (`end_report`); with --gan, draw the synthetic data and
    measure their use first.

    Both backends end here, so a run's files do not depend on the transport.
    """
    extra = dict(extra or {})
    settings, synthesizer = job.settings, job.synthesizer
    if isinstance(settings, Table):
        extra.update(finish_table(output, point, settings, synthesizer, source, seed))
    elif isinstance(settings, ImageSynthesis):
        train_set, test_set = data.load(source.data)
        synthetic_set, state = synthetic.drawn(point, synthesizer, seed, settings.synthetic_samples or len(train_set))
        figures = evaluate.evaluate(synthetic_set, train_set, test_set, seed, settings.tstr_epochs)
        extra.update({key: figures[key] for key in evaluate.HEADLINE}, evaluation=figures)
        grids = {round_: synthetic.grid(synthesizer, snapshot, seed) for round_, snapshot in point.snapshots.items()}
        grids[None] = synthetic.grid(synthesizer, state, seed)
        output.write_synthetic(synthetic_set, grids, state)
    summary = output.finish(point.model, point.records, extra, curves=not isinstance(settings, Table))
    print(end_report(summary, settings))
    return summary


def finish_table(output: RunOutput, point: Checkpoint, table: Table, synthesizer: Synthesizer, source: Source,
                 seed: int) -> dict[str, Any]:
    """A table run's synthetic records (as many as the training part), measured against the real
    parts, written with their schema as SDV's metadata (what `sdmetrics` and SDGym read), the pictures
    and the state they were drawn from; returns the summary's figures."""
    train_set, test_set = data.load_sets(source.data, source.test_data, table.target)
    synthetic_table, state = synthetic.drawn(point, synthesizer, seed, table.synthetic_samples or len(train_set))
    schema = tables.Schema.from_text(table.schema)
    figures = table_evaluation.evaluate(synthetic_table, train_set, test_set, schema, table.target)
    output.open()
    synthetic_table.to_csv(output.directory / SYNTHETIC, index=False)
    (output.directory / METADATA).write_text(json.dumps(schema.to_sdv(), indent=1))
    table_plots.plot(synthetic_table, train_set, schema, output.directory)
    save_model(state, output.directory / GENERATOR)
    return {**{key: figures[key] for key in TABLE_HEADLINE}, "evaluation": figures}


def end_report(summary: Mapping[str, Any], settings: JobPart) -> str:
    """The block that ends a run (`ppsdg.report`): the synthetic data's figures or the classifier's, each
    with what it measures and which way is better, then the run's privacy and its pictures."""
    extra = [report.privacy(summary), *report.pictures(pictures(settings))]
    if isinstance(settings, Table):
        return report.table(summary["evaluation"], extra)
    if isinstance(settings, ImageSynthesis):
        return report.images(summary["evaluation"], extra)
    return report.classifier(summary, extra)


def pictures(settings: JobPart) -> dict[str, str]:
    """The pictures worth a look that a finished run leaves in its output folder, and what each shows (a
    GAN's accuracy_loss.png holds losses only where the WGAN-GP records them)."""
    if isinstance(settings, Table):
        return table_plots.MEANINGS
    if isinstance(settings, ImageSynthesis):
        losses = {PLOT: "the critic's and the generator's losses per round"} if isinstance(settings, Wgan) else {}
        return {SAMPLES: synthetic.SAMPLES_MEANING, **losses}
    return {PLOT: "test accuracy and loss per round"}


def summarize(settings: Mapping[str, Any], records: Sequence[Mapping[str, Any]], seconds: float,
              extra: Mapping[str, Any]) -> dict[str, Any]:
    last = records[-1] if records else {}
    accuracies = [r["test_accuracy"] for r in records if r.get("test_accuracy") is not None]
    return {
        "options": dict(settings),
        "rounds": len(records),
        "test_accuracy": last.get("test_accuracy"),
        "test_loss": last.get("test_loss"),
        "best_test_accuracy": max(accuracies, default=None),
        **{key: last[key] for key in PRIVACY_KEYS if key in last},
        "wall_seconds": round(seconds, 3),
        **extra,
    }


def save_model(state: Mapping[str, torch.Tensor], path: Path) -> None:
    """The final state_dict, loadable with torch.load(path, weights_only=True)."""
    cpu_state = {name: tensor.detach().cpu() for name, tensor in state.items()}
    write_atomically(path, lambda handle: torch.save(cpu_state, handle))


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    return pyplot


def plot(records: Sequence[Mapping[str, Any]], path: Path) -> None:
    """Test accuracy and loss per round side by side; for a GAN, the critic's and generator's losses."""
    pyplot = _pyplot()
    rounds = [r["round"] for r in records]
    figure, (left, right) = pyplot.subplots(1, 2, figsize=(10, 4))
    if records and records[0].get("test_accuracy") is None:
        for axes, key, title in ((left, "critic_loss", "Critic loss"), (right, "generator_loss", "Generator loss")):
            axes.plot(rounds, [_mean_worker(r, key) for r in records], marker="o")
            axes.set(xlabel="round", ylabel=f"{key.replace('_', ' ')} (mean of workers)", title=title)
    else:
        left.plot(rounds, [r["test_accuracy"] for r in records], marker="o")
        left.set(xlabel="round", ylabel="test accuracy", ylim=(0, 1), title="Test accuracy")
        right.plot(rounds, [r["test_loss"] for r in records], marker="o", color="tab:red")
        right.set(xlabel="round", ylabel="test loss (NLL)", title="Test loss")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    pyplot.close(figure)


def _mean_worker(record: Mapping[str, Any], key: str) -> float:
    """NaN (a gap in the curve) for a round with no figure, as under DP for the critic's loss."""
    values = [w[key] for w in record["workers"] if w.get(key) is not None]
    return sum(values) / len(values) if values else float("nan")
