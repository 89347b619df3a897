"""Issue 13, part A: processes, Redis, state and disk, tried as an attacker or an unlucky operator would.

Each test runs `dupwatch run` (or `scan`) as a user would, in real processes, on real files, with its real
private Redis, and kills, fills or corrupts the real thing: a worker, the redis-server, the disk, the
catalog. `queue.pending_retry_s` is set far beyond the waits, so a test passes only if the recovery it
names happens at once, not by the slow re-queue sweep.
"""

from __future__ import annotations

import collections
import json
import os
import signal
import socket
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import psutil
import pytest
import redis
from PIL import Image
from rq.registry import StartedJobRegistry

from tests import imaging
from tests.conftest import (
    Service,
    base_env,
    catalog_rows,
    copy_into,
    dupwatch_cmd,
    free_port,
    wait_for,
)
from workers import queue as q

pytestmark = pytest.mark.system

NO_SWEEP = {"DUPWATCH_QUEUE__PENDING_RETRY_S": "3600", "DUPWATCH_QUEUE__BATCH_SIZE": "4"}
"""The periodic re-queue of stale files is out of reach: recovery must be immediate."""


def distinct_files(photos: dict[str, Path], staging: Path) -> list[Path]:
    """36 distinct JPEGs: each photo, re-encoded and resized."""
    staging.mkdir(exist_ok=True)
    out = []
    for name, path in photos.items():
        out += [path, imaging.reencode(path, staging / f"{name}-q50.jpg", 50),
                imaging.resize(path, staging / f"{name}-half.jpg", 0.5)]
    return out


def start_run(tmp_path: Path, services: list, root: Path, *args: str, log: str = "run.log",
              cwd: Path | None = None, ready: str = "ready: model", **env: str) -> Service:
    svc = Service(["run", "--hash-only", *args, str(root)], base_env(tmp_path / "state", **{**NO_SWEEP, **env}),
                  tmp_path / log, cwd=cwd)
    services.append(svc)
    wait_for(lambda: ready in svc.stderr() or svc.proc.poll() is not None, 120, what=ready)
    assert svc.proc.poll() is None, svc.stderr()
    return svc


def decided(state: Path) -> dict[str, str]:
    return {r["path"]: r["verdict"] for r in catalog_rows(state) if r["state"] == "decided"}


def all_decided(state: Path, paths: list[Path], timeout: float = 60) -> None:
    want = {str(p) for p in paths}
    wait_for(lambda: want <= set(decided(state)), timeout, what=f"verdicts for all {len(want)} files")


def once_each(svc_list: list[Service], paths: list[Path]) -> None:
    """Each landed file was announced exactly once, over all lives of the service. The console line follows
    the verdict's commit, so the last one may reach stdout a moment after the catalog shows the verdict."""
    want = collections.Counter(str(p) for p in paths)

    def printed() -> collections.Counter[str]:
        return collections.Counter(line.split()[2] for s in svc_list for line in s.verdict_lines())

    wait_for(lambda: set(printed()) >= set(want), 30, what=f"a verdict line for each of {sorted(want)}")
    assert printed() == want


def private_redis(state: Path) -> redis.Redis:
    return redis.Redis(unix_socket_path=str(state / "redis.sock"))


def children(svc: Service, marker: str) -> list[psutil.Process]:
    return [p for p in psutil.Process(svc.proc.pid).children(recursive=True)
            if marker in " ".join(p.cmdline())]


def metric_values(text: str) -> dict[str, float]:
    return {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
            if line and not line.startswith("#")}


def inside_a_batch(state: Path) -> bool:
    try:
        return StartedJobRegistry(q.INGEST_QUEUE, connection=private_redis(state)).count > 0
    except redis.RedisError:
        return False


# --- row 1: a worker SIGKILLed mid-batch ------------------------------------------------------------


def test_sigkilled_worker_is_restarted_and_run_goes_on(tmp_path, services, photos):
    root, state = tmp_path / "in", tmp_path / "state"
    root.mkdir()
    svc = start_run(tmp_path, services, root)
    files = distinct_files(photos, tmp_path / "staging")
    landed = [copy_into(src, root / f"{i:02d}-{src.name}") for i, src in enumerate(files[:24])]
    wait_for(lambda: inside_a_batch(state), 60, interval=0.005, what="a worker inside a batch")
    [worker] = children(svc, "spawn_main")
    worker.kill()

    wait_for(lambda: "restarting" in svc.stderr(), 10, what="the restart")
    landed += [copy_into(src, root / f"{i:02d}-{src.name}") for i, src in enumerate(files[24:], 24)]
    all_decided(state, landed)
    assert svc.proc.poll() is None, svc.stderr()  # the run went on
    assert [p.pid for p in children(svc, "spawn_main")] != [worker.pid]  # a new worker
    once_each([svc], landed)
    assert svc.stop() == 0


