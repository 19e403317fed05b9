"""SDV's `sdmetrics` quality and diagnostic reports of a synthetic table, as flat figures beside the
protocol's own (`ppsdg evaluate --sdmetrics`); the real side is the training part, as for the TVD.

sdmetrics needs pandas < 3, which the project does not pin, so it is an extra (`ppsdg[sdmetrics]`),
imported only when asked for. The reports are SDMetrics' own: their scores follow its releases, not
this project's protocol.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import pandas as pd

from ppsdg import progress, report
from ppsdg.errors import OptionsError
from ppsdg.table_evaluation import Figures, Reasons, empty_part, unavailable
from ppsdg.tables import CATEGORICAL, DATE, NUMERIC, Schema

MISSING = "--sdmetrics needs the sdmetrics extra: pip install 'ppsdg[sdmetrics]' (it needs pandas < 3)"
TABLE = "table"
# Each report's figures and the property each is; None: the report's overall score.
QUALITY = {"sdmetrics_quality": None, "sdmetrics_column_shapes": "Column Shapes",
           "sdmetrics_column_pair_trends": "Column Pair Trends"}
DIAGNOSTIC = {"sdmetrics_diagnostic": None, "sdmetrics_data_validity": "Data Validity",
              "sdmetrics_data_structure": "Data Structure"}
FIGURES = (*QUALITY, *DIAGNOSTIC)
NO_SCORE = "sdmetrics gave no score (NaN): none of its metrics of this property applied, or all failed"


def reports(synthetic: pd.DataFrame, real: pd.DataFrame, schema: Schema) -> tuple[Figures, Reasons]:
    """The reports' overall scores and their properties' (0 to 1, higher is better), and why a figure
    is None: strict JSON, never NaN. Both frames are read under the schema (`typed`), since sdmetrics
    scores numbers and dates only as such, and a table ppsdg reads holds text. A part without rows
    scores nothing (sdmetrics would give an empty table a quality of 0.5)."""
    try:
        from sdmetrics.reports import DiagnosticReport, QualityReport
    except ImportError as error:
        raise OptionsError(MISSING) from error
    empty = empty_part({"the synthetic table": synthetic, "the training part": real})
    if empty:
        return unavailable(FIGURES, empty)
    metadata = schema.to_sdv()
    # Dates arrive parsed (`typed`): sdmetrics would parse text itself, and give up on the whole
    # column at one cell that is not a date, where ppsdg counts that cell missing.
    for meta in metadata["columns"].values():
        meta.pop("datetime_format", None)
    names = list(metadata["columns"])
    real_part, synthetic_part = ({TABLE: typed(frame[names], schema)} for frame in (real, synthetic))
    figures: Figures = {}
    with progress.Steps("SDV's sdmetrics reports", 2) as steps:
        for name, measured, wanted in (("quality", QualityReport(), QUALITY),
                                       ("diagnostic", DiagnosticReport(), DIAGNOSTIC)):
            steps.step(name)
            measured.generate(real_part, synthetic_part, {"tables": {TABLE: metadata}}, verbose=False)
            properties = measured.get_properties()
            scores = dict(zip(properties["Property"], properties["Score"]))
            figures.update({figure: finite(measured.get_score() if prop is None else scores.get(prop))
                            for figure, prop in wanted.items()})
    return figures, {figure: NO_SCORE for figure, value in figures.items() if value is None}


def lines(figures: Mapping[str, Any]) -> list[report.Line]:
    """The reports' lines of `ppsdg evaluate`'s end block: each overall score with its properties."""
    why, shown = figures["unavailable"], report.shown
    return [report.figure("SDMetrics quality", figures["sdmetrics_quality"], "SDV's quality report: column shapes "
                          f"{shown(figures['sdmetrics_column_shapes'])}, pair trends "
                          f"{shown(figures['sdmetrics_column_pair_trends'])}; higher is better (1 identical)",
                          why.get("sdmetrics_quality")),
            report.figure("SDMetrics diagnostic", figures["sdmetrics_diagnostic"], "SDV's diagnostic report: data "
                          f"validity {shown(figures['sdmetrics_data_validity'])}, structure "
                          f"{shown(figures['sdmetrics_data_structure'])}; 1 is valid", why.get("sdmetrics_diagnostic"))]


def typed(frame: pd.DataFrame, schema: Schema) -> pd.DataFrame:
    """The columns as sdmetrics reads them: numbers as floats, dates as timestamps parsed in their
    format, categories as their text (as `tables.encode` compares them); NaN or NaT where a cell is
    missing or does not read, as the evaluation counts it (`table_evaluation.column_numbers`)."""
    columns: dict[str, Any] = {}
    for column in schema.fields:
        if column.name not in frame.columns:
            continue
        values = frame[column.name]
        if column.kind == NUMERIC:
            columns[column.name] = pd.to_numeric(values, errors="coerce").astype("float64")
        elif column.kind == DATE:
            text = values.astype(str).str.strip()
            columns[column.name] = pd.to_datetime(text, format=column.date_format, errors="coerce")
        elif column.kind == CATEGORICAL:
            columns[column.name] = values.astype(str).str.strip().where(values.notna())
        else:
            columns[column.name] = values
    return pd.DataFrame(columns, index=frame.index)


def finite(value: Any) -> float | None:
    """A score as a float, or None for NaN (or none at all)."""
    return None if value is None or math.isnan(float(value)) else float(value)
