"""Every option of the original parser, plus backend, data and output options; and the `ppsdg`
command's own help, which lists its commands.

The parser is the one source of defaults: the vantage6 central function takes the same options as
keyword arguments (long names with underscores) and fills the missing ones from here.
"""
import argparse
import dataclasses
import math
import textwrap
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ppsdg import data, synthesizers, tables
from ppsdg.config import DEFAULT_DELTA, DEFAULT_NODES, DEFAULT_ROUNDS, DEFAULT_SEED, TABLE_ROUNDS, WGAN_EPOCHS, Config
from ppsdg.data import PARTITION_SCHEMES
from ppsdg.errors import OptionsError
from ppsdg.policy import DISTRIBUTED_NOISE, SECURE_NOISE
from ppsdg.privacy import DEFAULT_TARGET_EPSILON

BACKENDS = ("gloo", "vantage6")
ACCOUNTANTS = ("prv", "rdp")
HELP_WIDTH = 100
COMMANDS = {
    "run": "train over gloo or vantage6: the classifier, synthetic images (--gan) or a synthetic table "
           "(--data TABLE); `ppsdg run --help` lists its options",
    "schema": "draft the public schema of a table for its owner to review, or check a table against one",
    "evaluate": "score a synthetic data set against the real one (fidelity, TSTR, privacy) as one JSON object",
    "sample": "draw more synthetic records from a vantage6 function's saved result, with no real data",
}


class OptionParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are OptionsError, so a caller decides how to report them."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise OptionsError(message)


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows a default only where there is one and the help text does not already say it."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or "default:" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


def command_help() -> str:
    """The `ppsdg` command's help: its commands, each of which takes and lists its own options."""
    width = max(map(len, COMMANDS)) + 2
    commands = [textwrap.fill(summary, HELP_WIDTH, initial_indent=f"  {name:<{width}}",
                              subsequent_indent=" " * (width + 2)) for name, summary in COMMANDS.items()]
    return ("usage: ppsdg COMMAND [options]\n\nPrivacy-preserving synthetic data by federated learning, over "
            "gloo or vantage6.\n\ncommands:\n" + "\n".join(commands) + "\n\n`ppsdg COMMAND --help` lists a "
            "command's options. `python main.py [options]` is `ppsdg run [options]`,\nand with no option at all "
            "runs the default job.\n")


