"""Issue 13, part B: what adversarial testing found in the watcher, paths, webhooks, config and API.

Each test is named after its case and drives the real thing: `dupwatch` as a subprocess (or the Watcher
with real inotify), real files, a real Redis, a real HTTP server on 127.0.0.1.
"""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import httpx
import pytest

from daemon.config import Settings, WatchSettings, WebhookSettings
from daemon.index.catalog import Catalog
from daemon.ingest.walk import PathFilter
from daemon.ingest.watcher import Watcher
from daemon.notify import outbox, transport
from daemon.notify.deliverer import Deliverer
from tests.conftest import (
    Service,
    base_env,
    catalog_rows,
    copy_into,
    dupwatch_cmd,
    free_port,
    wait_for,
)
from tests.test_watcher import Recorder, image_bytes
from tests.test_webhooks import endpoint as webhook_endpoint
from tests.test_webhooks import event, put
from tests.test_webhooks import row as webhook_row

pytestmark = [pytest.mark.system, pytest.mark.timeout(300)]


def start_run(services, tmp_path: Path, root: Path, **env: str) -> Service:
    svc = Service(["run", "--hash-only", str(root)], base_env(tmp_path / "state", **env), tmp_path / "run.log")
    services.append(svc)
    wait_for(lambda: "catch-up scan:" in svc.stderr(), 120, what="service start")
    return svc


def decided(state: Path) -> list[dict]:
    try:
        return [r for r in catalog_rows(state) if r["state"] == "decided"]
    except sqlite3.OperationalError:
        return []


def raw_paths(state: Path) -> list[bytes]:
    """The catalog's paths as the bytes SQLite holds."""
    conn = sqlite3.connect(f"file:{state / 'catalog.sqlite3'}?mode=ro", uri=True, timeout=10)
    conn.text_factory = bytes
    try:
        return [r[0] for r in conn.execute("SELECT path FROM files ORDER BY id")]
    finally:
        conn.close()


def get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=30) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


# --- row 2: inotify queue overflow -------------------------------------------------------------------

@pytest.mark.timeout(1500)
def test_inotify_queue_overflow_is_rescanned_without_restart(tmp_path, services):
    """The daemon is stopped (SIGSTOP) while files land, as many as the kernel's queue holds events
    (fs.inotify.max_queued_events, 16,384 by default; at least 20,000 files): about four events a file, so
    the queue certainly overflows; on SIGCONT every file must still get a verdict. The host's limit is read,
    not assumed: a host that raised it needs more files to overflow."""
    limit = int(Path("/proc/sys/fs/inotify/max_queued_events").read_text())
    n = int(os.environ.get("DUPWATCH_TEST_BURST_FILES", "0")) or max(20_000, limit)
    if n > 40_000:
        pytest.skip(f"fs.inotify.max_queued_events is {limit}: overflowing it takes {n} files, too many to decide "
                    "here (set DUPWATCH_TEST_BURST_FILES to run it anyway)")
    root = tmp_path / "in"
    root.mkdir()
    port = free_port()
    svc = start_run(services, tmp_path, root, DUPWATCH_API__ENABLED="true", DUPWATCH_API__PORT=str(port),
                    DUPWATCH_QUEUE__BATCH_SIZE="256")
    blobs = [image_bytes(i, 8) for i in range(64)]
    os.kill(svc.proc.pid, signal.SIGSTOP)
    try:
        for i in range(n):
            (root / f"f{i:05d}.png").write_bytes(blobs[i % len(blobs)])
    finally:
        os.kill(svc.proc.pid, signal.SIGCONT)
    last = [0, time.monotonic()]

    def done() -> bool:
        count = len(decided(tmp_path / "state"))
        if count != last[0]:
            last[:] = [count, time.monotonic()]
        assert time.monotonic() - last[1] < 60, f"stuck at {count} of {n} verdicts"
        return count >= n

    wait_for(done, 1200, interval=1.0, what=f"{n} verdicts")
    assert "inotify's event queue overflowed" in svc.stderr()
    assert "max_queued_events" in svc.stderr()
    status, body = get(f"http://127.0.0.1:{port}/metrics")
    overflows = [line for line in body.decode().splitlines() if line.startswith("dupwatch_watch_overflows_total")]
    assert status == 200 and overflows and float(overflows[0].split()[-1]) >= 1
    rows = catalog_rows(tmp_path / "state")
    assert len(rows) == n and len({r["path"] for r in rows}) == n  # each once


