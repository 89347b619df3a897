"""Process wiring for `dupwatch run` (everything in one tree) and `dupwatch daemon` (fleet mode).

`run` starts a private Redis unless `redis.url` is set, the daemon in this process, and `workers` worker
processes that it restarts if they die. SIGTERM/SIGINT stop it all cleanly: the watcher stops taking
events, the partial batch is queued, the catalog and index are flushed, workers and Redis are stopped.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import redis

from daemon.config import Settings
from daemon.service.held import hup_held
from daemon.service.loop import Daemon
from daemon.service.redis_server import EmbeddedRedis, _die_with_parent

log = logging.getLogger(__name__)

LOCAL_WORKER_PREFIX = "dupwatch-local-"
"""Names of the workers `run` starts: prefix, then the run's pid and an index."""

WORKER_RESTART_BACKOFF_S = (1.0, 2.0, 5.0, 10.0, 30.0)
"""Delays before restarting a worker that keeps dying (a broken GPU driver should not spin a CPU)."""

WORKER_STABLE_S = 60.0
"""A worker that lived this long was working, not crash-looping: its next restart waits the shortest delay."""


class RestartBackoff:
    """How long to wait before restarting each worker: longer after each short life in a row, and the
    shortest again after a life of `stable_s` or more, so one crash after hours of work is not delayed
    by crashes long past."""

    def __init__(self, delays: tuple[float, ...] = WORKER_RESTART_BACKOFF_S, stable_s: float = WORKER_STABLE_S):
        self.delays, self.stable_s = delays, stable_s
        self.short_lives: dict[str, int] = {}  # worker -> deaths in a row after less than stable_s

    def delay(self, name: str, lived_s: float) -> float:
        """The wait before restarting `name`, which just died after living `lived_s` seconds."""
        n = 0 if lived_s >= self.stable_s else self.short_lives.get(name, 0)
        self.short_lives[name] = n + 1
        return self.delays[min(n, len(self.delays) - 1)]


def _worker_main(settings: Settings, redis_url: str, name: str) -> None:
    _die_with_parent()
    from daemon.logs import configure
    from workers.worker import run_worker

    configure(settings.log_level, settings.log_format)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when workers stop
    run_worker(settings, redis_url, name=name, follow_symlinks=settings.watch.follow_symlinks)


class WorkerPool:
    """Supervise N local worker processes (spawned: CUDA and fork do not mix)."""

    def __init__(self, settings: Settings, redis_url: str, count: int, daemon: Daemon):
        self.settings, self.redis_url, self.count, self.daemon = settings, redis_url, count, daemon
        self.ctx = mp.get_context("spawn")
        self.procs: dict[str, mp.process.BaseProcess] = {}
        self.backoff = RestartBackoff()
        self.started: dict[str, float] = {}  # worker -> monotonic time of its last start
        self.next_start: dict[str, float] = {}

    def start(self) -> None:
        for i in range(self.count):
            self._spawn(f"{LOCAL_WORKER_PREFIX}{os.getpid()}-{i}")

    def _spawn(self, name: str) -> None:
        proc = self.ctx.Process(target=_worker_main, args=(self.settings, self.redis_url, name), name=name,
                                daemon=False)
        proc.start()
        self.procs[name] = proc
        self.started[name] = time.monotonic()

    def check(self, _daemon: Daemon | None = None) -> None:
        """Called from the daemon loop: restart dead workers and recover their jobs at once."""
        now = time.monotonic()
        for name, proc in list(self.procs.items()):
            if proc.is_alive():
                continue
            if name not in self.next_start:
                lived = now - self.started[name]
                delay = self.backoff.delay(name, lived)
                log.warning("worker %s exited (%s) after %.0fs; restarting in %.0fs", name, proc.exitcode, lived,
                            delay)
                self.next_start[name] = now + delay
                self.daemon.worker_died(name)
            elif now >= self.next_start[name]:
                del self.next_start[name]
                self._spawn(name)

    def stop(self, timeout: float = 20.0) -> None:
        for proc in self.procs.values():
            if proc.is_alive():
                proc.terminate()  # SIGTERM: rq finishes the current job, then exits
        deadline = time.monotonic() + timeout
        for proc in self.procs.values():
            proc.join(max(0.1, deadline - time.monotonic()))
            if proc.is_alive():
                proc.kill()
                proc.join()
        try:
            # A worker stopped between rq dequeuing a job and running it (SIGTERM in that window ends rq's
            # loop at once), or killed above, leaves its job started or parked with no one to run it, and
            # every later file would wait for it (verdicts go in arrival order): free them now; their
            # files, still pending in the catalog, are queued again at the next start.
            self.daemon.release_jobs(lambda worker, _at: worker in self.procs, "workers stopped", parked=True,
                                     requeue=False)
        except redis.RedisError as exc:  # Redis gone: those files stay pending and are re-queued at start
            log.warning("could not release the stopped workers' jobs: %s", exc)


