"""The project's own error types: every bad input ends in one of these, with a message that names it."""


class PpsdgError(ValueError):
    """Base of every error the project raises on purpose for bad input or a failed federation."""


class DataError(PpsdgError):
    """A dataset file, frame or partitioning request that cannot be used as given."""


class CodecError(PpsdgError):
    """A message on the wire that is malformed, hostile, or does not match the receiver's model."""


class OptionsError(PpsdgError):
    """Options that are invalid or contradict each other."""


class FederationError(PpsdgError):
    """A worker or organization that failed, or answered with something unusable."""
