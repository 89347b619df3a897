"""A worker process: load the model once, then take batch jobs in-process until told to stop.

rq's forking `Worker` would pay a fork per job and cannot share a CUDA context with its children, so
dupwatch uses `SimpleWorker` (jobs run in the worker's own process; job timeouts still apply).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import redis
from rq import Queue
from rq.exceptions import StopRequested
from rq.job import Job
from rq.serializers import JSONSerializer

from workers import jobs
from workers import library_internals as internals
from workers import queue as q
from workers.models.loading import load_models
from workers.pipeline import Pipeline
from workers.ready import roots_problem, wait_until_ready
from workers.settings import WorkerSettings

log = logging.getLogger(__name__)

RQ_WORKER_TTL_S = 35
"""rq blocks in dequeue for worker_ttl - 15 s, which must stay under the connection's 30 s socket timeout
(workers.queue.connect). rq's default (420 s) made every idle wait end in a timeout error and a growing
back-off sleep, and a job pushed as the client gave up was popped into rq's intermediate list unseen."""


def _keep_record(conn, key: str, record: dict[str, str], stop: threading.Event) -> None:
    """Refresh the worker's expiring record until stopped. A SimpleWorker runs jobs in its main thread and
    sends rq no heartbeat mid-job, so this record is how the daemon tells a busy worker from a dead one;
    rewriting the whole record also restores it after Redis restarts empty."""
    while True:
        try:
            with conn.pipeline() as pipe:
                pipe.hset(key, mapping=record).expire(key, q.WORKER_TTL_S).execute()
        except redis.RedisError:
            pass  # Redis is away; the next refresh restores the record
        if stop.wait(q.WORKER_TTL_S / 3):
            return


def _clear_dead_namesake(conn, name: str) -> None:
    """rq refuses to start a worker whose name's record has not expired, and a SIGKILLed worker's record
    lives on for minutes: a supervisor restarting it under the same name would fail until then. When
    dupwatch's short-lived record says the namesake is dead (expired, or its pid is gone on this host),
    drop rq's stale record; a live namesake is left for rq to refuse."""
    record = conn.hgetall(q.WORKER_KEY.format(name=name))
    if record and record.get(b"host", b"").decode() == socket.gethostname():
        try:
            os.kill(int(record[b"pid"]), 0)
            return
        except (ProcessLookupError, ValueError, KeyError):
            pass
    elif record:
        return
    if conn.delete(internals.worker_record_key(name)):
        log.warning("worker %s: cleared the record of a namesake that died without unregistering", name)


def run_worker(settings: WorkerSettings, redis_url: str, *, name: str | None = None, burst: bool = False,
               follow_symlinks: bool = False, roots: Sequence[Path] = ()) -> None:
    """`follow_symlinks`: the daemon's watch.follow_symlinks (off: no file is read through a link). `roots`: the
    daemon's watch.roots; jobs are taken only while every one is visible here (`workers.ready`)."""
    embedder, copier, model_status = load_models(settings)
    pipeline = Pipeline(settings.decode, embedder, copier, follow_symlinks=follow_symlinks)
    jobs.install(pipeline)
    conn = q.connect(redis_url)
    name = name or f"dupwatch-{socket.gethostname()}-{os.getpid()}"
    key = q.WORKER_KEY.format(name=name)
    wait_until_ready(conn, name, roots)
    _clear_dead_namesake(conn, name)
    now = str(time.time())
    record = {**model_status, "host": socket.gethostname(), "pid": str(os.getpid()), "started": now, "loop": now}
    stop = threading.Event()
    threading.Thread(target=_keep_record, args=(conn, key, record, stop), name="worker-record", daemon=True).start()
    loaded = model_status["state"] == "loaded"
    log.info("worker %s ready: model %s", name, model_status["model"] if loaded else f"none ({model_status['state']})")
    try:
        while True:
            ended, dropped = _work(conn, name, burst, settings.log_level, roots)
            if ended == LOST_REDIS:
                log.warning("worker %s: lost Redis; taking jobs again once it answers", name)
            if ended != STOPPED:
                wait_until_ready(conn, name, roots)
            if dropped is not None:
                _hand_back(conn, name, *dropped)
            if ended == STOPPED:
                break
            _new_loop(conn, name, key, record)
    finally:
        stop.set()
        try:
            conn.delete(key)
        except Exception:  # noqa: BLE001, S110 - Redis may be the thing that went away
            pass
        pipeline.close()


