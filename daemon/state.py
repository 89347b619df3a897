"""The state directory: its layout and the lock that makes one process its single writer."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import TextIO


class StateDir:
    def __init__(self, root: Path, create: bool = True):
        """`create=False` for readers (`query`), which must leave no trace where there is no state."""
        self.root = Path(root).expanduser()
        if create:
            self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._lock_fh: TextIO | None = None

    @property
    def catalog(self) -> Path:
        return self.root / "catalog.sqlite3"

    @property
    def events(self) -> Path:
        return self.root / "events.jsonl"

    @property
    def redis_socket(self) -> Path:
        return self.root / "redis.sock"

    @property
    def redis_pidfile(self) -> Path:
        return self.root / "redis.pid"

    def acquire(self) -> None:
        """Take the owner lock or fail with who holds it: the index must have exactly one writer.

        `run` takes it before anything else (before its private Redis, which a second instance would
        otherwise stop); taking it again in the same process is a no-op."""
        if self._lock_fh is not None:
            return
        fh = open(self.root / "owner.lock", "a+")  # noqa: SIM115 - held open: the lock lasts until release()
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "another process"
            fh.close()
            raise RuntimeError(f"state dir {self.root} is owned by {holder} (one daemon or scan per state "
                               "dir); nothing was started or changed") from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"pid {os.getpid()}")
        fh.flush()
        self._lock_fh = fh

    def release(self) -> None:
        if self._lock_fh is not None:
            self._lock_fh.close()
            self._lock_fh = None