def build_parser(prog: str = "main.py") -> argparse.ArgumentParser:
    """The options of a run (`ppsdg run`, `python main.py`); `prog` is the command its help shows."""
    parser = OptionParser(prog=prog, description="Train over gloo or vantage6: the classifier, synthetic images "
                          "(--gan) or a synthetic table (--data TABLE).", formatter_class=_HelpFormatter,
                          epilog="The other commands: ppsdg schema (a table's public schema), ppsdg evaluate "
                                 "(score synthetic data); `ppsdg --help` lists them.")
    add = parser.add_argument
    add("-nn", "--num-nodes", type=int, default=None,
        help=f"number of nodes, the server included (default: {DEFAULT_NODES}, or one worker per file of --data)")
    add("-uc", "--use-cuda", action="store_true", help="train on CUDA when present")
    add("-bs", "--batch-size", type=int, default=64, help="training batch size")
    add("-tbs", "--test-batch-size", type=int, default=1000, help="testing batch size")
    add("-lr", "--learning-rate", type=float, default=0.05, help="learning rate")
    add("-g", "--gamma", type=float, default=0.9, help="learning-rate decay per round (StepLR)")
    add("-li", "--log-interval", type=int, default=10, help="batches between progress updates")
    add("-e", "--epochs", type=int, default=None,
        help=f"local epochs per round (FedAvg; default: {WGAN_EPOCHS} for --synthesizer wgan, else 1)")
    add("-nr", "--num-rounds", type=int, default=None,
        help=f"number of training rounds (default: {DEFAULT_ROUNDS} for images, {TABLE_ROUNDS} for a table)")
    add("-s", "--seed", type=int, default=DEFAULT_SEED, help="seed of every random draw")
    add("-gs", "--group-size", type=int, default=None,
        help="workers averaged each round, drawn at random (default: all workers)")
    add("-ta", "--train-all", action="store_true",
        help="every worker trains each round, but only the drawn group is averaged")
    add("-sm", "--save-model", action="store_true", help="save the final model as model.pt")
    add("-sgd", "--stochastic-gradient", action="store_true",
        help="FedSGD: one averaged gradient step per round instead of FedAvg")
    add("-gp", "--gradient-penalty", type=int, default=10, help="WGAN-GP penalty weight (with --gan)")
    add("-gan", "--gan", action="store_true",
        help="make synthetic data instead of training the classifier, with --synthesizer (images: moments "
             "by default; a table: marginals, implied by a table as --data)")
    add("-ldp", "--local_dp", action="store_true",
        help="local differential privacy: each worker noises what it releases (the classifier's and the "
             "WGAN-GP critic's DP-SGD, the moments' statistics, a table's marginals)")
    dp = parser.add_argument_group("differential privacy (with --local_dp)")
    dp.add_argument("--noise-multiplier", type=float, default=None,
                    help="the DP noise multiplier (DP-SGD's, or of each moments release), fixed whatever the "
                         "epsilon it spends; default: planned for --target-epsilon")
    dp.add_argument("--target-epsilon", type=float, default=None,
                    help="instead of --noise-multiplier: the smallest noise that keeps a worker taking part in "
                         f"every round within this epsilon (default: {DEFAULT_TARGET_EPSILON:g} where neither "
                         "is given)")
    dp.add_argument("--max-grad-norm", type=float, default=1.0, help="per-sample gradient clipping norm")
    dp.add_argument("--delta", type=float, default=DEFAULT_DELTA, help="the delta of (epsilon, delta)-DP")
    dp.add_argument("--accountant", choices=ACCOUNTANTS, default="prv", help="Opacus accountant")
    dp.add_argument("--secure-noise", action="store_true",
                    help="draw the DP noise and Poisson sampling from a cryptographically secure stream "
                         "(ChaCha20 keyed by the operating system's entropy), not from the seed: anyone who "
                         "knows the seed could otherwise recompute and remove the noise. Runs are then not "
                         "reproducible. A real vantage6 node does this unless its owner allows the seed "
                         f"(PPSDG_ALLOW_SEEDED_NOISE=1); {SECURE_NOISE}=1 forces it anywhere")
    dp.add_argument("--secure-aggregation", action="store_true",
                    help="marginals and moments: the server learns only the sum of the nodes' releases (pairwise "
                         "masks), and each node adds only its share of the noise, so that the sum carries the "
                         "noise of one central release (not sqrt(nodes) times it); one extra exchange a run "
                         "for the key agreement. A vantage6 node adds its full noise unless its owner allows "
                         f"shares ({DISTRIBUTED_NOISE})")
    dp.add_argument("--colluders", type=int, default=0,
                    help="with --secure-aggregation: how many nodes may collude with the server; each node adds "
                         "1/(nodes - colluders) of the noise variance, so the honest ones still add all of it")
    gan = parser.add_argument_group("synthetic data (with --gan)")
    gan.add_argument("--synthesizer", choices=synthesizers.NAMES, default=None,
                     help="the synthesis method: for images 'moments' (the default: class-conditional "
                          "Gaussians in a public subspace, four a class without DP, each worker's noisy "
                          "statistics released once a round) or 'wgan' (a federated WGAN-GP); for a table "
                          "'marginals' (its only one: noisy contingency tables fitted with a graphical model)")
    gan.add_argument("--moments-basis", choices=("auto", "digits", "dct"), default="auto",
                     help="moments: the public subspace: the principal directions of the embedded "
                          "digits, or low-frequency DCT images; auto: DCT when --data is the embedded "
                          "digits themselves (nothing is public then), else the digits")
    gan.add_argument("--moments-dims", type=int, help="moments: dimensions of the subspace (default: 40 for "
                     "DCT; for the digits 60 without DP, else 40)")
    gan.add_argument("--moments-scale", type=float,
                     help="moments: the L2 norm of an image's coordinates that is scaled to 1 (larger ones "
                          "are clipped to it; default: 8 for DCT; for the digits 14 without DP, 8 for a "
                          "one-release noise multiplier below 1 (epsilon above about 5), else 6)")
    gan.add_argument("--moments-draw", choices=("refined", "linear"), default="refined",
                     help="moments: how a Gaussian draw becomes an image: by a network trained on the public "
                          "digits (sharp single digits; the DCT basis has nothing public to train it on and "
                          "draws linearly), or by the basis alone (blurred)")
    gan.add_argument("--gan-learning-rate", type=float, default=2e-4, help="Adam learning rate of both networks")
    gan.add_argument("--critic-steps", type=int, default=5, help="critic steps per generator step")
    gan.add_argument("--sample-every", type=int, default=0,
                     help="also draw a sample grid every this many rounds (0: only at the end)")
    gan.add_argument("--synthetic-samples", type=int, default=None,
                     help="size of the synthetic dataset written as synthetic.csv (default: as large as "
                          "the real training set)")
    gan.add_argument("--tstr-epochs", type=int, default=5,
                     help="epochs of the evaluation's classifiers (train on synthetic, test on real)")
    add("--momentum", type=float, default=0.5, help="SGD momentum, reset every round")
    add("--backend", choices=BACKENDS, default="gloo", help="transport of the rounds")
    add("--data", default="embedded",
        help="'embedded' (scikit-learn digits at 28x28), a folder of MNIST IDX files, a CSV file of "
             f"images, or a table: {tables.TABLE_FILES}; several files, comma-separated: one per worker")
    table = parser.add_argument_group("tables (--data names a table)")
    table.add_argument("--schema", help="the public schema of the table (a JSON file; `ppsdg schema DATA` "
                                        "drafts one); without it, it is read off the training data")
    table.add_argument("--test-data", help="the real test part (default: a seeded 20%% holdout of --data)")
    table.add_argument("--target", help="the column that TSTR predicts (default: the schema's target, "
                                        "else the last column)")
    add("--partition", choices=PARTITION_SCHEMES, default="iid", help="how data is split over workers")
    add("--dirichlet-alpha", type=float, default=0.5, help="concentration of --partition dirichlet")
    add("--classes-per-worker", type=int, default=2, help="classes each worker holds, --partition classes")
    add("--min-workers", type=int, default=None,
        help="a round goes on without failed workers if this many of its group answered "
             "(default: all of them)")
    add("--round-timeout", type=float, default=3600.0,
        help="seconds the server waits for a round's workers before it counts them as failed")
    add("--worker-timeout", type=float, default=600.0,
        help="gloo: seconds the server waits for a worker's reply before it counts the worker as lost")
    add("--resume", action="store_true",
        help="go on from the checkpoint in --output (a larger --num-rounds extends a finished run)")
    add("--threads", type=int, default=1, help="torch threads per process")
    add("--output", default="runs/latest", help="directory for metrics, plot, summary and model")
    server = parser.add_argument_group("a real vantage6 server (--backend vantage6; without "
                                       "--server-url the run uses vantage6's mock client)")
    server.add_argument("--server-url", help="e.g. https://v6.example.org")
    server.add_argument("--server-port", type=int, default=443)
    server.add_argument("--api-path", default="/api")
    server.add_argument("--username")
    server.add_argument("--password", help="better: the VANTAGE6_PASSWORD environment variable")
    server.add_argument("--collaboration", type=int, help="collaboration id")
    server.add_argument("--organizations", type=_id_list,
                        help="comma-separated organization ids, in worker-rank order; the first one "
                             "also runs the central function (default: all in the collaboration)")
    server.add_argument("--image", help="the ppsdg algorithm image the nodes run")
    server.add_argument("--database", default="default",
                        help="the label of the node database the task reads (a node may hold several)")
    server.add_argument("--task-timeout", type=float, default=3600.0, help="seconds to wait for the task")
    return parser


