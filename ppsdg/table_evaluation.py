"""How good a synthetic table is, measured like the literature, with one fixed protocol.

- fidelity: the mean total variation distance (half the L1 distance of the two distributions) over
  all 1-, 2- and 3-way marginals of the schema's modelled columns (AIM's workload error; beyond
  MAX_MARGINALS of one way, a seeded sample of that many, `marginal_sets`), the real
  side being the training part, on fixed evaluation bins (`binned`): a numeric column (the schema's
  type decides; a date as its days, months or years) in 10 equal widths between its training minimum
  and maximum, each bin closed on the left and the last on both sides (numpy.histogram's bins), a
  value outside in the nearest bin; a categorical column's values as they are (their text); missing
  (or not a number) as a value of its own; `tvd_2way_independent`, the 2-way figure of the training
  part's own columns made independent (every column right, no dependence), is the scale it is read on;
- utility: TSTR, scikit-learn's HistGradientBoostingClassifier (defaults, random_state 0) on the raw
  columns (categorical ones as categories) trained on the synthetic table and tested on the real
  test part, accuracy and ROC AUC (for more than two classes the mean of each test class's
  one-vs-rest AUC, scikit-learn's macro one-vs-rest); the same recipe trained on the real training
  part (TRTR) is the ceiling. Rows without a target are left out; a numeric or date target is not
  scored;
- privacy: the distance of each synthetic record to its closest training record (numeric columns
  scaled by their training range, a categorical mismatch counting 1), against the same for real
  held-out records: `memorized_share` is the share of synthetic records closer to the training data
  than the closest 5% of held-out records are (5% for unseen real records), `closer_to_train_share`
  the share closer to the training data than to an equally large held-out sample (about half for
  unseen records), and the shares of exact copies of a training record, synthetic and held-out.

A figure that cannot be computed (a part without rows, a numeric target, a single class) is None,
and `unavailable` says why: never NaN, which is not JSON; `notes` says what a reader must know of a
figure that stands (a test class the synthetic table never shows). SDV's `sdmetrics` reports are an
extra beside these (`ppsdg/sdmetrics_reports.py`, `ppsdg evaluate --sdmetrics`): they need pandas < 3.
"""
from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
import torch

from ppsdg import progress, tables
from ppsdg.errors import DataError
from ppsdg.tables import CATEGORICAL, DATE, Column, Schema

EVALUATION_BINS = 10
WAYS = (1, 2, 3)
RANDOM_STATE = 0
# 100 columns have 161,700 3-way marginals: 3 minutes of bincounts at 50,000 rows for a mean that 5,000
# of them give within about 1% (their TVDs' spread over the root of 5,000). Up to it, every one counts.
MAX_MARGINALS = 5000
# The recipe's boosting can diverge: on loans' training part (7 classes, one of 10 rows, a categorical
# column of 32 values) its fit ends with a training log-loss of 8.5, where the class shares alone give
# 1.49 (test accuracy 0.776; 1.0 with this penalty). A fit worse on its own rows than that constant
# is refitted once with this L2 penalty; every other fit is the recipe's own (Adult 0.24 against 0.55).
DIVERGED_L2 = 1.0
DISTANCE_SAMPLE = 2000
MEMORIZED_QUANTILE = 0.05
# Cells of one block of the closest-record distances (float32: 64 MB).
DISTANCE_BLOCK = 1 << 24
INDEPENDENT = "tvd_2way_independent"
CLASSIFIER_FIGURES = ("accuracy", "auc")
PRIVACY_FIGURES = ("memorized_share", "closer_to_train_share", "exact_copy_share", "holdout_exact_copy_share")
NOT_SCORED = "the target is {}: only classification targets are scored"

Figures = dict[str, float | None]
Reasons = dict[str, str]


def unavailable(names: Iterable[str], reason: str) -> tuple[Figures, Reasons]:
    """The named figures as None, each with the reason: what the JSON holds instead of NaN."""
    names = list(names)
    return dict.fromkeys(names), dict.fromkeys(names, reason)


