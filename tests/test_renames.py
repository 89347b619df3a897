"""Renames, moves, links and roots under a running `dupwatch run --hash-only`: no file lost, none a copy of
itself, one verdict per landed version of a file's bytes.

Real processes, real files, real inotify. `queue.batch_ms` holds each batch in the daemon for a while, so a
file is renamed, moved or overwritten while its job is queued and before any worker has read it.
"""

from __future__ import annotations

import collections
import io
import os
import shutil
import sqlite3
import subprocess
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.conftest import Service, base_env, dupwatch_cmd, free_port, wait_for

pytestmark = [pytest.mark.system, pytest.mark.timeout(240)]

HOLD_MS = "2500"
"""How long a batch waits in the daemon before it is queued: the window in which the tests move its files."""


def jpeg(seed: int) -> bytes:
    """A small JPEG of random blocks, distinct from every other seed's (its hashes differ)."""
    rng = np.random.default_rng(seed)
    img = Image.fromarray(rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)).resize((48, 48), Image.Resampling.NEAREST)
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=90)
    return buf.getvalue()


def start(tmp_path: Path, services: list, *roots: Path, ready: str = "ready: model", **env: str) -> Service:
    log = tmp_path / f"run{len(services)}.log"
    svc = Service(["run", "--hash-only", *map(str, roots)],
                  base_env(tmp_path / "state", DUPWATCH_QUEUE__PENDING_RETRY_S="3600", **env), log)
    services.append(svc)
    wait_for(lambda: ready in svc.stderr() or svc.proc.poll() is not None, 120, what=ready)
    assert svc.proc.poll() is None, svc.stderr()
    return svc


def current(state: Path) -> dict[str, dict]:
    conn = sqlite3.connect(f"file:{state / 'catalog.sqlite3'}?mode=ro", uri=True, timeout=10)
    conn.row_factory = sqlite3.Row
    try:
        return {r["path"]: dict(r) for r in conn.execute("SELECT * FROM files WHERE current = 1")}
    finally:
        conn.close()


def on_disk(*roots: Path) -> set[str]:
    return {os.path.join(d, f) for root in roots for d, _, files in os.walk(root) for f in files}


def lines_by_path(svc: Service) -> collections.Counter[str]:
    return collections.Counter(line.split()[2] for line in svc.verdict_lines())


def all_decided(state: Path, paths: set[str], timeout: float = 60) -> None:
    wait_for(lambda: paths <= {p for p, r in current(state).items() if r["state"] == "decided"}, timeout,
             what=f"verdicts for {sorted(paths)}")


def test_files_and_folders_renamed_while_queued_get_one_verdict_under_their_new_names(tmp_path, services):
    """Item 1 and 2: a folder and a file renamed while their job is queued; a file moved in from outside and
    renamed at once (a `created`, then a move of a name the catalog never had)."""
    root, outside = tmp_path / "in", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    svc = start(tmp_path, services, root, DUPWATCH_QUEUE__BATCH_MS=HOLD_MS, DUPWATCH_QUEUE__BATCH_SIZE="100")
    (root / "sub3").mkdir()
    for k in range(6):
        (root / "sub3" / f"e{k}.jpg").write_bytes(jpeg(k))
    (root / "c1.jpg").write_bytes(jpeg(10))
    (outside / "m1.jpg").write_bytes(jpeg(11))
    wait_for(lambda: len(current(tmp_path / "state")) == 7, 10, what="the landings")  # registered, batch held
    os.rename(root / "sub3", root / "sub4")
    os.rename(root / "c1.jpg", root / "c1_renamed.jpg")
    os.rename(outside / "m1.jpg", root / "m1.jpg")
    os.rename(root / "m1.jpg", root / "m1_renamed.jpg")

    final = on_disk(root)
    assert len(final) == 8
    all_decided(tmp_path / "state", final)
    rows = current(tmp_path / "state")
    assert set(rows) == final  # the catalog's current rows are the files on disk
    assert {p: r["verdict"] for p, r in rows.items()} == dict.fromkeys(final, "new"), rows
    wait_for(lambda: set(lines_by_path(svc)) >= final, 10, what="the verdict lines")
    assert lines_by_path(svc) == collections.Counter(final)  # one verdict each, none for an old name
    assert svc.stop() == 0