def _id_list(text: str) -> list[int]:
    try:
        ids = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated organization ids, got {text!r}") from None
    if not ids or len(set(ids)) != len(ids):
        raise argparse.ArgumentTypeError(f"expected distinct organization ids, got {text!r}")
    return ids


def parse(argv: list[str] | None = None, prog: str = "main.py") -> Config:
    """Parse command-line arguments and check that they fit together, the paths they name first (a
    missing --data is not a table's absence); a --schema file is read here, so that its text travels with
    the options to every rank and node."""
    options = build_parser(prog).parse_args(argv)
    data.check_paths(options.data, options.test_data)
    if options.schema is not None and not options.schema.lstrip().startswith("{"):
        schema = Path(options.schema)
        _require(schema.is_file(), f"--schema {schema}: " + ("a folder: name the schema's JSON file" if
                                                              schema.is_dir() else "no such file"))
        options.schema = tables.Schema.read(schema).text()
    validate(options)
    return Config.from_options(vars(options))


def prepared(config: Config) -> Config:
    """The configuration with a table's schema (drafted where none is given) and target fixed, once for
    the run (`data.prepare_table`); any other unchanged."""
    if config.table is None:
        return config
    return dataclasses.replace(config, job=data.prepare_table(config.source, config.table))


def from_mapping(values: Mapping[str, Any]) -> Config:
    """Options from keyword arguments (long names with underscores), defaults for the rest."""
    if not isinstance(values, Mapping):
        raise OptionsError(f"options must be a mapping of names to values, got {type(values).__name__}")
    parser = build_parser()
    actions = {a.dest: a for a in parser._actions if a.dest != "help"}
    unknown = sorted(set(values) - set(actions))
    if unknown:
        raise OptionsError(f"unknown option(s): {', '.join(unknown)}")
    options = parser.parse_args([])
    for name, value in values.items():
        setattr(options, name, _convert(actions[name], value))
    validate(options)
    return Config.from_options(vars(options))


