"""Synthesizers: the methods that turn the workers' private data into a source of synthetic data.

Each one is a module behind the small `Synthesizer` interface (`base.py`): the global model it trains
(or accumulates), a worker's part of a round, how the server folds the replies in, and how synthetic
records are drawn from what the server holds. The rounds, the transports, the accounting and the
evaluation are the same for all of them.
"""
from ppsdg.config import Moments, Table, Wgan
from ppsdg.privacy import LocalDP
from ppsdg.synthesizers.base import Synthesizer

NAMES = ("moments", "wgan", "marginals")


def build(job: Moments | Wgan | Table, num_rounds: int, dp: LocalDP | None, source: str) -> Synthesizer:
    """The synthesizer of a synthesis job, set up for its run: its rounds, its DP (the moments' basis
    follows the planned noise) and its data (the embedded digits leave the moments no public basis)."""
    if isinstance(job, Table):
        from ppsdg.synthesizers.marginals import MarginalsSynthesizer

        return MarginalsSynthesizer(job, num_rounds)
    if isinstance(job, Moments):
        from ppsdg.synthesizers.moments import MomentsSynthesizer

        return MomentsSynthesizer(job, num_rounds, dp, source)
    from ppsdg.synthesizers.wgan import WGAN

    return WGAN(job)