def test_decided_files_moved_twice_between_folders_and_roots_are_followed_not_copied(tmp_path, services):
    """Item 3: a folder of decided files renamed twice before the first rename's event is read, then one of
    its files moved to another root, then back under a new name: each a move, never a verdict."""
    root, other = tmp_path / "in", tmp_path / "other"
    for folder in (root, other, root / "P", root / "E"):
        folder.mkdir()
    svc = start(tmp_path, services, root, other)
    for k in range(3):
        (root / "E" / f"d{k}.jpg").write_bytes(jpeg(20 + k))
    state = tmp_path / "state"
    all_decided(state, on_disk(root))
    os.rename(root / "E", root / "E2")
    os.rename(root / "E2", root / "P" / "E3")
    wait_for(lambda: set(current(state)) == on_disk(root, other), 10, what="the rows to follow the folder")
    os.rename(root / "P" / "E3" / "d0.jpg", other / "d0.jpg")
    wait_for(lambda: set(current(state)) == on_disk(root, other), 10, what="the row to follow to the other root")
    os.rename(other / "d0.jpg", root / "back.jpg")
    wait_for(lambda: set(current(state)) == on_disk(root, other), 10, what="the row to follow back")
    time.sleep(2)  # time for any wrong verdict to show
    assert set(current(state)) == on_disk(root, other)
    assert len(svc.verdict_lines()) == 3, svc.verdict_lines()  # the three landings; no move made a verdict
    assert all(" new " in f" {line} " for line in svc.verdict_lines())
    assert svc.stop() == 0


def test_same_bytes_are_decided_once_and_changed_bytes_always(tmp_path, services):
    """Items 5 and 6: bytes changed through one name of a hard link are seen under the other (no stale match
    to the old bytes); an mtime set back is no new verdict; a file overwritten before its verdict gets one
    verdict, for its final bytes."""
    root = tmp_path / "in"
    root.mkdir()
    state = tmp_path / "state"
    svc = start(tmp_path, services, root, DUPWATCH_QUEUE__BATCH_MS=HOLD_MS, DUPWATCH_QUEUE__BATCH_SIZE="100")
    s1, s2 = jpeg(30), jpeg(31)
    (root / "a.jpg").write_bytes(s1)
    all_decided(state, {str(root / "a.jpg")})
    os.link(root / "a.jpg", root / "a_link.jpg")
    all_decided(state, {str(root / "a_link.jpg")})
    with open(root / "a.jpg", "r+b") as fh:  # `cat s2 > a.jpg`: the same inode, so a_link.jpg changes too
        fh.truncate(0)
        fh.write(s2)
    wait_for(lambda: current(state)[str(root / "a_link.jpg")]["size"] == len(s2), 10, what="the link's new bytes")
    (root / "c.jpg").write_bytes(s1)
    all_decided(state, on_disk(root))
    rows = current(state)
    assert rows[str(root / "c.jpg")]["verdict"] == "new", rows  # s1 is nowhere on disk but here now

    subprocess.run(["touch", "-d", "2000-01-01", str(root / "c.jpg")], check=True)
    (root / "o.jpg").write_bytes(jpeg(32))
    time.sleep(0.5)  # landed and registered; its batch is still held
    (root / "o.jpg").write_bytes(jpeg(33))
    all_decided(state, on_disk(root))
    time.sleep(3)
    counts = lines_by_path(svc)
    assert counts[str(root / "c.jpg")] == 1 and counts[str(root / "o.jpg")] == 1, svc.verdict_lines()
    assert counts[str(root / "a.jpg")] == 2 and counts[str(root / "a_link.jpg")] == 2  # two contents each
    import hashlib

    conn = sqlite3.connect(f"file:{state / 'catalog.sqlite3'}?mode=ro", uri=True)
    decided_o = conn.execute("SELECT sha256 FROM files WHERE path = ? AND state = 'decided'",
                             (str(root / "o.jpg"),)).fetchall()
    assert decided_o == [(hashlib.sha256(jpeg(33)).hexdigest(),)]
    assert svc.stop() == 0


