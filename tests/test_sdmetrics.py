"""`ppsdg evaluate --sdmetrics`: SDV's reports where the extra is installed, and a clear refusal where it is
not (the project's own environment, pandas 3), which costs the default evaluation nothing."""
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import main
from ppsdg import sdmetrics_reports, tables

EXTRA_MISSING = ("ppsdg: error: --sdmetrics needs the sdmetrics extra: pip install 'ppsdg[sdmetrics]' (it needs "
                 "pandas < 3)")


def strict_json(text: str) -> dict:
    """JSON as a strict parser reads it: NaN and Infinity are refused."""
    def refuse(constant: str):
        raise ValueError(f"{constant} is not JSON")

    return json.loads(text, parse_constant=refuse)


def evaluate(synthetic: Path, table_files: dict[str, Path], *options: str) -> list[str]:
    """`ppsdg evaluate` of a synthetic table against the fixture's part `a` (the training part) and its
    test table, under its schema."""
    return ["evaluate", str(synthetic), "--data", str(table_files["a"]), "--test-data", str(table_files["test"]),
            "--schema", str(table_files["schema"]), *options]


def test_without_the_extra_sdmetrics_is_refused_by_name_and_the_evaluation_is_unchanged(table_files, small_csv,
                                                                                          monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "sdmetrics", None)  # an import of it fails, as where it is not installed
    monkeypatch.setitem(sys.modules, "sdmetrics.reports", None)
    assert main.main(evaluate(table_files["a"], table_files, "--sdmetrics")) == 2
    said = capsys.readouterr()
    assert said.out == "" and said.err.strip() == EXTRA_MISSING
    assert main.main(evaluate(table_files["a"], table_files)) == 0
    figures = strict_json(capsys.readouterr().out)
    assert figures["tvd_1way"] == 0 and not any(key.startswith("sdmetrics") for key in figures)
    assert main.main(["evaluate", str(small_csv), "--data", str(small_csv), "--sdmetrics"]) == 2
    assert capsys.readouterr().err.strip() == (f"ppsdg: error: --sdmetrics scores a table, and --data {small_csv} "
                                               "holds images")


def test_sdmetrics_scores_a_copy_of_the_training_part_high_and_its_columns_shuffled_apart_lower(table_files,
                                                                                                 tmp_path, capsys):
    pytest.importorskip("sdmetrics")
    train = tables.read_table(table_files["a"])
    rng = np.random.default_rng(0)
    shuffled = train.apply(lambda column: rng.permutation(column.to_numpy()))
    shuffled.to_csv(tmp_path / "shuffled.csv", index=False)
    scores = {}
    for name, synthetic in (("identical", table_files["a"]), ("shuffled", tmp_path / "shuffled.csv")):
        assert main.main(evaluate(synthetic, table_files, "--sdmetrics")) == 0
        said = capsys.readouterr()
        figures = strict_json(said.out)
        scores[name] = {key: figures[key] for key in sdmetrics_reports.FIGURES}
        assert all(isinstance(value, float) and 0 <= value <= 1 for value in scores[name].values()), scores[name]
        assert f"  SDMetrics quality     {figures['sdmetrics_quality']:.4f}  SDV's quality report" in said.err
    identical, apart = scores["identical"], scores["shuffled"]
    assert identical["sdmetrics_quality"] > 0.9 and identical["sdmetrics_diagnostic"] == 1
    assert apart["sdmetrics_column_pair_trends"] < identical["sdmetrics_column_pair_trends"]
    assert apart["sdmetrics_column_shapes"] == pytest.approx(identical["sdmetrics_column_shapes"])


def test_sdmetrics_reads_text_cells_under_the_schema_and_scores_no_empty_table():
    pytest.importorskip("sdmetrics")
    schema = tables.Schema.from_json({"columns": [
        {"name": "id", "type": "id"},
        {"name": "size", "type": "numeric", "edges": [0.0, 10.0]},
        {"name": "visit", "type": "date", "format": "%d/%m/%Y", "edges": ["01/01/2020", "31/12/2020"]},
        {"name": "shade", "type": "categorical", "categories": ["dark", "light"], "other": True},
        {"name": "note", "type": "ignore"}]})
    real = pd.DataFrame({"id": ["a", "b", "c", "d"], "size": ["1", "2.5", None, "9"],
                         "visit": ["01/01/2020", "15/06/2020", "31/12/2020", None],
                         "shade": ["dark", " light", "dark", None], "note": ["free text"] * 4})
    typed = sdmetrics_reports.typed(real, schema)
    assert typed["size"].tolist()[:2] == [1.0, 2.5] and typed["size"].isna().tolist() == [False, False, True, False]
    assert typed["visit"].iloc[1] == pd.Timestamp("2020-06-15") and typed["visit"].isna().iloc[3]
    assert typed["shade"].tolist()[:3] == ["dark", "light", "dark"] and typed["shade"].isna().iloc[3]
    garbled = real.assign(size=["x", "2", "3", "4"], visit=["not a date", "01/02/2020", "01/03/2020", "01/04/2020"])
    figures, reasons = sdmetrics_reports.reports(garbled, real, schema)
    assert all(value is None or 0 <= value <= 1 for value in figures.values()) and set(reasons) <= set(figures)
    figures, reasons = sdmetrics_reports.reports(real.iloc[:0], real, schema)
    assert figures == dict.fromkeys(sdmetrics_reports.FIGURES)
    assert set(reasons.values()) == {"the synthetic table has no rows"}
