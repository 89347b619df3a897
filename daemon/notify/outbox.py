"""Webhook delivery through a durable outbox in the catalog database.

The index owner writes a verdict and its deliveries in ONE transaction (`enqueue` runs inside it), so a
crash can never leave a verdict without its alerts or an alert for a verdict that was rolled back, and
re-processing a file enqueues nothing new (UNIQUE(endpoint, event_id)). The `Deliverer` then sends
them: per endpoint strictly in detection order (the head must be sent or go dead before the next one is
tried), retried with capped exponential backoff and full jitter, and dead-lettered as durable rows that
`replay` puts back in line. Delivery on the wire is at-least-once (a crash mid-request re-sends on
restart); `webhook-id` is the event id on every attempt, so receivers de-duplicate on it.
"""

from __future__ import annotations

import contextvars
import copy
import email.utils
import json
import logging
import math
import random
import sqlite3
import ssl
import threading
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC
from pathlib import Path
from typing import Any

import certifi
import httpcore
import httpx

from daemon import __version__, defaults
from daemon.config import Subscription, WebhookSettings
from daemon.events import SCHEMA_VERSION, VerdictEvent
from daemon.index.catalog import connect
from daemon.text import dumps
from daemon.webhooks import secret_key, signed_headers
from workers import library_internals as internals

log = logging.getLogger(__name__)

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

USER_AGENT = f"dupwatch/{__version__}"

LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 3600.0)
"""Upper bounds of the latency histograms in Deliverer.stats (Prometheus-style, cumulative): from a
fast local receiver to a delivery that waited out an outage."""

RESPONSE_CAP_BYTES = 4096
"""How much of a receiver's response body is read (into error messages and `webhook test`)."""

_HEAD_SQL = ("SELECT * FROM deliveries WHERE endpoint = ? AND state = 'pending' "
             "ORDER BY detected_at, id LIMIT 1")


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


def send_test(endpoint: WebhookSettings) -> tuple[int, str]:
    """Send one signed `dupwatch.test` event to an endpoint now (outside the outbox); return the
    receiver's status and body. Network errors raise httpx.HTTPError."""
    event_id = f"evt_test_{uuid.uuid4().hex[:24]}"
    body = json.dumps({"schema": SCHEMA_VERSION, "id": event_id, "type": "dupwatch.test", "kind": None,
                       "sent_at": time.time(), "dupwatch_version": __version__}, separators=(",", ":")).encode()
    with _client() as client:
        response = _post(client, endpoint, event_id, body)
    return response.status_code, response.text


def backoff_s(attempts: int, base_s: float, factor: float, cap_s: float) -> float:
    """Wait after `attempts` failed attempts: full jitter, uniform in [0, min(cap, base * factor^(n-1))].
    Jitter spreads the retries of many deliveries that failed together (a receiver's outage)."""
    try:
        bound = base_s * factor ** (attempts - 1)
    except OverflowError:
        bound = cap_s
    return random.uniform(0.0, min(cap_s, bound))


