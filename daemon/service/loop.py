"""The daemon: watcher + catch-up scan feed the catalog and the ingest queue; worker results come back on a
stream; the index owner decides verdicts in arrival order, its verifications done by the workers too
(daemon.service.verifying); a reconciler re-queues whatever got lost.

Everything that must survive a crash is in the catalog. Redis holds only work in flight, and the
reconciler rebuilds that from the catalog: after a worker dies mid-job (its job fails or never finishes),
after Redis restarts empty (the epoch key is gone), or after the daemon itself restarts.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time
import uuid
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import redis
from rq.exceptions import NoSuchJobError
from rq.job import Job, JobStatus
from rq.registry import FailedJobRegistry, StartedJobRegistry
from rq.serializers import JSONSerializer
from tqdm import tqdm

from daemon import __version__
from daemon.api.app import ApiServer
from daemon.api.port import IndexState
from daemon.config import Settings
from daemon.events import VerdictEvent
from daemon.health import Health, disk_full
from daemon.index.catalog import Catalog, Row
from daemon.index.owner import IndexOwner
from daemon.index.rebuilds import describe
from daemon.ingest.walk import PathFilter
from daemon.ingest.watcher import Watcher
from daemon.notify import deliverer, outbox
from daemon.notify.sinks import CommandSink, ConsoleSink, EventLog
from daemon.service import sdnotify
from daemon.service.verifying import QueueVerifier
from daemon.state import StateDir
from daemon.text import shown
from daemon.views import search
from workers import library_internals as internals
from workers import queue as q
from workers.features import Features

log = logging.getLogger(__name__)

RECONCILE_EVERY_S = 2.0
ALIVE, CRASHED, LOST = "alive", "crashed", "lost"
"""What became of a file's job (`Daemon._job_fate`)."""
SWEEP_CHUNK = 10_000
"""Catalog rows a sweep for vanished files reads at a time (`Daemon._sweep_gone`)."""
SAVE_EVERY_S = 300.0
CLAIM_IDLE_MS = 60_000
"""A result entry read and unacknowledged this long (its reader failed mid-way) is taken over again."""


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
        self.health = Health()
        self._rescan_lock = threading.Lock()
        self._rescan_wanted = self._rescanning = False
        self._redis_back_at = -float(q.WORKER_TTL_S)  # when Redis last answered again after an outage
        # queued jobs seen in rq's intermediate list (taken, not yet started), at the checks before this one
        self._in_hand: dict[str, float] = {}

    # --- lifecycle -----------------------------------------------------------------------------------

    def open(self) -> None:
        self.state.acquire()
        self.catalog = Catalog(self.state.catalog)
        self.commands = CommandSink(self.settings.commands)
        sinks: list[Callable[[VerdictEvent], None]] = [EventLog(self.state.events), self.commands]
        sinks += [ConsoleSink()] if self.console else []
        self.redis = q.connect(self.redis_url)
        self.verifier = QueueVerifier(self.redis, self.settings.queue.job_timeout_s, self.settings.queue.max_attempts)
        with self.catalog.checked():  # a corrupt page shows up while the index is rebuilt from it
            self.catalog.conn.executescript(outbox.SCHEMA)
            self.owner = IndexOwner(self.settings, self.catalog, sinks, on_commit=self._outbox,
                                    warm_kernels=True, background=True, verifier=self.verifier)
        self.deliverer = deliverer.Deliverer(self.state.catalog, self.settings.webhooks)
        self.queue = q.ingest_queue(self.redis, self.settings.queue.job_timeout_s)
        self.epoch = uuid.uuid4().hex
        self.consumer = f"daemon-{self.epoch[:8]}"
        try:
            q.ensure_group(self.redis)
            self.redis.set(q.EPOCH_KEY, self.epoch)
        except redis.RedisError as exc:  # a Redis down at start is an outage like any other, not a failure
            log.warning("Redis unreachable at start (%s); files wait, and when it answers what it lost is "
                        "re-queued", _one_line(exc))
        self.watcher = Watcher(self.filter, self.settings.watch, landed=self.landed, moved=self.owner.moved,
                               deleted=self.owner.deleted, deleted_tree=self.owner.deleted_under,
                               overflowed=self.rescan, roots_missing=self._roots_missing)
        if self.settings.api.enabled:
            self.api = ApiServer(self)
            self.api.start()

    def _roots_missing(self, roots: list[Path]) -> None:
        """The watcher's word on which roots are gone: a degraded state (/healthz, /readyz, metrics) while any is."""
        if roots:
            self.health.degrade("root-missing", "watched root gone: " + ", ".join(shown(str(r)) for r in roots))
        else:
            self.health.recover("root-missing")

    def _outbox(self, conn, event) -> None:
        outbox.enqueue(conn, self.settings.webhooks, event, __version__)

    def _apply_reload(self) -> None:
        load, self.reload_with = self.reload_with, None
        if load is None:
            return
        sdnotify.reloading()
        try:
            self.reload(load())
        except Exception as exc:  # noqa: BLE001 - a bad edit, of any kind, keeps the running configuration
            log.error("configuration reload failed, keeping the current configuration: %s", _one_line(exc))
        finally:
            sdnotify.ready()  # running again either way: systemd's reload job must end

    def reload(self, settings: Settings) -> None:
        """SIGHUP: new thresholds, webhook endpoints and log level, without a restart.

        Everything is validated before anything is swapped, so an error leaves the running
        configuration exactly as it was (set_endpoints validates before it changes the list)."""
        from daemon.index.verdict import Thresholds
        from daemon.logs import configure, level_number

        thresholds = Thresholds.resolve(settings.match, None if settings.hash_only else settings.model,
                                        None if settings.hash_only else settings.copy_model)
        level_number(settings.log_level)
        self.deliverer.set_endpoints(settings.webhooks)
        self.commands.commands = settings.commands
        self.owner.settings = self.settings = settings
        self.owner.thresholds = thresholds
        configure(settings.log_level, settings.log_format)
        log.info("configuration reloaded: thresholds %s, %d webhook endpoints", self.owner.thresholds,
                 len(settings.webhooks))

    def serve(self, heartbeat: Callable[[Daemon], None] | None = None) -> None:
        """Run until `stopping` is set. Live events are taken before the catch-up scan starts: no gap.

        Redis down or a full disk never end the loop: the state is recorded in `health` (health
        checks, metrics), logged once, and left by itself; `heartbeat` (worker and Redis supervision)
        runs every turn, also while the rest is failing, since it is what brings Redis back."""
        self.watcher.start()
        self.deliverer.start()
        # only files whose job Redis no longer holds: re-queueing every pending file at each restart would pile
        # a copy of the same work in front of the new at every restart
        self._guarded(lambda: self._claim_results(0))  # this daemon holds the state dir: no other reads them
        self._guarded(lambda: self._recover_lost("left pending by the last run"))
        sdnotify.ready()
        beat = sdnotify.Heartbeat()
        self._start_catch_up()
        self._rescan_wanted = False  # the catch-up scan covers whatever the watcher lost so far
        self._last_reconcile = self._last_save = time.monotonic()
        while not self.stopping.is_set():
            step = self._probe_disk if self.health.is_degraded("disk-full") else self._step
            if self._guarded(step) and self.health.recover("redis"):
                self._redis_back_at = time.monotonic()
                log.warning("Redis answers again: re-queueing what its outage lost")
                self._guarded(lambda: self._recover_lost("Redis was down"))
            if heartbeat is not None:
                self._guarded(lambda: heartbeat(self))
            beat.beat(self.status_line())

    def _step(self) -> None:
        if self.api is not None:
            self.api.calls.run_pending()  # searches and "not a duplicate" marks from the API
        self._drain_results(block_ms=100)
        self._flush_batch(force=False)
        if self.owner.decide_ready(wait=False) and self.settings.webhooks:
            self.deliverer.wake()
        now = time.monotonic()
        if now - self._last_reconcile >= RECONCILE_EVERY_S:
            self._reconcile()
            self._claim_results(CLAIM_IDLE_MS)
            self._last_reconcile = now
        if now - self._last_save >= SAVE_EVERY_S:
            self.owner.save()
            self._last_save = now
        if self.reload_with is not None:
            self._apply_reload()

    def _guarded(self, fn: Callable[[], object]) -> bool:
        """Run one piece of the loop; turn Redis outages and a full disk into degraded states. True if
        it ran through."""
        try:
            fn()
            return True
        except redis.ConnectionError as exc:
            if self.health.degrade("redis", f"unreachable: {exc}"):
                log.warning("Redis unreachable (%s); files wait, retrying", exc)
        except Exception as exc:
            if not disk_full(exc):
                raise
            self._disk_full(exc)
        self.stopping.wait(1.0)
        return False

    def _disk_full(self, exc: BaseException) -> None:
        """Enter the disk-full state (from the main loop or the watcher thread); say so once."""
        if self.health.degrade("disk-full", f"{self.state.root}: {_one_line(exc)}"):
            log.error("disk full: the state dir %s cannot be written (%s); files wait, and work resumes by "
                      "itself when space frees", self.state.root, _one_line(exc))

    def _probe_disk(self) -> None:
        """While the disk is full: try the writes that failed (Redis's AOF, the catalog). When both go
        through, resume: re-queue what the outage lost and rescan the roots for files whose landing
        could not be recorded meanwhile."""
        self.redis.set(q.EPOCH_KEY, self.epoch)
        self.catalog.meta_set("disk_probe", str(time.time()))
        self.health.recover("disk-full")
        log.warning("disk space is available again: resuming")
        self._recover_lost("the disk was full")
        self._start_catch_up()

    def _start_catch_up(self) -> None:
        threading.Thread(target=self._catch_up, name="catch-up", daemon=True).start()

    def status_line(self) -> str:
        try:
            queued = str(len(self.queue))
        except redis.RedisError:
            queued = "unknown (Redis down)"  # the heartbeat goes on: systemd's watchdog must not fire
        partial = describe(list(self._rebuilding()))
        return (f"{self.owner.decided} verdicts, queue {queued}, watching {len(self.filter.roots)} roots"
                + (f"; partial: {partial}" if partial else ""))

    def close(self) -> None:
        """Stop what open() started, also when it stopped half-way (a corrupt catalog, a taken port)."""
        sdnotify.stopping()
        if self.api is not None:
            self.api.stop()
        if hasattr(self, "watcher"):
            self.watcher.stop()
            self.deliverer.stop()
        if hasattr(self, "commands"):
            self.commands.close()
        if hasattr(self, "queue"):
            try:
                self._flush_batch(force=True)
            except redis.RedisError:
                pass  # still pending in the catalog: re-queued at the next start
        if hasattr(self, "owner"):
            try:
                self.owner.save()
            except Exception as exc:  # noqa: BLE001 - the catalog must still close cleanly below
                # the snapshots are caches: the next start reconciles or rebuilds them from the catalog
                log.error("index snapshots not saved at stop (%s); the next start rebuilds what is missing",
                          _one_line(exc))
        if hasattr(self, "catalog"):
            self.catalog.close()
        self.state.release()

    # --- what the API sees (daemon.api.port.DaemonPort) ---------------------------------------------

    @property
    def catalog_path(self) -> Path:
        return self.state.catalog

    @property
    def model_identity(self) -> str | None:
        return self.owner.model_identity

    def in_watched_root(self, path: str) -> bool:
        return self.filter.root_of(path) is not None

    def index_state(self) -> IndexState:
        return IndexState(hashed=len(self.owner.hashes), copy_vectors=len(self.owner.copies),
                          vectors=len(self.owner.vectors), catchup_done=self.catchup_done.is_set(),
                          stopping=self.stopping.is_set(), watch_overflows=self.watcher.overflows,
                          rebuilding=self._rebuilding())

    def _rebuilding(self) -> tuple[dict[str, Any], ...]:
        return tuple(r for role in (self.owner.copies, self.owner.vectors)
                     for r in (role.progress() or {"rebuilding": []})["rebuilding"])

    def webhook_stats(self) -> dict[str, Any]:
        return self.deliverer.stats_snapshot()

    def degraded(self) -> dict[str, str]:
        return self.health.degraded()

    def health_counters(self) -> dict[str, Any]:
        return {"episodes": dict(self.health.episodes), "redis_restarts": self.health.redis_restarts}

    def add_sink(self, sink: Callable[[VerdictEvent], None]) -> None:
        self.owner.sinks.append(sink)

    def signals(self, probe: Row) -> str:
        return search.signals_used(self.owner, probe)

    def rank(self, probe: Row, top_k: int) -> list[dict[str, Any]]:
        return search.rank(self.owner, probe, top_k)

    def mark_not_duplicate(self, later: int, earlier: int, marked_at: float) -> None:
        with self.catalog.transaction() as conn:
            conn.execute("INSERT OR IGNORE INTO not_duplicates (a, b, marked_at) VALUES (?, ?, ?)",
                         (later, earlier, marked_at))

    # --- ingest --------------------------------------------------------------------------------------

    def landed(self, path: str) -> None:
        """A complete file appeared (watcher or catch-up). Register it, then batch it for the workers."""
        inode: tuple[int, int] | None = None
        try:
            st = Path(path).stat()
            size: int | None = st.st_size
            mtime: int | None = st.st_mtime_ns
            inode = (st.st_dev, st.st_ino)
        except OSError:
            size = mtime = None  # vanished or unreadable: the worker records the reason as an error verdict
        try:
            file_id = self.owner.register(path, size, mtime, inode)
            # the other names of a hard link hold the new bytes too, and no event said so under them
            linked = [] if file_id is None or inode is None else self.catalog.other_names(inode, path, size, mtime)
        except Exception as exc:
            if not disk_full(exc):
                raise
            self._disk_full(exc)  # not lost: the rescan that ends the disk-full state finds it
            return
        for other in linked:
            self.landed(other)
        if file_id is None:
            return
        with self._batch_lock:
            if not self._batch:
                self._batch_started = time.monotonic()
            self._batch.append((file_id, path, size, mtime))
            full = len(self._batch) >= self.settings.queue.batch_size
        if full:
            try:
                self._flush_batch(force=True)
            except redis.ConnectionError as exc:
                # Not lost: the batch's files are pending in the catalog, and are re-queued when Redis
                # answers again (serve's recovery).
                self.health.degrade("redis", f"unreachable: {exc}")

    def _flush_batch(self, force: bool) -> None:
        with self._batch_lock:
            if not self._batch:
                return
            age_ms = (time.monotonic() - self._batch_started) * 1000
            if not force and age_ms < self.settings.queue.batch_ms:
                return
            batch, self._batch = self._batch, []
        self._enqueue(batch)

    def _enqueue(self, items: list[tuple[int, str, int | None, int | None]], *, at_front: bool = False) -> None:
        """Queue `items` in batches. `at_front`: ahead of everything waiting, first batch first. Verdicts go in
        arrival order, so a file queued again (its job lost) at the back of a long queue holds back every
        verdict after it until the whole queue is worked off."""
        size = self.settings.queue.batch_size
        starts = range(0, len(items), size)
        for start in reversed(starts) if at_front else starts:
            chunk = items[start:start + size]
            q.enqueue_batch(self.queue, chunk, at_front=at_front)
            # marked even when this very batch is already waiting or running (same id): files left with a
            # deleted job's id would be judged lost again at every check
            self.catalog.mark_queued([i[0] for i in chunk], q.batch_job_id(chunk))

    def _catch_up(self) -> None:
        """Enqueue what landed while the daemon was down: files the catalog lacks or that changed."""
        self._scan("catch-up scan")
        self.catchup_done.set()

    def rescan(self) -> None:
        """The watcher lost events (inotify's queue overflowed): scan the roots again now, on a thread of
        its own. Overflows during a rescan make one more rescan after it, not one each."""
        with self._rescan_lock:
            self._rescan_wanted = True
            if self._rescanning or self.stopping.is_set():
                return
            self._rescanning = True
        threading.Thread(target=self._rescan_loop, name="rescan", daemon=True).start()

    def _rescan_loop(self) -> None:
        while True:
            with self._rescan_lock:
                if not self._rescan_wanted or self.stopping.is_set():
                    self._rescanning = False
                    return
                self._rescan_wanted = False
            try:
                self._scan("rescan after lost events")
            except Exception:  # the next overflow tries again
                log.exception("rescan failed")

    def _scan(self, what: str) -> None:
        """Land every file the catalog lacks or holds another version of, then mark deleted the catalogued
        files that are gone (deleted while the daemon was down, or their delete events were among those
        lost), so their content stops matching. The watcher runs meanwhile (also during the catch-up scan at
        start), so a file still being written (a recent mtime) goes through its settle check: landed as
        found, the first part of a file written as the daemon started got a row and a verdict of its own."""
        started = time.monotonic()
        known = self.catalog.known_versions()
        settle_ns = self.settings.watch.settle_ms * 1_000_000
        seen = queued = 0
        bar = tqdm(desc=what, unit=" files", file=sys.stderr, disable=not sys.stderr.isatty(), leave=False)
        for path in self.filter.walk():
            if self.stopping.is_set():
                return
            bar.update()
            seen += 1
            try:
                st = Path(path).stat()
                version = known.pop(path, None)
                if version != (st.st_size, st.st_mtime_ns):
                    if time.time_ns() - st.st_mtime_ns < settle_ns:
                        self.watcher.settle(path)
                    else:
                        self.landed(path)
                    queued += 1
            except OSError:
                continue  # gone meanwhile
            except Exception:  # one odd entry must never end the scan for every file after it
                log.exception("%s: skipping %s", what, shown(path))
        bar.close()
        del known
        gone = self._sweep_gone()
        elapsed = time.monotonic() - started
        log.info("%s: %d files checked, %d new or changed, %d gone, %.1fs (%.0f files/s)", what, seen, queued,
                 gone, elapsed, seen / elapsed if elapsed > 0 else 0.0)

    def _sweep_gone(self) -> int:
        """Mark deleted every current row under the roots whose file no longer exists; return how many.
        Visits the catalog SWEEP_CHUNK rows at a time by id: it may hold 10 M rows. Rows under folders
        that are no longer roots are left as they are (their files were not looked for)."""
        gone = after = 0
        while not self.stopping.is_set():
            rows = self.catalog.current_paths(after, SWEEP_CHUNK)
            if not rows:
                break
            after = rows[-1][0]
            for _, path in rows:
                if self.filter.root_of(path) is not None and not os.path.lexists(path):
                    self.owner.deleted(path)
                    gone += 1
        return gone

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
        assert entries is None or isinstance(entries, list), "connect() speaks RESP2: [[stream, messages]]"
        for _stream, messages in entries or []:
            self._take_results(messages)

    def _take_results(self, messages: list) -> None:
        """Store each result entry, then acknowledge and delete it: the stream holds only results not yet
        stored."""
        for msg_id, fields in messages:
            if b"verified" in fields:  # a verification's answer (workers.verify)
                self.verifier.deliver(fields[b"verified"])
            elif fields:  # a claimed entry deleted meanwhile comes back without fields
                moved = self.owner.accept(Features.from_json(f) for f in json.loads(fields[b"data"]))
                if moved:
                    self._requeue(moved, "moved while queued: read under the new name")
            self.redis.xack(q.RESULTS_STREAM, q.RESULTS_GROUP, msg_id)
            self.redis.xdel(q.RESULTS_STREAM, msg_id)

    def _claim_results(self, min_idle_ms: int) -> int:
        """Take over result entries handed to a consumer that never acknowledged them (each start reads as a
        new consumer: a daemon killed after reading left them pending to its old name, where nothing reads
        them again), store them, and forget consumers with nothing pending. Returns how many were taken."""
        taken, cursor = 0, "0-0"
        while True:
            try:
                reply = self.redis.xautoclaim(q.RESULTS_STREAM, q.RESULTS_GROUP, self.consumer, min_idle_ms,
                                              start_id=cursor, count=64)
            except redis.ResponseError as exc:
                if "NOGROUP" not in str(exc):
                    raise
                q.ensure_group(self.redis)  # Redis restarted empty: nothing to take over
                return 0
            cursor, messages = reply[0], reply[1]  # Redis 7 adds a third element: ids deleted meanwhile
            self._take_results(messages)
            taken += len(messages)
            if cursor in (b"0-0", "0-0"):
                break
        for consumer in self.redis.xinfo_consumers(q.RESULTS_STREAM, q.RESULTS_GROUP):
            name = consumer["name"].decode() if isinstance(consumer["name"], bytes) else consumer["name"]
            if name != self.consumer and not consumer["pending"]:
                self.redis.xgroup_delconsumer(q.RESULTS_STREAM, q.RESULTS_GROUP, name)
        if taken:
            log.warning("took over %d result entries left unacknowledged by an earlier daemon", taken)
        return taken

    # --- recovery ------------------------------------------------------------------------------------

    def _reconcile(self) -> None:
        """Re-queue pending files whose job is lost; give up on files that keep killing workers."""
        if self.redis.get(q.EPOCH_KEY) != self.epoch.encode():
            log.warning("Redis lost its data (restarted empty?): re-queueing every pending file")
            self.redis.set(q.EPOCH_KEY, self.epoch)
            q.ensure_group(self.redis)
            self._requeue(self.catalog.pending(), "Redis restarted")
            return
        # a job cut short by a Redis outage: at once (a few started jobs, one a worker), not after pending_retry_s
        self.release_jobs(lambda worker, at: q.job_runner(self.redis, worker, at) == q.ABANDONED,
                          "cut short by a Redis outage", crashed=False)
        StartedJobRegistry(q.INGEST_QUEUE, connection=self.redis, serializer=JSONSerializer).cleanup()
        self.verifier.check()
        failed = FailedJobRegistry(q.INGEST_QUEUE, connection=self.redis, serializer=JSONSerializer)
        failed_jobs = set(failed.get_job_ids())
        for job_id in failed_jobs:
            failed.remove(job_id, delete_job=True)
        rows = self.catalog.pending(None if failed_jobs else time.time() - self.settings.queue.pending_retry_s)
        if not failed_jobs:  # and, however recent, the files of jobs popped by a worker and not yet started: one
            # that lost Redis as it popped (a disk full under Redis's log) leaves its job there, lost
            # after WORKER_TTL_S (`_popped_fate`) rather than pending_retry_s
            old = {r.id for r in rows}
            rows += [r for r in self.catalog.pending_of_jobs(internals.intermediate_list(self.queue).get_job_ids())
                     if r.id not in old]
        fates = self._job_fates({r.job_id for r in rows} - failed_jobs)
        fates.update(dict.fromkeys(failed_jobs, CRASHED))
        crashed = [r for r in rows if fates.get(r.job_id) == CRASHED]
        lost = [r for r in rows if fates.get(r.job_id) == LOST]
        if crashed:
            self._requeue(crashed, "job failed or its worker died", crashed=True)
        if lost:
            self._requeue(lost, "job lost")

    def _job_fates(self, job_ids: set[str | None]) -> dict[str | None, str]:
        """ALIVE, CRASHED or LOST for each job. Per job, not per file (a job carries up to a batch of
        files), and the queue is read once: a check per file (LPOS over the queue) grows with pending files
        times queue length, and would hold the deciding thread for minutes behind a large backlog."""
        queued = set(self.queue.get_job_ids()) if job_ids else set()
        before, self._in_hand = self._in_hand, {}
        return {job_id: self._job_fate(job_id, queued, before) for job_id in job_ids}

    def _job_fate(self, job_id: str | None, queued: set[str], in_hand_before: dict[str, float]) -> str:
        """CRASHED: a worker took the job and died (or the job failed): one of its files' attempts.
        LOST: gone some other way (Redis restarted, popped by a worker that died before starting it)."""
        if job_id is None:
            return LOST
        try:
            job = Job.fetch(job_id, connection=self.redis, serializer=JSONSerializer)
            status = job.get_status(refresh=False)
        except NoSuchJobError:
            return LOST
        if status == JobStatus.STARTED:
            runner = q.job_runner(self.redis, job.worker_name or "", job.started_at)
            if runner == q.UNSEEN and time.monotonic() - self._redis_back_at < q.WORKER_TTL_S:
                return ALIVE  # Redis was just away: give the worker a refresh's time to record itself again
            if runner != q.RUNNING:
                job.delete()  # free the id, so the same batch can be queued again
                # a worker that died mid-job costs the files an attempt; one that lost Redis mid-job does not
                return LOST if runner == q.ABANDONED else CRASHED
        if status == JobStatus.QUEUED and job_id not in queued:
            return self._popped_fate(job, in_hand_before)
        if status == JobStatus.FAILED:
            return CRASHED
        return ALIVE if status in (JobStatus.QUEUED, JobStatus.STARTED) else LOST

    def _popped_fate(self, job: Job, in_hand_before: dict[str, float]) -> str:
        """A queued job missing from the queue as it was read. A worker moves the job to rq's intermediate
        list and only then marks it started: judged lost in between (milliseconds, longer on a loaded host),
        jobs a worker is about to run would be deleted and their files queued again, check after check. ALIVE while it is back in the queue (queued after the read), no
        longer queued (started since), or popped for less than `WORKER_TTL_S`; a worker that popped it and
        died leaves it so, and after that it is LOST."""
        in_queue, in_hand, still_queued = internals.where_is(self.redis, self.queue, job)
        if in_queue or not still_queued:
            return ALIVE  # the next check judges it as it is then
        # Popped: into the intermediate list, or into no list at all by a worker that takes several queues (the
        # verify queue first: rq pops several lists with BLPOP). Since when, by this daemon's checks: rq's own
        # first-seen mark lives a day, past the job, and the same batch queued again later has the same id.
        seen = self._in_hand[job.id] = in_hand_before.get(job.id, time.monotonic())
        if time.monotonic() - seen < q.WORKER_TTL_S:
            return ALIVE
        if in_hand:
            internals.intermediate_list(self.queue).remove(job.id)
        del self._in_hand[job.id]  # queued again under the same id, the next pop starts a new clock
        job.delete()
        return LOST

    def worker_died(self, name: str) -> None:
        """A supervised worker process died: re-queue its job now instead of waiting for rq's expiry."""
        self.release_jobs(lambda worker, _at: worker == name, f"worker {name} died")
        self.verifier.check(dead_worker=name)

    def release_jobs(self, dead: Callable[[str, datetime | None], bool], why: str, *, parked: bool = False,
                     requeue: bool = True, crashed: bool = True) -> int:
        """Free the started jobs for which `dead(worker name, started at)` holds: delete each job (which takes
        it out of rq's registries and frees its deterministic id) and re-queue its files that are still
        pending, at the cost of an attempt if `crashed`. rq itself would free them only when the job timeout
        expires. Returns how many.

        `parked` (only when no worker of this Redis runs: at start, at stop): also free jobs parked in rq's
        intermediate list, popped by a worker that died before it started them. Without `requeue` their
        files stay pending in the catalog, and serve() re-queues every pending file when it starts."""
        started = StartedJobRegistry(q.INGEST_QUEUE, connection=self.redis, serializer=JSONSerializer)
        ids: set[int] = set()
        released = 0
        started_ids = started.get_job_ids(cleanup=False)
        if parked:
            hand = internals.intermediate_list(self.queue)
            for job_id in hand.get_job_ids():
                if job_id not in started_ids:
                    hand.remove(job_id)
                    job = self.queue.fetch_job(job_id)
                    if job is not None:
                        job.delete()
                        released += 1
        for job_id in started_ids:
            try:
                job = Job.fetch(job_id, connection=self.redis, serializer=JSONSerializer)
            except NoSuchJobError:
                continue
            if job.worker_name and dead(job.worker_name, job.started_at):
                ids.update(int(item[0]) for item in job.args[0])
                job.delete()
                released += 1
        if released:
            log.warning("released %d jobs (%s)", released, why)
        if ids and requeue:
            self._requeue([r for r in self.catalog.pending() if r.id in ids], why, crashed=crashed)
        return released

    def _recover_lost(self, why: str) -> None:
        """After an outage (Redis restarted, disk full): re-queue now every pending file whose job is
        gone, instead of after queue.pending_retry_s."""
        rows = self.catalog.pending()
        fates = self._job_fates({r.job_id for r in rows})
        for fate in (CRASHED, LOST):
            gone = [r for r in rows if fates[r.job_id] == fate]
            if gone:
                self._requeue(gone, why, crashed=fate == CRASHED)

    def _requeue(self, rows, why: str, *, crashed: bool = False) -> None:
        """Queue pending files again. `crashed`: a worker took their job and died, or it failed: one more
        of each file's `queue.max_attempts`, and a file out of attempts gets its `worker-crash` error.
        Any other loss (a daemon restart, a Redis outage, waiting in a long backlog) costs no attempt, so a file
        is given up only for what a worker did with it, never for how long it waited."""
        retry = []
        for row in rows:
            attempts = row.attempts + crashed
            if attempts >= self.settings.queue.max_attempts:
                self.catalog.fail_pending(row.id, f"worker-crash: no result after {attempts} attempts")
            else:
                retry.append((row.id, row.path, row.size, row.mtime_ns))
        if retry:
            if crashed:
                self.catalog.count_attempt([r[0] for r in retry])
            log.info("re-queueing %d pending files (%s)", len(retry), why)
            self._enqueue(retry, at_front=True)


def _one_line(exc: BaseException) -> str:
    """An exception as one log line: pydantic and click messages span several."""
    return " ".join(str(exc).split()) or type(exc).__name__