# --- row 5: the private redis-server SIGKILLed ----------------------------------------------------


def test_killed_private_redis_is_restarted_reaped_and_no_verdict_is_lost(tmp_path, services, photos):
    root, state = tmp_path / "in", tmp_path / "state"
    root.mkdir()
    port = free_port()
    svc = start_run(tmp_path, services, root, DUPWATCH_API__ENABLED="true", DUPWATCH_API__PORT=str(port))
    api = f"http://127.0.0.1:{port}"
    files = distinct_files(photos, tmp_path / "staging")
    landed = [copy_into(src, root / f"{i:02d}-{src.name}") for i, src in enumerate(files[:18])]
    wait_for(lambda: inside_a_batch(state), 60, interval=0.005, what="a worker inside a batch")
    [server] = children(svc, "redis-server")
    server.kill()

    landed += [copy_into(src, root / f"{i:02d}-{src.name}") for i, src in enumerate(files[18:], 18)]
    all_decided(state, landed)
    [again] = children(svc, "redis-server")
    assert again.pid != server.pid
    assert not psutil.pid_exists(server.pid)  # reaped: no zombie left behind
    assert "private Redis" in svc.stderr() and "restarting it" in svc.stderr()
    metrics = metric_values(httpx.get(f"{api}/metrics").text)
    assert metrics["dupwatch_redis_restarts_total"] == 1
    assert metrics['dupwatch_degraded_episodes_total{reason="redis"}'] >= 1
    assert metrics['dupwatch_degraded{reason="redis"}'] == 0
    assert httpx.get(f"{api}/healthz").json()["status"] == "ok"  # and healthy again
    once_each([svc], landed)
    assert svc.proc.poll() is None
    assert svc.stop() == 0


# --- row 6: a second run on the same state dir ------------------------------------------------------


def test_second_run_on_the_same_state_dir_is_refused_before_touching_anything(tmp_path, services, photos):
    root, state = tmp_path / "in", tmp_path / "state"
    root.mkdir()
    first = start_run(tmp_path, services, root)
    [server] = children(first, "redis-server")
    landed = [copy_into(photos["astronaut"], root / "a.jpg")]
    all_decided(state, landed)

    second = subprocess.run([*dupwatch_cmd(), "run", "--hash-only", str(root)], env=base_env(state),
                            capture_output=True, text=True, timeout=60, check=False)
    assert second.returncode != 0
    assert second.stderr.strip().count("\n") == 0, second.stderr  # one line, no traceback
    assert f"pid {first.proc.pid}" in second.stderr and str(state) in second.stderr
    assert server.is_running() and children(first, "redis-server")[0].pid == server.pid  # untouched
    landed.append(copy_into(photos["coffee"], root / "b.jpg"))
    all_decided(state, landed)  # the first instance still gives verdicts
    once_each([first], landed)
    assert first.stop() == 0


# --- row 7: a restart after the whole process group was SIGKILLed mid-catch-up -------------------------


def test_restarted_daemon_requeues_what_its_last_life_left_in_flight_at_once(tmp_path, services, photos):
    root, state = tmp_path / "in", tmp_path / "state"
    root.mkdir()
    rng = np.random.default_rng(7)
    landed = []
    for i in range(240):  # a catch-up of many small batches: some done, one started, many queued
        blocks = Image.fromarray(rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)).resize((48, 48), Image.NEAREST)
        blocks.save(root / f"{i:03d}.jpg", quality=90)
        landed.append(root / f"{i:03d}.jpg")
    first = start_run(tmp_path, services, root, ready="private Redis")  # the catch-up scan finds them
    wait_for(lambda: inside_a_batch(state) and len(decided(state)) >= 20, 120, interval=0.005,
             what="a worker inside a batch, verdicts already given")
    os.killpg(first.proc.pid, signal.SIGKILL)
    first.proc.wait()
    assert len(decided(state)) < len(landed)

    second = start_run(tmp_path, services, root, log="run2.log")
    all_decided(state, landed, timeout=90)  # far sooner than pending_retry_s
    assert sorted(r["path"] for r in catalog_rows(state)) == sorted(map(str, landed))  # one row each
    assert second.stop() == 0