def empty_part(parts: Mapping[str, pd.DataFrame]) -> str | None:
    """The reason a figure needing these parts (named as a sentence says them) cannot be computed."""
    return next((f"{name} has no rows" for name, frame in parts.items() if not len(frame)), None)


def binned(frame: pd.DataFrame, train: pd.DataFrame, schema: Schema) -> np.ndarray:
    """The evaluation's codes of `frame` (rows x modelled columns), fixed by the training part alone,
    so that the training part and a synthetic table coded apart share every code."""
    codes = np.empty((len(frame), len(schema.columns)), dtype=np.int64)
    for index, column in enumerate(schema.columns):
        values, reference = frame[column.name], train[column.name]
        codes[:, index] = category_codes(values, reference) if column.kind == CATEGORICAL else \
            bin_codes(column_numbers(values, column), column_numbers(reference, column))
    return codes


def category_codes(values: pd.Series, reference: pd.Series) -> np.ndarray:
    """Each text its own code (`category_lookup`); missing is the code after the training part's texts."""
    lookup = category_lookup(values, reference)
    present = values.notna().to_numpy()
    codes = np.full(len(values), missing_category(reference), dtype=np.int64)
    codes[present] = values[present].astype(str).map(lookup).to_numpy(dtype=np.int64)
    return codes


def category_lookup(values: pd.Series, reference: pd.Series) -> dict[str, int]:
    """The code of each text: the training part's texts sorted, then (after missing) the texts the
    training part lacks (a synthetic `other`, a category of the schema no training row has)."""
    known = sorted(set(reference.dropna().astype(str)))
    unseen = sorted(set(values.dropna().astype(str)) - set(known))
    return {**{value: code for code, value in enumerate(known)},
            **{value: len(known) + 1 + code for code, value in enumerate(unseen)}}


def missing_category(reference: pd.Series) -> int:
    """The code of a missing cell in a categorical column: after the training part's texts."""
    return reference.dropna().astype(str).nunique()


def column_numbers(values: pd.Series, column: Column) -> np.ndarray:
    """A numeric column as floats, a date column as its whole periods since 1970 (as the schema
    encodes it); NaN where a cell is missing or does not read."""
    if column.kind == DATE:
        return tables.parse_periods(values, column)
    return pd.to_numeric(values, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)


