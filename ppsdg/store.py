"""The algorithm store's description of ppsdg (`algorithm_store.json`), made from the code: the job
functions' arguments from their signatures (`ppsdg/functions.py`) and the form below, `central`'s from the
command line's options. A test checks that the committed file is this one; `python -m ppsdg.store`
prints it.
"""
import argparse
import inspect
import json
from collections.abc import Callable
from typing import Any

from ppsdg import functions, parser
from ppsdg.config import CLIENT_ONLY
from ppsdg.result import PRIVACY_COLUMNS

STORE_FILE = "algorithm_store.json"
ALGORITHM = {
    "name": "ppsdg",
    "description": "Privacy-preserving synthetic data by federated learning: a DP synthetic table or DP synthetic "
                   "digit images of the organizations' data, or a CNN classifier trained on them; only DP-protected "
                   "releases leave a node, and each node's owner sets its own privacy limits.",
    "image": "ppsdg",
    "vantage6_version": "4.15",
    "partitioning": "horizontal",
    "code_url": "https://github.com/ppsdg/ppsdg",
    "documentation_url": "https://github.com/ppsdg/ppsdg#readme",
}
EPSILON = "the privacy budget (epsilon) each organization spends over the whole run: smaller is more private"
ORGANIZATIONS = "the organizations whose data take part (default: every organization of the collaboration)"
SEED = "seed of the server's choices and of the synthetic draw; a node draws its DP noise securely"
DELTA = "the delta of (epsilon, delta)-DP: keep it well below one over the number of records"
# The form of each job function: per argument, its display name, store type and description.
SECURE = ("the researcher sees only the organizations' sum, which carries one organization's noise where each "
          "node's owner allows it (PPSDG_DISTRIBUTED_NOISE); one more exchange a run")
FORMS: dict[str, dict[str, tuple[str, str, str]]] = {
    "synthesize_table": {
        "schema": ("Schema", "json", "the table's public schema (JSON), drafted with `ppsdg schema DATA` and "
                                     "reviewed by the data owners"),
        "target": ("Target column", "column", "the column whose relation to every other column the synthetic "
                                              "table keeps best (and that a classifier trained on it predicts)"),
        "epsilon": ("Privacy budget", "float", EPSILON),
        "organizations": ("Organizations", "organization_list", ORGANIZATIONS),
        "rows": ("Synthetic records", "integer", "how many synthetic records the result holds (default: as many as "
                                                 "the organizations hold together)"),
        "rounds": ("Rounds", "integer", "rounds of releases: the first surveys the table, the others measure what "
                                        "it selects"),
        "seed": ("Seed", "integer", SEED),
        "delta": ("Delta", "float", DELTA),
        "secure_aggregation": ("Secure aggregation", "boolean", SECURE),
    },
    "synthesize_images": {
        "epsilon": ("Privacy budget", "float", EPSILON),
        "method": ("Method", "string", "moments: class-conditional Gaussians, one noisy release a round (sharp "
                                       "digits, fast); wgan: a federated WGAN-GP trained with DP-SGD"),
        "organizations": ("Organizations", "organization_list", ORGANIZATIONS),
        "samples": ("Synthetic images", "integer", "how many synthetic images the result holds (default: as many "
                                                   "as the organizations hold together)"),
        "rounds": ("Rounds", "integer", "rounds of releases or of training"),
        "seed": ("Seed", "integer", SEED),
        "delta": ("Delta", "float", DELTA),
        "secure_aggregation": ("Secure aggregation", "boolean", SECURE + " (moments only)"),
    },
    "train_classifier": {
        "epsilon": ("Privacy budget", "float", "the epsilon of each organization's DP-SGD over the whole run "
                                               "(default: none, no DP: the node's policy may refuse that)"),
        "organizations": ("Organizations", "organization_list", ORGANIZATIONS),
        "rounds": ("Rounds", "integer", "rounds of FedAvg"),
        "learning_rate": ("Learning rate", "float", "SGD's learning rate on each node"),
        "batch_size": ("Batch size", "integer", "SGD's batch size on each node"),
        "epochs": ("Local epochs", "integer", "passes over its data a node makes each round"),
        "seed": ("Seed", "integer", SEED),
        "delta": ("Delta", "float", DELTA),
    },
}
ALLOWED = {("synthesize_images", "method"): list(functions.IMAGE_METHODS)}
RESULT = ("Returns 'metrics' (one record a round), 'privacy' (a row a round: workers, epsilon, delta), "
          "'options' and 'checkpoint' (the state to resume from, or draw more with `ppsdg sample`), and 'error' "
          "only if a round failed.")
