"""The catalog's write-ahead log copied into the database on a thread of its own, off the writer's commits.

SQLite's automatic checkpoint runs inside the commit that crosses its threshold (1,000 pages): that one
commit copies about 4 MB into the database file and syncs it, so one verdict in a few hundred took 3-5 ms
of CPU (and more in wall time) where the others took under 1 ms, and that was the owner's per-verdict p99
(bench/scale.py's stream). Here a thread with its own connection runs a PASSIVE checkpoint every
`EVERY_S`: it copies only frames no reader still needs and never blocks the writer, and SQLite releases
the GIL while it copies. The writer keeps an automatic checkpoint at `BACKSTOP_PAGES`, so the log stays
bounded if this thread ever falls behind or fails (a full disk: the writer's own errors report that).
"""

from __future__ import annotations

import logging
import sqlite3
import threading

log = logging.getLogger(__name__)

EVERY_S = 0.25
"""Between two checkpoints: at the owner's fastest (about 2,000 verdicts/s, a few pages each) the log
gains a few thousand pages a second, so each pass copies about what SQLite's own threshold would."""
BACKSTOP_PAGES = 20_000
"""The writer's own automatic checkpoint (about 80 MB of log): reached only if this thread stalls."""


class Checkpointer:
    """Runs `PRAGMA wal_checkpoint(PASSIVE)` on `conn` (a connection of its own to the catalog) every
    EVERY_S until `close`."""

    def __init__(self, conn: sqlite3.Connection):
        self._conn = conn
        self._stop = threading.Event()
        self._failed = False
        self._thread = threading.Thread(target=self._run, name="catalog-checkpoint", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(EVERY_S):
            try:
                self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
            except sqlite3.Error as exc:
                if not self._failed:  # once per failure spell, not four times a second
                    log.warning("catalog checkpoint failed (%s); the write-ahead log grows until it succeeds", exc)
                self._failed = True
            else:
                self._failed = False

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self._conn.close()
