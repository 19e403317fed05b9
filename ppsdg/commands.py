"""The `ppsdg` commands other than a run, each with its own options: `ppsdg schema` (a table's public
schema, drafted or checked) and `ppsdg evaluate` (score synthetic data). A run is `main.py`'s."""
import json
import os
import sys
from pathlib import Path

import torch

from ppsdg import data, evaluate, runtime, synthetic, table_plots, tables
from ppsdg.errors import DataError, OptionsError, PpsdgError
from ppsdg.parser import OptionParser


def schema(argv: list[str] | None = None) -> int:
    """`ppsdg schema DATA [--target COLUMN] [--bins N]`: print a draft schema of a table as JSON;
    `ppsdg schema DATA --check SCHEMA`: say whether the table fits a schema, and where it does not."""
    parser = OptionParser(prog="ppsdg schema", description="Draft the public schema of a table, for its "
                          "owner to review before publishing it")
    parser.add_argument("data", help=f"the table: {tables.TABLE_FILES}")
    parser.add_argument("--target", help="the column TSTR predicts, written into the schema")
    parser.add_argument("--bins", type=int, default=tables.DRAFT_BINS, help="equal-width bins of a numeric column")
    parser.add_argument("--keep", default="", metavar="COLUMN[,COLUMN]", help="text columns of too many "
                        f"values to list (free text) to keep as their {tables.DRAFT_MAX_CATEGORIES} most common "
                        "values and 'other', instead of leaving them out")
    parser.add_argument("--check", metavar="SCHEMA", help="instead of drafting, check the table against this "
                        "schema: what a node that refuses a task keeps to itself (the rows that do not fit)")
    try:
        options = parser.parse_args(argv)
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
    parser = OptionParser(prog="ppsdg evaluate", description=evaluate.__doc__.splitlines()[0])
    parser.add_argument("synthetic", help="synthetic images as a node CSV (label, pixel0..pixel783), or a table")
    parser.add_argument("--data", required=True,
                        help="the real data as a run reads it: its training part must not be copied, "
                             "its test part is the real test set")
    parser.add_argument("--test-data", help="a table's real test part (default: a seeded 20%% holdout of --data)")
    parser.add_argument("--schema", help="a table's public schema (JSON; default: drafted from --data)")
    parser.add_argument("--target", help="the column TSTR predicts (default: the schema's target, else the last)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the protocol's classifiers")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--output", metavar="DIR", help=f"a folder to draw the pictures in (made if missing): a table's "
                        f"{table_plots.COLUMNS_PLOT} and {table_plots.DEPENDENCE_PLOT}, images' {synthetic.SAMPLES}")
    return parser


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
        evaluate.check_synthetic_file(options.synthetic)
        folder = output_folder(options.output) if options.output else None
        if tables.is_table_path(options.data):
            figures, said = evaluate.evaluate_table(options.synthetic, options.data, options.test_data,
                                                    options.schema, options.target, folder)
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
