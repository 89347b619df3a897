"""The daemon: watcher + catch-up scan feed the catalog and the ingest queue; worker results come back on a
stream; the index owner decides verdicts in arrival order; a reconciler re-queues whatever got lost.

Everything that must survive a crash is in the catalog. Redis holds only work in flight, and the
reconciler rebuilds that from the catalog: after a worker dies mid-job (its job fails or never finishes),
after Redis restarts empty (the epoch key is gone), or after the daemon itself restarts.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import redis
from rq.exceptions import NoSuchJobError
from rq.job import Job, JobStatus
from rq.registry import FailedJobRegistry, StartedJobRegistry
from rq.serializers import JSONSerializer
from tqdm import tqdm

from daemon import __version__, outbox, sdnotify
from workers import queue as q
from daemon.api import ApiServer
from daemon.catalog import Catalog
from daemon.config import Settings
from daemon.owner import IndexOwner
from daemon.sinks import CommandSink, ConsoleSink, EventLog
from daemon.state import StateDir
from daemon.walk import PathFilter
from daemon.watcher import Watcher
from workers.features import Features

log = logging.getLogger("dupwatch.daemon")

RECONCILE_EVERY_S = 2.0
SAVE_EVERY_S = 300.0


class Daemon:
    def __init__(self, settings: Settings, roots: list[Path], redis_url: str, *, console: bool = True):
        self.settings = settings
        self.redis_url = redis_url
        self.state = StateDir(settings.state_dir)
        self.filter = PathFilter(roots, settings.watch)
        self.console = console
        self.stopping = threading.Event()
        self._batch: list[tuple[int, str, int | None, int | None]] = []
        self._batch_started = 0.0
        self._batch_lock = threading.Lock()
        self.catchup_done = threading.Event()
        self.started_at = time.time()
        self.reload_with: Callable[[], Settings] | None = None  # set by SIGHUP
        self.api: ApiServer | None = None  # the HTTP API's thread, when api.enabled

    # --- lifecycle -----------------------------------------------------------------------------------

    def open(self) -> None:
        self.state.acquire()
        self.catalog = Catalog(self.state.catalog)
        self.catalog.conn.executescript(outbox.SCHEMA)
        self.commands = CommandSink(self.settings.commands)
        sinks = [EventLog(self.state.events), self.commands] + ([ConsoleSink()] if self.console else [])
        self.owner = IndexOwner(self.settings, self.catalog, sinks, on_commit=self._outbox)
        self.deliverer = outbox.Deliverer(self.state.catalog, self.settings.webhooks)
        self.redis = q.connect(self.redis_url)
        self.queue = q.ingest_queue(self.redis, self.settings.queue.job_timeout_s)
        q.ensure_group(self.redis)
        self.epoch = uuid.uuid4().hex
        self.redis.set(q.EPOCH_KEY, self.epoch)
        self.consumer = f"daemon-{self.epoch[:8]}"
        self.watcher = Watcher(self.filter, self.settings.watch, landed=self.landed, moved=self.owner.moved,
                               deleted=self.owner.deleted)
        if self.settings.api.enabled:
            self.api = ApiServer(self)
            self.api.start()

    def _outbox(self, conn, event) -> None:
        outbox.enqueue(conn, self.settings.webhooks, event, __version__)

    def _apply_reload(self) -> None:
        load, self.reload_with = self.reload_with, None
        try:
            self.reload(load())
        except Exception:  # a bad edit keeps the running configuration
            log.exception("configuration reload failed; keeping the current configuration")

    def reload(self, settings: Settings) -> None:
        """SIGHUP: new thresholds, webhook endpoints and log level, without a restart."""
        from daemon.logs import configure
        from daemon.verdict import Thresholds

        sdnotify.reloading()
        self.deliverer.set_endpoints(settings.webhooks)
        self.commands.commands = settings.commands
        self.owner.settings = self.settings = settings
        self.owner.thresholds = Thresholds.resolve(settings.match, None if settings.hash_only else settings.model)
        configure(settings.log_level, settings.log_format)
        log.info("configuration reloaded: thresholds %s, %d webhook endpoints", self.owner.thresholds,
                 len(settings.webhooks))
        sdnotify.ready()

    def serve(self, heartbeat=None) -> None:
        """Run until `stopping` is set. Live events are taken before the catch-up scan starts: no gap."""
        self.watcher.start()
        self.deliverer.start()
        self._requeue(self.catalog.pending(), "left pending by the last run")
        sdnotify.ready()
        beat = sdnotify.Heartbeat()
        threading.Thread(target=self._catch_up, name="catch-up", daemon=True).start()
        last_reconcile = last_save = time.monotonic()
        while not self.stopping.is_set():
            try:
                if self.api is not None:
                    self.api.calls.run_pending()  # searches and "not a duplicate" marks from the API
                self._drain_results(block_ms=100)
                self._flush_batch(force=False)
                if self.owner.decide_ready() and self.settings.webhooks:
                    self.deliverer.wake()
                now = time.monotonic()
                if now - last_reconcile >= RECONCILE_EVERY_S:
                    self._reconcile()
                    last_reconcile = now
                if now - last_save >= SAVE_EVERY_S:
                    self.owner.save()
                    last_save = now
                if self.reload_with is not None:
                    self._apply_reload()
                if heartbeat is not None:
                    heartbeat(self)
                beat.beat(self.status_line())
            except redis.ConnectionError as exc:
                log.warning("Redis unreachable (%s); retrying", exc)
                self.stopping.wait(1.0)

    def status_line(self) -> str:
        return f"{self.owner.decided} verdicts, queue {len(self.queue)}, watching {len(self.filter.roots)} roots"

    def close(self) -> None:
        sdnotify.stopping()
        if self.api is not None:
            self.api.stop()
        self.watcher.stop()
        self.deliverer.stop()
        self.commands.close()
        try:
            self._flush_batch(force=True)
        except redis.RedisError:
            pass  # still pending in the catalog: re-queued at the next start
        self.owner.save()
        self.catalog.close()
        self.state.release()

    # --- ingest --------------------------------------------------------------------------------------

    def landed(self, path: str) -> None:
        """A complete file appeared (watcher or catch-up). Register it, then batch it for the workers."""
        try:
            st = Path(path).stat()
            size, mtime = st.st_size, st.st_mtime_ns
        except OSError:
            size = mtime = None  # vanished or unreadable: the worker records the reason as an error verdict
        file_id = self.owner.register(path, size, mtime)
        if file_id is None:
            return
        with self._batch_lock:
            if not self._batch:
                self._batch_started = time.monotonic()
            self._batch.append((file_id, path, size, mtime))
            full = len(self._batch) >= self.settings.queue.batch_size
        if full:
            self._flush_batch(force=True)

    def _flush_batch(self, force: bool) -> None:
        with self._batch_lock:
            if not self._batch:
                return
            age_ms = (time.monotonic() - self._batch_started) * 1000
            if not force and age_ms < self.settings.queue.batch_ms:
                return
            batch, self._batch = self._batch, []
        self._enqueue(batch)

    def _enqueue(self, items: list[tuple[int, str, int | None, int | None]]) -> None:
        size = self.settings.queue.batch_size
        for start in range(0, len(items), size):
            chunk = items[start:start + size]
            job = q.enqueue_batch(self.queue, chunk)
            if job is not None:  # None: this very batch is already waiting or running
                self.catalog.mark_queued([i[0] for i in chunk], job.id)

    def _catch_up(self) -> None:
        """Enqueue what landed while the daemon was down: files the catalog lacks or that changed."""
        started = time.monotonic()
        known = self.catalog.known_versions()
        seen = queued = 0
        bar = tqdm(desc="catch-up", unit=" files", file=sys.stderr, disable=not sys.stderr.isatty(), leave=False)
        for path in self.filter.walk():
            if self.stopping.is_set():
                return
            bar.update()
            seen += 1
            try:
                st = Path(path).stat()
            except OSError:
                continue
            if known.get(path) != (st.st_size, st.st_mtime_ns):
                self.landed(path)
                queued += 1
        bar.close()
        elapsed = time.monotonic() - started
        log.info("catch-up scan: %d files checked, %d new or changed, %.1fs (%.0f files/s)", seen, queued,
                 elapsed, seen / elapsed if elapsed > 0 else 0.0)
        self.catchup_done.set()

    # --- results -------------------------------------------------------------------------------------

    def _drain_results(self, block_ms: int) -> None:
        try:
            entries = self.redis.xreadgroup(q.RESULTS_GROUP, self.consumer, {q.RESULTS_STREAM: ">"},
                                            count=16, block=block_ms)
        except redis.ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            q.ensure_group(self.redis)
            return
        for _stream, messages in entries or []:
            for msg_id, fields in messages:
                payload = json.loads(fields[b"data"])
                self.owner.accept(Features.from_json(f) for f in payload)
                self.redis.xack(q.RESULTS_STREAM, q.RESULTS_GROUP, msg_id)
                self.redis.xdel(q.RESULTS_STREAM, msg_id)

    # --- recovery ------------------------------------------------------------------------------------

    def _reconcile(self) -> None:
        """Re-queue pending files whose job is lost; give up on files that keep killing workers."""
        if self.redis.get(q.EPOCH_KEY) != self.epoch.encode():
            log.warning("Redis lost its data (restarted empty?): re-queueing every pending file")
            self.redis.set(q.EPOCH_KEY, self.epoch)
            q.ensure_group(self.redis)
            self._requeue(self.catalog.pending(), "Redis restarted")
            return
        StartedJobRegistry(q.INGEST_QUEUE, connection=self.redis, serializer=JSONSerializer).cleanup()
        failed = FailedJobRegistry(q.INGEST_QUEUE, connection=self.redis, serializer=JSONSerializer)
        failed_jobs = set(failed.get_job_ids())
        for job_id in failed_jobs:
            failed.remove(job_id, delete_job=True)
        stale_before = time.time() - self.settings.queue.pending_retry_s
        lost = [r for r in self.catalog.pending()
                if r.job_id in failed_jobs or ((r.queued_at or r.detected_at) < stale_before
                                                and not self._job_alive(r.job_id))]
        if lost:
            self._requeue(lost, "job failed, lost or timed out")

    def _job_alive(self, job_id: str | None) -> bool:
        if job_id is None:
            return False
        try:
            job = Job.fetch(job_id, connection=self.redis, serializer=JSONSerializer)
            status = job.get_status(refresh=False)
        except NoSuchJobError:
            return False
        if status == JobStatus.STARTED and not q.worker_alive(self.redis, job.worker_name or "", job.started_at):
            job.delete()  # its worker died mid-job: free the id, so the same batch can be queued again
            return False
        if status == JobStatus.QUEUED and self.redis.lpos(self.queue.key, job_id) is None:
            job.delete()  # popped by a worker that died before starting it (rq's intermediate list)
            return False
        return status in (JobStatus.QUEUED, JobStatus.STARTED)

    def worker_died(self, name: str) -> None:
        """A supervised worker process died: re-queue its job now instead of waiting for rq's expiry."""
        started = StartedJobRegistry(q.INGEST_QUEUE, connection=self.redis, serializer=JSONSerializer)
        for job_id in started.get_job_ids(cleanup=False):
            try:
                job = Job.fetch(job_id, connection=self.redis, serializer=JSONSerializer)
            except NoSuchJobError:
                continue
            if job.worker_name == name:
                started.remove(job, delete_job=True)
                ids = {int(item[0]) for item in job.args[0]}
                self._requeue([r for r in self.catalog.pending() if r.id in ids], f"worker {name} died")

    def _requeue(self, rows, why: str) -> None:
        retry = []
        for row in rows:
            if row.attempts >= self.settings.queue.max_attempts:
                self.catalog.fail_pending(row.id, f"worker-crash: no result after {row.attempts} attempts")
            else:
                retry.append((row.id, row.path, row.size, row.mtime_ns))
        if retry:
            log.info("re-queueing %d pending files (%s)", len(retry), why)
            self._enqueue(retry)