def _convert(action: argparse.Action, value: Any) -> Any:
    name = action.dest
    if isinstance(action, argparse._StoreTrueAction):
        if not isinstance(value, bool):
            raise OptionsError(f"option {name} must be true or false, got {value!r}")
        return value
    if value is None and action.default is None:
        return None
    kind = action.type or str
    if kind is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise OptionsError(f"option {name} must be an integer, got {value!r}")
    if kind is float and (isinstance(value, bool) or not isinstance(value, (int, float))):
        raise OptionsError(f"option {name} must be a number, got {value!r}")
    if kind not in (int, float) and not isinstance(value, str):
        raise OptionsError(f"option {name} must be text, got {value!r}")
    try:
        value = kind(value)
    except argparse.ArgumentTypeError as error:
        raise OptionsError(f"option {name}: {error}") from None
    if action.choices is not None and value not in action.choices:
        raise OptionsError(f"option {name} must be one of {', '.join(action.choices)}, got {value!r}")
    return value


# The largest value of whole-number options: far beyond any useful run, so that one task cannot make a
# machine (a node included) start a million threads or train for ever.
MAXIMUM = {"num_nodes": 10_000, "batch_size": 1 << 20, "test_batch_size": 1 << 20, "epochs": 10_000,
           "num_rounds": 1_000_000, "threads": 1_024, "critic_steps": 10_000, "tstr_epochs": 1_000,
           "synthetic_samples": 10_000_000, "seed": (1 << 63) - 1}
