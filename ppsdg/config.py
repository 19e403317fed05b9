"""A run's settings, built once by an entry point (the command line, a vantage6 function, a gloo rank)
and handed down in parts: each layer takes the part its job needs, never the whole.

Every part is a frozen dataclass whose fields are options of `main.py` (a field's `option` metadata
names the option where the field's own name is shorter), so that a configuration travels to a node as
the flat mapping of its options (`Config.options`) and is built again there from it.
"""
import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar


DEFAULT_NODES = 3
DEFAULT_SEED = 1
DEFAULT_DELTA = 1e-5
DEFAULT_ROUNDS = 10
# A WGAN-GP needs thousands of generator steps; 10 rounds of one epoch of 4,000 images give 120.
WGAN_EPOCHS = 10
TABLE_ROUNDS = 3
# Options of the researcher's side only: where the run's output goes, and how to reach a vantage6 server.
CLIENT_ONLY = ("output", "resume", "worker_timeout", "server_url", "server_port", "api_path", "username", "password",
               "collaboration", "organizations", "image", "database", "task_timeout")

# Options that do not change the training: a run resumed from a checkpoint may set them anew.
RESUMABLE = ("num_rounds", "min_workers", "round_timeout", "backend", "save_model", "log_interval",
             "test_batch_size", "sample_every", "synthetic_samples", "tstr_epochs")


def option(name: str) -> dict[str, str]:
    """A field's metadata: the option it holds, where that option's name is not the field's."""
    return {"option": name}


def options_of(part: Any) -> dict[str, Any]:
    """A part as options: {option name: value}."""
    return {f.metadata.get("option", f.name): getattr(part, f.name) for f in dataclasses.fields(part)}


def build(kind: type, options: dict[str, Any]) -> Any:
    """A part of type `kind` from options (the flat mapping every entry point parses)."""
    return kind(**{f.name: options[f.metadata.get("option", f.name)] for f in dataclasses.fields(kind)})


@dataclass(frozen=True)
class Run:
    """What every run has: the federation, its rounds, and the process that runs it."""

    backend: str
    num_nodes: int
    num_rounds: int
    seed: int
    group_size: int | None
    train_all: bool
    min_workers: int | None
    round_timeout: float
    worker_timeout: float
    threads: int
    use_cuda: bool
    output: str
    resume: bool
    save_model: bool

    @property
    def workers(self) -> int:
        return self.num_nodes - 1


@dataclass(frozen=True)
class Source:
    """Where the real data come from and how they are split over the workers: --data (one file, or one
    a worker), the test part (--test-data, else a seeded holdout), and the partition scheme."""

    data: str
    test_data: str | None
    partition: str
    dirichlet_alpha: float
    classes_per_worker: int


@dataclass(frozen=True)
class Privacy:
    """Local DP: whether each worker noises what it releases, how much, and how it is accounted."""

    local_dp: bool
    noise_multiplier: float | None
    target_epsilon: float | None
    delta: float
    accountant: str
    secure_noise: bool
    secure_aggregation: bool
    colluders: int


@dataclass(frozen=True)
class LocalTraining:
    """A worker's SGD in a round (the classifier's, the WGAN-GP's): batches, epochs, the learning rate
    and its decay per round, and DP-SGD's clipping norm."""

    batch_size: int
    epochs: int
    learning_rate: float
    gamma: float
    max_grad_norm: float
    log_interval: int

    def lr(self, round_: int) -> float:
        """StepLR with one step per round: the server and a stateless node compute the same rate."""
        return self.learning_rate * self.gamma ** (round_ - 1)


@dataclass(frozen=True)
class Classifier(LocalTraining):
    """The classifier's job: FedAvg (or FedSGD) of the CNN, tested on the server each round."""

    synthesizer: ClassVar[str | None] = None
    momentum: float
    stochastic_gradient: bool
    test_batch_size: int


@dataclass(frozen=True)
class ImageSynthesis:
    """What every image synthesizer's run shares: the synthetic set's size, the sample grids, and the
    classifiers of the evaluation (train on synthetic, test on real)."""

    synthetic_samples: int | None
    sample_every: int
    tstr_epochs: int


