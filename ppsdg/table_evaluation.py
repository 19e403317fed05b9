"""How good a synthetic table is, measured like the literature, with one fixed protocol.

- fidelity: the mean total variation distance over all 1-, 2- and 3-way marginals (AIM's workload
  error), on fixed evaluation bins: each numeric column cut into 10 equal widths between its
  training minimum and maximum, categories as they are, missing as a value of its own;
- utility: TSTR, scikit-learn's HistGradientBoostingClassifier (defaults, random_state 0) on the
  raw columns (categorical ones as categories) trained on the synthetic table and tested on the
  real test part, accuracy and ROC AUC; the same recipe trained on the real training part (TRTR)
  is the ceiling;
- privacy: the distance of each synthetic record to its closest training record (numeric columns
  scaled by their training range, a categorical mismatch counting 1), against the same for real
  held-out records: `memorized_share` is the share of synthetic records closer to the training data
  than the closest 5% of held-out records are (5% for unseen real records), `closer_to_train_share`
  the share closer to the training data than to an equally large held-out sample (about half for
  unseen records), and the shares of exact copies of a training record, synthetic and held-out.

SDV's `sdmetrics` quality report is not used: it needs pandas < 3, which this project does not pin.
"""
from __future__ import annotations

import argparse
import itertools
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ppsdg import tables
from ppsdg.errors import DataError
from ppsdg.tables import CATEGORICAL, Schema

EVALUATION_BINS = 10
RANDOM_STATE = 0
DISTANCE_SAMPLE = 2000
MEMORIZED_QUANTILE = 0.05
CHUNK = 256
COLUMNS_PLOT = "columns.png"
DEPENDENCE_PLOT = "dependence.png"


def binned(frame: pd.DataFrame, train: pd.DataFrame, schema: Schema) -> np.ndarray:
    """The evaluation's codes of `frame` (rows x columns), bins taken from the training part."""
    codes = np.empty((len(frame), len(schema.columns)), dtype=np.int64)
    for index, column in enumerate(schema.columns):
        values = frame[column.name]
        if column.kind == CATEGORICAL:
            known = sorted(set(train[column.name].dropna().astype(str)) | set(values.dropna().astype(str)))
            lookup = {value: code for code, value in enumerate(known)}
            codes[:, index] = [lookup[str(v)] if pd.notna(v) else len(known) for v in values]
            continue
        reference = pd.to_numeric(train[column.name], errors="coerce")
        low, high = float(reference.min()), float(reference.max())
        numbers = pd.to_numeric(values, errors="coerce").to_numpy(dtype=np.float64)
        width = (high - low) / EVALUATION_BINS or 1.0
        bins = np.clip(np.floor((np.nan_to_num(numbers, nan=low) - low) / width), 0, EVALUATION_BINS - 1)
        codes[:, index] = np.where(np.isnan(numbers), EVALUATION_BINS, bins)
    return codes


def mean_tvd(real: np.ndarray, synthetic: np.ndarray, way: int) -> float:
    """The mean over every `way`-column marginal of half the L1 distance of the two distributions."""
    sizes = np.maximum(real.max(axis=0), synthetic.max(axis=0)) + 1
    distances = []
    for columns in itertools.combinations(range(real.shape[1]), way):
        shape = [int(sizes[c]) for c in columns]
        cells = int(np.prod(shape))

        def distribution(codes: np.ndarray) -> np.ndarray:
            flat = np.ravel_multi_index(tuple(codes[:, c] for c in columns), shape)
            return np.bincount(flat, minlength=cells) / max(len(codes), 1)

        distances.append(0.5 * np.abs(distribution(real) - distribution(synthetic)).sum())
    return float(np.mean(distances))


def model_frame(frame: pd.DataFrame, schema: Schema, features: Sequence[str]) -> pd.DataFrame:
    """The raw columns as the classifier takes them: numbers, and categories with a fixed order."""
    columns = {}
    for name in features:
        column = schema.column(name)
        if column.kind == CATEGORICAL:
            categories = list(column.categories) + (["other"] if column.other else [])
            columns[name] = pd.Categorical(frame[name].astype(object).where(frame[name].notna(), None),
                                           categories=categories)
        else:
            columns[name] = pd.to_numeric(frame[name], errors="coerce").astype(np.float64)
    return pd.DataFrame(columns)


