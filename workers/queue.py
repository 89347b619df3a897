"""The Redis meeting point: rq queues (JSON serializer only), the results stream, worker records.

Daemon and workers agree on these names and nothing else. Job ids are derived from what a job carries (a
batch's files: catalog id + path + size + mtime; a verification: workers.verify.VerifyRequest.job_id), so the
same job enqueued twice is one job.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import redis
from redis.maint_notifications import MaintNotificationsConfig
from rq import Queue
from rq.exceptions import NoSuchJobError
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer

log = logging.getLogger(__name__)

INGEST_QUEUE = "dupwatch-ingest"
"""rq queue of batch jobs: each carries up to `queue.batch_size` files."""

VERIFY_QUEUE = "dupwatch-verify"
"""rq queue of verification jobs (workers.verify): one file against its candidates. Workers take these first:
verdicts commit in arrival order, so an unanswered verification holds back every verdict after it."""

RESULTS_STREAM = "dupwatch:results"
"""Redis stream where workers append one entry per processed batch (field `data`: the features) or per
verification (field `verified`: {"job": job id, "answer": workers.verify.Verified}); the daemon reads it as a
group."""

RESULTS_GROUP = "index-owner"

EPOCH_KEY = "dupwatch:epoch"
"""Set by the daemon at start. If it disappears, Redis lost its data: re-queue everything pending."""

WORKER_KEY = "dupwatch:worker:{name}"
"""Hash per worker: model identity or why it runs hash-only (for `status` and /readyz)."""

WORKER_TTL_S = 15
"""A worker's record expires this long after its last refresh (every third of it, from a thread that runs
even mid-job). An expired record means the worker died (SIGKILL, lost host): its started job is lost."""

JOB_FUNCTION = "workers.jobs.process_batch"
VERIFY_FUNCTION = "workers.jobs.verify_pairs"


def connect(url: str, timeout_s: float = 30) -> redis.Redis:
    """A client for `url`. It sends only commands the fleet's ACL allows on Redis 6.2 and 7 (deploy/redis-acl.conf):
    none of redis-py's optional CLIENT SETINFO and CLIENT MAINT_NOTIFICATIONS at connect, whose refusals redis-py
    ignores but Redis counts in its ACL log, where a real refusal must stand out."""
    return redis.Redis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=min(10, timeout_s),
                                health_check_interval=15, driver_info=None,
                                maint_notifications_config=MaintNotificationsConfig(enabled=False))


def ingest_queue(conn: redis.Redis, job_timeout: int | None = None) -> Queue:
    """The ingest queue. `job_timeout` matters only to the enqueuer (the daemon): a job carries its own."""
    return Queue(INGEST_QUEUE, connection=conn, serializer=JSONSerializer, default_timeout=job_timeout)


def verify_queue(conn: redis.Redis, job_timeout: int | None = None) -> Queue:
    """The verification queue (see `ingest_queue` for `job_timeout`)."""
    return Queue(VERIFY_QUEUE, connection=conn, serializer=JSONSerializer, default_timeout=job_timeout)


def batch_job_id(items: Sequence[Sequence[Any]]) -> str:
    """Deterministic id of a batch: items are (id, path, size, mtime_ns)."""
    digest = hashlib.sha1(json.dumps([list(i) for i in items], sort_keys=True).encode()).hexdigest()
    return f"ingest-{digest}"


def enqueue_batch(queue: Queue, items: Sequence[Sequence[Any]], *, at_front: bool = False) -> Job | None:
    """Enqueue a batch unless the same batch is already waiting or running (`at_front`: to be taken next).
    Returns the job or None."""
    job_id = batch_job_id(items)
    if not _free(queue, job_id):
        return None
    payload = [[int(i[0]), str(i[1])] for i in items]
    return queue.enqueue(JOB_FUNCTION, payload, job_id=job_id, result_ttl=0, failure_ttl=86400,
                         description=f"{len(items)} files", at_front=at_front)


def enqueue_verify(queue: Queue, job_id: str, request: dict[str, Any]) -> Job | None:
    """Enqueue a verification (`request`: workers.verify.VerifyRequest.to_json) unless the same one is already
    waiting or running. Returns the job or None."""
    if not _free(queue, job_id):
        return None
    return queue.enqueue(VERIFY_FUNCTION, request, job_id=job_id, result_ttl=0, failure_ttl=3600,
                         description=f"verify file {request['file_id']}")


def _free(queue: Queue, job_id: str) -> bool:
    """Whether `job_id` may be enqueued: no job of that id is waiting or running (a finished or failed one
    is deleted, freeing the id)."""
    try:
        existing = Job.fetch(job_id, connection=queue.connection, serializer=JSONSerializer)
        status = existing.get_status(refresh=False)
        if status in (JobStatus.QUEUED, JobStatus.STARTED, JobStatus.DEFERRED, JobStatus.SCHEDULED):
            return False
        existing.delete()
    except NoSuchJobError:
        pass  # the usual case: this batch was never queued, or its job finished and expired
    except redis.ConnectionError:
        raise  # not the job's fault: the caller's Redis retry loop handles it
    except Exception as exc:  # noqa: BLE001 - a job hash Redis lost part of: say so, then enqueue afresh
        log.warning("job %s in Redis is unreadable (%s: %s); queueing it afresh", job_id,
                    type(exc).__name__, exc)
    return True


RUNNING, UNSEEN, DEAD, ABANDONED = "running", "unseen", "dead", "abandoned"
"""What became of a started job's worker (`job_runner`)."""


def job_runner(conn: redis.Redis, name: str, started_at: datetime | None) -> str:
    """Whether the worker `name` is still running the job it started at `started_at`.

    UNSEEN: its record expired: it died (SIGKILL, lost host), unless Redis was just away, which the worker
    could not refresh its record through. DEAD: a namesake restarted after the job started. ABANDONED: the
    same process, but its rq loop was rebuilt after the job started: a loop ends only when Redis went away
    mid-job, and the job ended with it (its results could not be sent), though a Redis that replays its
    append-only file still holds it as started. RUNNING otherwise."""
    started, loop = conn.hmget(WORKER_KEY.format(name=name), "started", "loop")
    if started is None:
        return UNSEEN
    if started_at is None:
        return RUNNING
    at = started_at.replace(tzinfo=started_at.tzinfo or UTC).timestamp()
    if float(started) > at:
        return DEAD
    return ABANDONED if loop is not None and float(loop) > at else RUNNING


def ensure_group(conn: redis.Redis) -> None:
    try:
        conn.xgroup_create(RESULTS_STREAM, RESULTS_GROUP, id="0", mkstream=True)
    except redis.ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise
