"""A vantage6 node's own privacy policy: what the data owner allows, whatever the researcher asks.

Local DP protects a data holder against everyone else, the researcher included, so the holder, not
the task's options, has the last word. The node owner sets the variables below in the node's
`algorithm_env` (vantage6 4.x passes it as the container's environment; the mock client and the
tests: the process environment). The partial function reads them and refuses a round that breaks
them before it reads a single row of the private table. A variable it cannot read is a refusal
too, never a fallback to the weaker setting.

The node's own spending is kept in its ledger: one JSON file per organization in the job's
`TEMPORARY_FOLDER`, which vantage6 shares between the subtasks of one central task on a node. So
PPSDG_MAX_EPSILON and PPSDG_MAX_ROUNDS bound one job (one central task), not the node's lifetime.
A round is charged before it reads its data, under a lock that holds across processes: two rounds
of the job started together cannot both spend the room left for one.
"""
import contextlib
import fcntl
import json
import math
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from ppsdg import runtime
from ppsdg.config import Privacy, Run
from ppsdg.errors import FederationError
from ppsdg.files import write_atomically
from ppsdg.job import Job
from ppsdg.privacy import HistoryEntry, epsilon

REQUIRE_DP = "PPSDG_REQUIRE_DP"
SECURE_NOISE = "PPSDG_SECURE_NOISE"
ALLOW_SEEDED_NOISE = "PPSDG_ALLOW_SEEDED_NOISE"
MAX_EPSILON = "PPSDG_MAX_EPSILON"
DELTA = "PPSDG_DELTA"
MAX_EPOCHS = "PPSDG_MAX_EPOCHS"
MAX_BATCH_SIZE = "PPSDG_MAX_BATCH_SIZE"
MAX_THREADS = "PPSDG_MAX_THREADS"
MAX_ROUNDS = "PPSDG_MAX_ROUNDS"
MIN_NOISE_MULTIPLIER = "PPSDG_MIN_NOISE_MULTIPLIER"
MAX_GRAD_NORM = "PPSDG_MAX_GRAD_NORM"
DISTRIBUTED_NOISE = "PPSDG_DISTRIBUTED_NOISE"
KNOWN = (REQUIRE_DP, SECURE_NOISE, ALLOW_SEEDED_NOISE, MAX_EPSILON, DELTA, MAX_EPOCHS, MAX_BATCH_SIZE, MAX_THREADS,
         MAX_ROUNDS, MIN_NOISE_MULTIPLIER, MAX_GRAD_NORM, DISTRIBUTED_NOISE)
PREFIX = "PPSDG_"
FOLDER = "TEMPORARY_FOLDER"
DEFAULT_DELTA = 1e-5
# Without a policy a task must still not tie up the node for hours: a round's local epochs are
# bounded by default, as its threads are by the node's cores; an owner may set either higher.
DEFAULT_MAX_EPOCHS = 100

WHOLE = re.compile(r"[0-9]+", re.ASCII)
DECIMAL = re.compile(r"([0-9]+\.?[0-9]*|\.[0-9]+)([eE][-+]?[0-9]+)?", re.ASCII)


class PolicyError(FederationError):
    """A round the node's policy refuses, or a policy the node cannot read: it names the variable."""


def flag(env: Mapping[str, str], name: str) -> bool:
    """Exactly "0" or "1": "yes", "true" or " 1" could be meant either way, so they are refused."""
    value = env.get(name, "0")
    if value not in ("0", "1"):
        raise PolicyError(f"{name}={value!r} cannot be read: it must be exactly 0 or 1")
    return value == "1"


def whole(env: Mapping[str, str], name: str, default: int | None = None, least: int = 1) -> int | None:
    """A whole number of at least `least` in plain digits, or `default` when the variable is not set."""
    value = env.get(name)
    if value is None:
        return default
    if not WHOLE.fullmatch(value) or int(value) < least:
        raise PolicyError(f"{name}={value!r} cannot be read: it must be a whole number of at least {least}")
    return int(value)


def positive(env: Mapping[str, str], name: str, default: float | None = None, below: float = math.inf) -> float | None:
    """A finite positive decimal number under `below`, or `default` when the variable is not set."""
    value = env.get(name)
    if value is None:
        return default
    if not DECIMAL.fullmatch(value) or not 0 < float(value) < below:
        bound = "" if below == math.inf else f" and below {below:g}"
        raise PolicyError(f"{name}={value!r} cannot be read: it must be a finite number above 0{bound}")
    return float(value)