def classifier_figures(train: pd.DataFrame, test: pd.DataFrame, schema: Schema, target: str) -> dict[str, float]:
    """Accuracy and ROC AUC (one-vs-rest macro for more than two classes) of the fixed recipe."""
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.metrics import accuracy_score, roc_auc_score

    features = [name for name in schema.names if name != target]
    labels_train = train[target].astype(str).to_numpy()
    labels_test = test[target].astype(str).to_numpy()
    classes = np.unique(labels_train)
    if len(classes) < 2:
        majority = classes[0] if len(classes) else ""
        return {"accuracy": float(np.mean(labels_test == majority)), "auc": 0.5}
    model = HistGradientBoostingClassifier(random_state=RANDOM_STATE, categorical_features="from_dtype")
    model.fit(model_frame(train, schema, features), labels_train)
    inputs = model_frame(test, schema, features)
    accuracy = float(accuracy_score(labels_test, model.predict(inputs)))
    probabilities = model.predict_proba(inputs)
    known = np.isin(labels_test, classes)
    if len(classes) == 2:
        auc = roc_auc_score(labels_test[known] == classes[1], probabilities[known, 1])
    else:
        auc = roc_auc_score(labels_test[known], probabilities[known], multi_class="ovr", labels=classes)
    return {"accuracy": accuracy, "auc": float(auc)}


def _distance_space(frame: pd.DataFrame, train: pd.DataFrame, schema: Schema) -> torch.Tensor:
    """Records as vectors whose L1 distance is the evaluation's: numeric columns over their training
    range (missing far from any number), categories one-hot at half weight (a mismatch costs 1)."""
    parts = []
    for column in schema.columns:
        values = frame[column.name]
        if column.kind == CATEGORICAL:
            known = sorted(set(train[column.name].dropna().astype(str)))
            text = values.astype(object).where(values.notna(), None)
            onehot = np.stack([(text == value).to_numpy() for value in known] + [values.isna().to_numpy()], axis=1)
            parts.append(onehot.astype(np.float64) * 0.5)
            continue
        reference = pd.to_numeric(train[column.name], errors="coerce")
        low, span = float(reference.min()), float(reference.max() - reference.min()) or 1.0
        numbers = (pd.to_numeric(values, errors="coerce").to_numpy(dtype=np.float64) - low) / span
        parts.append(np.stack([np.nan_to_num(numbers, nan=0.0), np.isnan(numbers) * 1.0], axis=1))
    return torch.from_numpy(np.concatenate(parts, axis=1))


def _closest(queries: torch.Tensor, references: torch.Tensor) -> torch.Tensor:
    return torch.cat([torch.cdist(queries[start:start + CHUNK], references, p=1).min(dim=1).values
                      for start in range(0, len(queries), CHUNK)])


def _row_keys(frame: pd.DataFrame, names: Sequence[str]) -> pd.Series:
    return pd.util.hash_pandas_object(frame[list(names)].astype(str), index=False)


def privacy_figures(synthetic: pd.DataFrame, train: pd.DataFrame, test: pd.DataFrame,
                    schema: Schema) -> dict[str, float]:
    """Closest-record distances and exact copies of training records, synthetic against held-out."""
    rng = np.random.default_rng(RANDOM_STATE)

    def sample(frame: pd.DataFrame, size: int) -> pd.DataFrame:
        return frame.iloc[np.sort(rng.choice(len(frame), min(size, len(frame)), replace=False))]

    holdout = sample(test, DISTANCE_SAMPLE)
    reference = sample(train, len(holdout))
    train_space = _distance_space(train, train, schema)
    synthetic_space = _distance_space(sample(synthetic, DISTANCE_SAMPLE), train, schema)
    holdout_space = _distance_space(holdout, train, schema)
    threshold = torch.quantile(_closest(holdout_space, train_space), MEMORIZED_QUANTILE)
    to_train = _closest(synthetic_space, train_space)
    closer = _closest(synthetic_space, _distance_space(reference, train, schema)) < \
        _closest(synthetic_space, holdout_space)
    train_keys = set(_row_keys(train, schema.names))
    return {"memorized_share": float((to_train < threshold).double().mean()),
            "closer_to_train_share": float(closer.double().mean()),
            "exact_copy_share": float(_row_keys(synthetic, schema.names).isin(train_keys).mean()),
            "holdout_exact_copy_share": float(_row_keys(test, schema.names).isin(train_keys).mean())}


