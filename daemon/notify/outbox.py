"""The webhook outbox: durable delivery rows in the catalog database, and every statement that reads or writes them.

The index owner writes a verdict and its deliveries in ONE transaction (`enqueue` runs inside it), so a
crash can never leave a verdict without its alerts or an alert for a verdict that was rolled back, and
re-processing a file enqueues nothing new (UNIQUE(endpoint, event_id)). Per endpoint, rows are sent strictly
in detection order, `(detected_at, id)`: `head` is the only row a sender may try. Dead letters stay as rows
that `replay` puts back in line. The sending is daemon/notify/deliverer.py's; the HTTP, transport.py's.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from daemon.config import Subscription, WebhookSettings
from daemon.events import VerdictEvent
from daemon.text import dumps

SCHEMA = """
CREATE TABLE IF NOT EXISTS deliveries (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    endpoint        TEXT NOT NULL,                      -- the endpoint's key: its URL
    event_id        TEXT NOT NULL,                      -- webhook-id on every attempt
    file_id         INTEGER NOT NULL,
    detected_at     REAL NOT NULL,                      -- delivery order per endpoint: (detected_at, id)
    payload         TEXT NOT NULL,                      -- the JSON body, frozen at enqueue time
    state           TEXT NOT NULL DEFAULT 'pending',    -- pending | sent | dead
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL NOT NULL,
    last_error      TEXT,
    last_status     INTEGER,
    created_at      REAL NOT NULL,
    sent_at         REAL,
    UNIQUE (endpoint, event_id)
);
CREATE INDEX IF NOT EXISTS deliveries_queue ON deliveries(endpoint, state, detected_at, id);
CREATE INDEX IF NOT EXISTS deliveries_state ON deliveries(state, created_at);
"""

STATES = ("pending", "sent", "dead")

def wants(endpoint: Subscription, event: VerdictEvent) -> bool:
    """Whether an endpoint subscribes to an event: its kind is listed, and its best match scores at
    least min_score. Events without a match score (new, error) are not filtered by min_score."""
    if event.kind not in endpoint.kinds:
        return False
    best = event.best
    return best is None or event.kind == "error" or best.score >= endpoint.min_score


def enqueue(conn: sqlite3.Connection, endpoints: Sequence[WebhookSettings], event: VerdictEvent, version: str) -> int:
    """Queue the event for every endpoint that wants it; return the number of rows inserted.

    Runs INSIDE the caller's open transaction (the verdict's), never beginning or committing one, so
    the verdict and its deliveries commit or vanish together. An event already queued for an endpoint
    is ignored: re-processing a file never sends a second alert.
    """
    payload = dumps(replace(event, version=version).to_dict(), separators=(",", ":"))
    now = time.time()
    inserted = 0
    for endpoint in endpoints:
        if wants(endpoint, event):
            cur = conn.execute(
                "INSERT OR IGNORE INTO deliveries (endpoint, event_id, file_id, detected_at, payload, "
                "next_attempt_at, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (endpoint.url, event.event_id, event.file.id, event.detected_at, payload, now, now))
            inserted += cur.rowcount
    return inserted


def list_deliveries(conn: sqlite3.Connection, state: str | None = None,
                    since: float | None = None) -> list[dict[str, Any]]:
    """Deliveries in delivery order, optionally only in one state and/or enqueued at or after `since`
    (unix seconds)."""
    sql = "SELECT * FROM deliveries WHERE 1 = 1"
    args: list[Any] = []
    if state is not None:
        if state not in STATES:
            raise ValueError(f"unknown delivery state {state!r} (one of {', '.join(STATES)})")
        sql += " AND state = ?"
        args.append(state)
    if since is not None:
        sql += " AND created_at >= ?"
        args.append(since)
    return [dict(r) for r in conn.execute(sql + " ORDER BY detected_at, id", args)]


def replay(conn: sqlite3.Connection, ids: Sequence[int] | None = None, all_dead: bool = False,
           since: float | None = None) -> int:
    """Put dead deliveries back in line (pending, attempts 0, due now); return how many.

    `ids` and `since` (enqueued at or after, unix seconds) narrow the selection; with neither,
    `all_dead=True` is required, so an empty selection never replays everything by accident. Rows in
    other states are left alone. A running Deliverer picks them up at its next poll (or `wake()`).
    """
    if not ids and since is None and not all_dead:
        raise ValueError("name delivery ids, a since time, or all_dead=True")
    sql = "UPDATE deliveries SET state = 'pending', attempts = 0, next_attempt_at = ? WHERE state = 'dead'"
    args: list[Any] = [time.time()]
    if ids:
        sql += f" AND id IN ({', '.join('?' * len(ids))})"
        args.extend(ids)
    if since is not None:
        sql += " AND created_at >= ?"
        args.append(since)
    return conn.execute(sql, args).rowcount



def pending_by_endpoint(conn: sqlite3.Connection) -> dict[str, int]:
    """Pending deliveries per endpoint URL."""
    conn.executescript(SCHEMA)
    return {r["endpoint"]: r["n"] for r in conn.execute(
        "SELECT endpoint, count(*) AS n FROM deliveries WHERE state = 'pending' GROUP BY endpoint")}


def head(conn: sqlite3.Connection, url: str) -> sqlite3.Row | None:
    """The endpoint's next delivery: the earliest detected pending row. Its sender tries no other."""
    return conn.execute("SELECT * FROM deliveries WHERE endpoint = ? AND state = 'pending' "
                        "ORDER BY detected_at, id LIMIT 1", (url,)).fetchone()


def mark_sent(conn: sqlite3.Connection, delivery_id: int, attempts: int, status: int, at: float) -> None:
    conn.execute("UPDATE deliveries SET state = 'sent', attempts = ?, sent_at = ?, last_status = ?, "
                 "last_error = NULL WHERE id = ? AND state = 'pending'", (attempts, at, status, delivery_id))


def reschedule(conn: sqlite3.Connection, delivery_id: int, attempts: int, at: float, error: str,
               status: int | None) -> None:
    """A failed attempt to be tried again at `at` (unix seconds); a row replayed or given up meanwhile stays."""
    conn.execute("UPDATE deliveries SET attempts = ?, next_attempt_at = ?, last_error = ?, last_status = ? "
                 "WHERE id = ? AND state = 'pending'", (attempts, at, error, status, delivery_id))


def mark_dead(conn: sqlite3.Connection, delivery_id: int, attempts: int, error: str, status: int | None) -> None:
    """Given up: kept as a dead letter for `list_deliveries` and `replay`."""
    conn.execute("UPDATE deliveries SET state = 'dead', attempts = ?, last_error = ?, last_status = ? "
                 "WHERE id = ? AND state = 'pending'", (attempts, error, status, delivery_id))


def counts_by_state(conn: sqlite3.Connection) -> dict[str, int]:
    """Deliveries per state (the metrics' gauge)."""
    return dict(conn.execute("SELECT state, count(*) FROM deliveries GROUP BY state").fetchall())
