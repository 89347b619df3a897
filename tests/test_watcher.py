"""Complete-file detection with real watchdog events (inotify, and polling).

The Watcher runs in this process with a recording callback: each test asserts which paths landed, how
many times, and not before the writer was done. The end-to-end test runs `dupwatch run` to check that
what lands is read whole (sha256 of the final content, no error verdict).
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from daemon.config import WatchSettings
from daemon.ingest.walk import PathFilter
from daemon.ingest.watcher import Watcher
from tests.conftest import REPO_ROOT, Service, base_env, catalog_rows, wait_for

pytestmark = pytest.mark.timeout(120)

LANDING_S = 30.0
"""How long a test waits for an event's landing: a bound, not a measure (it returns as soon as the landing is
there), generous because a loaded host runs the observer's and the settle check's threads late."""


class Recorder:
    """The watcher's callbacks, recorded with the time each landing happened."""

    def __init__(self) -> None:
        self.landed: list[tuple[str, float]] = []
        self.moved: list[tuple[str, str]] = []
        self.deleted: list[str] = []
        self.lock = threading.Lock()

    def on_landed(self, path: str) -> None:
        with self.lock:
            self.landed.append((path, time.monotonic()))

    def on_moved(self, src: str, dest: str) -> bool:
        """A move the catalog follows (the recorder knows every path)."""
        with self.lock:
            self.moved.append((src, dest))
        return True

    def paths(self) -> list[str]:
        with self.lock:
            return [p for p, _ in self.landed]


