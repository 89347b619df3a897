"""`queue.max_attempts`: a file whose job keeps dying with its worker gets a `worker-crash` error verdict, and is
queued no more. The dying worker is rq's own: it takes the job (status started, in its name) and is never heard
of again, which is what Redis holds after a worker is SIGKILLed mid-job."""

from __future__ import annotations

import signal
import sqlite3
import time
from pathlib import Path

import numpy as np
import pytest
import redis
from PIL import Image
from rq import Queue, Worker
from rq.job import Job
from rq.registry import StartedJobRegistry
from rq.serializers import JSONSerializer

from daemon.index.catalog import read_only_connection
from tests.conftest import RedisServer, Service, base_env, catalog_rows, copy_into, wait_for
from workers import library_internals as internals
from workers import queue as q

pytestmark = pytest.mark.system

MAX_ATTEMPTS = 2


def take_and_die(conn: redis.Redis, name: str, queue: Queue | None = None) -> str:
    """Take the next job of `queue` (the ingest queue by default) as worker `name` would, mark it started, and
    never finish it."""
    worker = Worker([queue or q.ingest_queue(conn)], connection=conn, name=name, serializer=JSONSerializer)
    taken = worker.dequeue_job_and_maintain_ttl(timeout=60)
    assert taken is not None, "no job was queued"
    job, _queue = taken
    worker.prepare_job_execution(job)
    return job.id


def start_daemon(tmp_path: Path, redis_url: str, services,
                 pending_retry_s: str = "0.5") -> tuple[Path, Path, dict[str, str], Service]:
    """A hash-only daemon on the shared Redis with no worker: the test plays the workers' part. A short
    re-queue delay by default, so that a lost job is noticed within the test's waits."""
    root, state = tmp_path / "in", tmp_path / "state"
    root.mkdir()
    env = base_env(state, DUPWATCH_HASH_ONLY="true", DUPWATCH_REDIS__URL=redis_url,
                   DUPWATCH_QUEUE__MAX_ATTEMPTS=str(MAX_ATTEMPTS), DUPWATCH_QUEUE__PENDING_RETRY_S=pending_retry_s)
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


def test_a_job_cut_short_by_a_redis_restart_is_run_again_by_the_same_worker(tmp_path: Path, services):
    """Redis dies mid-job and comes back from its append-only file after the job ended: the worker could not
    send its results, and Redis holds the job as started by that worker, and the worker as registered. The
    worker must keep running (rq would refuse its new loop: "an active worker named ... already"), and the
    job must be run again at the daemon's next check, without costing its files an attempt: neither waited out
    for `queue.job_timeout_s` (600 s; verdicts go in arrival order, so every later file waits too: the
    3-minute soak's stall) nor for `queue.pending_retry_s` (120 s, the default here)."""
    server = RedisServer(tmp_path / "redis", append_only=True)
    server.start()
    try:
        root, state = tmp_path / "in", tmp_path / "state"
        root.mkdir()
        env = base_env(state, DUPWATCH_HASH_ONLY="true", DUPWATCH_REDIS__URL=server.url, DUPWATCH_LOG_LEVEL="INFO",
                       DUPWATCH_QUEUE__BATCH_SIZE="8", DUPWATCH_QUEUE__BATCH_MS="60000")
        daemon = Service(["daemon", str(root)], env, tmp_path / "daemon.log")
        worker = Service(["worker", "--name", "w1"], env, tmp_path / "worker.log")
        services.extend([daemon, worker])
        wait_for(lambda: "ready" in worker.stderr() and "catch-up scan" in daemon.stderr(), 120, what="start")
        side = 7000  # a PNG is decoded at full size: 49 Mpx, about a second each, so the job of 8 lasts seconds
        ramp = np.linspace(0, 255, side).astype(np.uint8)
        pixels = np.empty((side, side, 3), np.uint8)
        pixels[..., 0], pixels[..., 1], pixels[..., 2] = ramp[:, None], ramp[None, :], 128
        staging = tmp_path / "staging"
        staging.mkdir()
        Image.fromarray(pixels).save(staging / "big.png", compress_level=1)
        for i in range(8):
            copy_into(staging / "big.png", staging / f"big{i}.png")
        for i in range(8):  # renamed into place together: one batch, one job
            (staging / f"big{i}.png").rename(root / f"big{i}.png")
        conn = server.client()
        wait_for(lambda: StartedJobRegistry(q.INGEST_QUEUE, connection=conn).get_job_ids(), 60, 0.02,
                 what="the job started")
        server.kill()  # mid-job; the file holds the job as started and the worker as registered
        wait_for(lambda: "lost Redis" in worker.stderr(), 60, what="the worker's job to end without Redis")
        server.start()
        # at the daemon's next check, well before `queue.pending_retry_s`
        wait_for(lambda: "cut short by a Redis outage" in daemon.stderr(), 60, 0.5, what="the job released")
        # the job again: 8 decodes of 49 Mpx, minutes on 2 busy cores
        rows = wait_for(lambda: (r := catalog_rows(state)) and len(r) == 8 and all(x["state"] == "decided" for x in r)
                        and r, 300, 0.5, what="every file decided")
        assert worker.proc.poll() is None, worker.stderr()[-2000:]  # the same worker, still running
        assert all(r["verdict"] in ("new", "exact-copy") for r in rows), rows
        attempts = read_only_connection(state / "catalog.sqlite3").execute("SELECT attempts FROM files").fetchall()
        assert [a[0] for a in attempts] == [0] * 8  # Redis's loss is not the files' fault
        assert worker.stop(signal.SIGTERM) == 0
        assert daemon.stop(signal.SIGTERM) == 0
    finally:
        server.kill()