# --- row 3: names that are not UTF-8 ----------------------------------------------------------------

def test_non_utf8_names_are_stored_losslessly_and_decided(tmp_path, photos, services, receiver):
    root = tmp_path / "in"
    root.mkdir()
    bad = os.fsdecode(os.fsencode(str(root)) + b"/bad\xff.jpg")
    shutil.copyfile(photos["coffee"], bad)  # there before start: the catch-up scan meets it first
    for i in range(20):
        copy_into(photos["rocket" if i % 2 else "camera"], root / f"ok{i:02d}.jpg")
    port = free_port()
    hooks = json.dumps([{"url": receiver.url, "kinds": ["new", "exact-copy", "edited-copy", "similar", "error"]}])
    svc = start_run(services, tmp_path, root, DUPWATCH_API__ENABLED="true", DUPWATCH_API__PORT=str(port),
                    DUPWATCH_WEBHOOKS=hooks)
    wait_for(lambda: len(decided(tmp_path / "state")) == 21, 120, what="21 verdicts from the catch-up scan")
    live = os.fsdecode(os.fsencode(str(root)) + b"/live\xfe.jpg")
    shutil.copyfile(photos["coffee"], live)  # live, and an exact copy of the first bad name
    wait_for(lambda: len(decided(tmp_path / "state")) == 22, 60, what="the live verdict")

    assert os.fsencode(bad) in raw_paths(tmp_path / "state")  # the exact bytes, in the catalog
    assert os.fsencode(live) in raw_paths(tmp_path / "state")
    line = wait_for(lambda: next((x for x in svc.verdict_lines() if "live" in x), None), 10, what="line")
    assert "exact-copy" in line and "live\\xfe.jpg" in line and "bad\\xff.jpg" in line
    by_path = {e["file"]["path"]: e for e in wait_for(lambda: len(receiver.events()) == 22 and receiver.events(),
                                                     30, what="22 webhooks")}
    assert by_path[bad]["kind"] == "new" and by_path[live]["kind"] == "exact-copy"
    assert by_path[live]["matches"][0]["path"] == bad  # json.loads gives back the exact name
    status, body = get(f"http://127.0.0.1:{port}/api/v1/matches?kind=exact-copy")
    assert status == 200
    assert live in [m["file"]["path"] for m in json.loads(body)["matches"]]
    events = [json.loads(x) for x in (tmp_path / "state" / "events.jsonl").read_text().splitlines()]
    assert {e["file"]["path"] for e in events} >= {bad, live}


# --- row 4: a symlink renamed over a landed file ----------------------------------------------------

