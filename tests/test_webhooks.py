"""Webhooks: signing, the outbox, the deliverer and the CLI, against a real HTTP receiver on 127.0.0.1.

No mocks of httpx or the network: a ThreadingHTTPServer answers from a script (status, delay, headers
per request) and records what it got; "down" is a free port with nothing listening on it.
"""

from __future__ import annotations

import base64
import email.utils
import hashlib
import hmac
import json
import logging
import random
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from daemon.cli.webhook import webhook
from daemon.config import Settings, WebhookSettings
from daemon.events import KINDS, FileInfo, Match, VerdictEvent
from daemon.index.catalog import Catalog
from daemon.notify import deliverer, outbox
from daemon.webhooks import VerificationError, generate_secret, sign, signed_headers, verify
from tests.conftest import free_port

pytestmark = pytest.mark.timeout(60)

SECRET = generate_secret()
FAST = {"retry_base_s": 0.02, "retry_factor": 2.0, "retry_cap_s": 0.1, "max_attempts": 5, "poll_s": 0.05}
"""Tiny backoff so retry tests take milliseconds, not minutes."""


# --- a real receiver -------------------------------------------------------------------------------

@dataclass
class Hit:
    at: float  # time.monotonic() when the request arrived
    headers: dict[str, str]
    body: bytes

    @property
    def id(self) -> str:
        return self.headers["webhook-id"]


class Receiver:
    """An HTTP server answering POSTs from a script: each entry is a status or (status, delay_s, headers);
    when the script runs out it answers 200. Every request is recorded in `hits` as it arrives."""

    def __init__(self, script: Sequence[Any] = (), port: int = 0):
        self.script = list(script)
        self.hits: list[Hit] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # one response, no 40 ms delayed-ACK stall per request

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                with receiver.lock:
                    receiver.hits.append(Hit(time.monotonic(), {k.lower(): v for k, v in self.headers.items()}, body))
                    step = receiver.script.pop(0) if receiver.script else 200
                status, delay, headers = (step, 0.0, {}) if isinstance(step, int) else step
                time.sleep(delay)
                try:
                    self.send_response(status)
                    for key, value in headers.items():
                        self.send_header(key, value)
                    self.send_header("content-length", "2")
                    self.end_headers()
                    self.wfile.write(b"ok")
                except OSError:  # the client gave up (timeout test)
                    pass

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        self.server.handle_error = lambda *args: None  # type: ignore[method-assign]
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receivers() -> Iterator[Callable[..., Receiver]]:
    started: list[Receiver] = []

    def make(script: Sequence[Any] = (), port: int = 0) -> Receiver:
        started.append(Receiver(script, port))
        return started[-1]

    yield make
    for r in started:
        r.close()


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.01)


# --- catalog, events, deliverers ---------------------------------------------------------------------

@pytest.fixture
def catalog(tmp_path: Path) -> Iterator[Catalog]:
    cat = Catalog(tmp_path / "catalog.sqlite3")
    cat.conn.executescript(outbox.SCHEMA)
    yield cat
    cat.close()


@pytest.fixture
def deliverers() -> Iterator[Callable[..., deliverer.Deliverer]]:
    started: list[deliverer.Deliverer] = []

    def make(catalog: Catalog, endpoints: list[WebhookSettings], **overrides: Any) -> deliverer.Deliverer:
        d = deliverer.Deliverer(catalog.path, endpoints, **{**FAST, **overrides})
        d.start()
        started.append(d)
        return d

    yield make
    for d in started:
        d.stop(2.0)


def event(file_id: int, kind: str = "exact-copy", score: float = 100.0,
          detected_at: float | None = None) -> VerdictEvent:
    f = FileInfo(id=file_id, path=f"/in/{file_id}.jpg", size=1000, sha256=f"{file_id:064x}")
    matches = () if kind in ("new", "error") else (Match(FileInfo(id=0, path="/in/0.jpg"), kind, score, 0, "sha256"),)
    return VerdictEvent(kind=kind, file=f, detected_at=1000.0 + file_id if detected_at is None else detected_at,
                        decided_at=2000.0 + file_id, matches=matches,
                        reason="cannot decode" if kind == "error" else None)


def put(catalog: Catalog, endpoints: list[WebhookSettings], *events: VerdictEvent) -> int:
    with catalog.transaction() as conn:
        return sum(outbox.enqueue(conn, endpoints, e, "9.9.9") for e in events)