FUNCTIONS: dict[str, tuple[Callable[..., Any], str, str]] = {
    "synthesize_table": (functions.synthesize_table, "Synthesize a table (DP)",
                         "A differentially private synthetic table of the organizations' tables, from noisy "
                         "marginals fitted with a graphical model. " + RESULT + " 'synthetic' holds the records "
                         "as CSV text with their schema, epsilon and delta; 'preview' the first records."),
    "synthesize_images": (functions.synthesize_images, "Synthesize digit images (DP)",
                          "Differentially private synthetic 28x28 digit images of the organizations' labelled "
                          "images. " + RESULT + " 'synthetic' holds the images as CSV text (label, then 784 "
                          "pixels 0..255)."),
    "train_classifier": (functions.train_classifier, "Train a digit classifier",
                         "FedAvg of a CNN digit classifier, tested each round on held-out digits, with DP-SGD "
                         "where a privacy budget is given. " + RESULT),
}
PRIVACY_TABLE = {"name": "privacy", "description": "the privacy spent, round by round (epsilon after each round)",
                 "type": "table", "schema": {"location": ["privacy"], "columns": list(PRIVACY_COLUMNS)}}
PREVIEW_TABLE = {"name": "synthetic records", "description": "the first synthetic records", "type": "table",
                 "schema": {"location": ["preview"]}}
CENTRAL = ("Every option of `python main.py` (long names, with underscores) for one run: the function "
           "`main.py --backend vantage6` creates. " + RESULT + " Pass 'checkpoint' back to resume.")
PARTIAL = {
    "name": "partial",
    "type": "federated",
    "description": "One worker round on the node's data (a table, read as text and mapped with the task's schema; "
                   "or images, a CSV of a label column then 784 pixel columns 0..255). Called by the central "
                   "functions only; returns the update as codec text.",
    "databases": [{"name": "default", "description": "the node's table (CSV, Parquet or Excel), or its images: "
                                                     "label + 784 pixel columns"}],
    "ui_visualizations": [],
    "arguments": [
        {"name": "message", "type": "string", "description": "the round's global model, codec text"},
        {"name": "ranks", "type": "json", "description": "organization id -> worker rank"},
        {"name": "options", "type": "json", "description": "the central function's options"},
    ],
}
OPTION_TYPES = {int: "integer", float: "float", None: "string", str: "string"}


def job_function(name: str) -> dict[str, Any]:
    """A job function's entry: its form, with each argument's default from its signature."""
    function, display_name, description = FUNCTIONS[name]
    parameters = inspect.signature(function).parameters
    arguments = []
    for argument, (shown, kind, said) in FORMS[name].items():
        default = parameters[argument].default
        entry = {"name": argument, "display_name": shown, "type": kind, "description": said}
        if (name, argument) in ALLOWED:
            entry["allowed_values"] = ALLOWED[name, argument]
        if default is not inspect.Parameter.empty:
            entry.update(has_default_value=True, default_value=default_text(default))
        arguments.append(entry)
    visualizations = [PRIVACY_TABLE, PREVIEW_TABLE] if name == "synthesize_table" else [PRIVACY_TABLE]
    return {"name": name, "display_name": display_name, "type": "central", "description": description,
            "databases": [], "ui_visualizations": visualizations, "arguments": arguments}


def central_function() -> dict[str, Any]:
    """`central`'s entry: every option a task may carry, as the command line's parser describes it."""
    arguments = [option_argument(action) for action in parser.build_parser()._actions
                 if action.dest not in (*CLIENT_ONLY, "backend", "help")]
    arguments += [
        {"name": "organizations", "type": "organization_list", "description": "organization ids in worker-rank "
         "order (default: all in the collaboration, by id)", "has_default_value": True, "default_value": None},
        {"name": "checkpoint", "type": "string", "description": "codec text of an earlier result's checkpoint, to "
         "go on from it", "has_default_value": True, "default_value": None}]
    return {"name": "central", "display_name": "Run with every option", "type": "central", "description": CENTRAL,
            "databases": [], "ui_visualizations": [PRIVACY_TABLE], "arguments": arguments}


def option_argument(action: argparse.Action) -> dict[str, Any]:
    """An option of the command line as a store argument: its type, help, choices and default."""
    flag = isinstance(action, argparse._StoreTrueAction)
    entry = {"name": action.dest, "type": "boolean" if flag else OPTION_TYPES[action.type],
             "description": (action.help or "").replace("%%", "%")}
    if action.choices is not None:
        entry["allowed_values"] = list(action.choices)
    return {**entry, "has_default_value": True, "default_value": default_text(action.default)}


def default_text(value: Any) -> str | None:
    """A default as the store takes it: text (it refuses a JSON number or boolean), JSON's spelling of a
    boolean, null for none."""
    if value is None:
        return None
    return json.dumps(value) if isinstance(value, bool) else str(value)


def describe() -> dict[str, Any]:
    """The whole description, as algorithm_store.json holds it."""
    return {**ALGORITHM, "functions": [*(job_function(name) for name in FUNCTIONS), central_function(), PARTIAL]}


if __name__ == "__main__":
    print(json.dumps(describe(), indent=2))