@dataclass(frozen=True)
class Moments(ImageSynthesis):
    """Class-conditional Gaussians in a public subspace: its basis, dimensions, scale, and the draw."""

    synthesizer: ClassVar[str | None] = "moments"
    basis: str = field(metadata=option("moments_basis"))
    dims: int | None = field(metadata=option("moments_dims"))
    scale: float | None = field(metadata=option("moments_scale"))
    draw: str = field(metadata=option("moments_draw"))


@dataclass(frozen=True)
class Wgan(LocalTraining, ImageSynthesis):
    """A federated WGAN-GP: its local training (learning_rate is Adam's, --gan-learning-rate), the critic's
    steps per generator step and its gradient penalty."""

    synthesizer: ClassVar[str | None] = "wgan"
    learning_rate: float = field(metadata=option("gan_learning_rate"))
    critic_steps: int
    gradient_penalty: int


@dataclass(frozen=True)
class Table:
    """A synthetic table: its public schema (JSON text), the target column, the synthetic table's size."""

    synthesizer: ClassVar[str | None] = "marginals"
    schema: str | None
    target: str | None
    synthetic_samples: int | None


JobPart = Classifier | Moments | Wgan | Table
JOBS: tuple[type, ...] = (Classifier, Moments, Wgan, Table)


@dataclass(frozen=True)
class Server:
    """A real vantage6 server, for the researcher's side of --backend vantage6 (the mock without a url)."""

    server_url: str | None
    server_port: int
    api_path: str
    username: str | None
    password: str | None = field(repr=False)
    collaboration: int | None
    organizations: list[int] | None
    image: str | None
    database: str
    task_timeout: float


@dataclass(frozen=True)
class Config:
    """One run's settings, in parts; only an entry point holds all of them."""

    run: Run
    source: Source
    privacy: Privacy
    job: JobPart
    server: Server

    @classmethod
    def from_options(cls, options: dict[str, Any]) -> "Config":
        """From checked options (`parser`): the job is the one --gan and --synthesizer name."""
        kind = next(job for job in JOBS if job.synthesizer == (options["synthesizer"] if options["gan"] else None))
        return cls(build(Run, options), build(Source, options), build(Privacy, options), build(kind, options),
                   build(Server, options))

    @property
    def table(self) -> Table | None:
        """The job's part where the job is a synthetic table (the data split by its target), else None."""
        return self.job if isinstance(self.job, Table) else None

    def options(self) -> dict[str, Any]:
        """The options of the parts that apply to this job, as one flat mapping (what a vantage6 task
        carries; `from_options` of `parser.from_mapping` of it gives this configuration back)."""
        job = self.job
        return {**options_of(self.run), **options_of(self.source), **options_of(self.privacy), **options_of(job),
                **options_of(self.server), "gan": not isinstance(job, Classifier), "synthesizer": job.synthesizer}

    def task_options(self) -> dict[str, Any]:
        """The options a vantage6 task carries (`options`): what only the researcher's side uses stays there."""
        return {k: v for k, v in self.options().items() if k not in CLIENT_ONLY}

    def fixed_options(self) -> dict[str, Any]:
        """The task options a run resumed from this one's checkpoint must share with it. Under a target
        epsilon (given, or -ldp's default) the round count is one of them: the noise was planned to spend
        the target over exactly those rounds."""
        planned = self.privacy.local_dp and self.privacy.noise_multiplier is None
        resumable = [k for k in RESUMABLE if not (planned and k == "num_rounds")]
        return {k: v for k, v in self.task_options().items() if k not in resumable}

    def summary(self) -> dict[str, dict[str, Any]]:
        """The parts that apply to this run, by part, for summary.json: its job's alone, the server's for
        vantage6 only, and no secret."""
        parts = {"run": options_of(self.run), "source": options_of(self.source), "privacy": options_of(self.privacy),
                 type(self.job).__name__.lower(): options_of(self.job)}
        if self.run.backend == "vantage6":
            parts["server"] = {k: v for k, v in options_of(self.server).items() if k != "password"}
        return parts

    def replace_job(self, **changes: Any) -> "Config":
        """This configuration with some of its job's settings changed (a drafted schema, say)."""
        return dataclasses.replace(self, job=dataclasses.replace(self.job, **changes))
