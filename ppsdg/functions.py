"""The vantage6 functions a researcher picks in vantage6's UI or names in a `UserClient` task: one a job,
each with only the arguments its job uses, defaults where a safe one exists. The algorithm store's
description of them (`ppsdg/store.py`) is made from these signatures.

Each maps its arguments to the run's options and runs the same rounds as `central`, which takes every
option of `main.py` (and stays the function `main.py --backend vantage6` creates).
"""
import json
from typing import Any

from vantage6.algorithm.tools import decorators

from ppsdg import algorithm, tables
from ppsdg.config import DEFAULT_DELTA, DEFAULT_ROUNDS, DEFAULT_SEED, TABLE_ROUNDS
from ppsdg.privacy import DEFAULT_TARGET_EPSILON

IMAGE_METHODS = ("moments", "wgan")


@decorators.algorithm_client
def synthesize_table(client: Any, schema: dict[str, Any] | str, target: str,
                     epsilon: float = DEFAULT_TARGET_EPSILON, organizations: list[int] | None = None,
                     rows: int | None = None, rounds: int = TABLE_ROUNDS, seed: int = DEFAULT_SEED,
                     delta: float = DEFAULT_DELTA, secure_aggregation: bool = False) -> dict[str, Any]:
    """A DP synthetic table of the organizations' tables, under their public `schema`."""
    return algorithm.run_central(client, {
        "gan": True, "synthesizer": "marginals", "schema": schema_text(schema), "target": target,
        "local_dp": True, "target_epsilon": epsilon, "organizations": organizations, "synthetic_samples": rows,
        "num_rounds": rounds, "seed": seed, "delta": delta, "secure_aggregation": secure_aggregation})


@decorators.algorithm_client
def synthesize_images(client: Any, epsilon: float = DEFAULT_TARGET_EPSILON, method: str = IMAGE_METHODS[0],
                      organizations: list[int] | None = None, samples: int | None = None,
                      rounds: int = DEFAULT_ROUNDS, seed: int = DEFAULT_SEED, delta: float = DEFAULT_DELTA,
                      secure_aggregation: bool = False) -> dict[str, Any]:
    """DP synthetic digit images of the organizations' labelled images. The moments' public basis is the
    embedded digits': the nodes' images are not them."""
    basis = {"moments_basis": "digits"} if method == "moments" else {}
    return algorithm.run_central(client, {
        "gan": True, "synthesizer": method, **basis, "local_dp": True, "target_epsilon": epsilon,
        "organizations": organizations, "synthetic_samples": samples, "num_rounds": rounds, "seed": seed,
        "delta": delta, "secure_aggregation": secure_aggregation})


@decorators.algorithm_client
def train_classifier(client: Any, epsilon: float | None = None, organizations: list[int] | None = None,
                     rounds: int = DEFAULT_ROUNDS, learning_rate: float = 0.05, batch_size: int = 64,
                     epochs: int = 1, seed: int = DEFAULT_SEED, delta: float = DEFAULT_DELTA) -> dict[str, Any]:
    """FedAvg of the CNN digit classifier, with DP-SGD on every node where `epsilon` is given."""
    return algorithm.run_central(client, {
        "local_dp": epsilon is not None, "target_epsilon": epsilon, "organizations": organizations,
        "num_rounds": rounds, "learning_rate": learning_rate, "batch_size": batch_size, "epochs": epochs,
        "seed": seed, "delta": delta})


def schema_text(schema: dict[str, Any] | str) -> str:
    """The schema as the options carry it: vantage6's UI sends a JSON argument as an object, a script may
    send its text."""
    return tables.Schema.from_text(schema if isinstance(schema, str) else json.dumps(schema)).text()
