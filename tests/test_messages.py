"""A data owner's first hour (issue 30): each mistake gets one line that names it and its fix, before
any worker starts; the `ppsdg` command lists its commands; the help says what the defaults do; the end
of a run says what each figure means."""
import gzip
import io
import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

import main
import train
from ppsdg import data, output, parser, report, table_evaluation, table_plots, tables
from ppsdg.checkpoint import Checkpoint
from ppsdg.errors import DataError, PpsdgError
from ppsdg.job import Job

ROWS = 40


def people(rows: int = ROWS) -> pd.DataFrame:
    """A small table of text cells, as read_table gives them: 'sex' is F on even rows, M on odd ones."""
    return pd.DataFrame({"age": [str(20 + i * 7 % 45) for i in range(rows)], "sex": ["F", "M"] * (rows // 2),
                         "outcome": ["ill", "well", "well", "well"] * (rows // 4)})


@pytest.fixture()
def files(tmp_path) -> dict[str, Path]:
    """The table as a comma CSV, Excel's European CSV (semicolons), a folder of two CSVs, an Excel
    workbook, and two schemas: one drafted from it, one that lists only the category F of 'sex'."""
    frame = people()
    paths = {"csv": tmp_path / "people.csv", "semicolon": tmp_path / "semicolon.csv",
             "folder": tmp_path / "sites", "xlsx": tmp_path / "people.xlsx", "schema": tmp_path / "schema.json",
             "only_f": tmp_path / "only_f.json"}
    frame.to_csv(paths["csv"], index=False)
    frame.to_csv(paths["semicolon"], sep=";", index=False)
    paths["folder"].mkdir()
    frame.iloc[:20].to_csv(paths["folder"] / "a.csv", index=False)
    frame.iloc[20:].to_csv(paths["folder"] / "b.csv", index=False)
    frame.to_excel(paths["xlsx"], index=False)
    schema = tables.draft(frame, "outcome")
    paths["schema"].write_text(schema.text())
    only_f = json.loads(schema.text())
    next(column for column in only_f["columns"] if column["name"] == "sex")["categories"] = ["F"]
    paths["only_f"].write_text(json.dumps(only_f))
    return paths


def error_of(argv: list[str], capsys, output: Path) -> str:
    """The one line main.main prints for a mistake (it must print no other)."""
    assert main.main([*argv, "--output", str(output)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ppsdg: error: "), lines
    return lines[0]


@pytest.fixture()
def no_launch(monkeypatch):
    """A launch fails the test: the mistakes below must be named before any worker process starts."""
    def launch(config) -> int:
        raise AssertionError("the run was launched")

    monkeypatch.setattr(main, "launch_gloo", launch)
    monkeypatch.setattr(main, "launch_vantage6", launch)


# 1. Mistakes get their own explanation.

def test_a_semicolon_separated_csv_reads_as_the_comma_one(files, tmp_path):
    pd.testing.assert_frame_equal(tables.read_table(files["semicolon"]), tables.read_table(files["csv"]))
    tabbed = tmp_path / "people.tsv.gz"
    with gzip.open(tabbed, "wt") as handle:
        people().to_csv(handle, sep="\t", index=False)
    pd.testing.assert_frame_equal(tables.read_table(tabbed), tables.read_table(files["csv"]))


def test_a_semicolon_separated_csv_drafts_its_columns(files, capsys):
    assert main.main(["schema", str(files["semicolon"]), "--target", "outcome"]) == 0
    schema = tables.Schema.from_text(capsys.readouterr().out)
    assert schema.names == ("age", "sex", "outcome") and schema.target == "outcome"


def test_a_separator_in_quotes_or_text_is_not_taken_for_the_files(tmp_path):
    path = tmp_path / "quoted.csv"
    path.write_text('name,"note; with semicolons",kind\na;b,"x;y;z",1\nc;d,"u;v;w",2\n')
    assert tables.csv_separator(path) == ","
    assert list(tables.read_table(path).columns) == ["name", "note; with semicolons", "kind"]


def test_a_missing_data_file_is_named_as_missing(files, tmp_path, capsys, no_launch):
    line = error_of(["--data", str(tmp_path / "nope.csv"), "--schema", str(files["schema"])], capsys, tmp_path / "o")
    assert line == f"ppsdg: error: --data {tmp_path / 'nope.csv'}: no such file or folder"
    line = error_of(["--data", str(files["csv"]), "--schema", str(tmp_path / "x.json")], capsys, tmp_path / "o")
    assert line == f"ppsdg: error: --schema {tmp_path / 'x.json'}: no such file"
    line = error_of(["--data", str(files["csv"]), "--test-data", str(tmp_path / "test.csv")], capsys, tmp_path / "o")
    assert line == f"ppsdg: error: --test-data {tmp_path / 'test.csv'}: no such file"


def test_a_folder_of_csvs_is_refused_with_the_data_that_names_its_files(files, tmp_path, capsys, no_launch):
    folder = files["folder"]
    line = error_of(["--data", str(folder), "--target", "outcome"], capsys, tmp_path / "o")
    assert line == (f"ppsdg: error: --data {folder} is a folder of 2 table file(s), not a table: name the workers' "
                    f"files, one per worker, comma-separated: --data {folder / 'a.csv'},{folder / 'b.csv'}")
    assert main.main(["schema", str(folder)]) == 2
    assert capsys.readouterr().err == f"ppsdg: error: {folder} is a folder, not a table: name one of its files\n"


def test_a_folder_without_images_or_tables_is_not_taken_for_images(tmp_path, capsys, no_launch):
    (tmp_path / "empty").mkdir()
    line = error_of(["--data", str(tmp_path / "empty"), "--target", "outcome"], capsys, tmp_path / "o")
    assert "is a folder without MNIST IDX files" in line and "or tables: name a table file" in line


def test_an_excel_workbook_is_read_and_another_format_refused_naming_those_read(files, tmp_path, capsys,
                                                                                 no_launch):
    pd.testing.assert_frame_equal(tables.read_table(files["xlsx"]), tables.read_table(files["csv"]))
    assert main.main(["schema", str(files["xlsx"]), "--target", "outcome"]) == 0
    assert tables.Schema.from_text(capsys.readouterr().out).names == ("age", "sex", "outcome")
    notes = tmp_path / "people.txt"
    notes.write_text("age,sex\n")
    line = error_of(["--data", str(notes), "--target", "outcome"], capsys, tmp_path / "o")
    assert line.startswith(f"ppsdg: error: --data {notes}: not a file ppsdg reads: a table is CSV (.csv or .tsv")
    assert "Excel (.xlsx or .xls, the first sheet) or Parquet (.parquet)" in line
    assert main.main(["schema", str(notes)]) == 2
    assert "not a table file ppsdg reads: CSV" in capsys.readouterr().err


def test_a_wrong_target_names_the_columns_there_are(files, tmp_path, capsys, no_launch):
    line = error_of(["--data", str(files["xlsx"]), "--target", "status"], capsys, tmp_path / "o")
    assert line == (f"ppsdg: error: --target 'status' is not a column of {files['xlsx']} (its columns: age, sex, "
                    "outcome)")
    line = error_of(["--data", str(files["csv"]), "--schema", str(files["schema"]), "--target", "status"], capsys,
                    tmp_path / "o")
    assert line == ("ppsdg: error: --target 'status' is not a modelled column of the schema (its columns: age, sex, "
                    "outcome)")


def test_a_target_with_a_value_a_row_says_why_nothing_is_held_out(files, tmp_path, capsys, no_launch):
    line = error_of(["--data", str(files["csv"]), "--target", "age"], capsys, tmp_path / "o")
    assert line.endswith("no row is held out for the test part: the 20% holdout takes none of a target value on "
                         "fewer than 3 rows, and every value of --target 'age' is: give --test-data, or a --target of "
                         "fewer values")


def test_a_csv_that_is_not_utf8_says_how_to_save_it(tmp_path):
    path = tmp_path / "latin.csv"
    path.write_bytes("name,town\nb\xe9a,k\xf6ln\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"latin.csv: not UTF-8 text: save it as CSV in UTF-8 \(Excel: 'CSV UTF-8'\)"):
        tables.read_table(path)


# 2 and 3. A row that does not fit the schema: one line, before any worker starts, by the file's numbering.

def test_a_category_the_schema_lacks_is_one_line_naming_the_file_and_its_line(files, tmp_path, capsys, no_launch):
    # Blank lines, and an outcome quoted over two lines (not a category either, but of a later column),
    # before the first M: its line is 7, not "row 2", its place among the rows.
    path = tmp_path / "site.csv"
    path.write_text("\n".join(["age,sex,outcome", "", "21,F,ill", '22,F,"we', 'll"', "", "23,M,well"]
                              + [",".join(row) for row in people().iloc[4:].to_numpy()]) + "\n")
    line = error_of(["--data", str(path), "--schema", str(files["only_f"]), "--test-data", str(files["csv"])],
                    capsys, tmp_path / "o")
    assert line == (f"ppsdg: error: --data {path}: line 7 and 18 more row(s), column 'sex': expected a category the "
                    "schema does not list (and no 'other' bucket); correct the file or the schema")


def test_one_file_per_worker_names_the_worker(files, tmp_path, capsys, no_launch):
    folder = files["folder"]
    line = error_of(["--data", f"{folder / 'a.csv'},{folder / 'b.csv'}", "--schema", str(files["only_f"]),
                     "--test-data", str(files["csv"])], capsys, tmp_path / "o")
    assert line.startswith(f"ppsdg: error: --data {folder / 'a.csv'} (worker 1): line 3 and 9 more row(s), "
                           "column 'sex'")


@pytest.mark.parametrize("suffix, place", [(".csv.gz", "line 3"), (".xlsx", "row 3"), (".parquet", "record 2")])
def test_each_format_numbers_the_row_as_its_owner_sees_it(files, tmp_path, suffix, place):
    path = tmp_path / f"site{suffix}"
    frame = people()
    if suffix == ".csv.gz":
        frame.to_csv(path, index=False)
    elif suffix == ".xlsx":
        frame.to_excel(path, index=False)
    else:
        frame.to_parquet(path)
    with pytest.raises(DataError, match=f"^{path}: {place} and 19 more row"):
        data.check_fits(tables.read_table(path), tables.Schema.read(files["only_f"]), str(path), str(path))


def test_the_owners_check_numbers_lines_too(files, capsys):
    assert main.main(["schema", str(files["semicolon"]), "--check", str(files["only_f"])]) == 2
    assert capsys.readouterr().err.startswith(f"ppsdg: error: {files['semicolon']}: line 3 and 19 more row(s), "
                                              "column 'sex'")


def test_a_missing_column_is_named_without_a_row(files, tmp_path, capsys, no_launch):
    people().drop(columns="age").to_csv(tmp_path / "narrow.csv", index=False)
    line = error_of(["--data", str(tmp_path / "narrow.csv"), "--schema", str(files["schema"]), "--test-data",
                     str(files["csv"])], capsys, tmp_path / "o")
    assert line.endswith("narrow.csv: the table does not fit the schema: missing column(s) age; correct the file "
                         "or the schema")


def test_a_gloo_workers_error_is_its_one_line_naming_it_and_its_file(files, monkeypatch):
    sent = []

    class Pipe:
        def send(self, end: train.RankEnd) -> None:
            sent.append(end)

    def refuse(rank, world_size, config) -> None:
        raise DataError("line 7, column 'sex': expected a category the schema does not list")

    config = parser.parse(["--data", f"{files['folder'] / 'a.csv'},{files['folder'] / 'b.csv'}", "--schema",
                           str(files["schema"])])
    monkeypatch.setattr(train, "run_rank", refuse)
    with pytest.raises(SystemExit) as ended:
        train.run_rank_process(2, 3, config, Pipe())
    assert ended.value.code == 2
    assert sent == [train.RankEnd(True, f"worker 2 ({files['folder'] / 'b.csv'}): line 7, column 'sex': expected a "
                                        "category the schema does not list")]


def test_the_launcher_prints_the_workers_error_alone_not_what_follows_from_it(capsys):
    server = train.RankEnd(True, "round 1: 0 of 2 workers answered - worker rank 2: lost while sending to it "
                                 "(Connection closed by peer ... GLHF!)")
    lost = train.RankEnd(False, "worker 1 stopped: lost the server (Connection closed by peer)")
    cause = train.RankEnd(True, "worker 2 (b.csv): line 7, column 'sex'")
    with pytest.raises(PpsdgError) as raised:
        main.report_errors(False, [server, lost, cause])
    assert str(raised.value) == "worker 2 (b.csv): line 7, column 'sex'" and capsys.readouterr().err == ""
    main.report_errors(True, [None, None, cause])
    assert capsys.readouterr().err == "ppsdg: warning: worker 2 (b.csv): line 7, column 'sex'\n"
    with pytest.raises(PpsdgError, match="^round 1: the global model diverged$"):
        main.report_errors(False, [train.RankEnd(True, "round 1: the global model diverged"), lost, None])
    assert capsys.readouterr().err == f"ppsdg: {lost.line}\n"


# 6. The ppsdg command.

def test_a_bare_ppsdg_prints_its_commands_instead_of_training(monkeypatch, capsys, no_launch):
    monkeypatch.setattr(sys, "argv", ["/venv/bin/ppsdg"])
    assert main.main() == 2
    out = capsys.readouterr().out
    assert out.startswith("usage: ppsdg COMMAND [options]")
    assert all(f"\n  {name} " in out for name in ("run", "schema", "evaluate"))
    monkeypatch.setattr(sys, "argv", ["/venv/bin/ppsdg", "--help"])
    assert main.main() == 0 and capsys.readouterr().out == out


def test_ppsdg_run_is_the_run_and_names_itself_in_its_help(monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["/venv/bin/ppsdg", "run", "--help"])
    with pytest.raises(SystemExit) as ended:
        main.main()
    assert ended.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: ppsdg run [-h]") and "ppsdg schema" in out
    monkeypatch.setattr(sys, "argv", ["/venv/bin/ppsdg", "frob"])
    assert main.main() == 2
    assert capsys.readouterr().err == ("ppsdg: error: 'frob' is not a command: the commands are run, schema, "
                                       "evaluate, sample (`ppsdg --help` says what each does)\n")


def test_python_main_py_keeps_its_options_and_help(capsys):
    with pytest.raises(SystemExit):
        main.main(["--help"])
    assert capsys.readouterr().out.startswith("usage: main.py [-h]")


# 8. Help texts true to today's defaults.

def test_the_help_says_what_gan_and_local_dp_do_today():
    helps = {action.dest: action.help for action in parser.build_parser()._actions}
    assert "moments by default" in helps["gan"] and "marginals" in helps["gan"]
    assert "WGAN-GP generator" not in helps["gan"]
    assert "Opacus on every worker" not in helps["local_dp"] and "a table's marginals" in helps["local_dp"]
    assert "Excel" in helps["data"]


def test_readme_says_which_runs_write_the_accuracy_plot():
    row = next(line for line in (Path(__file__).parent.parent / "README.md").read_text().splitlines()
               if line.startswith("| `accuracy_loss.png`"))
    assert "a table run writes none" in row


# 7. The end of a run says what each figure means and which way is better.

def measured_table(target: str = "outcome") -> dict:
    """The table evaluation of half of `people` against the whole (training part) and itself (test part)."""
    frame = people()
    frame["age"] = frame["age"].astype(float)
    return table_evaluation.evaluate(frame.iloc[::2], frame, frame, tables.draft(frame, target), target)


def block_lines(text: str) -> dict[str, str]:
    """The end block's lines by the name they start with (two spaces apart from the rest)."""
    return {line.strip().split("  ")[0]: line.strip() for line in text.splitlines()[1:]}


def test_a_table_runs_end_names_each_figure_its_reference_and_which_way_is_better(files):
    evaluation = measured_table()
    summary = {"epsilon": 2.99, "delta": 1e-5, "evaluation": evaluation}
    config = parser.parse(["--data", str(files["csv"]), "--target", "outcome"])
    said = output.end_report(summary, config.job)
    lines = block_lines(said)
    assert said.splitlines()[0] == "synthetic table:"
    assert list(lines) == ["TSTR ROC AUC", "TSTR accuracy", "2-way TVD", "3-way TVD", "memorized", "exact copies",
                           "privacy", "columns.png", "dependence.png"]
    assert f"{evaluation['tstr_auc']:.4f}" in lines["TSTR ROC AUC"]
    assert f"higher is better (real data's own {evaluation['trtr_auc']:.4f}, chance 0.5)" in lines["TSTR ROC AUC"]
    assert lines["2-way TVD"].endswith(f"lower is better (0 identical, independent columns "
                                       f"{evaluation['tvd_2way_independent']:.4f})")
    assert "lower is better (unseen rows: 5%)" in lines["memorized"]
    assert lines["exact copies"].startswith("exact copies    100.0%")
    assert lines["privacy"].startswith("privacy         2.99    epsilon (delta 1e-05)")
    assert "lower is more private" in lines["privacy"]


def test_a_missing_figure_says_why_in_its_place():
    lines = block_lines(report.table(measured_table(target="age")))
    reason = "none    the target is numeric: only classification targets are scored"
    assert lines["TSTR ROC AUC"].endswith(reason) and lines["TSTR accuracy"].endswith(reason)
    assert "lower is better" in lines["2-way TVD"]


def test_a_classifier_run_ends_with_its_test_accuracy(tmp_path, capsys):
    config = parser.parse(["--output", str(tmp_path / "run")])
    job = Job.of_config(config)
    records = [{"round": 1, "test_accuracy": 0.62, "test_loss": 1.1, "workers": []},
               {"round": 2, "test_accuracy": 0.58, "test_loss": 1.3, "workers": []}]
    output.finish_run(output.RunOutput(config.run, config.summary()), Checkpoint(2, {}, records), job, config.source,
                      config.run.seed)
    lines = block_lines(capsys.readouterr().out)
    assert lines["test accuracy"].startswith("test accuracy      0.5800  the real test set's share classified right")
    assert lines["test accuracy"].endswith("higher is better (best round 0.6200, chance 0.1)")
    assert lines["test loss"].endswith("lower is better") and "1.3000" in lines["test loss"]
    assert lines["privacy"].endswith("no differential privacy (-ldp): nothing bounds what the releases reveal")
    assert "accuracy_loss.png" in lines and (tmp_path / "run" / "accuracy_loss.png").exists()


def test_a_runs_process_keeps_jaxs_start_up_chatter_from_the_user():
    """A CPU-only jaxlib on a machine with a GPU (made to see one here) warns at its first use, the
    graphical model's fit, that it falls back to the CPU, unless the process was set up as a run's are."""
    code = ("import jax._src.hardware_utils as hardware\nhardware.has_visible_nvidia_gpu = lambda: True\n"
            "from ppsdg import parser, runtime\n{}import jax.numpy\njax.numpy.zeros(1).block_until_ready()\n")
    set_up = "run = parser.parse(['--threads', '1']).run\nruntime.set_up(run.threads, run.use_cuda)\n"
    said = [subprocess.run([sys.executable, "-c", code.format(prefix)], capture_output=True, text=True, check=True,
                           cwd=Path(__file__).parent.parent).stderr for prefix in ("", set_up)]
    assert "CUDA-enabled jaxlib is not installed" in said[0] and said[1] == ""


class Terminal(io.StringIO):
    """stderr as a person's terminal."""

    def isatty(self) -> bool:
        return True


def test_measuring_and_drawing_show_their_steps_on_a_terminal_and_nothing_in_a_log(monkeypatch, tmp_path):
    frame = people()
    schema = tables.draft(frame, "outcome")
    said = {}
    for stream in (Terminal(), io.StringIO()):
        monkeypatch.setattr(sys, "stderr", stream)
        table_evaluation.evaluate(frame.iloc[::2], frame, frame, schema, "outcome")
        table_plots.plot(frame.iloc[::2], frame, schema, tmp_path)
        said[stream.isatty()] = stream.getvalue()
    assert said[False] == ""
    for step in ("measuring the synthetic table", "fidelity (TVD)", "TSTR classifier", "TRTR classifier",
                 "privacy (closest records)", "4/4", "drawing the pictures", "dependence.png", "2/2"):
        assert step in said[True]
