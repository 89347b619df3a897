"""rq job functions. Workers run them in-process (no fork), with the pipeline built once at start.

A job computes features (`process_batch`) or a verification (`verify_pairs`) and appends it to the results
stream; it never writes the catalog: the index has exactly one writer, the daemon.
"""

from __future__ import annotations

import json
from typing import Any

from rq import get_current_job

from workers.pipeline import Pipeline
from workers.queue import RESULTS_STREAM
from workers.verify import VerifyRequest, verify

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


def verify_pairs(request: dict[str, Any]) -> int:
    """request: workers.verify.VerifyRequest.to_json(). Aligns the file with its candidates, with the worker's
    decode limits, and appends the answer with the job's id. Returns how many candidates were verified."""
    if _pipeline is None:
        raise RuntimeError("worker pipeline not installed: start workers with `dupwatch worker`")
    job = get_current_job()
    if job is None:
        raise RuntimeError("verify_pairs runs only as an rq job: its answer goes to the job's Redis")
    s = _pipeline.decode_settings
    answer = verify(VerifyRequest.from_json(request), max_pixels=s.max_pixels, max_bytes=s.max_file_bytes)
    job.connection.xadd(RESULTS_STREAM, {"verified": json.dumps({"job": job.id, "answer": answer.to_json()})})
    return len(answer.alignments)