# What Opacus's accountants can reach in seconds: the prv search for a target of 100 takes 80 s (1000
# never returns), and the prv epsilon of a noise multiplier of 0.1 asks for hundreds of GiB. Below
# these noise levels epsilon is in the hundreds: no privacy worth the name.
TARGET_EPSILON_RANGE = (0.01, 30.0)
# The largest learning rate: far beyond any rate that learns, and far inside float32's range, which
# torch's optimizers step the parameters in (Adam scales the rate up first); past that range they raise
# a RuntimeError instead of stepping.
MAX_LEARNING_RATE = 1e6
MIN_NOISE_MULTIPLIER = 0.3


def resolve_data_kind(options: argparse.Namespace) -> None:
    """Fill the defaults that follow from the data and the method: a table implies --gan with the
    marginals synthesizer and its own number of rounds; the WGAN-GP trains more local epochs a round;
    one file per worker fixes the number of workers."""
    table = options.synthesizer == "marginals" or tables.is_table_path(options.data)
    if options.num_rounds is None:
        options.num_rounds = TABLE_ROUNDS if table else DEFAULT_ROUNDS
    if options.epochs is None:
        options.epochs = WGAN_EPOCHS if options.gan and options.synthesizer == "wgan" else 1
    files = len(data.data_files(options.data))
    if options.num_nodes is None:
        options.num_nodes = files + 1 if files > 1 else DEFAULT_NODES
    _require(files < 2 or options.num_nodes == files + 1,
             f"--data names {files} files, one per worker, so --num-nodes must be {files + 1} (the server "
             f"included), not {options.num_nodes}")
    if table:
        _require(options.synthesizer in (None, "marginals"),
                 f"--synthesizer {options.synthesizer} makes images; a table takes 'marginals'")
        options.synthesizer, options.gan = "marginals", True
        _require(options.num_rounds >= 2, "a table needs --num-rounds 2 or more: round 1 surveys the marginals, "
                                          "the later ones measure those it selects")
        _require(options.group_size is None, "--group-size does not fit a table: every node releases its counts "
                                             "in every round, so that their sum is a marginal of the pooled data")
        return
    _require(options.synthesizer != "marginals", "--synthesizer marginals needs a table as --data")
    options.synthesizer = options.synthesizer or "moments"
    for name in ("schema", "test_data", "target"):
        _require(getattr(options, name) is None, f"--{name.replace('_', '-')} is for a table as --data")


