"""The evaluation protocol on small subsets of the embedded digits: memorization, distances, manifolds,
TSTR, and the command."""
import io
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from matplotlib.image import imread

from ppsdg import commands, data, evaluate, synthetic

torch.set_num_threads(1)

EPOCHS = 2
SEED = 7


@pytest.fixture(scope="module")
def digits() -> dict[str, data.ImageSet]:
    """900 training digits, 400 real digits held out of training, and the embedded test set."""
    train_set, test_set = data.load("embedded")
    order = np.random.default_rng(0).permutation(len(train_set))
    return {"train": train_set.subset(order[:900]), "held_out": train_set.subset(order[900:1300]),
            "test": test_set}


@pytest.fixture(scope="module")
def noise(digits) -> data.ImageSet:
    rng = np.random.default_rng(1)
    return data.ImageSet(rng.integers(0, 256, (400, 28, 28), dtype=np.uint8),
                         rng.integers(0, data.NUM_CLASSES, 400).astype(np.int64))


@pytest.fixture(scope="module")
def figures(digits, noise) -> dict[str, dict]:
    """The protocol's figures for real held-out digits, pure noise, and one class of real digits."""
    held_out = digits["held_out"]
    candidates = {"held_out": held_out, "noise": noise,
                  "zeros": held_out.subset(np.flatnonzero(held_out.labels == 0))}
    return {name: evaluate.evaluate(images, digits["train"], digits["test"], SEED, EPOCHS)
            for name, images in candidates.items()}


def test_copies_of_training_images_are_memorized(digits):
    memorized, threshold = evaluate.memorization(digits["train"].subset(np.arange(300)), digits["train"],
                                                 digits["test"])
    assert threshold > 0 and evaluate._share(memorized) >= 0.95


def test_real_images_not_trained_on_are_not_memorized(figures):
    result = figures["held_out"]
    assert result["memorized_share"] <= 0.2
    assert result["memorization_quantile"] == evaluate.MEMORIZATION_QUANTILE
    assert result["memorization_threshold"] > 0


def test_the_test_set_itself_is_memorized_at_the_chosen_quantile(digits):
    memorized, _ = evaluate.memorization(digits["test"], digits["train"], digits["test"])
    assert evaluate._share(memorized) == pytest.approx(evaluate.MEMORIZATION_QUANTILE, abs=0.01)


def test_real_digits_train_a_classifier_and_noise_does_not(figures):
    assert figures["held_out"]["tstr_accuracy"] >= 0.7
    assert figures["noise"]["tstr_accuracy"] <= 0.3
    assert figures["noise"]["trtr_accuracy"] == figures["held_out"]["trtr_accuracy"] >= 0.8


def test_noise_is_far_from_real_digits_in_feature_space(figures):
    real, noise = figures["held_out"], figures["noise"]
    assert noise["frechet_distance"] > 10 * real["frechet_distance"] > 0
    assert noise["precision"] < 0.1 < 0.5 < real["precision"]


def test_frechet_distance_is_zero_to_itself_symmetric_and_the_squared_shift_for_equal_covariances():
    generator = torch.Generator().manual_seed(0)
    first = torch.randn(4000, 8, generator=generator)
    second = torch.randn(3000, 8, generator=generator) * 2 + 0.5
    assert evaluate.frechet_distance(first, first) == pytest.approx(0, abs=1e-9)
    assert evaluate.frechet_distance(first, second) == pytest.approx(evaluate.frechet_distance(second, first))
    shifted = first + torch.tensor([3.0] + [0.0] * 7)
    assert evaluate.frechet_distance(first, shifted) == pytest.approx(9.0, rel=1e-6)


def test_a_set_lies_on_its_own_manifold():
    points = torch.randn(300, 16, generator=torch.Generator().manual_seed(0))
    assert evaluate.manifold_figures(points, points) == {"precision": 1.0, "recall": 1.0, "coverage": 1.0}


def test_one_class_of_digits_recalls_only_that_class(figures):
    result = figures["zeros"]
    assert result["recall"] < 0.3 and result["precision"] > 0.5
    assert result["per_class"]["0"]["recall"] > 0.5 and not result["per_class"]["0"]["missing"]
    for label in range(1, data.NUM_CLASSES):
        other = result["per_class"][str(label)]
        assert other["missing"] and other["recall"] == other["coverage"] == 0.0
        assert other["precision"] is None and other["note"]


def test_figures_are_plain_json_and_count_the_sets(figures, digits):
    result = figures["held_out"]
    assert json.loads(json.dumps(result, allow_nan=False)) == result
    assert (result["synthetic_images"], result["train_images"], result["test_images"]) == (400, 900, 359)
    assert sum(c["synthetic_images"] for c in result["per_class"].values()) == 400
    assert all(0 <= c["tstr_accuracy"] <= 1 for c in result["per_class"].values())