def bin_codes(cells: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """The bin of each cell between `evaluation_edges`, compared with the edges themselves, so that a
    value on an edge starts the bin above it; missing is code EVALUATION_BINS."""
    inner = evaluation_edges(reference)[1:-1]
    return np.where(np.isnan(cells), EVALUATION_BINS, np.searchsorted(inner, cells, side="right"))


def evaluation_edges(reference: np.ndarray) -> np.ndarray:
    """EVALUATION_BINS equal widths between the training part's (finite) minimum and maximum
    (np.linspace); a training part without two different values gives one bin, its value both edges."""
    bounds = reference[np.isfinite(reference)]
    low, high = (bounds.min(), bounds.max()) if len(bounds) else (0.0, 0.0)
    return np.linspace(low, high, EVALUATION_BINS + 1) if high > low else np.array([low, high])


def marginal_sets(count: int, way: int) -> list[tuple[int, ...]]:
    """The `way`-column sets a mean TVD runs over: every one (itertools.combinations' order), or where
    there are more than MAX_MARGINALS, that many drawn without repeats by a fixed seed (sorted), the
    same for every table of as many columns."""
    if math.comb(count, way) <= MAX_MARGINALS:
        return list(itertools.combinations(range(count), way))
    rng = np.random.default_rng(RANDOM_STATE)
    chosen: set[tuple[int, ...]] = set()
    while len(chosen) < MAX_MARGINALS:
        chosen.add(tuple(sorted(int(c) for c in rng.choice(count, way, replace=False))))
    return sorted(chosen)


def marginal_tvds(real: np.ndarray, synthetic: np.ndarray, way: int) -> np.ndarray:
    """For every `way`-column marginal of `marginal_sets`, half the L1 distance of the two
    distributions (the shares of rows in each cell; both tables have rows)."""
    sizes = np.maximum(real.max(axis=0), synthetic.max(axis=0)) + 1
    return np.array([0.5 * np.abs(cell_shares(real, columns, sizes) - cell_shares(synthetic, columns, sizes)).sum()
                     for columns in marginal_sets(real.shape[1], way)])


def cell_shares(codes: np.ndarray, columns: tuple[int, ...], sizes: np.ndarray) -> np.ndarray:
    """The share of rows in each cell of the marginal of `columns`, the cells in C order."""
    shape = [int(sizes[c]) for c in columns]
    flat = np.ravel_multi_index(tuple(codes[:, c] for c in columns), shape)
    return np.bincount(flat, minlength=int(np.prod(shape))) / len(codes)


def mean_tvd(real: np.ndarray, synthetic: np.ndarray, way: int) -> float:
    """The mean over every `way`-column marginal of its TVD (`marginal_tvds`)."""
    return float(np.mean(marginal_tvds(real, synthetic, way)))


def independent_tvd(real: np.ndarray) -> float:
    """The mean 2-way TVD of the real columns made independent (each pair's cells the product of its
    columns' shares) against the real pairs: what a table with every column right and no dependence
    scores, the scale a synthetic table's 2-way TVD is read on."""
    sizes = real.max(axis=0) + 1
    return float(np.mean([0.5 * np.abs(cell_shares(real, (a, b), sizes) - np.outer(
        cell_shares(real, (a,), sizes), cell_shares(real, (b,), sizes)).ravel()).sum()
        for a, b in marginal_sets(real.shape[1], 2)]))


def fidelity_figures(synthetic: pd.DataFrame, train: pd.DataFrame, schema: Schema) -> tuple[Figures, Reasons]:
    """tvd_1way, tvd_2way and tvd_3way, and INDEPENDENT (`independent_tvd`, of the training part
    alone); a way beyond the schema's modelled columns has no marginal."""
    names = [f"tvd_{way}way" for way in WAYS]
    reason = empty_part({"the training part": train})
    if reason:
        return unavailable([*names, INDEPENDENT], reason)
    real = binned(train, train, schema)
    fake = binned(synthetic, train, schema) if len(synthetic) else None
    figures, reasons = {}, {}
    for name, way in (*zip(names, WAYS), (INDEPENDENT, 2)):
        if way > len(schema.columns):
            reasons[name] = f"the schema models {len(schema.columns)} column(s), fewer than {way}"
        elif name == INDEPENDENT:
            figures[name] = independent_tvd(real)
        elif fake is None:
            reasons[name] = "the synthetic table has no rows"
        else:
            figures[name] = mean_tvd(real, fake, way)
    return {name: figures.get(name) for name in (*names, INDEPENDENT)}, reasons


def model_frame(frame: pd.DataFrame, schema: Schema, features: Sequence[str]) -> pd.DataFrame:
    """The raw columns as the classifier takes them: numbers, and categories with a fixed order."""
    columns = {}
    for name in features:
        column = schema.column(name)
        if column.kind == CATEGORICAL:
            categories = list(column.categories) + (["other"] if column.other else [])
            values = frame[name].astype(object)
            # A value outside the schema's categories is missing to the classifier, said so rather than left
            # to pandas, which deprecates it (a Pandas4Warning; an error in pandas 4).
            columns[name] = pd.Categorical(values.where(values.isin(categories), None), categories=categories)
        else:
            columns[name] = column_numbers(frame[name], column)
    return pd.DataFrame(columns)


def diverged(model: Any, inputs: pd.DataFrame, labels: np.ndarray) -> bool:
    """Whether a fitted classifier predicts its own training rows worse, by log-loss, than the class
    shares alone do: a boosting that went the wrong way, not a model of the data."""
    from sklearn.metrics import log_loss

    classes, counts = np.unique(labels, return_counts=True)
    shares = np.tile(counts / counts.sum(), (len(labels), 1))
    return log_loss(labels, model.predict_proba(inputs), labels=model.classes_) > log_loss(labels, shares,
                                                                                          labels=classes)


def classifier_figures(train: pd.DataFrame, test: pd.DataFrame, schema: Schema, target: str,
                       trained_on: str = "the synthetic table") -> tuple[Figures, Reasons]:
    """Accuracy and ROC AUC of the fixed recipe trained on `train` (named `trained_on` in a reason),
    and the reason for each that is None or a note on one that stands (`roc_auc`). Rows without a
    target are left out: they have no class to learn or to be scored against. A single training
    class is all a model could predict: its accuracy stands, its AUC does not."""
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.metrics import accuracy_score

    kind = schema.column(target).kind
    if kind != CATEGORICAL:
        return unavailable(CLASSIFIER_FIGURES, NOT_SCORED.format("a date" if kind == DATE else "numeric"))
    train, test = train[train[target].notna()], test[test[target].notna()]
    for frame, name in ((train, trained_on), (test, "the test part")):
        if not len(frame):
            return unavailable(CLASSIFIER_FIGURES, f"{name} has no row with a target")
    features = [name for name in schema.names if name != target]
    labels_train = train[target].astype(str).to_numpy()
    labels_test = test[target].astype(str).to_numpy()
    classes = np.unique(labels_train)
    if len(classes) < 2:
        return ({"accuracy": float(np.mean(labels_test == classes[0])), "auc": None},
                {"auc": f"{trained_on}'s target has a single class: no model to rank with"})
    inputs = model_frame(train, schema, features)
    try:
        model = HistGradientBoostingClassifier(random_state=RANDOM_STATE, categorical_features="from_dtype")
        model.fit(inputs, labels_train)
        if diverged(model, inputs, labels_train):
            model = HistGradientBoostingClassifier(random_state=RANDOM_STATE, categorical_features="from_dtype",
                                                   l2_regularization=DIVERGED_L2).fit(inputs, labels_train)
    except ValueError as error:
        return unavailable(CLASSIFIER_FIGURES, f"the classifier cannot be trained on {trained_on}: {error}")
    inputs = model_frame(test, schema, features)
    auc, reason = roc_auc(labels_test, model.predict_proba(inputs), model.classes_, trained_on)
    return ({"accuracy": float(accuracy_score(labels_test, model.predict(inputs))), "auc": auc},
            {"auc": reason} if reason else {})


def roc_auc(labels: np.ndarray, probabilities: np.ndarray, classes: np.ndarray,
            trained_on: str) -> tuple[float | None, str | None]:
    """ROC AUC of a model's class probabilities (columns in `classes` order) on the test labels, and a
    note: for a two-class model and a two-class test part scikit-learn's binary AUC, otherwise the mean
    over the test part's classes of each one's one-vs-rest AUC (scikit-learn's macro one-vs-rest; a
    class only the training side has is left out). A test class that never occurs in training is one
    the model never predicts: probability 0 on every row, a one-vs-rest AUC of 0.5; the note names it
    (a synthesizer that drops a rare class is marked down, not excused). None, with the note as the
    reason, where the test part holds a single class."""
    from sklearn.metrics import roc_auc_score

    present, known = np.unique(labels), list(classes)
    if len(present) < 2:
        return None, "the test part's target has a single class: ROC AUC needs two"
    unseen = [str(label) for label in present if label not in known]
    if len(classes) == 2 and not unseen:
        return float(roc_auc_score(labels == classes[1], probabilities[:, 1])), None
    scores = [roc_auc_score(labels == label, probabilities[:, known.index(label)] if label in known
                            else np.zeros(len(labels))) for label in present]
    note = f"the test part's class(es) {', '.join(unseen)} never occur in {trained_on}'s target: scored as never " \
           "predicted (one-vs-rest AUC 0.5 each)" if unseen else None
    return float(np.mean(scores)), note


class DistanceSpace(NamedTuple):
    """Records as the evaluation's distance reads them: each categorical column one-hot (its training
    values, missing, and any other value), and the numeric columns over their training range with a
    missing flag each."""

    onehot: torch.Tensor
    numbers: torch.Tensor


def _distance_space(frame: pd.DataFrame, train: pd.DataFrame, schema: Schema) -> DistanceSpace:
    """`frame` in the space whose distance (`_closest`) is the evaluation's: categories one-hot at half
    weight (a mismatch costs 1), numeric columns over their training range (missing far from any number)."""
    onehots, numbers = [np.zeros((len(frame), 0))], [np.zeros((len(frame), 0))]
    for column in schema.columns:
        values = frame[column.name]
        if column.kind == CATEGORICAL:
            known = sorted(set(train[column.name].dropna().astype(str)))
            text = values.astype(object).where(values.notna(), None)
            ones = [(text == value).to_numpy() for value in known] + [values.isna().to_numpy()]
            onehots.append(np.stack(ones + [~np.any(ones, axis=0)], axis=1))
            continue
        reference = pd.Series(column_numbers(train[column.name], column))
        low, span = float(reference.min()), float(reference.max() - reference.min()) or 1.0
        scaled = (column_numbers(values, column) - low) / span
        numbers.append(np.stack([np.nan_to_num(scaled, nan=0.0), np.isnan(scaled) * 1.0], axis=1))
    return DistanceSpace(*(torch.from_numpy(np.concatenate(parts, axis=1).astype(np.float32))
                           for parts in (onehots, numbers)))


def _closest(queries: DistanceSpace, references: DistanceSpace) -> torch.Tensor:
    """Each query's distance to its closest reference, in float32. The one-hot part's L1 distance at half
    weight is counted by a matrix product (|q - r| = |q| + |r| - 2 q.r for 0/1 vectors), the numbers'
    by torch.cdist, a block of queries at a time that keeps each distance matrix near DISTANCE_BLOCK
    cells: 2,000 records against 1,000,000 in about a minute, where an L1 cdist over the one-hot in
    float64 took minutes."""
    reference_ones = 0.5 * references.onehot.sum(dim=1)
    step = max(1, DISTANCE_BLOCK // max(len(references.onehot), 1))
    closest = []
    for start in range(0, len(queries.onehot), step):
        block = queries.onehot[start:start + step]
        distance = torch.cdist(queries.numbers[start:start + step], references.numbers, p=1) \
            if queries.numbers.shape[1] else torch.zeros(len(block), len(references.onehot))
        distance += reference_ones
        distance += 0.5 * block.sum(dim=1, keepdim=True)
        distance.addmm_(block, references.onehot.T, alpha=-1)
        closest.append(distance.min(dim=1).values)
    return torch.cat(closest)


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
             target: str) -> dict[str, Any]:
    """Every figure of the protocol, as one flat mapping (the keys of `ppsdg evaluate`'s JSON), with
    `unavailable`: each figure that is None, and why; and `notes`: what a reader must know of a figure
    that stands (a test class the synthetic table never shows). A bar names the step running (55
    columns: a minute, most of it the classifiers)."""
    with progress.Steps("measuring the synthetic table", 4) as steps:
        steps.step("fidelity (TVD)")
        figures, reasons = fidelity_figures(synthetic, train, schema)
        for prefix, part, name in (("tstr", synthetic, "the synthetic table"), ("trtr", train, "the training part")):
            steps.step(f"{prefix.upper()} classifier")
            values, why = classifier_figures(part, test, schema, target, name)
            figures.update({f"{prefix}_{key}": value for key, value in values.items()})
            reasons.update({f"{prefix}_{key}": reason for key, reason in why.items()})
        steps.step("privacy (closest records)")
        reason = empty_part({"the synthetic table": synthetic, "the training part": train, "the test part": test})
        values, why = unavailable(PRIVACY_FIGURES, reason) if reason else \
            (privacy_figures(synthetic, train, test, schema), {})
    figures.update(values)
    reasons.update(why)
    return {**figures, "target": target, "unavailable": {key: reasons[key] for key in reasons if figures[key] is None},
            "notes": {key: reasons[key] for key in reasons if figures[key] is not None}}


def read_parts(synthetic_path: str, source: str, test_data: str | None, schema_path: str | None,
               target: str | None, max_rows: int) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, Schema, str]:
    """`ppsdg evaluate`'s table input: the synthetic table, the real parts read as a run reads --data and
    --test-data, the schema given or drafted from the training part, the target given or the schema's
    or the last column."""
    from ppsdg import data

    train, test = data.load_sets(source, test_data, target)
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
    return synthetic, train, test, schema, target