def evaluate(synthetic: pd.DataFrame, train: pd.DataFrame, test: pd.DataFrame, schema: Schema,
             target: str) -> dict[str, float]:
    """Every figure of the protocol, as one flat mapping (the keys of `ppsdg evaluate`'s JSON)."""
    real_codes, synthetic_codes = binned(train, train, schema), binned(synthetic, train, schema)
    figures = {f"tvd_{way}way": mean_tvd(real_codes, synthetic_codes, way)
               for way in (1, 2, 3) if way <= len(schema.columns)}
    tstr = classifier_figures(synthetic, test, schema, target)
    trtr = classifier_figures(train, test, schema, target)
    figures.update(tstr_accuracy=tstr["accuracy"], tstr_auc=tstr["auc"], trtr_accuracy=trtr["accuracy"],
                   trtr_auc=trtr["auc"], target=target)
    figures.update(privacy_figures(synthetic, train, test, schema))
    return figures


def evaluate_files(synthetic_path: str, source: str, test_data: str | None, schema_path: str | None,
                   target: str | None, max_rows: int) -> dict[str, float]:
    """`ppsdg evaluate` for a table: the real parts read as a run reads --data and --test-data, the
    schema given or drafted from the training part, the target given or the schema's or the last column."""
    from ppsdg import data

    train, test = data.load_sets(argparse.Namespace(data=source, test_data=test_data, target=target))
    schema = Schema.read(schema_path) if schema_path else tables.draft(train, target)
    target = target or schema.target or schema.names[-1]
    if target not in schema.names:
        raise DataError(f"--target {target!r} is not a column of the schema")
    synthetic = tables.read_table(synthetic_path)
    if len(synthetic) > max_rows:
        raise DataError(f"{synthetic_path}: {len(synthetic)} rows, more than {max_rows}")
    for frame, name in ((synthetic, synthetic_path), (train, source), (test, test_data or source)):
        missing = [column for column in schema.names if column not in frame.columns]
        if missing:
            raise DataError(f"{name}: missing column(s) {', '.join(missing)} of the schema")
    return evaluate(synthetic, train, test, schema, target)


def cramers_v(codes: np.ndarray) -> np.ndarray:
    """Pairwise Cramér's V of the columns of `codes`: the dependence the heatmap compares."""
    columns = codes.shape[1]
    result = np.eye(columns)
    for a, b in itertools.combinations(range(columns), 2):
        table = pd.crosstab(codes[:, a], codes[:, b]).to_numpy().astype(np.float64)
        total = table.sum()
        expected = table.sum(1, keepdims=True) * table.sum(0, keepdims=True) / total
        chi2 = float(((table - expected) ** 2 / np.where(expected > 0, expected, 1)).sum())
        scale = min(table.shape) - 1
        result[a, b] = result[b, a] = np.sqrt(chi2 / total / scale) if scale > 0 else 0.0
    return result


def plot(synthetic: pd.DataFrame, train: pd.DataFrame, schema: Schema, directory: Path) -> list[Path]:
    """columns.png: each column's distribution, real against synthetic, on the evaluation bins;
    dependence.png: synthetic minus real pairwise Cramér's V, as a heatmap."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    real_codes, synthetic_codes = binned(train, train, schema), binned(synthetic, train, schema)
    count = len(schema.columns)
    across = min(count, 4)
    figure, axes = pyplot.subplots(-(-count // across), across, figsize=(4 * across, 3 * -(-count // across)),
                                   squeeze=False)
    for index, (name, ax) in enumerate(zip(schema.names, axes.flat)):
        cells = int(max(real_codes[:, index].max(), synthetic_codes[:, index].max())) + 1
        for codes, label in ((real_codes, "real"), (synthetic_codes, "synthetic")):
            shares = np.bincount(codes[:, index], minlength=cells) / len(codes)
            ax.bar(np.arange(cells) + (0.2 if label == "synthetic" else -0.2), shares, width=0.4, label=label)
        ax.set(title=name, ylabel="share")
        ax.set_xticks([])
    for ax in list(axes.flat)[count:]:
        ax.axis("off")
    axes.flat[0].legend()
    figure.tight_layout()
    columns_path = directory / COLUMNS_PLOT
    figure.savefig(columns_path, dpi=80)
    pyplot.close(figure)
    difference = cramers_v(synthetic_codes) - cramers_v(real_codes)
    figure, ax = pyplot.subplots(figsize=(8, 7))
    image = ax.imshow(difference, cmap="RdBu_r", vmin=-0.5, vmax=0.5)
    ax.set_xticks(range(count), schema.names, rotation=90)
    ax.set_yticks(range(count), schema.names)
    ax.set_title("Cramér's V, synthetic minus real")
    figure.colorbar(image)
    figure.tight_layout()
    dependence_path = directory / DEPENDENCE_PLOT
    figure.savefig(dependence_path, dpi=80)
    pyplot.close(figure)
    return [columns_path, dependence_path]
