"""`queue.max_attempts`: a file whose job keeps dying with its worker gets a `worker-crash` error verdict, and is
queued no more. The dying worker is rq's own: it takes the job (status started, in its name) and is never heard
of again, which is what Redis holds after a worker is SIGKILLed mid-job."""

from __future__ import annotations

import signal
from pathlib import Path

import redis
from rq import Worker
from rq.serializers import JSONSerializer

from tests.conftest import Service, base_env, catalog_rows, copy_into, wait_for
from workers import queue as q

MAX_ATTEMPTS = 2


def take_and_die(conn: redis.Redis, name: str) -> str:
    """Take the next ingest job as worker `name` would, mark it started, and never finish it."""
    worker = Worker([q.ingest_queue(conn)], connection=conn, name=name, serializer=JSONSerializer)
    taken = worker.dequeue_job_and_maintain_ttl(timeout=60)
    assert taken is not None, "no job was queued"
    job, _queue = taken
    worker.prepare_job_execution(job)
    return job.id


def start_daemon(tmp_path: Path, redis_url: str, services) -> tuple[Path, Path, dict[str, str], Service]:
    """A hash-only daemon on the shared Redis with no worker: the test plays the workers' part. A short
    re-queue delay, so that a lost job is noticed within the test's waits."""
    root, state = tmp_path / "in", tmp_path / "state"
    root.mkdir()
    env = base_env(state, DUPWATCH_HASH_ONLY="true", DUPWATCH_REDIS__URL=redis_url,
                   DUPWATCH_QUEUE__MAX_ATTEMPTS=str(MAX_ATTEMPTS), DUPWATCH_QUEUE__PENDING_RETRY_S="0.5")
    daemon = Service(["daemon", str(root)], env, tmp_path / "daemon.log")
    services.append(daemon)
    wait_for(lambda: "catch-up scan" in daemon.stderr(), 60, what="daemon start")
    return root, state, env, daemon


def test_a_file_that_keeps_killing_workers_gets_a_worker_crash_verdict(tmp_path: Path, photos, redis_url, services):
    root, state, _env, daemon = start_daemon(tmp_path, redis_url, services)
    poison = copy_into(photos["rocket"], root / "poison.jpg")

    conn = redis.Redis.from_url(redis_url)
    try:
        for attempt in range(1, MAX_ATTEMPTS + 1):
            take_and_die(conn, f"doomed-{attempt}")
            assert [r["state"] for r in catalog_rows(state)] == ["pending"]  # no verdict while attempts remain
        row = wait_for(lambda: next((r for r in catalog_rows(state) if r["state"] == "decided"), None), 60,
                       what="the error verdict")
        assert row["path"] == str(poison) and row["verdict"] == "error"
        assert row["error"] == f"worker-crash: no result after {MAX_ATTEMPTS} attempts"
        assert len(q.ingest_queue(conn)) == 0  # and it is not queued again
        line = wait_for(lambda: next((ln for ln in daemon.verdict_lines() if str(poison) in ln), None), 30,
                        what="the verdict line")
        assert " error " in line
    finally:
        conn.close()
    assert daemon.stop(signal.SIGTERM) == 0


def test_files_whose_jobs_are_lost_without_a_crash_are_never_given_up(tmp_path: Path, photos, redis_url, services):
    """Being queued again costs no attempt: only a worker dying on the job (or the job failing) does. In the
    30-minute soak, files waiting in a backlog through 16 daemon kills and Redis losses were queued again each
    time and 12,048 of them got `worker-crash` errors without ever reaching a worker."""
    root, state, env, daemon = start_daemon(tmp_path, redis_url, services)
    waiting = copy_into(photos["rocket"], root / "waiting.jpg")
    conn = redis.Redis.from_url(redis_url)
    try:
        wait_for(lambda: len(q.ingest_queue(conn)) == 1, 60, what="the file queued")
        for lost in range(1, MAX_ATTEMPTS + 2):  # no worker yet: each time its job is lost, queued again
            conn.flushall()
            wait_for(lambda n=lost: daemon.stderr().count("(Redis restarted)") >= n, 60, what=f"re-queue {lost}")
        assert [(r["state"], r["error"]) for r in catalog_rows(state)] == [("pending", None)]
    finally:
        conn.close()
    worker = Service(["worker"], env, tmp_path / "worker.log")
    services.append(worker)
    row = wait_for(lambda: next((r for r in catalog_rows(state) if r["state"] == "decided"), None), 120,
                   what="the verdict")
    assert row["path"] == str(waiting) and row["verdict"] == "new", row
