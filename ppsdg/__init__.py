"""ppsdg: federated training of an MNIST classifier over torch.distributed or vantage6.

This package is also the vantage6 algorithm (PKG_NAME=ppsdg): `central` and `partial` below are its
entry points. They import `train` when called, because `train` itself builds on this package.
"""
from typing import Any

# The decorators are reached through their module: a name `data` here would hide the submodule
# ppsdg.data from `from ppsdg import data`.
from vantage6.algorithm.tools import decorators


@decorators.algorithm_client
def central(client: Any, **kwargs: Any) -> dict[str, Any]:
    """Train over the collaboration: one subtask per round; kwargs are main.py's long options."""
    import train

    return train.central(client, kwargs)


@decorators.data(1)
@decorators.algorithm_client
def partial(client: Any, frame: Any, **kwargs: Any) -> dict[str, Any]:
    """One worker round on this node's data (label + 784 pixel columns); returns the update only."""
    import train

    return train.partial(client, frame, kwargs)