def validate(options: argparse.Namespace) -> None:
    """Reject options that are out of range or contradict each other, naming them."""
    resolve_data_kind(options)
    for action in build_parser()._actions:
        value = getattr(options, action.dest, None)
        if action.type is float and value is not None:
            _require(math.isfinite(value), f"{action.option_strings[-1]} must be a finite number, got {value!r}")
    for name, largest in MAXIMUM.items():
        value = getattr(options, name)
        _require(value is None or value <= largest, f"--{name.replace('_', '-')} must be at most {largest}")
    _require(options.seed >= 0, "--seed must be 0 or more")
    _require(options.noise_multiplier is None or options.noise_multiplier >= MIN_NOISE_MULTIPLIER,
             f"--noise-multiplier must be at least {MIN_NOISE_MULTIPLIER}: below it epsilon is in the hundreds and "
             "out of the accountant's reach")
    _require(options.noise_multiplier is None or options.target_epsilon is None,
             "give --noise-multiplier or --target-epsilon, not both: a target plans the noise itself")
    if options.target_epsilon is not None:
        low, high = TARGET_EPSILON_RANGE
        _require(low <= options.target_epsilon <= high,
                 f"--target-epsilon must be in [{low}, {high}]: the accountant's search cannot reach "
                 f"{options.target_epsilon:g}")
    workers = options.num_nodes - 1
    _require(options.num_nodes >= 2, "--num-nodes must be at least 2 (the server and one worker)")
    for name in ("batch_size", "test_batch_size", "epochs", "num_rounds", "log_interval", "threads",
                 "classes_per_worker"):
        _require(getattr(options, name) >= 1, f"--{name.replace('_', '-')} must be at least 1")
    _require(options.learning_rate > 0, "--learning-rate must be positive")
    for name in ("learning_rate", "gan_learning_rate"):
        _require(getattr(options, name) <= MAX_LEARNING_RATE,
                 f"--{name.replace('_', '-')} must be at most {MAX_LEARNING_RATE:g}")
    _require(0 < options.gamma <= 1, "--gamma must be in (0, 1]")
    _require(0 <= options.momentum < 1, "--momentum must be in [0, 1)")
    _require(options.round_timeout > 0 and options.worker_timeout > 0,
             "--round-timeout and --worker-timeout must be positive")
    if options.min_workers is not None:
        _require(1 <= options.min_workers <= workers,
                 f"--min-workers {options.min_workers} does not fit {workers} worker(s)")
    _require(options.dirichlet_alpha > 0, "--dirichlet-alpha must be positive")
    if options.group_size is not None:
        _require(1 <= options.group_size <= workers,
                 f"--group-size {options.group_size} does not fit {workers} worker(s) "
                 f"(--num-nodes {options.num_nodes} counts the server)")
    _require(not (options.train_all and options.group_size is None),
             "--train-all needs --group-size: with every worker averaged it changes nothing")
    _require(not (options.stochastic_gradient and (options.gan or options.local_dp)),
             "--stochastic-gradient (FedSGD) works with the classifier without --local_dp; "
             "--gan and --local_dp train with FedAvg")
    for name in ("max_grad_norm", "gan_learning_rate"):
        _require(getattr(options, name) > 0, f"--{name.replace('_', '-')} must be positive")
    _require(0 < options.delta < 1, "--delta must be in (0, 1)")
    _require(options.target_epsilon is None or options.target_epsilon > 0, "--target-epsilon must be positive")
    _require(options.moments_dims is None or 1 <= options.moments_dims <= data.NUM_PIXELS,
             f"--moments-dims must be in 1..{data.NUM_PIXELS}")
    _require(options.moments_scale is None or options.moments_scale > 0, "--moments-scale must be positive")
    for name in ("critic_steps", "tstr_epochs"):
        _require(getattr(options, name) >= 1, f"--{name.replace('_', '-')} must be at least 1")
    _require(options.synthetic_samples is None or options.synthetic_samples > data.NUM_CLASSES * 3,
             f"--synthetic-samples must be more than {data.NUM_CLASSES * 3} (the evaluation needs every class)")
    _require(options.sample_every >= 0, "--sample-every must be 0 or more")
    validate_secure_aggregation(options, workers)


def validate_secure_aggregation(options: argparse.Namespace, workers: int) -> None:
    """Secure aggregation sums whole-number releases under DP: a table's marginals, with --local_dp."""
    if not options.secure_aggregation:
        _require(options.colluders == 0, "--colluders is for --secure-aggregation")
        return
    _require(options.local_dp, "--secure-aggregation needs --local_dp: it sums the nodes' noisy releases")
    _require(options.gan and options.synthesizer in ("marginals", "moments"),
             "--secure-aggregation sums statistics releases (a table's marginals, the images' moments); the "
             "classifier and the WGAN-GP train by DP-SGD, whose models are averaged, not summed")
    _require(workers >= 2, "--secure-aggregation needs at least 2 workers: one node's sum is its release")
    _require(not options.train_all, "--secure-aggregation sums every member's release: with --train-all the "
             "workers outside the group would release into the sum")
    _require(0 <= options.colluders < workers, f"--colluders must be in 0..{workers - 1} for {workers} workers")


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise OptionsError(message)