def row(catalog: Catalog, event_id: str) -> dict[str, Any]:
    return dict(catalog.query("SELECT * FROM deliveries WHERE event_id = ?", (event_id,))[0])


def endpoint(url: str, **kw: Any) -> WebhookSettings:
    """An endpoint with the shared test secret, subscribed to every kind."""
    return WebhookSettings(url=url, secret=SECRET, kinds=list(KINDS), **kw)


# --- signatures --------------------------------------------------------------------------------------

def test_signature_verifies_with_its_secret_only() -> None:
    body = b'{"id":"evt_1"}'
    headers = signed_headers(SECRET, "evt_1", body)
    verify(SECRET, headers, body)
    verify(SECRET, {k.upper(): v for k, v in headers.items()}, body.decode())  # case-insensitive, str body
    with pytest.raises(VerificationError, match="mismatch"):
        verify(generate_secret(), headers, body)
    with pytest.raises(VerificationError, match="mismatch"):
        verify(SECRET, headers, body + b" ")
    rotated = {**headers, "webhook-signature": f"v1,AAAA {headers['webhook-signature']}"}
    verify(SECRET, rotated, body)  # one valid signature among several is enough
    with pytest.raises(VerificationError, match="missing"):
        verify(SECRET, {"webhook-id": "evt_1"}, body)


def test_signature_refuses_old_and_future_timestamps() -> None:
    body = b"{}"
    old = signed_headers(SECRET, "evt_1", body, timestamp=int(time.time()) - 301)
    with pytest.raises(VerificationError, match="too old"):
        verify(SECRET, old, body)
    verify(SECRET, old, body, tolerance_s=600)
    future = signed_headers(SECRET, "evt_1", body, timestamp=int(time.time()) + 301)
    with pytest.raises(VerificationError, match="future"):
        verify(SECRET, future, body)


def test_raw_string_secret_and_known_vector() -> None:
    body = b"hello"
    verify("not-base64 password", signed_headers("not-base64 password", "m", body), body)
    # whsec_ secrets are base64: the key is the decoded bytes (Standard Webhooks), checked independently.
    key = b"0123456789abcdef0123456789abcdef"
    expected = base64.b64encode(hmac.new(key, b"m.1700000000.hello", hashlib.sha256).digest()).decode()
    assert sign("whsec_" + base64.b64encode(key).decode(), "m", 1700000000, body) == f"v1,{expected}"
    with pytest.raises(ValueError, match="base64"):
        sign("whsec_%%%", "m", 1, body)


# --- enqueue -----------------------------------------------------------------------------------------

def test_enqueue_is_idempotent_and_filters_kinds_and_min_score(catalog: Catalog) -> None:
    copies = WebhookSettings(url="http://a.invalid/", kinds=["exact-copy", "edited-copy"], min_score=90)
    errors = WebhookSettings(url="http://b.invalid/", kinds=["error", "new"], min_score=95)
    assert put(catalog, [copies, errors], event(1)) == 1
    assert put(catalog, [copies, errors], event(1)) == 0  # re-processing the file: no second alert
    assert put(catalog, [copies, errors], event(2, "edited-copy", score=89.9)) == 0  # under min_score
    assert put(catalog, [copies, errors], event(3, "edited-copy", score=90.0)) == 1
    assert put(catalog, [copies, errors], event(4, "similar", score=99)) == 0  # kind not subscribed
    assert put(catalog, [copies, errors], event(5, "error"), event(6, "new")) == 2  # no score: min_score n/a
    rows = catalog.query("SELECT endpoint, file_id, state, attempts, payload FROM deliveries ORDER BY id")
    assert [(r["endpoint"], r["file_id"]) for r in rows] == [
        ("http://a.invalid/", 1), ("http://a.invalid/", 3), ("http://b.invalid/", 5), ("http://b.invalid/", 6)]
    assert {(r["state"], r["attempts"]) for r in rows} == {("pending", 0)}
    # The documented schema (docs/webhooks.md), held to a literal: a renamed or dropped key breaks receivers.
    assert json.loads(rows[0]["payload"]) == {
        "schema": 1, "id": "evt_39f47daa2f5c85059748cda0", "type": "file.exact-copy", "kind": "exact-copy",
        "detected_at": 1001.0, "decided_at": 2001.0,
        "file": {"id": 1, "path": "/in/1.jpg", "size": 1000, "sha256": f"{1:064x}", "width": None, "height": None},
        "matches": [{"id": 0, "path": "/in/0.jpg", "size": None, "sha256": None, "width": None, "height": None,
                     "kind": "exact-copy", "score": 100.0, "hash_distance": 0, "signal": "sha256", "edit": None}],
        "reason": None, "dupwatch_version": "9.9.9"}