def image_bytes(seed: int, size: int = 64) -> bytes:
    import io

    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def slow_write(path: Path, data: bytes, chunks: int, pause: float) -> float:
    """One open, `chunks` writes `pause` seconds apart, one close; returns the time of the last write."""
    step = -(-len(data) // chunks)
    with open(path, "wb") as fh:
        for i in range(0, len(data), step):
            if i:
                time.sleep(pause)
            fh.write(data[i:i + step])
            fh.flush()
            os.fsync(fh.fileno())
            last = time.monotonic()
    return last


@pytest.fixture
def watch(tmp_path: Path):
    """Start a Watcher on tmp_path/root (inotify, or polling with poll=True); stop it after the test."""
    started: list[Watcher] = []

    def start(poll: bool = False, **settings) -> tuple[Path, Recorder, Watcher]:
        root = tmp_path / "root"
        root.mkdir(exist_ok=True)
        ws = WatchSettings(poll=poll, **{"poll_interval_s": 0.2, "settle_ms": 300, **settings})
        rec = Recorder()
        w = Watcher(PathFilter([root], ws), ws, landed=rec.on_landed,
                    moved=rec.on_moved, deleted=rec.deleted.append)
        w.start()
        started.append(w)
        time.sleep(0.3 if poll else 0.1)  # the polling observer's first snapshot
        return root, rec, w

    yield start
    for w in started:
        w.stop()


def test_close_write_lands_once(watch) -> None:
    root, rec, w = watch()
    assert w.polled_roots == []  # inotify took every folder: no false fallback
    (root / "a.png").write_bytes(image_bytes(1))
    wait_for(lambda: rec.paths(), LANDING_S, what="landing")
    time.sleep(0.8)  # a second landing (a late settle check) would show now
    assert rec.paths() == [str(root / "a.png")]


def test_slow_writer_lands_once_after_its_last_write(watch) -> None:
    root, rec, _ = watch()
    last_write = slow_write(root / "slow.png", image_bytes(2, 256), chunks=8, pause=0.5)  # pauses > settle
    wait_for(lambda: rec.paths(), LANDING_S, what="landing")
    time.sleep(0.8)
    assert rec.paths() == [str(root / "slow.png")]
    assert rec.landed[0][1] >= last_write


def test_temp_name_ignored_until_renamed(watch) -> None:
    root, rec, _ = watch()
    for temp in ("photo.jpg.part", "photo.jpg.crdownload", ".photo.jpg", "photo.jpg~", "photo.tmp"):
        (root / temp).write_bytes(image_bytes(3))
    sub = root / "sub"
    sub.mkdir()
    slow_write(sub / "img.png.tmp", image_bytes(4), chunks=3, pause=0.1)
    time.sleep(0.8)
    assert rec.paths() == []
    os.rename(sub / "img.png.tmp", sub / "img.png")
    wait_for(lambda: rec.paths(), LANDING_S, what="landing of the renamed file")
    time.sleep(0.8)
    assert rec.paths() == [str(sub / "img.png")]
    assert rec.moved == []  # the temp name was never known: this is a landing, not a move


def test_mv_from_outside_the_root_lands_once_after_settling(watch, tmp_path: Path) -> None:
    root, rec, _ = watch()
    outside = tmp_path / "outside.png"
    outside.write_bytes(image_bytes(5))
    time.sleep(0.2)
    moved_at = time.monotonic()
    os.rename(outside, root / "moved in.png")  # same filesystem: inotify says moved-to, no write, no close
    wait_for(lambda: rec.paths(), LANDING_S, what="landing")
    time.sleep(0.8)
    assert rec.paths() == [str(root / "moved in.png")]
    assert rec.landed[0][1] >= moved_at


def test_move_inside_the_root_is_followed_and_delete_reported(watch) -> None:
    root, rec, _ = watch()
    (root / "a.png").write_bytes(image_bytes(6))
    wait_for(lambda: rec.paths(), LANDING_S, what="landing")
    os.rename(root / "a.png", root / "b.png")
    wait_for(lambda: rec.moved, LANDING_S, what="move")
    (root / "b.png").unlink()
    wait_for(lambda: rec.deleted, LANDING_S, what="delete")
    assert rec.moved == [(str(root / "a.png"), str(root / "b.png"))]
    assert rec.deleted == [str(root / "b.png")]
    assert rec.paths() == [str(root / "a.png")]


def test_folder_moved_in_lands_its_files(watch, tmp_path: Path) -> None:
    root, rec, _ = watch()
    album = tmp_path / "album"
    (album / "deep").mkdir(parents=True)
    (album / "x.png").write_bytes(image_bytes(7))
    (album / "deep" / "y.png").write_bytes(image_bytes(8))
    os.rename(album, root / "album")
    wait_for(lambda: len(rec.paths()) >= 2, LANDING_S, what="landings")
    time.sleep(0.5)
    # inotify also reports the moved folder's files as created, so a file may land twice here; the
    # catalog registers one version once (test_catch_up and the fault tests hold that end to end)
    assert sorted(set(rec.paths())) == [str(root / "album" / "deep" / "y.png"), str(root / "album" / "x.png")]


def test_filters_excludes_symlinks_and_non_images(watch, tmp_path: Path) -> None:
    root, rec, _ = watch(exclude=["private"])
    outside = tmp_path / "secret.png"
    outside.write_bytes(image_bytes(9))
    (root / "private").mkdir()
    (root / "private" / "p.png").write_bytes(image_bytes(10))
    (root / "notes.txt").write_text("not an image")
    os.symlink(outside, root / "link.png")
    (root / "real.png").write_bytes(image_bytes(11))
    wait_for(lambda: rec.paths(), LANDING_S, what="landing")
    time.sleep(1.0)
    assert rec.paths() == [str(root / "real.png")]
    assert list(PathFilter([root], WatchSettings(exclude=["private"])).walk()) == [str(root / "real.png")]


def test_polling_lands_once_after_size_and_mtime_settle(watch) -> None:
    # polling sees no open or close: a writer pausing longer than settle_ms would be taken early. The pauses
    # are well under settle_ms: on a loaded host a 0.15 s sleep can last several times that
    root, rec, w = watch(poll=True, settle_ms=1500)
    assert w.polled_roots == [root]
    (root / "a.png").write_bytes(image_bytes(12))
    last_write = slow_write(root / "slow.png", image_bytes(13, 256), chunks=6, pause=0.15)
    wait_for(lambda: len(rec.paths()) >= 2, 15, what="landings")
    time.sleep(1.0)
    assert sorted(rec.paths()) == [str(root / "a.png"), str(root / "slow.png")]
    slow_at = dict(rec.landed)[str(root / "slow.png")]
    assert slow_at >= last_write + 1.5  # settle_ms after the last change, never mid-write


ENOSPC_CHILD = textwrap.dedent("""
    import logging, os, sys, time
    from pathlib import Path
    from daemon.config import WatchSettings
    from daemon.ingest.walk import PathFilter
    from daemon.ingest.watcher import Watcher, inotify_watches
    logging.basicConfig(level=logging.INFO)
    with open("/proc/sys/user/max_inotify_watches", "w") as fh:
        fh.write(sys.argv[2])
    root = Path(sys.argv[1])
    landed = []
    ws = WatchSettings(poll_interval_s=0.2, settle_ms=200)
    w = Watcher(PathFilter([root], ws), ws, landed=landed.append, moved=lambda s, d: None, deleted=print)
    w.start()
    time.sleep(0.5)
    watched = inotify_watches() or set()
    freed = [d for d in sorted(root.iterdir())  # which sub-folders got a watch is watchdog's choice
             if (os.major(d.stat().st_dev), os.minor(d.stat().st_dev), d.stat().st_ino) in watched]
    for d in freed[:int(sys.argv[3])]:  # removed: their watches go back to the kernel
        d.rmdir()
    print("REMOVED", [str(d) for d in freed[:int(sys.argv[3])]])
    (root / "late" / "later").mkdir(parents=True)
    time.sleep(0.3)
    last = max(d.name for d in root.glob("d*"))  # d4, unless it was removed above
    for name in (f"{last}/new.png", "top.png", "late/later/new.png"):
        (root / name).write_bytes(b"x")
    deadline = time.monotonic() + 10
    while len(set(landed)) < 3 and time.monotonic() < deadline:
        time.sleep(0.1)
    w.stop()
    print("POLLED", [str(p) for p in w.polled_roots])
    print("LANDED", sorted(set(landed)))
""")


HEADROOM_WATCHES = 32
"""Inotify watches the namespace test needs free above it: at most 8 at once (a limit of 7, and the watcher's
probe of one more), with room for what other processes of this user add meanwhile."""


def inotify_headroom(folder: Path, want: int) -> int:
    """How many inotify watches (up to `want`) the kernel grants this user now, beside a second instance:
    added on `want` fresh folders, then all released. A user namespace's watches and instances are also
    charged to each parent namespace, up to its limit (fs.inotify.max_user_watches, max_user_instances, or a
    container's own): the private limit a test sets binds only while every parent has this much room left."""
    libc = ctypes.CDLL(None, use_errno=True)
    fds = [libc.inotify_init1(os.O_CLOEXEC) for _ in range(2)]
    try:
        if min(fds) < 0:
            return 0
        granted = 0
        for i in range(want):
            (folder / str(i)).mkdir(parents=True)
            if libc.inotify_add_watch(fds[0], os.fsencode(folder / str(i)), 0x100) < 0:  # IN_CREATE
                break
            granted += 1
        return granted
    finally:
        for fd in fds:
            if fd >= 0:
                os.close(fd)


@pytest.mark.skipif(shutil.which("unshare") is None, reason="needs unshare(1) for a private inotify limit")
@pytest.mark.parametrize(("limit", "freed"), [("0", "0"), ("3", "0"), ("7", "0"), ("3", "2")],
                         ids=["root-refused", "subfolders-refused", "new-folder-refused", "freed-watches-reused"])
def test_inotify_watch_limit_falls_back_to_polling(tmp_path: Path, limit: str, freed: str) -> None:
    """A user namespace gets its own inotify watch limit, so the kernel really refuses watches (ENOSPC)
    without touching the machine's limit. With 0 the root's watch fails; with 3 only sub-folders do
    (watchdog 7.1.0 skips them, 7.1.1 raises for the whole tree); with 7 the start fits (root + 5) and a
    folder created later is refused; with 3 and two watched sub-folders removed, a folder created later fits
    in the watches they freed and must be watched, not polled. Each must end in polling of what was
    refused, and only that (the root only when its own watch failed), with the sysctl to raise in the
    log, and lose no file. The private limit is the one that binds only where the parent namespaces leave
    room: measured first, not assumed."""
    root = tmp_path / "root"
    for i in range(5):
        (root / f"d{i}").mkdir(parents=True)
    probe = subprocess.run(["unshare", "-U", "-r", "true"], capture_output=True, check=False)
    if probe.returncode != 0:
        pytest.skip(f"unprivileged user namespaces unavailable: {probe.stderr.decode().strip()}")
    headroom = inotify_headroom(tmp_path / "headroom", HEADROOM_WATCHES)
    if headroom < HEADROOM_WATCHES:
        pytest.skip(f"only {headroom} inotify watches (or no second instance) left to this user by its parent "
                    f"namespaces; the test needs {HEADROOM_WATCHES} for its private limit to be the one that binds")
    proc = subprocess.run(["unshare", "-U", "-r", sys.executable, "-c", ENOSPC_CHILD, str(root), limit, freed],
                          capture_output=True, text=True, timeout=60, cwd=REPO_ROOT,
                          env={**os.environ, "PYTHONPATH": str(REPO_ROOT)}, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "sysctl fs.inotify.max_user_watches" in proc.stderr
    polled = eval(next(x for x in proc.stdout.splitlines() if x.startswith("POLLED "))[len("POLLED "):])
    removed = eval(next(x for x in proc.stdout.splitlines() if x.startswith("REMOVED "))[len("REMOVED "):])
    assert len(removed) == int(freed)
    kept = sorted({str(root / f"d{i}") for i in range(5)} - set(removed))
    if limit == "0":
        assert polled == [str(root)]
    elif freed != "0":
        assert sorted(polled) == kept, polled  # what was refused at start, and not the folder made later
    else:
        assert polled and all(Path(p).parent != Path(p) and root in Path(p).parents for p in polled), polled
    expected = sorted([f"{kept[-1]}/new.png", *(str(root / n) for n in ("top.png", "late/later/new.png"))])
    assert f"LANDED {expected}" in proc.stdout


@pytest.fixture
def run_service(tmp_path: Path) -> Iterator:
    started: list[Service] = []

    def start(root: Path, state: Path, **env: str) -> Service:
        s = Service(["run", "--hash-only", "--workers", "1", str(root)],
                    base_env(state, DUPWATCH_QUEUE__PENDING_RETRY_S="5", **env), tmp_path / "run.log")
        started.append(s)
        return s

    yield start
    for s in started:
        s.stop()


@pytest.mark.system
def test_end_to_end_slow_writer_rename_and_move_are_read_whole(tmp_path: Path, run_service) -> None:
    root, state = tmp_path / "in", tmp_path / "state"
    root.mkdir()
    svc = run_service(root, state)
    wait_for(lambda: "catch-up scan" in svc.stderr(), 60, what="service start")
    slow, renamed, moved = image_bytes(20, 384), image_bytes(21), image_bytes(22)
    writer = threading.Thread(target=slow_write, args=(root / "slow.png", slow, 10, 0.25))
    writer.start()
    (root / "dl.png.crdownload").write_bytes(renamed)
    os.rename(root / "dl.png.crdownload", root / "dl.png")
    (tmp_path / "m.png").write_bytes(moved)
    os.rename(tmp_path / "m.png", root / "m.png")
    writer.join()
    wait_for(lambda: len([r for r in catalog_rows(state) if r["state"] == "decided"]) >= 3, LANDING_S, what="verdicts")
    time.sleep(1.5)
    import sqlite3

    conn = sqlite3.connect(state / "catalog.sqlite3")
    rows = conn.execute("SELECT path, verdict, sha256, error FROM files ORDER BY id").fetchall()
    conn.close()
    expected = {str(root / "slow.png"): slow, str(root / "dl.png"): renamed, str(root / "m.png"): moved}
    assert sorted(r[0] for r in rows) == sorted(expected)  # each once, no temp name
    for path, verdict, sha, error in rows:
        assert verdict == "new", (path, error)
        assert sha == hashlib.sha256(expected[path]).hexdigest()


@pytest.mark.system
def test_a_file_being_written_as_the_daemon_starts_lands_once_whole(tmp_path: Path, run_service) -> None:
    """The catch-up scan at start meets a file its writer still holds open, half written. The watcher runs by
    then, so the file goes through the settle check and lands at its close: one row, the whole file. Landed
    as the scan found it, its first half got a row and an error verdict of its own (a fault test, at load 13)."""
    root, state = tmp_path / "in", tmp_path / "state"
    root.mkdir()
    data = image_bytes(23, 256)
    with open(root / "half.png", "wb") as fh:
        fh.write(data[:len(data) // 2])
        fh.flush()
        svc = run_service(root, state, DUPWATCH_WATCH__SETTLE_MS="60000")  # still "being written" at the scan
        wait_for(lambda: "catch-up scan:" in svc.stderr(), 60, what="the catch-up scan")
        fh.write(data[len(data) // 2:])
    row = wait_for(lambda: next((r for r in catalog_rows(state) if r["state"] == "decided"), None), 60,
                   what="the verdict")
    time.sleep(1.0)  # a second row would be there by now
    rows = catalog_rows(state)
    assert [(r["path"], r["verdict"]) for r in rows] == [(str(root / "half.png"), "new")], rows
    assert row["error"] is None
