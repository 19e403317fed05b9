"""What a vantage6 central function returns: everything a researcher reads with vantage6's own tools
(its UI, `UserClient`), without ppsdg: each round's record, the privacy spent round by round, the
synthetic data as CSV text with a preview of its first records, and the checkpoint (the state to resume
from, or to draw more with `ppsdg sample`). Drawing the synthetic records is post-processing of what
the nodes released, done once on the server after the last round: no privacy cost, and no round waits
for it."""
import json
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from backends import Tensors, codec
from ppsdg import checkpoint, data, synthetic
from ppsdg.checkpoint import Checkpoint
from ppsdg.config import ImageSynthesis, Table
from ppsdg.job import Job

PREVIEW_ROWS = 20
# The columns of the result's privacy table, one row a round (the UI's `privacy` visualization).
PRIVACY_COLUMNS = ("round", "workers", "epsilon", "delta")


def central_result(point: Checkpoint | None, task: Mapping[str, Any], fixed: Mapping[str, Any], job: Job, seed: int,
                   organizations: list[int], attribution: str, error: str | None = None) -> dict[str, Any]:
    """The central function's result: the metrics, the privacy spent in each round, the checkpoint, how its
    results were attributed to organizations, and the error that stopped it, if one did (the researcher
    then still gets every finished round); a synthesizer's finished run also holds its synthetic data.
    `task`: the run's options as a task carries them (`Config.task_options`), from which `ppsdg sample`
    rebuilds the run; `fixed`: those a resumed run must share (`Config.fixed_options`)."""
    records = point.records if point else []
    result: dict[str, Any] = {"organizations": organizations, "attribution": attribution, "metrics": records,
                              "privacy": privacy_spend(records), "options": dict(task),
                              "checkpoint": codec.to_text(checkpoint.encode(point, fixed)) if point else None}
    if error is not None:
        result["error"] = error
    elif point is not None and job.synthesizer is not None:
        frame, state = drawn_frame(point, job, seed, synthetic_count(job, records))
        result["synthetic"] = synthetic_records(frame, job, records)
        if isinstance(job.settings, Table):
            result["preview"] = json.loads(frame.head(PREVIEW_ROWS).to_json(orient="records"))
            result["synthetic"]["fit"] = job.synthesizer.release_fit(state, frame)
    return result


def privacy_spend(records: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One row a round: the workers that released, and under local DP the run's epsilon after the round
    (the composition over every release so far, the most any worker spent) at its delta."""
    return [{"round": record["round"], "workers": len(record["workers"]), "epsilon": record.get("epsilon"),
             "delta": record.get("delta")} for record in records]


def synthetic_count(job: Job, records: Sequence[Mapping[str, Any]]) -> int:
    """The run's --synthetic-samples, else as many records as the nodes' pooled rows of the last round."""
    return job.settings.synthetic_samples or sum(worker["num_samples"] for worker in records[-1]["workers"])


def drawn_frame(point: Checkpoint, job: Job, seed: int, count: int) -> tuple[pd.DataFrame, Tensors]:
    """`count` synthetic records as a table (a table's own columns, or images in the node CSV layout), and
    the state they were drawn from."""
    records, state = synthetic.drawn(point, job.synthesizer, seed, count)
    return (data.to_frame(records) if isinstance(job.settings, ImageSynthesis) else records), state


def synthetic_records(frame: pd.DataFrame, job: Job, records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The synthetic records as CSV text and their count, with what they follow (a table's schema) and the
    run's epsilon and delta."""
    last = records[-1]
    described = {"schema": json.loads(job.settings.schema)} if isinstance(job.settings, Table) else {}
    return {"csv": frame.to_csv(index=False), "rows": len(frame), **described,
            **{key: last[key] for key in ("epsilon", "delta") if key in last}}
