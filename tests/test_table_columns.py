"""The columns of a data owner's export: flags and codes, identifiers, free text, empty columns, long
tails, drafted into a schema and back to synthetic values that the column can take."""
import json

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import main
from ppsdg import tables
from ppsdg.errors import DataError

ROWS = 400


def export(rows: int = ROWS, seed: int = 0) -> pd.DataFrame:
    """A registry's export as text, as `read_table` gives it: a sorted person number with two rows a
    person, a 0/1 flag, a constant, a two-valued term, a long-tailed amount, free text, an empty column."""
    rng = np.random.default_rng(seed)
    amount = np.round(np.exp(rng.normal(8, 1.5, rows)))
    amount[rng.random(rows) < 0.4] = 0
    return pd.DataFrame({
        "person": np.repeat(np.arange(1001, 1001 + rows // 2), 2).astype(str),
        "flag": rng.choice(["0", "1"], rows), "study": "1", "term": rng.choice(["36", "60"], rows),
        "amount": amount.astype(int).astype(str),
        "note": [f"free text {i} {rng.integers(10 ** 6)}" for i in range(rows)],
        "empty": pd.Series([None] * rows, dtype=object),
        "outcome": rng.choice(["ill", "well"], rows)}).astype({"empty": object})


def kinds(schema: tables.Schema) -> dict[str, str]:
    return {column.name: column.kind + ("/log" if column.scale == tables.LOG else "") for column in schema.fields}


def test_the_draft_gives_each_column_of_an_export_a_type_of_its_own():
    schema = tables.draft(export(), "outcome")
    assert kinds(schema) == {"person": "id", "flag": "categorical", "study": "categorical", "term": "categorical",
                             "amount": "numeric/log", "note": "ignore", "empty": "ignore", "outcome": "categorical"}
    assert schema.column("flag").categories == ("0", "1") and schema.column("study").categories == ("1",)
    assert schema.names == ("flag", "study", "term", "amount", "outcome")
    assert tables.Schema.from_text(schema.text()) == schema


def test_numbers_of_a_few_values_are_ordered_by_value_not_as_text():
    frame = pd.DataFrame({"grade": ["10", "2", "1", "10", "2"] * 10})
    assert tables.draft(frame).column("grade").categories == ("1", "2", "10")


@pytest.mark.parametrize("name, values, expected", [
    ("patient_id", [str(i % 30) for i in range(60)], "id"),
    ("ID", [str(i) for i in range(60)], "id"),
    ("code", [f"K{i:04d}" for i in range(60)], "id"),
    ("zper", [str(i) for i in np.repeat(np.arange(100, 140), 2)], "id"),
    ("rownumber", [str(i) for i in range(60)], "id"),
    ("paid", [str(i) for i in np.random.default_rng(1).permutation(60)], "numeric"),
    ("zper", [str(i) for i in np.tile(np.arange(100, 140), 2)], "numeric")])
def test_an_identifier_is_found_by_its_name_its_uniqueness_or_its_sorted_runs(name, values, expected):
    frame = pd.DataFrame({name: values, "y": ["a", "b"] * (len(values) // 2)})
    assert tables.draft(frame).fields[0].kind == expected


def test_the_owner_keeps_the_common_values_of_free_text_when_asked():
    frame = export()
    frame["job"] = [f"job {i % 150}" for i in range(ROWS)]
    schema = tables.draft(frame, "outcome", keep=["job"])
    assert schema.column("job").other and len(schema.column("job").categories) == tables.DRAFT_MAX_CATEGORIES
    with pytest.raises(DataError, match="--keep: nothing not a column"):
        tables.draft(frame, keep=["nothing"])


def test_the_draft_notes_what_it_left_out_and_whom_dp_protects():
    said = tables.notes(export(), tables.draft(export()))
    assert any("'note' is left out" in note for note in said)
    assert any("'person' is an identifier" in note and "200 of its 400 rows repeat an id" in note
               and "DP protects a row, not a person" in note for note in said)


def test_ppsdg_schema_prints_the_notes_and_a_schema_that_reads_back(tmp_path, capsys):
    export().to_csv(tmp_path / "export.csv", index=False)
    assert main.main(["schema", str(tmp_path / "export.csv"), "--target", "outcome"]) == 0
    out, err = capsys.readouterr()
    assert tables.Schema.from_json(json.loads(out)) == tables.draft(tables.read_table(tmp_path / "export.csv"), "outcome")
    assert "ppsdg: note: column 'note' is left out" in err


def test_a_unit_id_keeps_one_row_a_person_and_ids_and_ignored_columns_are_not_modelled():
    frame = export()
    schema = json.loads(tables.draft(frame, "outcome").text())
    schema["columns"][0]["unit"] = True
    schema = tables.Schema.from_json(schema)
    codes, mapped = tables.encode(frame, schema)
    assert codes.shape == (ROWS // 2, 5) and mapped["person"] == ROWS // 2
    decoded = tables.decode(codes, schema, np.random.default_rng(0))
    assert list(decoded.columns) == ["person", "flag", "study", "term", "amount", "outcome"]
    assert decoded["person"].tolist() == list(range(1, ROWS // 2 + 1))
    assert set(decoded["flag"]) <= {"0", "1"} and set(decoded["study"]) == {"1"} and set(decoded["term"]) <= {"36", "60"}


@pytest.mark.parametrize("schema, message", [
    ({"columns": [{"name": "a", "type": "id"}]}, "no column to model"),
    ({"columns": [{"name": "a", "type": "id", "unit": True}, {"name": "b", "type": "id", "unit": True},
                  {"name": "c", "type": "categorical", "categories": ["x"]}]}, "more than one 'unit'"),
    ({"columns": [{"name": "a", "type": "ignore", "missing": True}]}, "unknown key"),
    ({"columns": [{"name": "a", "type": "numeric", "edges": [0, 1], "scale": "cube"}]}, "'scale' must be"),
    ({"columns": [{"name": "a", "type": "numeric", "edges": [-1e30, 80], "integer": True}]}, r"within \+-2\^53"),
    ({"columns": [{"name": "a", "type": "id"}, {"name": "b", "type": "categorical", "categories": ["x"]}],
      "target": "a"}, "not a modelled column")])
def test_a_schema_of_the_new_types_that_cannot_be_used_is_refused_by_name(schema, message):
    with pytest.raises(tables.SchemaError, match=message):
        tables.Schema.from_json(schema)


def test_a_unit_id_without_a_value_is_refused_by_name():
    schema = tables.Schema.from_json({"columns": [{"name": "id", "type": "id", "unit": True},
                                                  {"name": "x", "type": "categorical", "categories": ["a"]}]})
    with pytest.raises(DataError, match="row 1, column 'id': expected an id"):
        tables.encode(pd.DataFrame({"id": ["1", None], "x": ["a", "a"]}), schema)


@st.composite
def numeric_columns(draw) -> tables.Column:
    edges = sorted(set(draw(st.lists(st.integers(0, 10 ** 6), min_size=2, max_size=12))))
    if len(edges) < 2:
        edges = [edges[0], edges[0] + 1]
    return tables.Column("x", tables.NUMERIC, edges=tuple(float(e) for e in edges), integer=draw(st.booleans()),
                         missing=False, scale=draw(st.sampled_from([tables.LINEAR, tables.LOG])))


@settings(max_examples=200, deadline=None)
@given(numeric_columns(), st.integers(0, 2 ** 32 - 1), st.booleans())
def test_a_decoded_number_lies_in_its_bin_and_is_whole_where_the_column_is(column, seed, fine):
    """No synthetic value outside what the column can take: inside its bin (the last one closed), so
    within the schema's bounds, and whole for an integer column; drawn uniformly or from a fine
    histogram of any weights (noise: some negative)."""
    rng = np.random.default_rng(seed)
    bins = rng.integers(0, len(column.edges) - 1, 500)
    weights = {0: rng.normal(size=column.fine_size)} if fine else None
    values = tables.decode(bins[:, None], tables.Schema((column,)), rng, weights)["x"].to_numpy(dtype=np.float64)
    edges = np.asarray(column.edges)
    low, high = edges[bins], edges[bins + 1]
    inside = (values >= np.ceil(low) if column.integer else values >= low) & (values <= high)
    last = bins == len(edges) - 2
    assert (inside & ((values < high) | last | (column.integer & (np.ceil(low) >= high)))).all()
    if column.integer:
        assert (values == np.round(values)).all()


@pytest.mark.parametrize("column", [
    tables.Column("n", tables.NUMERIC, edges=(0.0, 4.0, 9.0, 14.0, 45.0), integer=True),
    tables.Column("n", tables.NUMERIC, edges=(0.0, 1.0, 300.0, 250000.0), integer=True, scale=tables.LOG),
    tables.Column("n", tables.NUMERIC, edges=(6.6, 6.96, 10.2), missing=False)])
def test_a_fine_histogram_nests_in_the_bins_and_encodes_every_value_of_the_range(column):
    """Each fine cell lies inside one bin; a whole-number column of at most FINE_WHOLE values has a cell
    each, its top one too; the fine codes of the range's values are the cells that hold them."""
    fine, edges = column.fine_edges, np.asarray(column.edges)
    assert set(edges) <= set(fine) and (np.diff(fine) > 0).all()
    owner = column.fine_bins
    assert (edges[owner] <= fine[:-1]).all()
    assert ((fine[1:] <= edges[owner + 1]) | (owner == len(edges) - 2)).all()
    if column.integer and edges[-1] - edges[0] <= tables.FINE_WHOLE:
        assert list(fine) == list(range(int(edges[0]), int(edges[-1]) + 2))
    values = np.linspace(edges[0], edges[-1], 97).round() if column.integer else np.linspace(edges[0], edges[-1], 97)
    schema = tables.Schema((column,))
    codes = tables.encode(pd.DataFrame({"n": values}), schema, fine=True)[0]
    cells = codes[:, 1]
    assert (fine[cells] <= values).all() and ((values < fine[cells + 1]) | (values == edges[-1])).all()
    assert (column.fine_bins[cells] == codes[:, 0]).all()
    assert column.fine_size == len(fine) - 1 + column.missing


def test_decoding_from_the_fine_histogram_keeps_the_values_a_column_takes():
    """Ages recorded in even years (20, 22, ..., 98: 40 values, drafted as a number in bins of 7.8
    years), a fifth of them 30 and a fifth 60: drawn uniformly inside a bin about half the synthetic
    ages are odd and the two peaks are spread over their bins; drawn from the fine histogram none is
    odd and each age comes in its real share."""
    values = np.arange(20, 99, 2)
    shares = np.where(np.isin(values, [30, 60]), 0.2, 0.6 / 38)
    ages = pd.Series(np.random.default_rng(1).choice(values, 4000, p=shares)).astype(str)
    frame = pd.DataFrame({"age": ages})
    schema = tables.draft(frame)
    assert schema.column("age").kind == tables.NUMERIC and schema.column("age").integer
    codes = tables.encode(frame, schema, fine=True)[0]
    counts = {0: tables.marginal(codes, schema.shape + schema.fine_shape, (1,))}
    uniform = tables.decode(codes[:, :1], schema, np.random.default_rng(0))["age"].astype(int)
    fine = tables.decode(codes[:, :1], schema, np.random.default_rng(0), counts)["age"].astype(int)
    assert 0.4 < (uniform % 2 == 1).mean() < 0.6
    assert (fine % 2 == 0).all()
    real = ages.astype(int).value_counts(normalize=True)
    assert (fine.value_counts(normalize=True).reindex(real.index) - real).abs().max() < 0.01
    assert (uniform.value_counts(normalize=True).reindex(real.index, fill_value=0) - real).abs().max() > 0.1


def test_a_long_tail_decodes_near_its_real_median():
    """Log-spaced bins, decoded log-uniformly: the median of the synthetic amounts lies within a factor
    of two of the real one, where equal widths drawn uniformly put it near a bin's middle."""
    frame = export(4000)
    schema = tables.draft(frame, "outcome")
    codes, _ = tables.encode(frame, schema)
    decoded = tables.decode(codes, schema, np.random.default_rng(0))
    real = pd.to_numeric(frame["amount"])
    positive = decoded["amount"][decoded["amount"] > 0].astype(float)
    assert 0.5 < positive.median() / real[real > 0].median() < 2
    assert decoded["amount"].max() <= real.max() and (decoded["amount"] == 0).mean() == pytest.approx((real == 0).mean())


def test_sdv_metadata_is_a_schema_and_a_schema_is_sdv_metadata():
    """SDV's single-table metadata (`sdmetrics`, SDGym) read as a schema, with the domain it states as
    public: categories as written, numeric bounds cut in equal widths, ids; and written back alike."""
    metadata = {"METADATA_SPEC_VERSION": "SINGLE_TABLE_V1", "primary_key": "person", "columns": {
        "person": {"sdtype": "id"}, "flag": {"sdtype": "boolean", "range_values": ["0", "1"]},
        "grade": {"sdtype": "ordinal", "range_values": ["low", "high", "other"]},
        "amount": {"sdtype": "numerical", "computer_representation": "Int64", "range_min": 0, "range_max": 100},
        "score": {"sdtype": "numerical", "computer_representation": "Float", "range_min": -1.5, "range_max": 1.5}}}
    schema = tables.Schema.from_json(metadata)
    assert kinds(schema) == {"person": "id", "flag": "categorical", "grade": "categorical", "amount": "numeric",
                             "score": "numeric"}
    assert schema.column("grade").categories == ("low", "high") and schema.column("grade").other
    step = 100 // tables.DRAFT_BINS
    assert schema.column("amount").integer and schema.column("amount").edges == tuple(float(e) for e in range(0, 101, step))
    assert len(schema.column("score").edges) == tables.DRAFT_BINS + 1 and not schema.column("score").integer
    again = schema.to_sdv()
    assert again["primary_key"] == "person" and again["columns"]["grade"]["range_values"] == ["low", "high", "other"]
    assert tables.Schema.from_json(again) == schema
    assert tables.Schema.from_json({"tables": {"loans": metadata}}) == schema


@pytest.mark.parametrize("column, message", [
    ({"sdtype": "categorical"}, "needs its public 'range_values'"),
    ({"sdtype": "numerical", "range_min": 3}, "needs its public 'range_min' < 'range_max'"),
    ({"sdtype": "datetime", "datetime_format": "%Y-%m-%d"}, "needs its 'datetime_format' and its public"),
    ({"sdtype": "datetime", "datetime_format": "%Y-%m-%d", "range_min": "2020-02-30", "range_max": "2021-01-01"},
     "'range_min' < 'range_max' must be dates"),
    ({"sdtype": "email"}, "SDV sdtype 'email' is not one ppsdg reads")])
def test_sdv_metadata_without_a_public_domain_is_refused_by_name(column, message):
    with pytest.raises(tables.SchemaError, match=f"column 'x': .*{message}"):
        tables.Schema.from_json({"columns": {"x": column, "y": {"sdtype": "categorical", "range_values": ["a"]}}})


def admissions(rows: int = 300) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    days = pd.Timestamp("2015-01-01") + pd.to_timedelta(rng.integers(0, 2000, rows), unit="D")
    frame = pd.DataFrame({"admitted": days.strftime("%d/%m/%Y"), "month": days.strftime("%b-%Y"),
                          "ward": rng.choice(["a", "b"], rows)}).astype(object)
    frame.loc[3, "admitted"] = None
    return frame


def test_dates_are_drafted_with_their_format_and_decoded_back_into_it_within_their_bounds():
    frame = admissions()
    schema = tables.Schema.from_text(tables.draft(frame).text())
    admitted, month = schema.column("admitted"), schema.column("month")
    assert (admitted.kind, admitted.date_format, admitted.granularity) == ("date", "%d/%m/%Y", "day")
    assert (month.kind, month.date_format, month.granularity) == ("date", "%b-%Y", "month")
    codes, _ = tables.encode(frame, schema)
    decoded = tables.decode(codes, schema, np.random.default_rng(0))
    for name in ("admitted", "month"):
        form = schema.column(name).date_format
        real, synthetic = (pd.to_datetime(f[name], format=form) for f in (frame, decoded))
        assert synthetic.min() >= real.min() and synthetic.max() <= real.max()
        assert (synthetic.isna() == real.isna()).all()
        written = decoded[name].dropna()
        assert (pd.to_datetime(written, format=form).dt.strftime(form) == written).all()
    assert abs(pd.to_datetime(decoded["admitted"], format="%d/%m/%Y").mean()
               - pd.to_datetime(frame["admitted"], format="%d/%m/%Y").mean()) < pd.Timedelta(days=60)
    metadata = schema.to_sdv()["columns"]["admitted"]
    assert metadata == {"sdtype": "datetime", "datetime_format": "%d/%m/%Y", "range_min": admitted.to_json()["edges"][0],
                        "range_max": admitted.to_json()["edges"][-1]}


@pytest.mark.parametrize("entry, message", [
    ({"format": "%Y", "granularity": "week", "edges": ["2000", "2001"]}, "a 'granularity' of"),
    ({"format": "%Y-%m-%d", "edges": ["2001-01-01", "2000-01-01"]}, "must be increasing dates"),
    ({"format": "%Y-%m-%d", "edges": [2000, 2001]}, "'edges' must be 2 to")])
def test_a_date_column_that_cannot_be_read_is_refused_by_name(entry, message):
    with pytest.raises(tables.SchemaError, match=f"column 'd': .*{message}"):
        tables.Schema.from_json({"columns": [{"name": "d", "type": "date", **entry}]})


def test_a_cell_that_is_not_a_date_in_the_format_is_named_without_its_value():
    schema = tables.Schema.from_json({"columns": [{"name": "d", "type": "date", "format": "%Y-%m-%d",
                                                   "edges": ["2000-01-01", "2001-01-01"]}]})
    with pytest.raises(DataError, match=r"row 1, column 'd': expected a date in '%Y-%m-%d'") as refused:
        tables.encode(pd.DataFrame({"d": ["2000-05-05", "05/05/2000"]}), schema)
    assert "05/05" not in str(refused.value)
