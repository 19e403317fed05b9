"""The pictures of a synthetic table against the real training part, legible at 10 columns and at 100.

- columns.png: each column's shares of rows on the evaluation's bins (`table_evaluation.binned`),
  real beside synthetic, one panel per column titled by its name and its 1-way TVD; a categorical
  column's bars labelled by their values in the schema's order (a value the schema lacks after them,
  numbers by value), a numeric one's by the lower edges of its bins, missing last. Beyond MAX_PANELS
  columns the panels are the MAX_PANELS columns that differ most, largest TVD first.
- dependence.png: how strongly each pair of columns depends (Cramér's V on the same bins): up to
  MAX_HEATMAP columns the real pairs beside synthetic minus real, as two heatmaps; beyond, the
  MAX_PAIRS pairs whose dependence differs most, real beside synthetic.

A figure grows with what it shows and its fonts stay FONT points, so that a label never shrinks below
reading size. Figures are drawn without pyplot (Agg through Figure.savefig): no global state.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from ppsdg import progress, table_evaluation, tables
from ppsdg.tables import CATEGORICAL, DATE, Column, Schema

COLUMNS_PLOT = "columns.png"
DEPENDENCE_PLOT = "dependence.png"
MEANINGS = {COLUMNS_PLOT: "each column's shares, real beside synthetic; the closer the bars, the better",
            DEPENDENCE_PLOT: "how strongly pairs of columns depend, real beside synthetic; the smaller the gap, "
                             "the better"}
MAX_PANELS = 24
MAX_BARS = 20
MAX_HEATMAP = 20
MAX_PAIRS = 30
ANNOTATED_HEATMAP = 12
ACROSS = 4
FONT = 8
DPI = 100
LABEL_CHARS = 14
NAME_CHARS = 36
MISSING = "missing"
REAL, SYNTHETIC = "real (training part)", "synthetic"
COLOURS = {REAL: "tab:blue", SYNTHETIC: "tab:orange"}


@dataclass
class Bars:
    """One column's panel: a label and the real and synthetic share of rows for each bar, in order."""

    labels: list[str]
    real: np.ndarray
    synthetic: np.ndarray


def plot(synthetic: pd.DataFrame, train: pd.DataFrame, schema: Schema, directory: Path) -> list[Path]:
    """Write COLUMNS_PLOT and DEPENDENCE_PLOT into `directory` (55 columns: 3 s, under a bar); return their
    paths."""
    real_codes = table_evaluation.binned(train, train, schema)
    synthetic_codes = table_evaluation.binned(synthetic, train, schema)
    paths = [Path(directory) / COLUMNS_PLOT, Path(directory) / DEPENDENCE_PLOT]
    with progress.Steps("drawing the pictures", 2) as steps:
        steps.step(COLUMNS_PLOT)
        columns_figure(synthetic, train, schema, real_codes, synthetic_codes).savefig(paths[0], dpi=DPI)
        steps.step(DEPENDENCE_PLOT)
        dependence_figure(list(schema.names), real_codes, synthetic_codes).savefig(paths[1], dpi=DPI)
    return paths


def shown_columns(real_codes: np.ndarray, synthetic_codes: np.ndarray) -> tuple[list[int], np.ndarray]:
    """The columns with a panel, and every column's 1-way TVD: all of them in the schema's order, or
    beyond MAX_PANELS those that differ most, largest first (a reader looks for what went wrong)."""
    tvds = table_evaluation.marginal_tvds(real_codes, synthetic_codes, 1)
    if len(tvds) <= MAX_PANELS:
        return list(range(len(tvds))), tvds
    return [int(index) for index in np.argsort(-tvds, kind="stable")[:MAX_PANELS]], tvds