def retry_after_s(value: str | None, now: float | None = None) -> float | None:
    """Seconds a Retry-After header asks for (delay-seconds or an HTTP-date), None when absent/invalid."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        return max(0.0, when.timestamp() - (time.time() if now is None else now))
    return seconds if math.isfinite(seconds) and seconds >= 0 else None


_attempt_deadline: contextvars.ContextVar[float | None] = contextvars.ContextVar("attempt_deadline", default=None)
"""The monotonic time by which the current attempt must be over (set by `_post` around one request)."""


def _time_left(timeout: float | None, expired: type[httpcore.TimeoutException]) -> float | None:
    """What a socket operation may wait: the smaller of its own timeout and what is left of the attempt's
    deadline; past the deadline, `expired` is raised (httpx maps it to its own timeout of the same kind)."""
    deadline = _attempt_deadline.get()
    if deadline is None:
        return timeout
    left = deadline - time.monotonic()
    if left <= 0:
        raise expired("webhook attempt not complete within its timeout_s")
    return left if timeout is None else min(timeout, left)


class _DeadlineStream(httpcore.NetworkStream):
    """A connection whose every read and write waits at most what is left of the attempt's deadline.

    httpx's timeouts bound each socket operation, not the request: a receiver that sends its status line,
    headers or body a byte at a time resets the read timeout with every byte and holds the endpoint's
    lane (and every delivery behind it) for as long as it likes. Checking the deadline on every read, and
    setting the socket's timeout to what is left of it, bounds the whole attempt, connect to last byte."""

    def __init__(self, inner: httpcore.NetworkStream) -> None:
        self._inner = inner

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._inner.read(max_bytes, _time_left(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._inner.write(buffer, _time_left(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._inner.close()

    def start_tls(self, ssl_context: ssl.SSLContext, server_hostname: str | None = None,
                  timeout: float | None = None) -> httpcore.NetworkStream:
        return _DeadlineStream(self._inner.start_tls(ssl_context, server_hostname,
                                                     _time_left(timeout, httpcore.ConnectTimeout)))

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class _DeadlineBackend(httpcore.NetworkBackend):
    """httpcore's own sockets, connected within the attempt's deadline and wrapped in `_DeadlineStream`."""

    def __init__(self) -> None:
        self._inner = httpcore.SyncBackend()

    def connect_tcp(self, host: str, port: int, timeout: float | None = None, local_address: str | None = None,
                    socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None) -> httpcore.NetworkStream:
        return _DeadlineStream(self._inner.connect_tcp(host, port, _time_left(timeout, httpcore.ConnectTimeout),
                                                       local_address, socket_options))

    def connect_unix_socket(self, path: str, timeout: float | None = None,
                            socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None) -> httpcore.NetworkStream:
        return _DeadlineStream(self._inner.connect_unix_socket(path, _time_left(timeout, httpcore.ConnectTimeout),
                                                               socket_options))

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


class _DeadlineTransport(httpx.HTTPTransport):
    """httpx's transport over `_DeadlineBackend`. httpx has no setting for a network backend, so its
    connection pool is replaced by one built the same way with that backend (the pool is the only thing
    the transport holds)."""

    def __init__(self) -> None:
        super().__init__()
        internals.set_connection_pool(self, httpcore.ConnectionPool(
            ssl_context=ssl.create_default_context(cafile=certifi.where()), network_backend=_DeadlineBackend()))


def _client() -> httpx.Client:
    """The client every webhook attempt goes through: each attempt bounded as a whole (`_post`)."""
    return httpx.Client(headers={"user-agent": USER_AGENT}, transport=_DeadlineTransport())


def _post(client: httpx.Client, endpoint: WebhookSettings, msg_id: str, body: bytes) -> httpx.Response:
    """One signed attempt: a fresh timestamp and signature, the same id.

    The whole attempt (connect, request, status line, headers, body) ends by `timeout_s` from its start
    (`_DeadlineStream`; httpx.TimeoutException past it). Only the body's first RESPONSE_CAP_BYTES are
    read: a receiver answering with a huge body is not read into memory; the status is what counts, the
    body only feeds the error message."""
    token = _attempt_deadline.set(time.monotonic() + endpoint.timeout_s)
    try:
        request = client.build_request("POST", endpoint.url, content=body, timeout=endpoint.timeout_s,
                                       headers=signed_headers(endpoint.secret, msg_id, body))
        response = client.send(request, stream=True)
        kept = bytearray()
        try:
            for chunk in response.iter_raw():
                kept += chunk[:RESPONSE_CAP_BYTES - len(kept)]
                if len(kept) >= RESPONSE_CAP_BYTES:
                    break  # the rest is dropped with the connection
        finally:
            response.close()
    finally:
        _attempt_deadline.reset(token)
    headers = [(k, v) for k, v in response.headers.multi_items()  # kept raw: the framing no longer applies
               if k not in ("content-encoding", "content-length", "transfer-encoding")]
    return httpx.Response(response.status_code, headers=headers, content=bytes(kept), request=request)


def _histogram() -> dict[str, Any]:
    return {"buckets": {le: 0 for le in LATENCY_BUCKETS_S}, "sum": 0.0, "count": 0}


@dataclass
class _Lane:
    """One endpoint's sender: a thread and the event that wakes it."""

    url: str
    wake: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None


class Deliverer:
    """Sends the outbox: one thread per endpoint (a slow or dead receiver never delays another's
    alerts), each with its own SQLite connection to the catalog file.

    Runs once: start(), then stop(). Endpoints are keyed by URL; `set_endpoints` swaps the list live
    (SIGHUP). Rows of an endpoint that is no longer configured stay pending until it is configured again.

    `stats` holds counters for the metrics exporter; read it through `stats_snapshot()`:
    sent, failed_attempts (every attempt that did not succeed), retried (failures that were
    rescheduled), dead (deliveries given up), request_seconds (histogram of HTTP round trips, failures
    included) and delivery_lag_seconds (histogram of detected_at -> sent).
    """

    def __init__(self, db_path: Path, endpoints: Sequence[WebhookSettings] = (), *,
                 retry_base_s: float = defaults.WEBHOOK_RETRY_BASE_S,
                 retry_factor: float = defaults.WEBHOOK_RETRY_FACTOR,
                 retry_cap_s: float = defaults.WEBHOOK_RETRY_CAP_S,
                 max_attempts: int = defaults.WEBHOOK_MAX_ATTEMPTS,
                 retry_after_cap_s: float = defaults.WEBHOOK_RETRY_AFTER_CAP_S,
                 poll_s: float = defaults.WEBHOOK_POLL_S):
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        self.db_path = Path(db_path)
        self.retry_base_s, self.retry_factor, self.retry_cap_s = retry_base_s, retry_factor, retry_cap_s
        self.max_attempts, self.retry_after_cap_s, self.poll_s = max_attempts, retry_after_cap_s, poll_s
        self.stats: dict[str, Any] = {"sent": 0, "failed_attempts": 0, "retried": 0, "dead": 0,
                                      "request_seconds": _histogram(), "delivery_lag_seconds": _histogram()}
        self.stats_lock = threading.Lock()
        self._lock = threading.Lock()  # guards _endpoints, _lanes, _started
        self._endpoints: dict[str, WebhookSettings] = {}
        self._lanes: dict[str, _Lane] = {}
        self._started = False
        self._stop = threading.Event()
        self._warned_orphans: set[str] = set()
        self.set_endpoints(endpoints)

    # --- control -----------------------------------------------------------------------------------

    def set_endpoints(self, endpoints: Sequence[WebhookSettings]) -> None:
        """Replace the endpoint list. Validates everything first (unique URLs, http(s), decodable
        secrets) and raises ValueError without changing anything, so a bad reload keeps the old list."""
        configured: dict[str, WebhookSettings] = {}
        for endpoint in endpoints:
            if endpoint.url in configured:
                raise ValueError(f"webhook endpoint {endpoint.url} is configured twice")
            try:
                scheme = httpx.URL(endpoint.url).scheme
            except httpx.InvalidURL as exc:
                raise ValueError(f"webhook url {endpoint.url!r}: {exc}") from exc
            if scheme not in ("http", "https"):
                raise ValueError(f"webhook url {endpoint.url!r} is not http(s)")
            if endpoint.secret:
                secret_key(endpoint.secret)
            else:
                log.warning("webhook %s has no secret: its requests are sent unsigned", endpoint.url)
            configured[endpoint.url] = endpoint
        with self._lock:
            self._endpoints = configured
            self._warned_orphans -= configured.keys()  # warn again if one is removed again later
            if self._started and not self._stop.is_set():
                self._start_lanes()
        if self._started:
            self._warn_orphans()

    def start(self) -> None:
        with self._lock:
            if self._started:
                raise RuntimeError("a Deliverer runs once: make a new one")
            self._started = True
            self._start_lanes()
        self._warn_orphans()

    def wake(self) -> None:
        """Look at the outbox now: the owner calls this after committing deliveries."""
        with self._lock:
            lanes = list(self._lanes.values())
        for lane in lanes:
            lane.wake.set()

    def stop(self, timeout: float = 5.0) -> bool:
        """Stop every sender; True when all have ended within `timeout`. Waits never outlast a stop;
        a request in flight finishes (bounded by its endpoint's timeout_s) and its outcome is recorded."""
        self._stop.set()
        with self._lock:
            lanes = list(self._lanes.values())
        deadline = time.monotonic() + timeout
        for lane in lanes:
            lane.wake.set()
        for lane in lanes:
            assert lane.thread is not None
            lane.thread.join(max(0.0, deadline - time.monotonic()))
        return not any(lane.thread is not None and lane.thread.is_alive() for lane in lanes)

    def stats_snapshot(self) -> dict[str, Any]:
        with self.stats_lock:
            return copy.deepcopy(self.stats)

    # --- internals ---------------------------------------------------------------------------------

    def _start_lanes(self) -> None:
        """Start a sender for each configured URL that has none (called with _lock held). Lanes of
        removed URLs keep running idle, so a URL removed and re-added never gets two senders."""
        for url in self._endpoints:
            if url not in self._lanes:
                lane = _Lane(url)
                lane.thread = threading.Thread(target=self._run_lane, args=(lane,), daemon=True,
                                               name=f"webhook-deliverer {url}")
                self._lanes[url] = lane
                lane.thread.start()

    def _warn_orphans(self) -> None:
        """Warn once per URL about pending rows whose endpoint is not configured (they wait)."""
        conn = connect(self.db_path)
        try:
            conn.executescript(SCHEMA)
            rows = conn.execute("SELECT endpoint, count(*) AS n FROM deliveries WHERE state = 'pending' "
                                "GROUP BY endpoint").fetchall()
        finally:
            conn.close()
        with self._lock:
            orphans = [(r["endpoint"], r["n"]) for r in rows
                       if r["endpoint"] not in self._endpoints and r["endpoint"] not in self._warned_orphans]
            self._warned_orphans.update(url for url, _ in orphans)
        for url, n in orphans:
            log.warning("%d webhook deliveries wait for %s, which is no longer configured; they are sent "
                        "if it is configured again (see `dupwatch webhook list --state pending`)", n, url)

    def _run_lane(self, lane: _Lane) -> None:
        conn = connect(self.db_path)
        try:
            with _client() as client:
                while not self._stop.is_set():
                    try:
                        wait = self._step(conn, client, lane.url)
                    except Exception:  # a sender must outlive any one failure (e.g. a locked database)
                        log.exception("webhook sender for %s failed; trying again", lane.url)
                        wait = max(self.poll_s, 1.0)
                    if wait > 0:
                        lane.wake.wait(wait)
                        lane.wake.clear()
        finally:
            conn.close()

    def _step(self, conn: sqlite3.Connection, client: httpx.Client, url: str) -> float:
        """Send the endpoint's head delivery if it is due; return how long to wait before looking again."""
        endpoint = self._endpoints.get(url)
        if endpoint is None:
            return self.poll_s
        row = conn.execute(_HEAD_SQL, (url,)).fetchone()
        if row is None:
            return self.poll_s
        due_in = row["next_attempt_at"] - time.time()
        if due_in > 0:
            return min(due_in, self.poll_s)  # keep polling: a replayed earlier row may become the head
        self._attempt(conn, client, endpoint, row)
        return 0.0

    def _attempt(self, conn: sqlite3.Connection, client: httpx.Client, endpoint: WebhookSettings,
                 row: sqlite3.Row) -> None:
        attempt = row["attempts"] + 1
        status: int | None = None
        wait_asked: float | None = None
        started = time.monotonic()
        try:
            response = _post(client, endpoint, row["event_id"], row["payload"].encode())
        except httpx.TimeoutException:
            error, retryable = f"timeout after {endpoint.timeout_s:g} s", True
        except httpx.TransportError as exc:
            error, retryable = f"{type(exc).__name__}: {exc}", True
        else:
            status = response.status_code
            if 200 <= status < 300:
                self._sent(conn, row, attempt, status, time.monotonic() - started)
                return
            error = f"HTTP {status}: {response.text[:200]}"
            retryable = status == 429 or status >= 500
            wait_asked = retry_after_s(response.headers.get("retry-after"))
        self._observe("request_seconds", time.monotonic() - started)
        if retryable and attempt < self.max_attempts:
            if wait_asked is not None:
                delay = min(wait_asked, self.retry_after_cap_s)
            else:
                delay = backoff_s(attempt, self.retry_base_s, self.retry_factor, self.retry_cap_s)
            conn.execute("UPDATE deliveries SET attempts = ?, next_attempt_at = ?, last_error = ?, "
                         "last_status = ? WHERE id = ? AND state = 'pending'",
                         (attempt, time.time() + delay, error, status, row["id"]))
            self._count(failed_attempts=1, retried=1)
            log.info("webhook %s to %s: attempt %d failed (%s); next in %.2f s",
                     row["event_id"], endpoint.url, attempt, error, delay)
        else:
            conn.execute("UPDATE deliveries SET state = 'dead', attempts = ?, last_error = ?, last_status = ? "
                         "WHERE id = ? AND state = 'pending'", (attempt, error, status, row["id"]))
            self._count(failed_attempts=1, dead=1)
            log.warning("webhook %s to %s is dead after %d attempt(s): %s (replay: dupwatch webhook replay %d)",
                        row["event_id"], endpoint.url, attempt, error, row["id"])

    def _sent(self, conn: sqlite3.Connection, row: sqlite3.Row, attempt: int, status: int, elapsed: float) -> None:
        now = time.time()
        conn.execute("UPDATE deliveries SET state = 'sent', attempts = ?, sent_at = ?, last_status = ?, "
                      "last_error = NULL WHERE id = ? AND state = 'pending'", (attempt, now, status, row["id"]))
        self._count(sent=1)
        self._observe("request_seconds", elapsed)
        self._observe("delivery_lag_seconds", max(0.0, now - row["detected_at"]))

    def _count(self, **increments: int) -> None:
        with self.stats_lock:
            for name, n in increments.items():
                self.stats[name] += n

    def _observe(self, name: str, seconds: float) -> None:
        with self.stats_lock:
            hist = self.stats[name]
            hist["sum"] += seconds
            hist["count"] += 1
            for le in hist["buckets"]:
                if seconds <= le:
                    hist["buckets"][le] += 1