def test_symlink_renamed_over_a_landed_file_is_never_opened(tmp_path, photos, redis_url, services):
    """Deterministic version of the race: the daemon queues the file, the link replaces it, and only then
    does a worker start. The outside file holds a known image: it must never be catalogued or served."""
    root, outside = tmp_path / "in", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    secret = outside / "secret.jpg"
    shutil.copyfile(photos["astronaut"], secret)
    port = free_port()
    env = base_env(tmp_path / "state", DUPWATCH_HASH_ONLY="true", DUPWATCH_REDIS__URL=redis_url,
                   DUPWATCH_API__ENABLED="true", DUPWATCH_API__PORT=str(port))
    daemon = Service(["daemon", str(root)], env, tmp_path / "daemon.log")
    services.append(daemon)
    wait_for(lambda: "catch-up scan:" in daemon.stderr(), 60, what="daemon start")

    landed = copy_into(photos["coffee"], root / "a.jpg")
    wait_for(lambda: any(r["state"] == "pending" for r in catalog_rows(tmp_path / "state")), 30, what="queued")
    time.sleep(0.5)  # the batch goes to Redis
    os.symlink(secret, tmp_path / "link.jpg")
    os.rename(tmp_path / "link.jpg", landed)  # the worker has not read a.jpg yet
    worker = Service(["worker"], env, tmp_path / "worker.log")
    services.append(worker)
    rows = wait_for(lambda: (r := decided(tmp_path / "state")) and r, 90, what="a verdict")
    assert rows[0]["verdict"] == "error" and "symlink" in rows[0]["error"]

    # the API: a decided file, then a link to an outside file with the very same bytes renamed over it
    copy_into(photos["chelsea"], root / "b.jpg")
    row = wait_for(lambda: next((r for r in decided(tmp_path / "state") if r["path"].endswith("b.jpg")), None),
                   60, what="b.jpg decided")
    assert get(f"http://127.0.0.1:{port}/api/v1/files/{row['id']}/thumbnail")[0] == 200
    twin = outside / "twin.jpg"
    shutil.copyfile(photos["chelsea"], twin)
    os.symlink(twin, tmp_path / "link2.jpg")
    os.rename(tmp_path / "link2.jpg", root / "b.jpg")
    time.sleep(1.0)
    assert get(f"http://127.0.0.1:{port}/api/v1/files/{row['id']}/thumbnail?size=64")[0] == 404

    # and a linked folder: sub/ becomes a link to the outside folder after sub/c.jpg landed
    (root / "sub").mkdir()
    shutil.copyfile(photos["grass"], outside / "c.jpg")
    worker.stop()
    copy_into(photos["rocket"], root / "sub" / "c.jpg")
    wait_for(lambda: any(r["state"] == "pending" for r in catalog_rows(tmp_path / "state")), 30, what="queued")
    time.sleep(0.5)
    shutil.rmtree(root / "sub")
    os.symlink(outside, root / "sub")
    worker2 = Service(["worker"], env, tmp_path / "worker2.log")
    services.append(worker2)
    wait_for(lambda: all(r["state"] == "decided" for r in catalog_rows(tmp_path / "state")), 90, what="verdicts")
    conn = sqlite3.connect(tmp_path / "state" / "catalog.sqlite3")
    shas = {r[0] for r in conn.execute("SELECT sha256 FROM files WHERE sha256 IS NOT NULL")}
    conn.close()
    for f in (secret, outside / "c.jpg"):  # (twin.jpg has b.jpg's bytes: its sha256 is b.jpg's)
        assert hashlib.sha256(f.read_bytes()).hexdigest() not in shas, f


# --- row 8: a receiver that drips its response -------------------------------------------------------

