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