class NodeLedger:
    """What this node released in the current job: one entry a round, None for a round without DP
    (whose epsilon is unbounded). Charged before the round reads its data, written atomically."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.rounds = self._read()

    @classmethod
    def in_folder(cls, env: Mapping[str, str], organization: int, needed_by: str) -> "NodeLedger":
        folder = env.get(FOLDER)
        if not folder or not Path(folder).is_dir() or not os.access(folder, os.W_OK):
            raise PolicyError(f"{needed_by} is set but there is no writable {FOLDER} ({folder!r}) to keep this "
                              "node's ledger in: the node cannot know what it has released")
        return cls(Path(folder) / f"ppsdg-ledger-{organization}.json")

    def _read(self) -> list[HistoryEntry | None]:
        if not self.path.exists():
            return []
        try:
            rounds = json.loads(self.path.read_text())["rounds"]
            return [None if entry is None else (float(entry[0]), float(entry[1]), int(entry[2]))
                    for entry in (item["entry"] for item in rounds)]
        except (ValueError, KeyError, TypeError, IndexError) as error:
            raise PolicyError(f"this node's ledger {self.path} cannot be read ({error}): refused rather "
                              "than started afresh") from error

    def epsilon(self, delta: float, accountant: str, planned: Sequence[HistoryEntry | None] = ()) -> float:
        """The node's composed epsilon over its releases and the `planned` ones."""
        history = self.rounds + list(planned)
        if any(entry is None for entry in history):
            return math.inf
        return epsilon(history, delta, accountant)

    @contextlib.contextmanager
    def locked(self) -> Iterator["NodeLedger"]:
        """The ledger read afresh under an exclusive lock (fcntl.flock on a file beside it) held to the end
        of the block: a round of the same job that starts meanwhile, in any process, waits for it and
        then sees its charge."""
        with open(self.path.with_name(self.path.name + ".lock"), "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            self.rounds = self._read()
            yield self

    def charge(self, entry: HistoryEntry | None) -> None:
        """Charge a round the node is about to release (None: one without DP); call it under `locked`."""
        self.rounds.append(entry)
        text = json.dumps({"rounds": [{"entry": None if e is None else list(e)} for e in self.rounds]})
        write_atomically(self.path, text.encode())


@dataclass(frozen=True)
class NodePolicy:
    """The node owner's limits; None: not limited. See README, "For node owners"."""

    require_dp: bool = False
    secure_noise: bool = False
    allow_seeded_noise: bool = False
    max_epsilon: float | None = None
    delta: float = DEFAULT_DELTA
    max_epochs: int | None = None
    max_batch_size: int | None = None
    max_threads: int | None = None
    max_rounds: int | None = None
    min_noise_multiplier: float | None = None
    max_grad_norm: float | None = None
    # Under secure aggregation, the colluders this node assumes: it adds 1/(members - colluders) of the
    # noise variance; None: the owner allows no share, and the node adds all of it.
    distributed_noise: int | None = None

    @classmethod
    def from_environment(cls, env: Mapping[str, str]) -> "NodePolicy":
        """The policy the owner wrote; a PPSDG_ variable the node does not know is a typo until proven
        otherwise (PPSDG_REQUIRE_DPP=1 must not leave the node without its limit): a refusal."""
        unknown = sorted(name for name in env if name.startswith(PREFIX) and name not in KNOWN)
        if unknown:
            raise PolicyError(f"{', '.join(unknown)}: not a variable this node knows; the known ones are "
                              f"{', '.join(KNOWN)}")
        return cls(require_dp=flag(env, REQUIRE_DP), secure_noise=flag(env, SECURE_NOISE),
                   allow_seeded_noise=flag(env, ALLOW_SEEDED_NOISE),
                   max_epsilon=positive(env, MAX_EPSILON), delta=positive(env, DELTA, DEFAULT_DELTA, below=1.0),
                   max_epochs=whole(env, MAX_EPOCHS, DEFAULT_MAX_EPOCHS), max_batch_size=whole(env, MAX_BATCH_SIZE),
                   max_threads=whole(env, MAX_THREADS, runtime.cores()), max_rounds=whole(env, MAX_ROUNDS),
                   min_noise_multiplier=positive(env, MIN_NOISE_MULTIPLIER),
                   max_grad_norm=positive(env, MAX_GRAD_NORM), distributed_noise=whole(env, DISTRIBUTED_NOISE, least=0))

    def secure(self, privacy: Privacy, on_node: bool) -> bool:
        """Whether the round's DP noise and sampling must come from the secure stream: on a real node
        unless its owner allows seeded noise (reproducible runs, as the federation harness needs);
        anywhere the task or the owner asks for it. Forcing it wins over allowing the seed."""
        return privacy.secure_noise or self.secure_noise or (on_node and not self.allow_seeded_noise)

    def admit(self, run: Run, job: Job, num_samples: int, env: Mapping[str, str], organization: int) -> None:
        """Refuse the round (PolicyError) if it breaks the policy; otherwise charge it to the node's ledger,
        where the policy keeps one, before anything is released: a round that fails after this point
        stays charged, the safe side. Reads nothing of the data but its row count."""
        self.check_limits(run, job)
        dp = job.dp
        if dp is None:
            self.check_without_dp()
            planned = None
        else:
            planned = dp.planned_entry(num_samples, job.releases_statistics)
            self.check_mechanism(job, planned)
        needed_by = [name for name, value in ((MAX_EPSILON, self.max_epsilon), (MAX_ROUNDS, self.max_rounds))
                     if value is not None]
        if not needed_by:
            return
        with NodeLedger.in_folder(env, organization, needed_by[0]).locked() as ledger:
            self.check_history(ledger, dp.accountant if dp is not None else None, planned)
            ledger.charge(planned)

    def check_limits(self, run: Run, job: Job) -> None:
        """The task's size against the node's: a limit is a refusal, never a silent cut. A job that
        releases statistics has no epochs or batches."""
        training = job.training
        for name, limit, asked, option in ((MAX_EPOCHS, self.max_epochs, training and training.epochs, "--epochs"),
                                           (MAX_BATCH_SIZE, self.max_batch_size, training and training.batch_size,
                                            "--batch-size"),
                                           (MAX_THREADS, self.max_threads, run.threads, "--threads"),
                                           (MAX_ROUNDS, self.max_rounds, run.num_rounds, "--num-rounds")):
            if limit is not None and asked is not None and asked > limit:
                raise PolicyError(f"{name}={limit}: the task asks for {option} {asked}")

    def check_without_dp(self) -> None:
        """A round without local DP has no noise, no clipping and no finite epsilon: any DP limit refuses it."""
        limits = {REQUIRE_DP: self.require_dp, MAX_EPSILON: self.max_epsilon is not None,
                  MIN_NOISE_MULTIPLIER: self.min_noise_multiplier is not None,
                  MAX_GRAD_NORM: self.max_grad_norm is not None}
        names = [name for name, on in limits.items() if on]
        if names:
            raise PolicyError(f"{', '.join(names)} set: this node trains only with local DP, and the task has "
                              "no --local_dp")

    def check_mechanism(self, job: Job, planned: HistoryEntry) -> None:
        """The round's own noise and clipping, before any composition."""
        noise = planned[0]
        if self.min_noise_multiplier is not None and noise < self.min_noise_multiplier:
            raise PolicyError(f"{MIN_NOISE_MULTIPLIER}={self.min_noise_multiplier:g}: this round's noise "
                              f"multiplier would be {noise:.4g}")
        training = job.training
        if self.max_grad_norm is not None and training is not None and training.max_grad_norm > self.max_grad_norm:
            raise PolicyError(f"{MAX_GRAD_NORM}={self.max_grad_norm:g}: the task asks for --max-grad-norm "
                              f"{training.max_grad_norm:g}")

    def check_history(self, ledger: NodeLedger, accountant: str | None, planned: HistoryEntry | None) -> None:
        """The job so far plus this round against the node's budget of rounds and of epsilon."""
        if self.max_rounds is not None and len(ledger.rounds) >= self.max_rounds:
            raise PolicyError(f"{MAX_ROUNDS}={self.max_rounds}: this node has served {len(ledger.rounds)} "
                              "round(s) of this job already")
        if self.max_epsilon is None:
            return
        spent = ledger.epsilon(self.delta, accountant)
        after = ledger.epsilon(self.delta, accountant, [planned])
        if after > self.max_epsilon:
            raise PolicyError(f"{MAX_EPSILON}={self.max_epsilon:g}: this node's budget at delta {self.delta:g} "
                              f"would be exceeded: epsilon {spent:.4g} spent in {len(ledger.rounds)} round(s), "
                              f"{after:.4g} with this one ({accountant} accountant)")