def test_the_classifier_depends_on_the_seed_alone(digits):
    images = digits["train"].subset(np.arange(128))
    first, second = (evaluate.train_classifier(images, SEED, 1).state_dict() for _ in range(2))
    assert all(torch.equal(first[name], second[name]) for name in first)


@pytest.fixture(scope="module")
def csv_files(tmp_path_factory, digits) -> dict[str, Path]:
    """A 300-digit data CSV (240 to train on, 60 held out) and 60 other real digits as the synthetic set."""
    directory = tmp_path_factory.mktemp("evaluate")
    files = {"data": directory / "data.csv", "synthetic": directory / "synthetic.csv"}
    data.to_frame(digits["train"].subset(np.arange(300))).to_csv(files["data"], index=False)
    data.to_frame(digits["held_out"].subset(np.arange(60))).to_csv(files["synthetic"], index=False)
    return files


def test_the_command_prints_one_json_object_says_what_it_means_and_draws_the_samples(csv_files, capsys, tmp_path):
    assert commands.evaluate_command([str(csv_files["synthetic"]), "--data", str(csv_files["data"]), "--seed", "3",
                                      "--output", str(tmp_path / "pictures")]) == 0
    said = capsys.readouterr()
    lines = said.out.splitlines()
    assert len(lines) == 1
    result = json.loads(lines[0])
    for key in ("tstr_accuracy", "frechet_distance", "memorized_share", "memorization_threshold",
                "precision", "recall", "coverage", "per_class"):
        assert key in result
    assert (result["synthetic_images"], result["train_images"], result["test_images"]) == (60, 240, 60)
    meanings = said.err.splitlines()
    assert meanings[0] == "synthetic images:" and [line.split()[0] for line in meanings[1:]] == [
        "TSTR", "Fréchet", "precision", "recall", "memorized", "samples.png"]
    assert meanings[1].startswith(f"  TSTR accuracy     {result['tstr_accuracy']:.4f}  trained on synthetic")
    assert f"higher is better (real data's own {result['trtr_accuracy']:.4f}, chance 0.1)" in meanings[1]
    assert imread(tmp_path / "pictures" / "samples.png").shape[:2] == (840, 800)


def test_a_grid_of_an_unbalanced_set_keeps_each_class_on_its_row():
    images = data.ImageSet(np.full((3, 28, 28), 200, dtype=np.uint8), np.array([2, 2, 7]))
    grid = synthetic.tiled(images)
    filled = grid.reshape(10, 28, 10, 28).max(axis=(1, 3)) > 0
    assert [tuple(np.flatnonzero(row)) for row in filled] == [()] * 2 + [(0, 1)] + [()] * 4 + [(0,)] + [()] * 2


def test_output_that_is_a_file_is_refused_before_measuring(csv_files, capsys):
    assert commands.evaluate_command([str(csv_files["synthetic"]), "--data", str(csv_files["data"]), "--output",
                                      str(csv_files["data"])]) == 2
    assert capsys.readouterr().err == f"ppsdg: error: --output {csv_files['data']} is a file, not a folder\n"


@pytest.mark.parametrize("problem", ["bad csv", "missing file", "bad data", "bad option"])
def test_bad_input_ends_in_one_error_line(csv_files, capsys, tmp_path, problem):
    bad_csv = tmp_path / "bad.csv"
    bad_csv.write_text("label,pixel0\n1,2\n")
    synthetic, real = str(csv_files["synthetic"]), str(csv_files["data"])
    argv = {"bad csv": [str(bad_csv), "--data", real],
            "missing file": [str(tmp_path / "none.csv"), "--data", real],
            "bad data": [synthetic, "--data", str(tmp_path / "nowhere")],
            "bad option": [synthetic, "--data", real, "--seed", "x"]}[problem]
    assert commands.evaluate_command(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1 and captured.err.startswith("ppsdg: error:")


class Terminal(io.StringIO):
    """stderr as a person's terminal."""

    def isatty(self) -> bool:
        return True


def test_the_measuring_shows_its_steps_and_the_classifiers_their_batches_on_a_terminal(digits, monkeypatch):
    monkeypatch.setattr(sys, "stderr", Terminal())
    images = digits["train"].subset(np.arange(100))
    evaluate.evaluate(images, digits["train"].subset(np.arange(100, 228)), digits["test"], SEED, 1)
    said = sys.stderr.getvalue()
    for shown in ("measuring the synthetic images", "TSTR classifier", "the real data's classifier", "4/4",
                  "training a classifier", "2/2"):
        assert shown in said