def columns_figure(synthetic: pd.DataFrame, train: pd.DataFrame, schema: Schema, real_codes: np.ndarray,
                   synthetic_codes: np.ndarray) -> Figure:
    """One panel per shown column (`shown_columns`), ACROSS a row."""
    shown, tvds = shown_columns(real_codes, synthetic_codes)
    across = min(len(shown), ACROSS)
    down = -(-len(shown) // across)
    figure = Figure(figsize=(4.2 * across, 3.2 * down + 0.8), layout="constrained")
    axes = figure.subplots(down, across, squeeze=False).ravel()
    for ax, index in zip(axes, shown):
        column = schema.columns[index]
        draw_bars(ax, column_bars(column, train[column.name], synthetic[column.name], real_codes[:, index],
                                  synthetic_codes[:, index]))
        ax.set_title(f"{shorten(column.name, NAME_CHARS)}  (TVD {tvds[index]:.3f})", fontsize=FONT + 1)
        if column.kind != CATEGORICAL:
            ax.set_xlabel("bins, by their lower edge", fontsize=FONT)
    for ax in axes[len(shown):]:
        ax.axis("off")
    figure.legend(handles=[Patch(color=COLOURS[label], label=label) for label in (REAL, SYNTHETIC)],
                  loc="outside upper right", ncols=2, fontsize=FONT + 1)
    count = len(schema.columns)
    figure.suptitle(f"The {len(shown)} of {count} columns whose shares differ most (largest 1-way TVD first)"
                    if len(shown) < count else "Each column: the share of rows in each value or bin (TVD: 0 is "
                    "identical, 1 disjoint)",
                    fontsize=FONT + 3, x=0.01, ha="left")
    return figure


def column_bars(column: Column, real: pd.Series, synthetic: pd.Series, real_codes: np.ndarray,
                synthetic_codes: np.ndarray) -> Bars:
    """A column's bars in reading order (`code_labels`), at most MAX_BARS: where there are more, the
    largest and one bar for the others together, so that the shares still sum to one."""
    labels = code_labels(column, real, synthetic)
    real_shares = np.bincount(real_codes, minlength=max(labels) + 1) / max(len(real_codes), 1)
    synthetic_shares = np.bincount(synthetic_codes, minlength=max(labels) + 1) / max(len(synthetic_codes), 1)
    order = [code for code in labels if real_shares[code] or synthetic_shares[code]]
    if len(order) > MAX_BARS:
        largest = set(sorted(order, key=lambda code: -max(real_shares[code], synthetic_shares[code]))[:MAX_BARS - 1])
        rest = [code for code in order if code not in largest]
        order = [code for code in order if code in largest]
        return Bars([labels[code] for code in order] + [f"{len(rest)} others"],
                    np.append(real_shares[order], real_shares[rest].sum()),
                    np.append(synthetic_shares[order], synthetic_shares[rest].sum()))
    return Bars([labels[code] for code in order], real_shares[order], synthetic_shares[order])


def code_labels(column: Column, real: pd.Series, synthetic: pd.Series) -> dict[int, str]:
    """Each evaluation code's label, in reading order: a numeric column's bins by their lower edges
    (a date's as a date), a categorical column's values in the schema's order, then those it lacks
    (numbers by value, then text), then missing."""
    if column.kind != CATEGORICAL:
        edges = table_evaluation.evaluation_edges(table_evaluation.column_numbers(real, column))[:-1]
        texts = tables.format_periods(np.floor(edges), column) if column.kind == DATE else map(short_number, edges)
        return {**dict(enumerate(texts)), table_evaluation.EVALUATION_BINS: MISSING}
    lookup = table_evaluation.category_lookup(synthetic, real)
    place = {category: rank for rank, category in enumerate(column.categories)}
    ordered = sorted(lookup, key=lambda text: (place.get(text, len(place)), number_or_inf(text), text))
    return {**{lookup[text]: text for text in ordered}, table_evaluation.missing_category(real): MISSING}


def number_or_inf(text: str) -> float:
    """A value's number, for ordering codes by value; text that is not a number comes after them."""
    try:
        number = float(text)
    except ValueError:
        return np.inf
    return number if np.isfinite(number) else np.inf


def short_number(value: float) -> str:
    """A bin's edge in a few characters: three significant digits, thousands as k, millions as M."""
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= scale:
            return f"{value / scale:.3g}{suffix}"
    return f"{value:.3g}"


def shorten(text: str, limit: int) -> str:
    """`text` in at most `limit` characters, cut in the middle: columns named alike differ at their ends."""
    if len(text) <= limit:
        return text
    head = (limit - 1) // 2
    return text[:head] + "…" + text[len(text) - (limit - 1 - head):]


def draw_bars(ax: Axes, bars: Bars) -> None:
    """Real and synthetic side by side at each label, the labels slanted to read at any count."""
    places = np.arange(len(bars.labels))
    ax.bar(places - 0.2, bars.real, width=0.4, color=COLOURS[REAL])
    ax.bar(places + 0.2, bars.synthetic, width=0.4, color=COLOURS[SYNTHETIC])
    ax.set_xticks(places, [shorten(label, LABEL_CHARS) for label in bars.labels], rotation=40, ha="right",
                  rotation_mode="anchor", fontsize=FONT)
    ax.tick_params(axis="y", labelsize=FONT)
    ax.set_ylabel("share of rows", fontsize=FONT)


def cramers_v(codes: np.ndarray) -> np.ndarray:
    """Pairwise Cramér's V of the columns of `codes` (1 on the diagonal), bias-corrected (Bergsma 2013):
    near 0 for independent columns whatever their values and rows (plain V gives two independent
    columns of 11 and 4 values over 600 rows 0.1), 1 where one column decides the other."""
    count = codes.shape[1]
    result = np.eye(count)
    sizes = codes.max(axis=0) + 1 if len(codes) else np.ones(count, dtype=np.int64)
    for a, b in itertools.combinations(range(count), 2):
        table = tables.marginal(codes, sizes, (a, b)).reshape(int(sizes[a]), int(sizes[b]))
        result[a, b] = result[b, a] = corrected_v(table)
    return result


def corrected_v(table: np.ndarray) -> float:
    """Bergsma's bias-corrected Cramér's V of a contingency table (0 where it has a single row or column
    of counts, or too few counts to correct)."""
    table = table[table.sum(1) > 0][:, table.sum(0) > 0].astype(np.float64)
    total = table.sum()
    if min(table.shape) < 2 or total < 2:
        return 0.0
    expected = table.sum(1, keepdims=True) * table.sum(0, keepdims=True) / total
    rows, columns = table.shape
    phi2 = max(0.0, ((table - expected) ** 2 / expected).sum() / total - (rows - 1) * (columns - 1) / (total - 1))
    scale = min(rows - (rows - 1) ** 2 / (total - 1), columns - (columns - 1) ** 2 / (total - 1)) - 1
    return float(min(1.0, np.sqrt(phi2 / scale))) if scale > 0 else 0.0


def dependence_figure(names: list[str], real_codes: np.ndarray, synthetic_codes: np.ndarray) -> Figure:
    """Heatmaps up to MAX_HEATMAP columns, the ranked pairs beyond."""
    real, synthetic = cramers_v(real_codes), cramers_v(synthetic_codes)
    if len(names) <= MAX_HEATMAP:
        return dependence_heatmaps(names, real, synthetic)
    return dependence_ranking(names, real, synthetic)


def dependence_heatmaps(names: list[str], real: np.ndarray, synthetic: np.ndarray) -> Figure:
    """The real pairs' V beside synthetic minus real, a cell per pair, its value written where it fits."""
    count = len(names)
    side = max(2.5, 0.42 * count)
    figure = Figure(figsize=(2 * side + 5.5, side + 2.8), layout="constrained")
    left, right = figure.subplots(1, 2)
    off_diagonal = ~np.eye(count, dtype=bool)
    panels = ((left, np.where(off_diagonal, real, np.nan), "Blues", (0, 1), "real: Cramér's V\n"
               "(0: independent, 1: one column decides the other)"),
              (right, np.where(off_diagonal, synthetic - real, np.nan), "RdBu_r", (-0.5, 0.5),
               "synthetic minus real\n(0 is right; red: stronger than real, blue: weaker)"))
    for ax, matrix, colours, (low, high), title in panels:
        image = ax.imshow(matrix, cmap=colours, vmin=low, vmax=high)
        labels = [shorten(name, NAME_CHARS) for name in names]
        ax.set_xticks(range(count), labels, rotation=90, fontsize=FONT)
        ax.set_yticks(range(count), labels, fontsize=FONT)
        ax.set_title(title, fontsize=FONT + 1)
        figure.colorbar(image, ax=ax, shrink=0.8).ax.tick_params(labelsize=FONT)
        if count <= ANNOTATED_HEATMAP:
            write_values(ax, matrix)
    figure.suptitle("How strongly each pair of columns depends (bias-corrected Cramér's V on the evaluation's bins)",
                    fontsize=FONT + 3, x=0.01, ha="left")
    return figure


def write_values(ax: Axes, matrix: np.ndarray) -> None:
    """Each cell's value in it, two decimals, where the cell is large enough to hold them."""
    for (row, column), value in np.ndenumerate(matrix):
        if np.isfinite(value):
            ax.text(column, row, f"{value:.2f}", ha="center", va="center", fontsize=FONT - 1,
                    color="white" if abs(value) > 0.6 else "black")


def ranked_pairs(real: np.ndarray, synthetic: np.ndarray) -> list[tuple[int, int]]:
    """The MAX_PAIRS pairs whose V differs most between real and synthetic, largest first."""
    pairs = list(itertools.combinations(range(len(real)), 2))
    gaps = np.array([abs(synthetic[pair] - real[pair]) for pair in pairs])
    return [pairs[index] for index in np.argsort(-gaps, kind="stable")[:MAX_PAIRS]]


def dependence_ranking(names: list[str], real: np.ndarray, synthetic: np.ndarray) -> Figure:
    """The pairs of `ranked_pairs`, real beside synthetic, with the difference written at each."""
    pairs = ranked_pairs(real, synthetic)
    figure = Figure(figsize=(10, 0.34 * len(pairs) + 1.8), layout="constrained")
    ax = figure.subplots()
    places = np.arange(len(pairs))
    for offset, matrix, label in ((-0.2, real, REAL), (0.2, synthetic, SYNTHETIC)):
        ax.barh(places + offset, [matrix[pair] for pair in pairs], height=0.4, color=COLOURS[label], label=label)
    for place, pair in zip(places, pairs):
        ax.text(max(real[pair], synthetic[pair]) + 0.01, place, f"{synthetic[pair] - real[pair]:+.2f}",
                va="center", fontsize=FONT)
    ax.set_yticks(places, [f"{shorten(names[a], NAME_CHARS)} × {shorten(names[b], NAME_CHARS)}" for a, b in pairs],
                  fontsize=FONT)
    ax.invert_yaxis()
    ax.set_xlim(0, min(1.0, max(max(real[pair], synthetic[pair]) for pair in pairs)) + 0.12)
    ax.set_xlabel("Cramér's V (0: independent, 1: one column decides the other); synthetic minus real at each pair",
                  fontsize=FONT)
    ax.tick_params(axis="x", labelsize=FONT)
    ax.legend(fontsize=FONT + 1, loc="lower right")
    figure.suptitle(f"The {len(pairs)} of {len(real) * (len(real) - 1) // 2:,} column pairs whose dependence differs "
                    "most, real beside synthetic", fontsize=FONT + 3, x=0.01, ha="left")
    return figure