class LocalReceiver:
    """A webhook receiver on 127.0.0.1 whose handler a subclass writes: served from a thread until closed."""

    def serve(self, handler: type[http.server.BaseHTTPRequestHandler]) -> None:
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/hook"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class DripServer(LocalReceiver):
    """Answers every POST with headers at once, then a body of `size` bytes: one byte per `pause`
    seconds (a slow drip), or all at once with pause 0 (a huge body). Records how many body bytes it
    managed to send before the client went away."""

    def __init__(self, size: int, pause: float):
        self.sent = 0
        self.finished = threading.Event()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                self.rfile.read(int(self.headers.get("content-length", 0)))
                self.send_response(200)
                self.send_header("content-length", str(size))
                self.end_headers()
                try:
                    if pause:
                        for _ in range(size):
                            self.wfile.write(b"x")
                            self.wfile.flush()
                            server.sent += 1
                            time.sleep(pause)
                    else:
                        chunk = b"x" * 65536
                        for _ in range(size // len(chunk)):
                            self.wfile.write(chunk)
                            server.sent += len(chunk)
                    server.finished.set()
                except OSError:
                    pass  # the client hung up

            def log_message(self, *args):
                pass

        self.serve(Handler)


def test_webhook_timeout_bounds_a_slow_drip_response():
    drip = DripServer(size=300, pause=0.1)  # 30 s of body
    try:
        with pytest.raises(httpx.TimeoutException):
            transport.send_test(WebhookSettings(url=drip.url, timeout_s=1.0))
        assert not drip.finished.is_set()  # the attempt ended while the receiver was still dripping
        assert drip.sent < 300
    finally:
        drip.close()


class HeadDripServer(LocalReceiver):
    """Sends the response to the first event (`slow_id`) from its status line on, one byte every 0.5 s
    (about 100 s for the whole head); answers every other event at once. Records the ids answered and
    how long the slow request's client stayed connected."""

    HEAD = b"HTTP/1.1 200 OK\r\nx-pad: " + b"a" * 200 + b"\r\ncontent-length: 0\r\n\r\n"

    def __init__(self, slow_id: str):
        self.answered: list[str] = []
        self.slow_connected_s: float | None = None
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                self.rfile.read(int(self.headers.get("content-length", 0)))
                if self.headers["webhook-id"] != slow_id:
                    server.answered.append(self.headers["webhook-id"])
                    self.send_response(200)
                    self.send_header("content-length", "0")
                    self.end_headers()
                    return
                started = time.monotonic()
                try:
                    for i in range(len(server.HEAD)):
                        self.wfile.write(server.HEAD[i:i + 1])
                        self.wfile.flush()
                        time.sleep(0.5)
                except OSError:
                    pass  # the client hung up
                server.slow_connected_s = time.monotonic() - started
                self.close_connection = True

            def log_message(self, *args):
                pass

        self.serve(Handler)


def test_webhook_timeout_bounds_a_status_line_and_headers_dripped_a_byte_at_a_time(tmp_path):
    """httpx's read timeout restarts with every byte: only a deadline over the whole attempt ends it."""
    first, behind = event(1), [event(2), event(3)]
    drip = HeadDripServer(slow_id=first.event_id)
    cat = Catalog(tmp_path / "catalog.sqlite3")
    cat.conn.executescript(outbox.SCHEMA)
    ep = webhook_endpoint(drip.url, timeout_s=2.0)
    put(cat, [ep], first, *behind)
    deliverer = Deliverer(cat.path, [ep], max_attempts=1, poll_s=0.05)
    deliverer.start()
    try:
        wait_for(lambda: drip.slow_connected_s is not None and len(drip.answered) == 2, timeout=60)
        assert drip.slow_connected_s < 3 * 2.0  # timeout_s 2, with slack for a loaded machine
        assert drip.answered == [e.event_id for e in behind]  # in order, once each, behind the slow one
        head = webhook_row(cat, first.event_id)
        assert head["state"] == "dead" and head["last_error"] == "timeout after 2 s"
    finally:
        deliverer.stop(2.0)
        drip.close()
        cat.close()


def test_webhook_response_body_is_read_only_up_to_a_cap():
    big = DripServer(size=50 * 1024 * 1024, pause=0)
    try:
        status, text = transport.send_test(WebhookSettings(url=big.url, timeout_s=10.0))
        assert status == 200 and len(text) <= transport.RESPONSE_CAP_BYTES
    finally:
        big.close()


# --- row 11: configuration errors -------------------------------------------------------------------

BAD_CONFIGS = {
    "file-url": ('[[webhooks]]\nurl = "file:///etc/passwd"\n', "webhooks.0.url"),
    "ftp-url": ('[[webhooks]]\nurl = "ftp://example.com/x"\n', "webhooks.0.url"),
    "bad-secret": ('[[webhooks]]\nurl = "http://127.0.0.1:9/x"\nsecret = "whsec_@@not base64@@"\n',
                   "webhooks.0.secret"),
    "port": ("[api]\nport = 99999\n", "api.port"),
    "timeout": ('[[webhooks]]\nurl = "http://127.0.0.1:9/x"\ntimeout_s = -5\n', "webhooks.0.timeout_s"),
    "kinds": ('[[webhooks]]\nurl = "http://127.0.0.1:9/x"\nkinds = ["bogus"]\n', "webhooks.0.kinds"),
}


@pytest.mark.parametrize("case", list(BAD_CONFIGS))
def test_bad_configuration_is_a_one_line_error_at_start(tmp_path, case):
    text, setting = BAD_CONFIGS[case]
    config = tmp_path / "dupwatch.toml"
    config.write_text(text)
    env = base_env(tmp_path / "state", DUPWATCH_CONFIG=str(config))
    try:
        done = subprocess.run(dupwatch_cmd() + ["run", "--hash-only", str(tmp_path / "in")], env=env,
                              capture_output=True, text=True, timeout=60, start_new_session=True, check=False)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{case}: dupwatch started with a bad configuration")
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: bad configuration: ") and setting in lines[0], lines
    assert not (tmp_path / "state").exists()  # refused before touching anything


def test_bad_configuration_at_sighup_is_one_line_and_the_running_one_is_kept(tmp_path, photos, services, receiver):
    root = tmp_path / "in"
    root.mkdir()
    config = tmp_path / "dupwatch.toml"
    config.write_text(f'[[webhooks]]\nurl = "{receiver.url}"\nkinds = ["new"]\n')
    svc = start_run(services, tmp_path, root, DUPWATCH_CONFIG=str(config))
    config.write_text(f'[[webhooks]]\nurl = "{receiver.url}"\nkinds = ["bogus"]\n')
    os.kill(svc.proc.pid, signal.SIGHUP)
    line = wait_for(lambda: next((x for x in svc.stderr().splitlines() if "reload failed" in x), None), 30,
                    what="the reload error")
    assert "webhooks.0.kinds" in line and "'similar' or 'error'" in line and "keeping the current" in line
    assert "Traceback" not in svc.stderr()
    copy_into(photos["moon"], root / "moon.jpg")
    wait_for(lambda: [e for e in receiver.events() if e["kind"] == "new"], 60, what="a webhook, as configured")


# --- row 13: mkdir -p, deep ---------------------------------------------------------------------------

@pytest.mark.parametrize("depth", [10, 200])
def test_deep_mkdir_p_keeps_inotify_and_lands_its_file(tmp_path, depth, caplog):
    root = tmp_path / "root"
    root.mkdir()
    ws = WatchSettings(settle_ms=300)
    rec = Recorder()
    w = Watcher(PathFilter([root], ws), ws, landed=rec.on_landed, moved=lambda s, d: None, deleted=lambda p: None)
    w.start()
    try:
        deep = root.joinpath(*[f"d{i}" for i in range(depth)])
        subprocess.run(["mkdir", "-p", str(deep)], check=True)
        (deep / "deep.png").write_bytes(image_bytes(1))
        wait_for(lambda: rec.paths(), 20, what="the deep file")
        time.sleep(5)  # every re-check has run
        assert w.polled_roots == []  # a race with the folders' creation is no refusal
        assert "max_user_watches" not in caplog.text
        assert rec.paths()[0] == str(deep / "deep.png")
    finally:
        w.stop()


# --- rows 14 and 15: versions of a path, and content that is gone -----------------------------------

def test_file_overwritten_soon_after_landing_never_matches_itself(tmp_path, photos, services):
    root = tmp_path / "in"
    root.mkdir()
    svc = start_run(services, tmp_path, root)
    for name in ("rw1.jpg", "rw2.jpg", "rw3.jpg"):
        copy_into(photos["rocket"], root / name)
        time.sleep(0.1)
        copy_into(photos["rocket"], root / name)  # the same bytes again: a new version of the path
    wait_for(lambda: len(decided(tmp_path / "state")) >= 3 and not [
        r for r in catalog_rows(tmp_path / "state") if r["state"] != "decided"], 60, what="verdicts")
    time.sleep(2)
    rows = catalog_rows(tmp_path / "state")
    by_id = {r["id"]: r for r in rows}
    for r in rows:
        if r["match_id"] is not None:
            assert by_id[r["match_id"]]["path"] != r["path"], (r, svc.verdict_lines())
    for line in svc.verdict_lines():
        parts = line.split()
        assert not ("=" in parts and parts[2] == parts[parts.index("=") + 1]), line


def test_replaced_deleted_and_moved_out_content_stops_matching(tmp_path, photos, services):
    root, away = tmp_path / "in", tmp_path / "away"
    (root / "album").mkdir(parents=True)
    svc = start_run(services, tmp_path, root)
    copy_into(photos["rocket"], root / "replaced.jpg")
    copy_into(photos["coffee"], root / "deleted.jpg")
    copy_into(photos["chelsea"], root / "album" / "moved.jpg")
    wait_for(lambda: len(decided(tmp_path / "state")) == 3, 60, what="3 verdicts")
    copy_into(photos["moon"], root / "replaced.jpg")  # content replaced in place
    (root / "deleted.jpg").unlink()
    os.rename(root / "album", away)  # the folder leaves the roots
    wait_for(lambda: len(decided(tmp_path / "state")) == 4, 60, what="the replacement's verdict")
    time.sleep(1)
    for name in ("rocket", "coffee", "chelsea"):
        copy_into(photos[name], root / f"{name}2.jpg")
    for name in ("rocket", "coffee", "chelsea"):
        line = wait_for(lambda n=f"{name}2.jpg": next((x for x in svc.verdict_lines() if n in x), None), 60,
                        what=name)
        assert " new " in line, line


def test_files_deleted_while_the_daemon_was_down_stop_matching_after_start(tmp_path, photos, services):
    """No delete event can come for a file deleted while the daemon was stopped: the catch-up at start
    sweeps the catalog for current files that are gone."""
    root = tmp_path / "in"
    root.mkdir()
    svc = start_run(services, tmp_path, root)
    copy_into(photos["rocket"], root / "gone.jpg")
    copy_into(photos["coffee"], root / "kept.jpg")
    wait_for(lambda: len(decided(tmp_path / "state")) == 2, 60, what="2 verdicts")
    assert svc.stop() == 0
    (root / "gone.jpg").unlink()

    svc = start_run(services, tmp_path, root)
    wait_for(lambda: svc.stderr().count("catch-up scan:") == 2, 60, what="the second life's catch-up scan")
    copy_into(photos["rocket"], root / "again.jpg")
    copy_into(photos["coffee"], root / "kept2.jpg")
    lines = {name: wait_for(lambda n=name: next((x for x in svc.verdict_lines() if n in x), None), 60, what=name)
             for name in ("again.jpg", "kept2.jpg")}
    assert " new " in lines["again.jpg"], lines  # not an exact copy of the deleted gone.jpg
    assert "exact-copy" in lines["kept2.jpg"] and "kept.jpg" in lines["kept2.jpg"], lines  # the rest still match


def test_deletes_and_moves_from_the_watcher_thread_leave_the_indexes_to_the_deciding_thread(tmp_path, photos):
    """The watcher's thread must not touch the hash table or the usearch index, which the main loop
    searches and grows without locks: it only queues the ids, and the deciding thread drops them."""
    from daemon.index.catalog import Catalog
    from daemon.index.owner import IndexOwner
    from workers.pipeline import Pipeline

    settings = Settings(state_dir=tmp_path / "state", hash_only=True)
    (tmp_path / "state").mkdir()
    catalog = Catalog(tmp_path / "state" / "catalog.sqlite3")
    owner = IndexOwner(settings, catalog)
    pipeline = Pipeline(settings.decode, None)
    paths = [str(copy_into(photos[n], tmp_path / f"{n}.jpg")) for n in ("rocket", "coffee", "moon")]
    items = [(owner.register(p, 1, 1), p) for p in paths]
    owner.accept(pipeline.run(items))
    owner.decide_ready()
    assert len(owner.hashes) == 3
    watcher_thread = threading.Thread(target=lambda: (owner.deleted(paths[0]),
                                                      owner.register(paths[1], 2, 2),  # replaced in place
                                                      owner.moved(paths[0] + ".x", paths[2])))  # no-op
    watcher_thread.start()
    watcher_thread.join()
    assert len(owner.hashes) == 3  # untouched by that thread
    owner.decide_ready()
    assert len(owner.hashes) == 1  # the deleted and the replaced content are gone
    pipeline.close()
    catalog.close()


# --- the review's finding: `query` is read-only --------------------------------------------------------

def test_query_is_read_only(tmp_path, photos):
    env = base_env(tmp_path / "nowhere")
    done = subprocess.run(dupwatch_cmd() + ["query", "--hash-only", str(photos["rocket"])], env=env,
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode != 0 and "no catalog" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "nowhere").exists()

    state = tmp_path / "state"
    scan = subprocess.run(dupwatch_cmd() + ["scan", "--hash-only", str(photos["rocket"].parent)],
                          env=base_env(state), capture_output=True, text=True, timeout=120, check=False)
    assert scan.returncode == 0, scan.stderr
    def files() -> dict[str, tuple[int, int]]:  # (SQLite's -wal/-shm sidecars come with any reader)
        return {p.name: (p.stat().st_mtime_ns, p.stat().st_size) for p in state.iterdir()
                if not p.name.endswith(("-wal", "-shm"))}

    before = files()
    done = subprocess.run(dupwatch_cmd() + ["query", "--hash-only", "--json", str(photos["rocket"])],
                          env=base_env(state), capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)[0]["path"].endswith("rocket.jpg")
    assert files() == before


# --- row 17: control characters in names ----------------------------------------------------------

def test_newline_in_a_file_name_cannot_forge_an_output_line(tmp_path, photos, services):
    root = tmp_path / "in"
    root.mkdir()
    svc = start_run(services, tmp_path, root, DUPWATCH_LOG_LEVEL="DEBUG")
    fake = "12:00:00 exact-copy   forged.jpg  = passwd.jpg  (100 sha256)"  # (a name holds no slash)
    evil = root / f"evil\n{fake}\n\x1b[2Jx.jpg"
    copy_into(photos["rocket"], evil)
    line = wait_for(lambda: next((x for x in svc.verdict_lines() if "evil" in x), None), 60, what="verdict")
    time.sleep(1)
    assert "evil\\n12:00:00" in line and "\\x1b[2J" in line
    assert not [x for x in svc.lines if x.startswith(fake[:30])]
    assert not [x for x in svc.stderr().splitlines() if x.startswith((fake[:20], "\x1b"))]


# --- row 16: search uploads and memory ---------------------------------------------------------------

def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as fh:
        return next(int(x.split()[1]) for x in fh if x.startswith("VmRSS:")) / 1024


def post(url: str, body: bytes) -> int:
    request = urllib.request.Request(url, data=body, method="POST",
                                     headers={"content-type": "application/octet-stream"})
    try:
        with urllib.request.urlopen(request, timeout=120) as r:
            return r.status
    except urllib.error.HTTPError as exc:
        return exc.code


def start_search_api(services, tmp_path, root, photos):
    """`run` with its API on a free port, and the search URL, after one real search (which loads what a
    search needs, so memory measured after it is the uploads' alone)."""
    port = free_port()
    svc = start_run(services, tmp_path, root, DUPWATCH_API__ENABLED="true", DUPWATCH_API__PORT=str(port))
    url = f"http://127.0.0.1:{port}/api/v1/search"
    assert post(url, photos["rocket"].read_bytes()) == 200
    return svc, url


def huge_png(tmp_path):
    """A few KB of PNG file that decodes to 10^8 pixels."""
    from PIL import Image

    huge = tmp_path / "huge.png"
    Image.new("1", (10_000, 10_000)).save(huge)
    assert huge.stat().st_size < 100_000
    return huge


def test_search_uploads_are_bounded_and_their_memory_returns(tmp_path, photos, services):
    from concurrent.futures import ThreadPoolExecutor

    root = tmp_path / "in"
    root.mkdir()
    svc, url = start_search_api(services, tmp_path, root, photos)
    baseline = rss_mb(svc.proc.pid)

    huge = huge_png(tmp_path)
    assert post(url, huge.read_bytes()) == 413  # refused from its header (the next test)
    after_huge = rss_mb(svc.proc.pid)

    body = os.urandom(19 * 1024 * 1024)
    with ThreadPoolExecutor(50) as pool:
        codes = list(pool.map(lambda _: post(url, body), range(50)))
    assert set(codes) <= {422, 503} and 503 in codes  # not images; past the bound: try again later
    time.sleep(1)
    after_burst = rss_mb(svc.proc.pid)
    assert after_huge < baseline + 100 and after_burst < baseline + 150, (baseline, after_huge, after_burst)


def peak_rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as fh:
        return next(int(x.split()[1]) for x in fh if x.startswith("VmHWM:")) / 1024


def test_huge_png_is_refused_from_its_header_as_an_upload_and_as_a_file(tmp_path, photos, services):
    """Pillow has no reduced decode for PNG: a 12 KB PNG of 10,000 x 10,000 decodes to 300 MB. Its header
    says so; uploads (413, naming the limit) and files (`too-large`) are refused by the same rule."""
    root = tmp_path / "in"
    root.mkdir()
    svc, url = start_search_api(services, tmp_path, root, photos)
    huge = huge_png(tmp_path)

    before = rss_mb(svc.proc.pid)
    Path(f"/proc/{svc.proc.pid}/clear_refs").write_text("5")  # peak RSS := current RSS
    request = urllib.request.Request(url, data=huge.read_bytes(), method="POST", headers={"Content-Type": "image/png"})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=120)
    assert refused.value.code == 413
    detail = json.loads(refused.value.read())["detail"]
    assert "10000x10000" in detail and "limit 50000000" in detail, detail
    assert peak_rss_mb(svc.proc.pid) < before + 100  # never decoded (it would take 300 MB)

    shutil.copy(huge, root / "huge.png")
    row = wait_for(lambda: next((r for r in decided(tmp_path / "state") if r["path"].endswith("huge.png")), None),
                   120, what="the huge PNG's verdict")
    assert row["verdict"] == "error" and row["error"].startswith("too-large"), row
    assert "limit 50000000" in row["error"]