def test_a_file_queued_again_goes_ahead_of_the_files_after_it(tmp_path: Path, photos, redis_url, services):
    """Verdicts go in arrival order: a file whose job was lost, queued again behind a long queue, would hold back
    every verdict after it until the whole queue was worked off (the 12-minute soak stalled on 3,565 jobs). It
    goes to the front."""
    root, _state, _env, daemon = start_daemon(tmp_path, redis_url, services)
    conn = redis.Redis.from_url(redis_url)
    try:
        queue = q.ingest_queue(conn)
        first = copy_into(photos["rocket"], root / "first.jpg")
        wait_for(lambda: len(queue) == 1, 60, what="the first file queued")
        second = copy_into(photos["astronaut"], root / "second.jpg")
        wait_for(lambda: len(queue) == 2, 60, what="the second file queued")
        lost = queue.get_job_ids()[0]
        Job.fetch(lost, connection=conn, serializer=JSONSerializer).delete()  # lost: gone from Redis
        wait_for(lambda: "(job lost)" in daemon.stderr() and len(queue) == 2, 60, what="the first file queued again")
        jobs = [Job.fetch(i, connection=conn, serializer=JSONSerializer) for i in queue.get_job_ids()]
        assert [[path for _id, path in job.args[0]] for job in jobs] == [[str(first)], [str(second)]]
    finally:
        conn.close()
    assert daemon.stop(signal.SIGTERM) == 0


def test_a_job_a_worker_has_taken_but_not_yet_started_is_left_to_it(tmp_path: Path, photos, redis_url, services):
    """A worker moves a job from the queue to rq's intermediate list, then marks it started. In between it is in
    neither the queue nor the started registry; judged lost there, jobs a worker was about to run were deleted
    and their files queued again, check after check (the 12-minute soak's re-queue storm). Left there for
    longer than a worker's record lives (`WORKER_TTL_S`), its worker died holding it (or lost Redis as it
    popped it: a disk full under Redis's log): then it is queued again, however recently its files were
    queued; the periodic re-queue of old files (`queue.pending_retry_s`, here an hour) is not what finds it."""
    root, _state, _env, daemon = start_daemon(tmp_path, redis_url, services, pending_retry_s="3600")  # checks every 2 s
    conn = redis.Redis.from_url(redis_url)
    try:
        queue = q.ingest_queue(conn)
        copy_into(photos["rocket"], root / "taken.jpg")
        wait_for(lambda: len(queue) == 1, 60, what="the file queued")
        job_id = queue.get_job_ids()[0]
        popped = Queue.lmove(conn, queue.key, timeout=None)  # rq's worker's own pop, as it takes a job
        assert popped is not None and popped[1].decode() == job_id
        for _ in range(int(q.WORKER_TTL_S) - 5):  # about five checks, well inside the worker's time
            time.sleep(1)
            assert conn.exists(Job.key_for(job_id)), daemon.stderr()[-2000:]
        assert "(job lost)" not in daemon.stderr()
        wait_for(lambda: "(job lost)" in daemon.stderr() and len(queue) == 1, 60, what="the file queued again")
        assert queue.get_job_ids() == [job_id]  # the same batch, the same id
        assert job_id not in internals.intermediate_list(queue).get_job_ids()
        # taken again: the same id gets a worker's time again, not the clock of its first pop (judged lost at
        # once, re-queued and re-taken, check after check: a re-queue storm in the 6-minute soak)
        assert Queue.lmove(conn, queue.key, timeout=None) is not None
        lost_lines = daemon.stderr().count("(job lost)")
        for _ in range(int(q.WORKER_TTL_S) - 5):
            time.sleep(1)
            assert daemon.stderr().count("(job lost)") == lost_lines, daemon.stderr()[-2000:]
    finally:
        conn.close()
    assert daemon.stop(signal.SIGTERM) == 0


def test_a_file_whose_batch_is_already_queued_is_marked_with_that_job(tmp_path: Path, photos, redis_url, services):
    """A daemon killed between queueing a batch and recording its job id leaves the files with an older id. At
    the next start they are queued again; the very same batch is already waiting, so nothing new is queued,
    but the files must be marked with its id: left with the old one, they were judged lost at every check."""
    root, state, env, daemon = start_daemon(tmp_path, redis_url, services)
    conn = redis.Redis.from_url(redis_url)
    try:
        queue = q.ingest_queue(conn)
        copy_into(photos["rocket"], root / "waiting.jpg")
        wait_for(lambda: len(queue) == 1, 60, what="the file queued")
        assert daemon.stop(signal.SIGTERM) == 0
        with sqlite3.connect(state / "catalog.sqlite3") as db:  # what the kill left: an id Redis never held
            db.execute("UPDATE files SET job_id = 'ingest-gone'")
        again = Service(["daemon", str(root)], env, tmp_path / "daemon2.log")
        services.append(again)
        wait_for(lambda: "(left pending by the last run)" in again.stderr(), 60, what="the file queued again")
        time.sleep(6)  # three checks
        assert "(job lost)" not in again.stderr(), again.stderr()[-2000:]
        with sqlite3.connect(f"file:{state / 'catalog.sqlite3'}?mode=ro", uri=True) as db:
            assert db.execute("SELECT job_id FROM files").fetchall() == [(queue.get_job_ids()[0],)]
        assert len(queue) == 1
    finally:
        conn.close()
    assert again.stop(signal.SIGTERM) == 0
