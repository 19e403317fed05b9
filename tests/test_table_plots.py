"""The table's pictures: which columns and pairs they show, in which order, under which labels, and
that they are written as PNGs that grow with what they show."""
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.image import imread

from ppsdg import table_plots, tables


def schema_of(columns: list[dict]) -> tables.Schema:
    return tables.Schema.from_json({"columns": columns})


def codes_column(name: str, values: list[str]) -> dict:
    return {"name": name, "type": "categorical", "categories": values, "other": True}


def wide_tables(columns: int, rows: int = 400) -> tuple[pd.DataFrame, pd.DataFrame, tables.Schema]:
    """Real and synthetic tables of `columns` flags, column c of the synthetic one off by c/200 of its rows."""
    rng = np.random.default_rng(0)
    real = pd.DataFrame({f"c{index:02d}": rng.choice(["0", "1"], rows) for index in range(columns)})
    synthetic = real.copy()
    for index in range(columns):
        synthetic.iloc[:rows * index // 200, index] = "1"
        synthetic.iloc[rows * index // 200:rows * index // 100, index] = "0"
    schema = schema_of([codes_column(name, ["0", "1"]) for name in real.columns])
    return real, synthetic, schema


def panel_titles(figure) -> list[str]:
    return [ax.get_title().split("  (TVD")[0] for ax in figure.axes if ax.get_title()]


def test_a_narrow_table_shows_every_column_in_the_schemas_order():
    real, synthetic, schema = wide_tables(10)
    codes = [table_plots.table_evaluation.binned(frame, real, schema) for frame in (real, synthetic)]
    figure = table_plots.columns_figure(synthetic, real, schema, *codes)
    assert panel_titles(figure) == list(schema.names)
    assert figure.get_suptitle().startswith("Each column")


def test_a_wide_table_shows_the_columns_that_differ_most_largest_first_and_says_so():
    real, synthetic, schema = wide_tables(55)
    codes = [table_plots.table_evaluation.binned(frame, real, schema) for frame in (real, synthetic)]
    shown, tvds = table_plots.shown_columns(*codes)
    assert len(shown) == table_plots.MAX_PANELS and list(np.sort(tvds)[::-1][:len(shown)]) == list(tvds[shown])
    figure = table_plots.columns_figure(synthetic, real, schema, *codes)
    assert panel_titles(figure) == [schema.names[index] for index in shown]
    assert figure.get_suptitle().startswith(f"The {table_plots.MAX_PANELS} of 55 columns whose shares differ most")


def test_categories_read_in_the_schemas_order_and_the_others_by_value_not_as_text():
    column = tables.Column("code", "categorical", categories=("0", "1", "2", "10"), other=True)
    real = pd.Series(["10", "2", "1", "0", None, "12", "9", "x"])
    synthetic = pd.Series(["0", "100", "9"])
    labels = table_plots.code_labels(column, real, synthetic)
    assert list(labels.values()) == ["0", "1", "2", "10", "9", "12", "100", "x", "missing"]


def test_a_numeric_column_reads_as_its_bins_lower_edges_then_missing():
    column = tables.Column("income", "numeric", edges=(0.0, 1e6))
    labels = table_plots.code_labels(column, pd.Series(["0", "50000", None]), pd.Series(["1"]))
    assert list(labels.values()) == ["0", "5k", "10k", "15k", "20k", "25k", "30k", "35k", "40k", "45k", "missing"]


def test_a_date_column_reads_as_its_bins_first_days_in_its_format():
    column = tables.Column("visit", "date", date_format="%d/%m/%Y", granularity="day", edges=(18262.0, 18628.0))
    labels = table_plots.code_labels(column, pd.Series(["01/01/2020", "31/12/2020", None]), pd.Series(["05/05/2020"]))
    assert list(labels.values())[:3] == ["01/01/2020", "06/02/2020", "14/03/2020"] and labels[10] == "missing"


def test_a_column_of_many_values_keeps_the_largest_and_adds_up_the_others():
    values = [str(value) for value in range(40)]
    column = tables.Column("code", "categorical", categories=tuple(values))
    real = pd.Series(np.repeat(values, np.arange(40, 0, -1)))  # value v in 40 - v rows
    schema = tables.Schema((column,))
    codes = [table_plots.table_evaluation.binned(frame.to_frame("code"), real.to_frame("code"), schema)[:, 0]
             for frame in (real, real)]
    bars = table_plots.column_bars(column, real, real, *codes)
    assert len(bars.labels) == table_plots.MAX_BARS and bars.labels[-1] == "21 others"
    assert bars.labels[:-1] == values[:table_plots.MAX_BARS - 1]
    assert bars.real.sum() == pytest.approx(1) and (bars.real == bars.synthetic).all()


def test_cramers_v_is_one_for_a_copy_and_zero_for_independent_columns():
    a = np.repeat([0, 1, 2], 40)
    codes = np.stack([a, a, np.tile([0, 1], 60)], axis=1)
    v = table_plots.cramers_v(codes)
    assert v[0, 1] == pytest.approx(1) and v[0, 2] == 0 and v[1, 2] == 0
    assert (v.diagonal() == 1).all() and (v == v.T).all()


def test_the_dependence_of_a_narrow_table_is_real_beside_the_difference_and_of_a_wide_one_the_ranked_pairs():
    real, synthetic, schema = wide_tables(10)
    codes = [table_plots.table_evaluation.binned(frame, real, schema) for frame in (real, synthetic)]
    heatmaps = table_plots.dependence_figure(schema.names, *codes)
    assert [ax.get_title().split("\n")[0] for ax in heatmaps.axes[:2]] == ["real: Cramér's V", "synthetic minus real"]
    names = [f"n{index:02d}" for index in range(21)]
    wide_real, wide_synthetic = np.zeros((21, 21)), np.zeros((21, 21))
    wide_synthetic[3, 7] = wide_synthetic[7, 3] = 0.9
    wide_real[1, 2] = wide_real[2, 1] = 0.5
    ranked = table_plots.dependence_ranking(names, wide_real, wide_synthetic)
    labels = [label.get_text() for label in ranked.axes[0].get_yticklabels()]
    assert len(labels) == table_plots.MAX_PAIRS and labels[:2] == ["n03 × n07", "n01 × n02"]
    assert ranked.get_suptitle().startswith(f"The {table_plots.MAX_PAIRS} of 210 column pairs")


def test_plot_writes_both_pictures_and_a_wider_table_gets_a_taller_picture(tmp_path: Path):
    sizes = []
    for columns in (3, 10):
        real, synthetic, schema = wide_tables(columns)
        folder = tmp_path / str(columns)
        folder.mkdir()
        paths = table_plots.plot(synthetic, real, schema, folder)
        assert [path.name for path in paths] == [table_plots.COLUMNS_PLOT, table_plots.DEPENDENCE_PLOT]
        sizes.append([imread(path).shape[:2] for path in paths])
    assert sizes[1][0][0] > sizes[0][0][0] and sizes[1][1][0] > sizes[0][1][0]


def test_a_long_name_keeps_its_end():
    assert table_plots.shorten("measurement_with_long_name_04", 20) == "measureme…ng_name_04"
