"""What a run trains, built once from its job's settings: the classifier or a synthesizer, and its
local DP. The rounds (`coordination`), a worker's part (`local`) and the checkpoint ask it what they
need, and never read the run's options."""
from dataclasses import dataclass

from ppsdg import synthesizers
from ppsdg.config import Classifier, Config, ImageSynthesis, JobPart, LocalTraining, Privacy
from ppsdg.privacy import LocalDP
from ppsdg.synthesizers.base import Synthesizer


@dataclass(frozen=True)
class Job:
    """A run's job: `settings` its part of the configuration, `synthesizer` None for the classifier,
    `dp` None without local DP."""

    settings: JobPart
    synthesizer: Synthesizer | None
    dp: LocalDP | None

    @classmethod
    def of(cls, settings: JobPart, privacy: Privacy, num_rounds: int, source: str) -> "Job":
        """The job of a run of `num_rounds` rounds on --data `source` (which the moments' basis follows)."""
        training = settings if isinstance(settings, LocalTraining) else None
        dp = LocalDP.of(privacy, num_rounds, training)
        synthesizer = None if isinstance(settings, Classifier) else synthesizers.build(settings, num_rounds, dp, source)
        return cls(settings, synthesizer, dp)

    @classmethod
    def of_config(cls, config: Config) -> "Job":
        """The job of a run's whole configuration, as its entry point builds it."""
        return cls.of(config.job, config.privacy, config.run.num_rounds, config.source.data)

    @property
    def training(self) -> LocalTraining | None:
        """A worker's SGD settings, for a job that trains by SGD (the classifier, the WGAN-GP)."""
        return self.settings if isinstance(self.settings, LocalTraining) else None

    @property
    def classifier(self) -> Classifier | None:
        return self.settings if isinstance(self.settings, Classifier) else None

    @property
    def federated_sgd(self) -> bool:
        """FedSGD: workers send a gradient, which the server's optimizer steps with."""
        return self.classifier is not None and self.classifier.stochastic_gradient

    @property
    def releases_statistics(self) -> bool:
        """Whether workers release statistics once a round (`Synthesizer.releases_statistics`)."""
        return self.synthesizer is not None and self.synthesizer.releases_statistics

    @property
    def secure_aggregation(self) -> bool:
        """Whether the workers' releases are masked and summed (`secure_aggregation`), not read one by one."""
        return self.dp is not None and self.dp.colluders is not None

    @property
    def figures(self) -> tuple[str, ...]:
        """The figures a worker reports beside its update: the DP accountant entry, the GAN's losses."""
        return (self.dp.figures if self.dp else ()) + (self.synthesizer.figures if self.synthesizer else ())

    @property
    def sample_every(self) -> int:
        """Rounds between the generator's snapshots (sample grids); 0: none."""
        return self.settings.sample_every if isinstance(self.settings, ImageSynthesis) else 0

    def lr(self, round_: int) -> float | None:
        """The round's learning rate, for a job that has one."""
        return self.training.lr(round_) if self.training is not None else None