def test_enqueue_rolls_back_with_the_verdict(catalog: Catalog) -> None:
    with pytest.raises(RuntimeError), catalog.transaction() as conn:
        outbox.enqueue(conn, [endpoint("http://a.invalid/")], event(1), "x")
        raise RuntimeError("crash before the verdict commits")
    assert catalog.query("SELECT count(*) AS n FROM deliveries")[0]["n"] == 0


# --- delivery ----------------------------------------------------------------------------------------

def test_retried_on_500_until_delivered_with_the_same_id(catalog, receivers, deliverers) -> None:
    r = receivers([500, 502, 503, 200])
    d = deliverers(catalog, [endpoint(r.url)])
    e = event(1)
    put(catalog, [endpoint(r.url)], e)
    d.wake()
    wait_until(lambda: row(catalog, e.event_id)["state"] == "sent")
    assert len(r.hits) == 4 and {h.id for h in r.hits} == {e.event_id}
    for hit in r.hits:
        verify(SECRET, hit.headers, hit.body)
    assert json.loads(r.hits[-1].body)["id"] == e.event_id
    got = row(catalog, e.event_id)
    assert (got["attempts"], got["last_status"], got["last_error"]) == (4, 200, None)
    stats = d.stats_snapshot()
    assert (stats["sent"], stats["failed_attempts"], stats["retried"], stats["dead"]) == (1, 3, 3, 0)
    assert stats["request_seconds"]["count"] == 4 and stats["delivery_lag_seconds"]["count"] == 1


def test_400_is_not_retried(catalog, receivers, deliverers) -> None:
    r = receivers([400])
    d = deliverers(catalog, [endpoint(r.url)])
    e = event(1)
    put(catalog, [endpoint(r.url)], e)
    d.wake()
    wait_until(lambda: row(catalog, e.event_id)["state"] == "dead")
    time.sleep(0.2)
    got = row(catalog, e.event_id)
    assert len(r.hits) == 1 and (got["attempts"], got["last_status"]) == (1, 400)
    assert got["last_error"].startswith("HTTP 400")
    assert d.stats_snapshot()["dead"] == 1


def test_429_retry_after_is_honoured(catalog, receivers, deliverers) -> None:
    r = receivers([(429, 0.0, {"Retry-After": "1"}), 200])
    d = deliverers(catalog, [endpoint(r.url)])
    e = event(1)
    put(catalog, [endpoint(r.url)], e)
    d.wake()
    wait_until(lambda: row(catalog, e.event_id)["state"] == "sent")
    gap = r.hits[1].at - r.hits[0].at
    assert 0.95 <= gap < 2.0, gap  # the backoff alone (cap 0.1 s) would have retried far sooner


def test_retry_after_parsing() -> None:
    now = time.time()
    assert deliverer.retry_after_s("7") == 7.0
    later = deliverer.retry_after_s(email.utils.formatdate(now + 30, usegmt=True), now=now)
    assert later is not None and 29 <= later <= 30
    assert deliverer.retry_after_s(email.utils.formatdate(now - 30, usegmt=True), now=now) == 0.0
    assert deliverer.retry_after_s("soon") is None and deliverer.retry_after_s("-1") is None
    assert deliverer.retry_after_s("nan") is None and deliverer.retry_after_s(None) is None


def test_backoff_is_capped_full_jitter() -> None:
    random.seed(1)
    draws = [deliverer.backoff_s(n, 1.0, 2.0, 600.0) for n in (1, 3, 12, 10_000) for _ in range(200)]
    assert all(0 <= x <= 1 for x in draws[:200]) and all(0 <= x <= 4 for x in draws[200:400])
    assert all(0 <= x <= 600 for x in draws[400:]) and max(draws[400:]) > 500


def test_slow_receiver_times_out_and_is_retried(catalog, receivers, deliverers) -> None:
    r = receivers([(200, 1.0, {}), 200])
    slow = endpoint(r.url, timeout_s=0.3)
    d = deliverers(catalog, [slow])
    e = event(1)
    put(catalog, [slow], e)
    d.wake()
    wait_until(lambda: row(catalog, e.event_id)["state"] == "sent")
    assert [h.id for h in r.hits] == [e.event_id] * 2
    assert row(catalog, e.event_id)["attempts"] == 2
    assert d.stats_snapshot()["failed_attempts"] == 1


