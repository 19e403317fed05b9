"""ppsdg: privacy-preserving synthetic data by federated learning, over torch.distributed or vantage6.

This package is also the vantage6 algorithm (PKG_NAME=ppsdg): `central` and `partial` are its entry
points (ppsdg.algorithm), with one central function a job (ppsdg.functions: `synthesize_table`,
`synthesize_images`, `train_classifier`). They are looked up only when asked for (PEP 562), so that a
gloo run, the codec and the data loader never import vantage6.
"""
from typing import Any

ENTRY_POINTS = ("central", "partial")
JOB_FUNCTIONS = ("synthesize_table", "synthesize_images", "train_classifier")


def __getattr__(name: str) -> Any:
    if name in ENTRY_POINTS:
        from ppsdg import algorithm

        return getattr(algorithm, name)
    if name in JOB_FUNCTIONS:
        from ppsdg import functions

        return getattr(functions, name)
    raise AttributeError(f"module 'ppsdg' has no attribute {name!r}")