# --- row 9: the state dir's file system fills up -----------------------------------------------------


@pytest.fixture
def small_fs(tmp_path) -> Iterator[Path]:
    """A 24 MiB tmpfs of its own (the suite runs as root): filled up on purpose."""
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(mount)], capture_output=True, check=False)
    if done.returncode != 0:
        pytest.fail(f"cannot mount a tmpfs for the disk-full test: {done.stderr.decode()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(fs: Path) -> Path:
    filler = fs / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
    try:
        while os.write(fd, b"\0" * 65536):
            pass
    except OSError:  # ENOSPC: full
        pass
    finally:
        os.close(fd)
    return filler


def test_redis_refusing_writes_on_a_full_disk_is_a_full_disk_in_a_pipeline_too(small_fs):
    """The private Redis keeps its log in the state dir: on a full disk it refuses writes (MISCONF). A write
    in a MULTI (rq's enqueue) raises it worded otherwise; taken for any other error, it ended `run`."""
    from daemon.health import disk_full
    from daemon.service.redis_server import EmbeddedRedis

    server = EmbeddedRedis(small_fs / "state")
    conn = redis.Redis.from_url(server.start())
    try:
        conn.set("before", "x")
        fill(small_fs)
        with pytest.raises(redis.ResponseError) as plain:
            for _ in range(50):  # the first write that cannot be logged turns Redis to refusing the next
                conn.set("during", "x" * 65536)
                time.sleep(0.1)
        with pytest.raises(redis.ResponseError) as piped, conn.pipeline() as pipe:
            pipe.sadd("queues", "q").rpush("q", "job").execute()
        with pytest.raises(redis.ResponseError) as other:
            conn.lrange("before", 0, 1)  # WRONGTYPE (a read: allowed on a full disk): not a full disk
    finally:
        conn.close()
        server.stop()
    assert "MISCONF" in str(plain.value) and not str(piped.value).startswith("MISCONF")
    assert disk_full(plain.value) and disk_full(piped.value) and not disk_full(other.value)


def test_disk_full_waits_in_a_degraded_state_and_resumes_by_itself(tmp_path, services, photos, small_fs):
    root, state = tmp_path / "in", small_fs / "state"
    root.mkdir()
    port = free_port()
    svc = Service(["run", "--hash-only", str(root)],
                  base_env(state, **NO_SWEEP, DUPWATCH_API__ENABLED="true", DUPWATCH_API__PORT=str(port)),
                  tmp_path / "run.log")
    services.append(svc)
    wait_for(lambda: "ready: model" in svc.stderr(), 120, what="a worker")
    api = f"http://127.0.0.1:{port}"
    files = distinct_files(photos, tmp_path / "staging")
    landed = [copy_into(src, root / f"{i:02d}-{src.name}") for i, src in enumerate(files[:6])]
    all_decided(state, landed)

    filler = fill(small_fs)
    landed += [copy_into(src, root / f"{i:02d}-{src.name}") for i, src in enumerate(files[6:], 6)]
    wait_for(lambda: "disk full" in svc.stderr(), 60, what="the disk-full log line")
    health = httpx.get(f"{api}/healthz").json()
    assert health["status"] == "degraded" and "disk-full" in health["degraded"]
    assert httpx.get(f"{api}/readyz").status_code == 503
    assert metric_values(httpx.get(f"{api}/metrics").text)['dupwatch_degraded{reason="disk-full"}'] == 1
    assert svc.proc.poll() is None

    filler.unlink()
    all_decided(state, landed, timeout=90)
    assert "resuming" in svc.stderr()
    assert httpx.get(f"{api}/healthz").json()["status"] == "ok"
    assert sorted(r["path"] for r in catalog_rows(state)) == sorted(map(str, landed))  # nothing lost, once
    assert svc.stop() == 0


def test_full_disk_at_stop_leaves_no_half_snapshot_and_the_next_start_rebuilds(tmp_path, services, photos,
                                                                              small_fs):
    """The hash snapshot is written at stop (4.7 GB at 10 M rows): a full disk there must neither end the stop
    before the catalog closes nor leave a `.tmp` behind, and the next start rebuilds the index it lacks."""
    root, state = tmp_path / "in", small_fs / "state"
    root.mkdir()
    env = base_env(state, **NO_SWEEP)
    svc = Service(["run", "--hash-only", str(root)], env, tmp_path / "run.log")
    services.append(svc)
    wait_for(lambda: "ready: model" in svc.stderr(), 120, what="a worker")
    files = distinct_files(photos, tmp_path / "staging")
    landed = [copy_into(src, root / f"{i:02d}-{src.name}") for i, src in enumerate(files[:6])]
    all_decided(state, landed)

    filler = fill(small_fs)
    assert svc.stop() == 0
    assert "index snapshots not saved at stop" in svc.stderr()
    assert not [p for p in state.rglob("*.tmp")]
    filler.unlink()

    again = Service(["run", "--hash-only", str(root)], env, tmp_path / "run2.log")
    services.append(again)
    wait_for(lambda: "index loaded: 6 hashed (no snapshot)" in again.stderr(), 120, what="the rebuilt index")
    landed.append(copy_into(files[0], root / "copy-of-00.jpg"))
    all_decided(state, landed)
    rows = {r["path"]: r for r in catalog_rows(state)}
    assert len(rows) == 7 and rows[str(landed[-1])]["verdict"] == "exact-copy"
    assert again.stop() == 0


# --- row 10: a damaged catalog ------------------------------------------------------------------------


def _truncate(db: Path) -> None:
    os.truncate(db, db.stat().st_size // 2)


def _garble(db: Path) -> None:
    with open(db, "r+b") as fh:
        fh.write(os.urandom(4096))


def _empty(db: Path) -> None:
    os.truncate(db, 0)


@pytest.mark.parametrize("damage", [_truncate, _garble, _empty], ids=["truncated", "garbled", "zero-bytes"])
def test_damaged_catalog_is_refused_with_one_line_naming_file_cause_and_fix(tmp_path, photos, damage):
    root, state = tmp_path / "in", tmp_path / "state"
    root.mkdir()
    for i, src in enumerate(distinct_files(photos, tmp_path / "staging")):
        copy_into(src, root / f"{i:02d}-{src.name}")
    env = base_env(state)
    subprocess.run([*dupwatch_cmd(), "scan", "--hash-only", str(root)], env=env, capture_output=True, check=True,
                   timeout=300)
    db = state / "catalog.sqlite3"
    damage(db)
    before = db.read_bytes()

    for args in (["run", "--hash-only", str(root)], ["scan", "--hash-only", str(root)]):
        done = subprocess.run([*dupwatch_cmd(), *args], env=env, capture_output=True, text=True, timeout=120,
                              check=False)
        assert done.returncode != 0, done.stderr
        errors = [line for line in done.stderr.splitlines() if line.startswith("Error:")]
        assert len(errors) == 1 and "Traceback" not in done.stderr, done.stderr
        assert str(db) in errors[0] and "Restore it from a backup" in errors[0]
        assert db.read_bytes() == before  # never started empty over it


# --- row 12: a relative --state-dir ----------------------------------------------------------------


def test_relative_state_dir_works(tmp_path, services, photos):
    root = tmp_path / "in"
    root.mkdir()
    svc = Service(["run", "--hash-only", "--state-dir", "relstate", str(root)], base_env(tmp_path / "unused"),
                  tmp_path / "run.log", cwd=tmp_path)
    services.append(svc)
    wait_for(lambda: "ready: model" in svc.stderr() or svc.proc.poll() is not None, 120, what="a worker")
    assert svc.proc.poll() is None, svc.stderr()
    landed = [copy_into(photos["astronaut"], root / "a.jpg")]
    all_decided(tmp_path / "relstate", landed)
    assert (tmp_path / "relstate" / "redis.log").exists() and not (tmp_path / "relstate" / "relstate").exists()
    assert svc.stop() == 0


# --- review: SIGHUP swapped settings before validating them ------------------------------------------


def test_sighup_with_a_bad_setting_keeps_all_of_the_running_configuration(tmp_path, services, photos):
    root, state, edits = tmp_path / "in", tmp_path / "state", tmp_path / "edits"
    root.mkdir()
    edits.mkdir()
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(tmp_path / "notify.sock"))
    notify.settimeout(30)
    config = tmp_path / "dupwatch.toml"
    config.write_text("[match]\nphash_max_distance = -1\nwindow_max_distance = -1\ndhash_max_distance = -1\n"
                      "confirm_phash_distance = -1\n")  # every hash clause off: edits are "new"
    svc = Service(["run", "--hash-only", "--config", str(config), str(root)],
                  base_env(state, NOTIFY_SOCKET=str(tmp_path / "notify.sock")), tmp_path / "run.log")
    services.append(svc)
    wait_for(lambda: "ready: model" in svc.stderr(), 120, what="a worker")
    landed = [copy_into(photos["astronaut"], root / "original.jpg")]
    all_decided(state, landed)
    while b"READY=1" not in notify.recv(4096):
        pass

    config.write_text('log_level = "LOUD"\n')  # thresholds back to the defaults, and a bad log level
    svc.proc.send_signal(signal.SIGHUP)
    messages = []
    while not any(b"READY=1" in m for m in messages):
        messages.append(notify.recv(4096))
    assert any(b"RELOADING=1" in m for m in messages)  # and READY=1 after it: systemd's reload ends
    wait_for(lambda: "reload failed" in svc.stderr(), 10, what="the failure line")
    line = next(x for x in svc.stderr().splitlines() if "reload failed" in x)
    assert "keeping the current configuration" in line and "LOUD" in line
    assert "configuration reloaded" not in svc.stderr()

    landed.append(copy_into(imaging.reencode(photos["astronaut"], edits / "q40.jpg", 40), root / "q40.jpg"))
    all_decided(state, landed)
    assert decided(state)[str(root / "q40.jpg")] == "new"  # the old thresholds still hold
    assert svc.stop() == 0
    notify.close()


# --- review: `scan` decided a stopped daemon's leftovers without alerts ------------------------------


def test_scan_sends_a_stopped_daemons_leftover_verdicts_to_event_log_and_webhooks(tmp_path, services, photos,
                                                                                  receiver):
    root, other, state = tmp_path / "in", tmp_path / "other", tmp_path / "state"
    root.mkdir()
    other.mkdir()
    hooks = {"DUPWATCH_WEBHOOKS": json.dumps([{"url": receiver.url, "kinds": ["new", "exact-copy"]}])}
    daemon = start_run(tmp_path, services, root, "--workers", "0", ready="watching", **hooks)
    leftover = [copy_into(photos["astronaut"], root / "a.jpg"), copy_into(photos["astronaut"], root / "a2.jpg")]
    wait_for(lambda: len(catalog_rows(state)) == 2, 30, what="two pending rows")
    assert daemon.stop() == 0
    assert all(r["state"] == "pending" for r in catalog_rows(state))

    copy_into(photos["coffee"], other / "c.jpg")
    env = base_env(state, **hooks)
    subprocess.run([*dupwatch_cmd(), "scan", "--hash-only", str(other)], env=env, capture_output=True,
                   check=True, timeout=300)
    logged = [json.loads(x) for x in (state / "events.jsonl").read_text().splitlines()]
    assert sorted(e["file"]["path"] for e in logged) == sorted(map(str, leftover))  # the scan's own: no alert
    db = sqlite3.connect(state / "catalog.sqlite3")
    assert db.execute("SELECT count(*) FROM deliveries").fetchone()[0] == 2
    db.close()

    start_run(tmp_path, services, root, "--workers", "0", ready="watching", log="run2.log", **hooks)
    wait_for(lambda: len(receiver.events()) == 2, 30, what="the two leftover deliveries")
    kinds = {e["file"]["path"]: e["kind"] for e in receiver.events()}
    assert kinds == {str(leftover[0]): "new", str(leftover[1]): "exact-copy"}


def test_redis_down_as_the_daemon_starts_is_waited_for_not_fatal(tmp_path, photos, services):
    """The 30-minute soak SIGKILLed the private Redis between its start and the daemon's first command to
    it: `run` exited with a traceback. Redis away at start is the same degraded state as later on."""
    from tests.conftest import RedisServer

    root, state = tmp_path / "in", tmp_path / "state"
    root.mkdir()
    server = RedisServer(tmp_path / "redis")  # not started yet
    env = base_env(state, DUPWATCH_HASH_ONLY="true", DUPWATCH_REDIS__URL=server.url)
    daemon = Service(["daemon", str(root)], env, tmp_path / "daemon.log")
    services.append(daemon)
    wait_for(lambda: "Redis unreachable at start" in daemon.stderr(), 60, what="the daemon's start")
    copy_into(photos["rocket"], root / "early.jpg")
    server.start()
    try:
        worker = Service(["worker"], env, tmp_path / "worker.log")
        services.append(worker)
        row = wait_for(lambda: next((r for r in catalog_rows(state) if r["state"] == "decided"), None), 120,
                       what="the verdict")
        assert row["verdict"] == "new" and row["path"].endswith("early.jpg"), row
        assert daemon.proc.poll() is None
    finally:
        server.kill()