def test_a_root_deleted_and_made_again_is_said_and_watched_again(tmp_path, services):
    """Item 4: the root's removal is said in the log and /readyz; made again, it is watched and caught up."""
    root = tmp_path / "in"
    root.mkdir()
    port = free_port()
    svc = start(tmp_path, services, root, DUPWATCH_API__ENABLED="true", DUPWATCH_API__PORT=str(port))
    api = f"http://127.0.0.1:{port}"
    (root / "a.jpg").write_bytes(jpeg(40))
    all_decided(tmp_path / "state", {str(root / "a.jpg")})
    shutil.rmtree(root)
    wait_for(lambda: "is gone" in svc.stderr(), 10, what="the missing root said")
    ready = httpx.get(f"{api}/readyz")
    assert ready.status_code != 200 and "root" in ready.text, ready.text
    assert httpx.get(f"{api}/healthz").json()["degraded"]["root-missing"]
    root.mkdir()
    (root / "b.jpg").write_bytes(jpeg(41))
    all_decided(tmp_path / "state", {str(root / "b.jpg")}, timeout=20)
    wait_for(lambda: httpx.get(f"{api}/readyz").status_code == 200, 10, what="ready again")
    assert svc.stop() == 0


def test_a_symlink_loop_is_refused_with_a_line_and_files_are_catalogued_once(tmp_path, services):
    """Item 7: with `watch.follow_symlinks`, `loop -> .` is said and not followed: two files, two rows."""
    root = tmp_path / "in"
    root.mkdir()
    (root / "a.jpg").write_bytes(jpeg(50))
    (root / "b.jpg").write_bytes(jpeg(51))
    (root / "loop").symlink_to(".")
    svc = start(tmp_path, services, root, DUPWATCH_WATCH__FOLLOW_SYMLINKS="true")
    all_decided(tmp_path / "state", {str(root / "a.jpg"), str(root / "b.jpg")})
    (root / "c.jpg").write_bytes(jpeg(52))
    all_decided(tmp_path / "state", {str(root / "c.jpg")})
    time.sleep(2)
    assert set(current(tmp_path / "state")) == {str(root / n) for n in ("a.jpg", "b.jpg", "c.jpg")}
    assert "a symlink loop" in svc.stderr() and str(root / "loop") in svc.stderr()
    assert svc.stop() == 0


def test_results_left_unacknowledged_by_a_dead_daemon_are_taken_over_and_deleted(tmp_path, services, redis_url):
    """Item 8: a result entry read by a daemon that died before storing it is claimed by the next daemon,
    stored (the file gets its verdict) and deleted; the dead consumer is forgotten."""
    import redis as redis_client

    from workers import queue as q

    root = tmp_path / "in"
    root.mkdir()
    env = {"DUPWATCH_REDIS__URL": redis_url, "DUPWATCH_WORKERS": "0"}
    first = start(tmp_path, services, root, ready="catch-up scan", **env)
    (root / "a.jpg").write_bytes(jpeg(60))
    wait_for(lambda: any(r["job_id"] for r in current(tmp_path / "state").values()), 10, what="the job queued")
    assert first.stop() == 0
    worker = subprocess.run([*dupwatch_cmd(), "worker", "--burst"],
                            env=base_env(tmp_path / "state", **env), capture_output=True, text=True, timeout=120,
                            check=False)
    assert worker.returncode == 0, worker.stderr
    conn = redis_client.Redis.from_url(redis_url)
    assert conn.xreadgroup(q.RESULTS_GROUP, "daemon-dead", {q.RESULTS_STREAM: ">"}, count=10)  # read, never acked

    second = start(tmp_path, services, root, ready="catch-up scan", **env)
    all_decided(tmp_path / "state", {str(root / "a.jpg")}, timeout=20)
    assert conn.xlen(q.RESULTS_STREAM) == 0
    consumers = {c["name"] for c in conn.xinfo_consumers(q.RESULTS_STREAM, q.RESULTS_GROUP)}
    assert b"daemon-dead" not in consumers and "daemon-dead" not in consumers
    assert second.stop() == 0
