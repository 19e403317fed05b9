"""The project's own error types: every bad input ends in one of these, with a message that names it;
and how such an error is read back from the log of a vantage6 run, where the node's wrapper prints it."""
import re

LOG_ERROR = re.compile(r"^(?:\w+\.)*(\w+(?:Error|Exception)): (.+)$")
MAX_MESSAGE = 1000


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


def last_error(log: str) -> str | None:
    """The last `module.KindError: message` line of a traceback in `log`, as `KindError: message`."""
    lines = (LOG_ERROR.match(line.strip()) for line in log.splitlines())
    errors = [f"{match[1]}: {match[2][:MAX_MESSAGE]}" for match in lines if match]
    return errors[-1] if errors else None
