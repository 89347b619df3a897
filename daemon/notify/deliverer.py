"""Sending the webhook outbox: one thread per endpoint, in detection order, retried with capped exponential
backoff and full jitter until sent or dead.

Delivery on the wire is at-least-once (a crash mid-request re-sends on restart); `webhook-id` is the event id on
every attempt, so receivers de-duplicate on it. The rows are daemon/notify/outbox.py's; the HTTP, transport.py's.
"""

from __future__ import annotations

import copy
import email.utils
import logging
import math
import random
import sqlite3
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC
from pathlib import Path
from typing import Any

import httpx

from daemon import defaults
from daemon.config import WebhookSettings
from daemon.index.catalog import connect
from daemon.notify import outbox
from daemon.notify.transport import client, post
from daemon.webhooks import secret_key, shown_url

log = logging.getLogger(__name__)

LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 3600.0)
"""Upper bounds of the latency histograms in Deliverer.stats (Prometheus-style, cumulative): from a
fast local receiver to a delivery that waited out an outage."""

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
                raise ValueError(f"webhook endpoint {shown_url(endpoint.url)} is configured twice")
            try:
                scheme = httpx.URL(endpoint.url).scheme
            except httpx.InvalidURL as exc:
                raise ValueError(f"webhook url {shown_url(endpoint.url)}: {exc}") from exc
            if scheme not in ("http", "https"):
                raise ValueError(f"webhook url {shown_url(endpoint.url)} is not http(s)")
            if endpoint.secret:
                secret_key(endpoint.secret.get_secret_value())
            else:
                log.warning("webhook %s has no secret: its requests are sent unsigned", shown_url(endpoint.url))
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
                                               name=f"webhook-deliverer {shown_url(url)}")
                self._lanes[url] = lane
                lane.thread.start()

    def _warn_orphans(self) -> None:
        """Warn once per URL about pending rows whose endpoint is not configured (they wait)."""
        conn = connect(self.db_path)
        try:
            pending = outbox.pending_by_endpoint(conn)
        finally:
            conn.close()
        with self._lock:
            orphans = [(url, n) for url, n in pending.items()
                       if url not in self._endpoints and url not in self._warned_orphans]
            self._warned_orphans.update(url for url, _ in orphans)
        for url, n in orphans:
            log.warning("%d webhook deliveries wait for %s, which is no longer configured; they are sent "
                        "if it is configured again (see `dupwatch webhook list --state pending`)", n, shown_url(url))

    def _run_lane(self, lane: _Lane) -> None:
        conn = connect(self.db_path)
        try:
            with client() as http:
                while not self._stop.is_set():
                    try:
                        wait = self._step(conn, http, lane.url)
                    except Exception:  # a sender must outlive any one failure (e.g. a locked database)
                        log.exception("webhook sender for %s failed; trying again", shown_url(lane.url))
                        wait = max(self.poll_s, 1.0)
                    if wait > 0:
                        lane.wake.wait(wait)
                        lane.wake.clear()
        finally:
            conn.close()

    def _step(self, conn: sqlite3.Connection, http: httpx.Client, url: str) -> float:
        """Send the endpoint's head delivery if it is due; return how long to wait before looking again."""
        endpoint = self._endpoints.get(url)
        if endpoint is None:
            return self.poll_s
        row = outbox.head(conn, url)
        if row is None:
            return self.poll_s
        due_in = row["next_attempt_at"] - time.time()
        if due_in > 0:
            return min(due_in, self.poll_s)  # keep polling: a replayed earlier row may become the head
        self._attempt(conn, http, endpoint, row)
        return 0.0

    def _attempt(self, conn: sqlite3.Connection, http: httpx.Client, endpoint: WebhookSettings,
                 row: sqlite3.Row) -> None:
        attempt = row["attempts"] + 1
        status: int | None = None
        wait_asked: float | None = None
        started = time.monotonic()
        try:
            response = post(http, endpoint, row["event_id"], row["payload"].encode())
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
            outbox.reschedule(conn, row["id"], attempt, time.time() + delay, error, status)
            self._count(failed_attempts=1, retried=1)
            log.info("webhook %s to %s: attempt %d failed (%s); next in %.2f s",
                     row["event_id"], shown_url(endpoint.url), attempt, error, delay)
        else:
            outbox.mark_dead(conn, row["id"], attempt, error, status)
            self._count(failed_attempts=1, dead=1)
            log.warning("webhook %s to %s is dead after %d attempt(s): %s (replay: dupwatch webhook replay %d)",
                        row["event_id"], shown_url(endpoint.url), attempt, error, row["id"])

    def _sent(self, conn: sqlite3.Connection, row: sqlite3.Row, attempt: int, status: int, elapsed: float) -> None:
        now = time.time()
        outbox.mark_sent(conn, row["id"], attempt, status, now)
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
