"""rq job functions. Workers run them in-process (no fork), with the pipeline built once at start.

A job computes features and appends them to the results stream; it never writes the catalog: the index
has exactly one writer, the daemon.
"""

from __future__ import annotations

import json
from typing import Any

from rq import get_current_job

from workers.pipeline import Pipeline
from workers.queue import RESULTS_STREAM

_pipeline: Pipeline | None = None


def install(pipeline: Pipeline) -> None:
    """Called once by the worker process before it takes jobs."""
    global _pipeline
    _pipeline = pipeline


def process_batch(items: list[list[Any]]) -> int:
    """items: [[catalog id, path], ...]. Returns how many files were processed."""
    if _pipeline is None:
        raise RuntimeError("worker pipeline not installed: start workers with `dupwatch worker`")
    job = get_current_job()
    if job is None:
        raise RuntimeError("process_batch runs only as an rq job: its results go to the job's Redis")
    features = _pipeline.run([(int(i), str(p)) for i, p in items])
    body = json.dumps([f.to_json() for f in features])
    job.connection.xadd(RESULTS_STREAM, {"data": body})
    return len(features)