def test_down_receiver_dead_letters_then_replay_delivers(catalog, receivers, deliverers) -> None:
    port = free_port()
    ep = endpoint(f"http://127.0.0.1:{port}/hook")
    d = deliverers(catalog, [ep], max_attempts=3)
    e = event(1)
    put(catalog, [ep], e)
    d.wake()
    wait_until(lambda: row(catalog, e.event_id)["state"] == "dead")
    got = row(catalog, e.event_id)
    assert got["attempts"] == 3 and got["last_status"] is None and "ConnectError" in got["last_error"]

    r = receivers(port=port)
    time.sleep(0.2)
    assert r.hits == []  # dead letters are not retried on their own
    with catalog.transaction() as conn:
        assert outbox.replay(conn, all_dead=True) == 1
    d.wake()
    wait_until(lambda: row(catalog, e.event_id)["state"] == "sent")
    assert [h.id for h in r.hits] == [e.event_id] and row(catalog, e.event_id)["attempts"] == 1


def test_dead_head_does_not_block_the_next(catalog, receivers, deliverers) -> None:
    r = receivers([400, 200])
    d = deliverers(catalog, [endpoint(r.url)])
    put(catalog, [endpoint(r.url)], event(1), event(2))
    d.wake()
    wait_until(lambda: row(catalog, event(2).event_id)["state"] == "sent")
    assert row(catalog, event(1).event_id)["state"] == "dead"
    assert [h.id for h in r.hits] == [event(1).event_id, event(2).event_id]


def test_backlog_arrives_in_detection_order_exactly_once(catalog, receivers, deliverers) -> None:
    port = free_port()
    ep = endpoint(f"http://127.0.0.1:{port}/hook")
    d = deliverers(catalog, [ep], max_attempts=10_000, retry_cap_s=0.05)
    events = [event(i, detected_at=5000.0 + i) for i in range(1, 101)]
    shuffled = random.Random(7).sample(events, len(events))  # enqueue order != detection order
    assert put(catalog, [ep], *shuffled) == 100
    d.wake()
    wait_until(lambda: d.stats_snapshot()["failed_attempts"] >= 3)  # it really was refused meanwhile
    r = receivers(port=port)
    wait_until(lambda: len(r.hits) >= 100)
    time.sleep(0.3)  # nothing more may arrive
    assert [h.id for h in r.hits] == [e.event_id for e in events]
    assert all(x["state"] == "sent" for x in outbox.list_deliveries(catalog.conn))


def test_stop_does_not_sleep_through_backoff(catalog, receivers, deliverers) -> None:
    r = receivers([500])
    d = deliverers(catalog, [endpoint(r.url)], retry_base_s=60.0, retry_cap_s=60.0)
    put(catalog, [endpoint(r.url)], event(1))
    d.wake()
    wait_until(lambda: len(r.hits) == 1)
    started = time.monotonic()
    assert d.stop(5.0) and time.monotonic() - started < 1.0


def test_unconfigured_endpoint_waits_and_resumes(catalog, receivers, deliverers, caplog) -> None:
    r = receivers()
    ep = endpoint(r.url)
    put(catalog, [ep], event(1))
    with caplog.at_level(logging.WARNING, logger="daemon.notify.outbox"):
        d = deliverers(catalog, [])
        d.set_endpoints([])
    assert sum("no longer configured" in m for m in caplog.messages) == 1  # warned once
    time.sleep(0.2)
    assert r.hits == [] and row(catalog, event(1).event_id)["state"] == "pending"
    d.set_endpoints([ep])
    wait_until(lambda: row(catalog, event(1).event_id)["state"] == "sent")
    with pytest.raises(ValueError, match="twice"):
        d.set_endpoints([ep, ep])


# --- CLI ---------------------------------------------------------------------------------------------