def _install_signals(daemon: Daemon, reload: Callable[[], Settings] | None) -> None:
    """SIGTERM/SIGINT stop cleanly; SIGHUP re-reads the configuration (applied in the main loop)."""

    def stop(signum, _frame):
        log.info("signal %d: stopping", signum)
        daemon.stopping.set()

    def hup(_signum, _frame):
        if reload is not None:
            daemon.reload_with = reload  # applied by the main loop, never inside the signal handler

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGHUP, hup)
    if hup_held() and reload is not None:  # asked for while starting
        daemon.reload_with = reload


def _from_an_earlier_run(worker: str) -> bool:
    """A local worker of an earlier `run` on this state dir: that run is dead (we hold its lock), and its
    workers died with it (or are finishing one job on their way out)."""
    return worker.startswith(LOCAL_WORKER_PREFIX) and not worker.startswith(f"{LOCAL_WORKER_PREFIX}{os.getpid()}-")


def run_all(settings: Settings, roots: list[Path], reload: Callable[[], Settings] | None = None) -> int:
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # spinning OpenMP threads starve the daemon
    if not settings.hash_only and settings.model.name != "none":
        from workers.models.hub import offline_reason

        # one hub decision for the host: offline, the spawned workers inherit HF_HUB_OFFLINE and never wait
        reason = offline_reason()
        if reason:
            log.info("model hub not used (%s): models load from local files and the cache only", reason)
    daemon = Daemon(settings, roots or settings.watch.roots, settings.redis.url or "")
    daemon.state.acquire()  # first: a second `run` must not touch the first one's Redis or files
    embedded = None if settings.redis.url else EmbeddedRedis(settings.state_dir)
    pool = None
    try:
        daemon.redis_url = embedded.start() if embedded is not None else settings.redis.url or ""
        daemon.open()
        # What the last life's workers held is lost: free it now, not after queue.pending_retry_s.
        try:
            daemon.release_jobs(lambda worker, _at: _from_an_earlier_run(worker), "left started by an earlier run",
                                parked=True, requeue=False)
        except redis.RedisError as exc:  # Redis died as we started: the supervisor restarts it
            log.warning("could not free the jobs of an earlier run's workers: %s", exc)
        _install_signals(daemon, reload)
        pool = WorkerPool(settings, daemon.redis_url, settings.workers, daemon)
        pool.start()
        log.info("watching %s", ", ".join(str(r) for r in daemon.filter.roots))

        def supervise(d: Daemon) -> None:
            if embedded is not None:
                embedded.supervise(d)
            pool.check()

        daemon.serve(heartbeat=supervise)
    finally:
        if pool is not None:
            pool.stop()
        daemon.close()
        if embedded is not None:
            embedded.stop()
    return 0


def run_daemon(settings: Settings, roots: list[Path], reload: Callable[[], Settings] | None = None) -> int:
    if not settings.redis.url:
        raise SystemExit("`dupwatch daemon` needs redis.url (--redis-url); use `dupwatch run` for all-in-one")
    if not (roots or settings.watch.roots):
        raise SystemExit("no folders to watch: give ROOTS or set watch.roots")
    daemon = Daemon(settings, roots or settings.watch.roots, settings.redis.url)
    daemon.open()
    _install_signals(daemon, reload)
    try:
        daemon.serve()
    finally:
        daemon.close()
    return 0
