"""What is degraded right now (Redis down, disk full), shared by the main loop, /healthz, /readyz and metrics.

The daemon keeps running through these states and leaves them by itself; this record is how an operator
sees that it is waiting, and on what, instead of a silent stall or a green health check.
"""

from __future__ import annotations

import threading

REASONS = ("redis", "disk-full", "root-missing")
"""Why the daemon can be degraded: its Redis is down or restarting; the state dir's file system is full; a
watched root is gone (deleted, moved away, unmounted)."""


class Health:
    """Thread-safe: set from the main loop, read from the API's threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._degraded: dict[str, str] = {}
        self.episodes = dict.fromkeys(REASONS, 0)  # how often each state was entered (a metrics counter)
        self.redis_restarts = 0

    def degrade(self, reason: str, detail: str) -> bool:
        """Enter (or update) a degraded state. True when it is new: log it once, not every retry."""
        with self._lock:
            new = reason not in self._degraded
            self._degraded[reason] = detail
            if new:
                self.episodes[reason] += 1
            return new

    def recover(self, reason: str) -> bool:
        """Leave a degraded state. True when it was degraded."""
        with self._lock:
            return self._degraded.pop(reason, None) is not None

    def degraded(self) -> dict[str, str]:
        with self._lock:
            return dict(self._degraded)

    def is_degraded(self, reason: str) -> bool:
        with self._lock:
            return reason in self._degraded


def disk_full(exc: BaseException) -> bool:
    """Whether `exc` says the disk is full, in any of the three ways it reaches the daemon: an OSError
    (the event log), SQLite's SQLITE_FULL (the catalog), or Redis refusing writes because it cannot
    append to its AOF (MISCONF)."""
    import errno
    import sqlite3

    import redis

    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    if isinstance(exc, sqlite3.OperationalError):
        return getattr(exc, "sqlite_errorname", "") == "SQLITE_FULL" or "disk is full" in str(exc)
    # inside a MULTI, redis-py words it "Command # 1 (SADD ...) of pipeline caused error: MISCONF ..."
    return isinstance(exc, redis.ResponseError) and "MISCONF " in str(exc)
