"""The batch queue on a real Redis: one job per batch, and a job Redis mangled is reported, never silently
replaced."""

from __future__ import annotations

import logging

import pytest
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer

from workers import queue as q

ITEMS = [(1, "/in/a.jpg", 10, 20), (2, "/in/b.jpg", 11, 21)]


def test_the_same_batch_is_one_job_while_it_waits(redis_url: str) -> None:
    queue = q.ingest_queue(q.connect(redis_url), 60)
    first = q.enqueue_batch(queue, ITEMS)
    assert first is not None and first.id == q.batch_job_id(ITEMS)
    assert q.enqueue_batch(queue, ITEMS) is None
    assert len(queue) == 1


def test_a_job_redis_lost_part_of_is_reported_and_queued_afresh(redis_url: str, caplog: pytest.LogCaptureFixture) -> None:
    conn = q.connect(redis_url)
    queue = q.ingest_queue(conn, 60)
    first = q.enqueue_batch(queue, ITEMS)
    assert first is not None
    conn.hset(first.key, "created_at", "not a date")  # a hash Redis kept only part of, or another writer mangled
    with caplog.at_level(logging.WARNING, logger="workers.queue"):
        again = q.enqueue_batch(queue, ITEMS)
    assert again is not None and again.id == first.id
    assert f"job {first.id} in Redis is unreadable" in caplog.text
    assert Job.fetch(first.id, connection=conn, serializer=JSONSerializer).get_status() == JobStatus.QUEUED


def test_a_worker_hands_back_a_job_it_popped_and_could_not_start(redis_url: str) -> None:
    """A worker taking two queues pops with BLPOP: a job whose start Redis refused (a full disk under its log) is
    in no list and still says queued. The worker puts it back at the front, once; a job that did start is left
    to the daemon."""
    from workers.worker import _hand_back

    conn = q.connect(redis_url)
    queue = q.ingest_queue(conn, 60)
    other = q.enqueue_batch(queue, [(9, "/in/z.jpg", 1, 1)])
    job = q.enqueue_batch(queue, ITEMS)
    assert job is not None and other is not None
    assert conn.lrem(queue.key, 1, job.id) == 1  # what BLPOP did
    _hand_back(conn, "w1", job, queue)
    assert queue.get_job_ids() == [job.id, other.id]
    _hand_back(conn, "w1", job, queue)  # already back: not twice
    assert queue.get_job_ids() == [job.id, other.id]
    conn.lrem(queue.key, 1, other.id)
    conn.hset(other.key, "status", JobStatus.STARTED.value)
    _hand_back(conn, "w1", other, queue)
    assert queue.get_job_ids() == [job.id]
