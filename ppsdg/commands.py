"""The `ppsdg` commands other than a run, each with its own options: `ppsdg schema` (a table's public
schema, drafted or checked), `ppsdg evaluate` (score synthetic data) and `ppsdg sample` (draw more
synthetic records from a vantage6 result). A run is `main.py`'s."""
import json
import os
import sys
from pathlib import Path

import torch

from backends import codec
from ppsdg import checkpoint, data, evaluate, parser, result, runtime, synthetic, table_plots, tables
from ppsdg.errors import CodecError, DataError, OptionsError, PpsdgError
from ppsdg.job import Job
from ppsdg.parser import OptionParser

# A saved result holds its synthetic records as CSV text and its checkpoint: 100,000 rows of Adult make
# 12 MB, a result ten times larger than that is no result of ppsdg's.
MAX_RESULT_BYTES = 1 << 30


def schema(argv: list[str] | None = None) -> int:
    """`ppsdg schema DATA [--target COLUMN] [--bins N]`: print a draft schema of a table as JSON;
    `ppsdg schema DATA --check SCHEMA`: say whether the table fits a schema, and where it does not."""
    options_parser = OptionParser(prog="ppsdg schema", description="Draft the public schema of a table, for its "
                          "owner to review before publishing it")
    options_parser.add_argument("data", help=f"the table: {tables.TABLE_FILES}")
    options_parser.add_argument("--target", help="the column TSTR predicts, written into the schema")
    options_parser.add_argument("--bins", type=int, default=tables.DRAFT_BINS,
                                help="equal-width bins of a numeric column")
    options_parser.add_argument("--keep", default="", metavar="COLUMN[,COLUMN]", help="text columns of too many "
                        f"values to list (free text) to keep as their {tables.DRAFT_MAX_CATEGORIES} most common "
                        "values and 'other', instead of leaving them out")
    options_parser.add_argument("--check", metavar="SCHEMA", help="instead of drafting, check the table against this "
                        "schema: what a node that refuses a task keeps to itself (the rows that do not fit)")
    try:
        options = options_parser.parse_args(argv)
        if not 2 <= options.bins <= tables.MAX_CATEGORIES:
            raise DataError(f"--bins must be in 2..{tables.MAX_CATEGORIES}")
        frame = tables.read_table(options.data)
        if options.check is not None:
            checked = tables.Schema.read(options.check)
            data.check_fits(frame, checked, options.data, options.data)
            print(tables.check(frame, checked))
            return 0
        keep = [name.strip() for name in options.keep.split(",") if name.strip()]
        drafted = tables.draft(frame, options.target, options.bins, keep)
    except PpsdgError as error:
        print(f"ppsdg: error: {error}", file=sys.stderr)
        return 2
    for note in tables.notes(frame, drafted):
        print(f"ppsdg: note: {note}", file=sys.stderr)
    print(json.dumps(drafted.to_json(), indent=1))
    return 0


def evaluate_parser() -> OptionParser:
    """`ppsdg evaluate`'s options; its errors are OptionsError, reported like every bad input."""
    options_parser = OptionParser(prog="ppsdg evaluate", description=evaluate.__doc__.splitlines()[0])
    add = options_parser.add_argument
    add("synthetic", help="synthetic images as a node CSV (label, pixel0..pixel783), or a table")
    add("--data", required=True,
                        help="the real data as a run reads it: its training part must not be copied, "
                             "its test part is the real test set")
    add("--test-data", help="a table's real test part (default: a seeded 20%% holdout of --data)")
    add("--schema", help="a table's public schema (JSON; default: drafted from --data)")
    add("--target", help="the column TSTR predicts (default: the schema's target, else the last)")
    add("--seed", type=int, default=1, help="seed of the protocol's classifiers")
    add("--threads", type=int, default=1, help="torch threads")
    add("--output", metavar="DIR", help=f"a folder to draw the pictures in (made if missing): a table's "
                        f"{table_plots.COLUMNS_PLOT} and {table_plots.DEPENDENCE_PLOT}, images' {synthetic.SAMPLES}")
    add("--sdmetrics", action="store_true", help="a table's SDV sdmetrics quality and diagnostic reports too "
                        "(needs the extra: pip install 'ppsdg[sdmetrics]', which downgrades pandas to 2.x)")
    return options_parser


def evaluate_command(argv: list[str] | None = None) -> int:
    """`ppsdg evaluate`: print the figures as one JSON object on stdout and what each means on stderr
    (`ppsdg.report`), and with --output draw the pictures there; bad input ends in one line on stderr and
    status 2."""
    try:
        options = evaluate_parser().parse_args(argv)
        if not 1 <= options.threads <= runtime.cores():
            raise OptionsError(f"--threads must be in 1..{runtime.cores()} (the cores this process may use), "
                               f"found {options.threads}")
        torch.set_num_threads(options.threads)
        table = tables.is_table_path(options.data)
        if options.sdmetrics and not table:
            raise OptionsError(f"--sdmetrics scores a table, and --data {options.data} holds images")
        evaluate.check_synthetic_file(options.synthetic)
        folder = output_folder(options.output) if options.output else None
        if table:
            figures, said = evaluate.evaluate_table(options.synthetic, options.data, options.test_data,
                                                    options.schema, options.target, folder, options.sdmetrics)
        else:
            figures, said = evaluate.evaluate_images(options.synthetic, options.data, options.seed, folder)
    except PpsdgError as error:
        print(f"ppsdg: error: {error}", file=sys.stderr)
        return 2
    print(json.dumps(figures))
    print(said, file=sys.stderr)
    return 0


def output_folder(path: str) -> Path:
    """--output, made where it is missing, refused at once (before the minutes of measuring) where it
    cannot be: a file, a path below a file, a folder without write permission."""
    folder = Path(path)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise OptionsError(f"--output {path} is a file, not a folder") from None
    except OSError as error:
        raise OptionsError(f"--output {path} cannot be made: {error.strerror or error}") from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise OptionsError(f"--output {path} is not writable")
    return folder


def sample(argv: list[str] | None = None) -> int:
    """`ppsdg sample RESULT_JSON --output FILE [--rows N] [--seed S]`: draw synthetic records from the state a
    vantage6 function's result holds (post-processing: no data, no privacy cost) and write them as CSV (a
    table's columns, or images in the node layout); with the run's seed and row count they are the result's
    own records."""
    options_parser = OptionParser(prog="ppsdg sample", description="Draw more synthetic records from a vantage6 "
                                  "function's saved result (its JSON), with no real data and no privacy cost")
    options_parser.add_argument("result", help="the central function's result, saved as JSON")
    options_parser.add_argument("--output", required=True, metavar="FILE", help="the CSV file to write (not one "
                                "that exists)")
    options_parser.add_argument("--rows", type=int, help="how many records (default: as many as the result holds)")
    options_parser.add_argument("--seed", type=int, help="the draw's seed (default: the run's, which draws the "
                                "result's own records first)")
    try:
        options = options_parser.parse_args(argv)
        saved = read_result(Path(options.result))
        config = parser.from_mapping(saved["options"])
        job = Job.of_config(config)
        if job.synthesizer is None:
            raise OptionsError(f"{options.result}: a classifier's result: it holds no synthesizer to draw from")
        point = checkpoint.read(codec.from_text(saved["checkpoint"]), config.fixed_options(), config.run, job)
        rows = result.synthetic_count(job, point.records) if options.rows is None else options.rows
        if not 1 <= rows <= parser.MAXIMUM["synthetic_samples"]:
            raise OptionsError(f"--rows must be in 1..{parser.MAXIMUM['synthetic_samples']}")
        output = Path(options.output)
        if output.exists() or output.is_symlink():
            raise OptionsError(f"--output {output} exists: name a new file (nothing is overwritten)")
        seed = config.run.seed if options.seed is None else options.seed
        frame, _ = result.drawn_frame(point, job, seed, rows)
        frame.to_csv(output, index=False)
    except (CodecError, OSError) as error:
        print(f"ppsdg: error: {options.result}: not a result ppsdg can draw from: {error}", file=sys.stderr)
        return 2
    except PpsdgError as error:
        print(f"ppsdg: error: {error}", file=sys.stderr)
        return 2
    print(f"{rows} synthetic records in {output}")
    return 0


def read_result(path: Path) -> dict:
    """A saved central result: the JSON object the function returned (or vantage6's list of one of them),
    holding the run's options and its checkpoint; anything else is refused by name."""
    try:
        saved = json.loads(tables.read_small(path, MAX_RESULT_BYTES))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise DataError(f"{path}: not JSON ({error})") from None
    if isinstance(saved, list) and len(saved) == 1:
        saved = saved[0]
    if not (isinstance(saved, dict) and isinstance(saved.get("options"), dict)
            and isinstance(saved.get("checkpoint"), str)):
        raise DataError(f"{path}: not a ppsdg central function's result (an object with its 'options' and "
                        "'checkpoint'): save the result of a synthesize_table, synthesize_images or central task")
    return saved