def test_cli_list_replay_verify_test(catalog, receivers, tmp_path: Path) -> None:
    r = receivers()
    ep = endpoint(r.url)
    settings = Settings(state_dir=tmp_path, webhooks=[ep])
    put(catalog, [ep], event(1), event(2))
    with catalog.transaction() as conn:
        conn.execute("UPDATE deliveries SET state = 'dead', attempts = 3, last_error = 'HTTP 500: x' "
                     "WHERE file_id = 2")
    runner = CliRunner()

    env = {"DUPWATCH_WEBHOOKS": json.dumps([{**ep.model_dump(), "secret": SECRET}]), "DUPWATCH_CONFIG": None,
           "DUPWATCH_WEBHOOK_SECRET": None}

    def run(*args: str, **kw: Any):  # as `dupwatch webhook --state-dir D ...`: settings from flags and env
        return runner.invoke(webhook, ["--state-dir", str(settings.state_dir), *args], env=env,
                             catch_exceptions=False, **kw)

    out = run("list", "--state", "dead", "--json")
    assert out.exit_code == 0
    lines = [json.loads(line) for line in out.stdout.splitlines()]
    assert [(x["file_id"], x["attempts"], x["payload"]["id"]) for x in lines] == [(2, 3, event(2).event_id)]
    human = run("list")
    assert human.exit_code == 0 and "HTTP 500: x" in human.stdout and len(human.stdout.splitlines()) == 2

    assert run("replay").exit_code == 2  # refuses to replay without a selection
    assert run("replay", "--since", "2999-01-01T00:00:00").stdout.strip() == "replayed 0 deliveries"
    assert run("replay", "--all").stdout.strip() == "replayed 1 delivery"
    assert outbox.list_deliveries(catalog.conn, state="dead") == []
    assert row(catalog, event(2).event_id)["attempts"] == 0

    body = b'{"id":"evt_x"}'
    h = signed_headers(SECRET, "evt_x", body)
    (tmp_path / "secret").write_text(SECRET + "\n")
    headers = ["--id", "evt_x", "--timestamp", h["webhook-timestamp"], "--signature", h["webhook-signature"]]
    args = ["verify", "--secret-file", str(tmp_path / "secret"), *headers]
    assert run(*args, input=body).exit_code == 0
    bad = run(*args, input=body + b"!")
    assert bad.exit_code == 1 and "signature mismatch" in bad.stderr
    nothing = run("verify", *headers, input=body)
    assert nothing.exit_code == 2 and "DUPWATCH_WEBHOOK_SECRET" in nothing.stderr  # the secret is never guessed
    old = run("verify", "--secret", SECRET, *headers, input=body)  # still works, said to be deprecated
    assert old.exit_code == 0 and "deprecated" in old.stderr
    stale = signed_headers(SECRET, "evt_x", body, timestamp=int(time.time()) - 1000)
    env["DUPWATCH_WEBHOOK_SECRET"] = SECRET
    late = run("verify", "--id", "evt_x", "--timestamp", stale["webhook-timestamp"],
               "--signature", stale["webhook-signature"], input=body)
    assert late.exit_code == 1 and "too old" in late.stderr

    sent = run("test")
    assert sent.exit_code == 0 and "HTTP 200 (signed)" in sent.stdout
    assert json.loads(r.hits[-1].body)["type"] == "dupwatch.test"
    verify(SECRET, r.hits[-1].headers, r.hits[-1].body)
    refused = run("test", "--url", f"http://127.0.0.1:{free_port()}/")
    assert refused.exit_code == 1 and "failed" in refused.stdout


def test_payload_carries_the_copy_edit(catalog: Catalog) -> None:
    """The `edit` object (docs/detection.md) reaches webhook payloads unchanged, next to the match it explains."""
    edit = {"crop": [0.1, 0.2, 0.9, 1.0], "rotation": 15.0, "flip": "horizontal", "scale": 1.0,
            "perspective": False, "padding": False, "colour": ["grayscale"], "altered": [[0.0, 0.0, 1.0, 0.12]],
            "altered_fraction": 0.12, "summary": "cropped to 64 %, rotated 15° counter-clockwise, mirrored"}
    base = event(7, "edited-copy", score=93.0)
    copy = VerdictEvent(kind=base.kind, file=base.file, detected_at=base.detected_at, decided_at=base.decided_at,
                        matches=(Match(FileInfo(id=0, path="/in/0.jpg"), "edited-copy", 93.0, 4, "phash", edit),))
    assert put(catalog, [endpoint("http://a.invalid/")], copy) == 1
    payload = json.loads(catalog.query("SELECT payload FROM deliveries")[0]["payload"])
    assert payload["matches"][0]["edit"] == edit
    assert payload["matches"][0]["path"] == "/in/0.jpg"
