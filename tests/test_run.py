"""`dupwatch run` and `dupwatch daemon` + `worker` end to end: real watchdog events on real files, a real
Redis (private or the suite's), the random-weight open_clip checkpoint, a real webhook receiver."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import pytest

from daemon.webhooks import verify
from tests import imaging
from tests.conftest import Service, base_env, catalog_rows, copy_into, dupwatch_cmd, wait_for

pytestmark = pytest.mark.system

SECRET = "whsec_dGVzdC1zZWNyZXQtZm9yLWR1cHdhdGNo"


def webhook_env(receiver) -> dict[str, str]:
    return {"DUPWATCH_WEBHOOKS": json.dumps([{"url": receiver.url, "secret": SECRET,
                                              "kinds": ["new", "exact-copy", "edited-copy", "similar", "error"]}])}


def start_run(services, tmp_path: Path, incoming: Path, env: dict[str, str], *args: str) -> Service:
    log = tmp_path / "run.log"
    seen = len(log.read_text(errors="replace")) if log.exists() else 0  # a restart appends: skip the last run's lines
    svc = Service(["run", str(incoming), *args], base_env(tmp_path / "state", **env), log)
    services.append(svc)
    wait_for(lambda: "worker" in svc.stderr()[seen:] and "ready" in svc.stderr()[seen:], 120, what="worker ready")
    return svc


def verdict_for(svc: Service, path: Path, timeout: float = 60) -> str:
    return wait_for(lambda: next((line for line in svc.verdict_lines() if f" {path}" in line), None), timeout,
                    what=f"verdict for {path.name}")


def private_redis_pids(state: Path) -> list[int]:
    out = subprocess.run(["pgrep", "-f", f"redis-server unixsocket:{state}/redis.sock"], capture_output=True, text=True,
                         check=False)
    return [int(p) for p in out.stdout.split()]


def test_run_flags_copies_as_they_land_and_survives_a_restart(tmp_path, photos, model_env, receiver, services):
    incoming = tmp_path / "incoming"
    incoming.mkdir()
    env = {**model_env, **webhook_env(receiver)}
    svc = start_run(services, tmp_path, incoming, env)

    original = copy_into(photos["astronaut"], incoming / "a.jpg")
    assert " new " in verdict_for(svc, original)
    meme = imaging.caption(photos["astronaut"], tmp_path / "meme.jpg")
    meme_in = copy_into(meme, incoming / "a-captioned.jpg")
    line = verdict_for(svc, meme_in)
    assert "edited-copy" in line and f"≈ {original}" in line
    cropped = imaging.crop(photos["astronaut"], tmp_path / "crop.jpg", keep_area=0.8)
    os.rename(cropped, incoming / "a-cropped.jpg")  # renamed into place: the move's destination lands
    assert "edited-copy" in verdict_for(svc, incoming / "a-cropped.jpg")
    broken = incoming / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
    assert "error" in verdict_for(svc, broken)
    unrelated = copy_into(photos["coffee"], incoming / "coffee.jpg")
    assert " new " in verdict_for(svc, unrelated)  # still alive after the broken file

    wait_for(lambda: len(receiver.events()) >= 5, 30, what="5 webhook deliveries")
    for request in receiver.requests:
        verify(SECRET, request["headers"], request["body"])  # signed per Standard Webhooks
    kinds = {e["file"]["path"]: e["kind"] for e in receiver.events()}
    assert kinds[str(meme_in)] == "edited-copy" and kinds[str(broken)] == "error"
    assert svc.stop(signal.SIGTERM) == 0
    assert private_redis_pids(tmp_path / "state") == []  # stopped with dupwatch

    rows_before = catalog_rows(tmp_path / "state")
    assert len(rows_before) == 5 and all(r["state"] == "decided" for r in rows_before)
    svc2 = start_run(services, tmp_path, incoming, env)
    wait_for(lambda: "catch-up scan" in svc2.stderr(), 30, what="catch-up scan")
    resized = copy_into(imaging.resize(photos["astronaut"], tmp_path / "small.jpg"), incoming / "a-small.jpg")
    assert "edited-copy" in verdict_for(svc2, resized)
    assert [line for line in svc2.verdict_lines() if str(resized) not in line] == []  # nothing re-flagged
    assert catalog_rows(tmp_path / "state")[:5] == rows_before
    wait_for(lambda: any(e["file"]["path"] == str(resized) for e in receiver.events()), 30,
             what="the resized copy's delivery")
    delivered = receiver.events()  # taken after the last delivery: a re-sent verdict would be among them
    assert [e["file"]["path"] for e in delivered[5:]] == [str(resized)]
    ids = [e["id"] for e in delivered]
    assert len(ids) == 6 and len(set(ids)) == 6
    assert svc2.stop(signal.SIGTERM) == 0


def test_private_redis_does_not_outlive_a_killed_dupwatch(tmp_path, services):
    incoming = tmp_path / "incoming"
    svc = start_run(services, tmp_path, incoming, {"DUPWATCH_HASH_ONLY": "true"})
    state = tmp_path / "state"
    assert len(private_redis_pids(state)) == 1
    os.kill(svc.proc.pid, signal.SIGKILL)  # only the parent: no chance to clean up
    svc.proc.wait()
    wait_for(lambda: private_redis_pids(state) == [], 10, what="the private Redis to die with its parent")


def test_daemon_and_worker_meet_at_an_external_redis(tmp_path, photos, redis_url, services):
    incoming = tmp_path / "incoming"
    incoming.mkdir()
    env = base_env(tmp_path / "state", DUPWATCH_HASH_ONLY="true", DUPWATCH_REDIS__URL=redis_url)
    daemon = Service(["daemon", str(incoming)], env, tmp_path / "daemon.log")
    services.append(daemon)
    wait_for(lambda: "catch-up scan" in daemon.stderr(), 60, what="daemon start")
    copy_into(photos["rocket"], incoming / "rocket.jpg")
    copy_into(photos["rocket"], incoming / "rocket-again.jpg")
    worker = Service(["worker"], env, tmp_path / "worker.log")  # started late: jobs wait in Redis
    services.append(worker)
    line = verdict_for(daemon, incoming / "rocket-again.jpg", timeout=90)
    assert "exact-copy" in line
    status = subprocess.run(dupwatch_cmd() + ["status", "--json"], env=env, capture_output=True, text=True, timeout=60,
                            check=False)
    data = json.loads(status.stdout)
    assert data["files"] == 2 and data["verdicts"] == {"new": 1, "exact-copy": 1}
    assert data["queues"]["dupwatch-ingest"] == 0 and len(data["workers"]) == 1
    assert data["model"]["state"] == "hash-only"
    assert worker.stop(signal.SIGTERM) == 0
    assert daemon.stop(signal.SIGTERM) == 0