def _hand_back(conn: redis.Redis, name: str, job: Job, queue: Queue) -> None:
    """Put back at the front of its queue a job this worker popped but never started: Redis refused the write
    that marks it started (a full disk under its log). A worker that takes several queues pops with BLPOP, so
    such a job is in no list at all and its hash still says queued: nobody else would run it before the
    daemon's periodic retry. A job that did start is the daemon's to re-queue (`queue.job_runner`)."""
    try:
        in_queue, _, still_queued = internals.where_is(conn, queue, job)
        if still_queued and not in_queue:
            with conn.pipeline() as pipe:  # MULTI: the job is in one of the two lists at every moment
                queue.push_job_id(job.id, pipeline=pipe, at_front=True)
                pipe.lrem(internals.intermediate_list(queue).key, 1, job.id)
                pipe.execute()
            log.warning("worker %s: handed job %s back to the queue: Redis refused to mark it started", name, job.id)
    except redis.RedisError as exc:  # the daemon's retry still finds it
        log.warning("worker %s: could not hand job %s back (%s)", name, job.id, exc)


def _new_loop(conn, name: str, key: str, record: dict[str, str]) -> None:
    """Before rq's loop is rebuilt after Redis went away. The job that loop was running ended with it, but a
    Redis that replays its append-only file still holds it as started by this worker, and the worker itself
    as registered: rq would refuse the new loop's registration ("an active worker named ... already") and
    the daemon would wait out the job's timeout. Record when this loop began (the daemon re-queues jobs
    started before it: `queue.job_runner`) and drop rq's record of the loop that ended."""
    record["loop"] = str(time.time())
    while True:
        try:
            with conn.pipeline() as pipe:
                pipe.hset(key, mapping=record).expire(key, q.WORKER_TTL_S)
                pipe.delete(internals.worker_record_key(name)).execute()
            return
        except redis.RedisError:  # still away (restarting, replaying its file)
            time.sleep(REDIS_RETRY_S)


REDIS_RETRY_S = 1.0
"""Pause before a worker that lost Redis asks for jobs again (Redis restarting: AOF replay, or empty)."""


STOPPED, LOST_REDIS, LOST_ROOTS = "stopped", "lost Redis", "lost the roots"
"""How one rq work loop ended (`_work`)."""


class _RootsWorker(internals.PromptWorker):
    """rq's in-process worker (woken promptly to stop), which hands a job back untouched when the watched roots vanished (an unmounted
    share) while it waited for one: checked before each dequeue only, a job that came during the wait would
    end in `error` verdicts for files that other hosts can read."""

    roots: Sequence[Path] = ()
    lost_roots = False
    dropped: tuple[Job, Queue] | None = None  # the job in hand when Redis refused rq's bookkeeping

    def execute_job(self, job: Job, queue: Queue) -> None:
        problem = roots_problem(self.roots)
        if problem is None:
            try:
                super().execute_job(job, queue)
            except redis.RedisError:
                self.dropped = (job, queue)
                raise
            return
        with self.connection.pipeline() as pipe:  # MULTI: the job is in one of the two lists at every moment
            queue.push_job_id(job.id, pipeline=pipe, at_front=True)
            pipe.lrem(internals.intermediate_list(queue).key, 1, job.id)
            pipe.execute()
        log.error("worker %s: handed job %s back to the queue: %s", self.name, job.id, problem)
        self.lost_roots = True
        raise StopRequested  # rq's loop ends cleanly (its teardown unregisters this loop)


def _work(conn: redis.Redis, name: str, burst: bool, log_level: str, roots: Sequence[Path]
          ) -> tuple[str, tuple[Job, Queue] | None]:
    """One rq work loop: STOPPED when it ended as asked (burst done, SIGTERM), else why it ended; and the job it
    held when Redis refused a write, if any (`_hand_back`).

    rq's loop ends on any error, and one during a job's bookkeeping (a Redis restart at that moment) would end
    the worker for good: the model stays loaded and a fresh loop takes the next job instead."""
    try:
        worker = _RootsWorker([q.verify_queue(conn), q.ingest_queue(conn)], connection=conn,
                              serializer=JSONSerializer, name=name,
                              worker_ttl=RQ_WORKER_TTL_S)
    except redis.RedisError:  # rq talks to Redis as it builds a worker
        return LOST_REDIS, None
    worker.roots = roots
    try:
        worker.work(burst=burst, logging_level="DEBUG" if log_level.upper() == "DEBUG" else "WARNING",
                    with_scheduler=False)
    except redis.RedisError:  # rq's start or teardown could not reach Redis
        pass
    if burst or internals.shutdown_requested(worker):
        return STOPPED, worker.dropped
    return (LOST_ROOTS if worker.lost_roots else LOST_REDIS), worker.dropped
