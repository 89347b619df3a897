"""Signals as systemd and operators send them: SIGTERM stops cleanly without losing work, SIGHUP reloads
the configuration live. Also: `--log-format json` writes one parseable JSON object per log line."""

from __future__ import annotations

import collections
import json
import signal
import sqlite3
from pathlib import Path

import imaging
import pytest
import redis
from conftest import Service, base_env, catalog_rows, copy_into, wait_for
from rq.registry import StartedJobRegistry

from workers import queue as q

pytestmark = pytest.mark.system


def _counts(state: Path) -> tuple[int, int]:
    """(decided, undecided) rows in the catalog."""
    rows = catalog_rows(state)
    decided = sum(r["state"] == "decided" for r in rows)
    return decided, len(rows) - decided


def _verdicts(service: Service) -> dict[str, str]:
    """path -> kind from a run's verdict lines ('HH:MM:SS kind path ...')."""
    return {line.split()[2]: line.split()[1] for line in service.verdict_lines()}


def test_sigterm_mid_batch_loses_nothing(tmp_path: Path, services: list, photos) -> None:
    root, state, staging = tmp_path / "in", tmp_path / "state", tmp_path / "staging"
    root.mkdir()
    staging.mkdir()
    sources = []
    for name, path in photos.items():  # 36 distinct files: each photo, re-encoded, resized
        sources += [path, imaging.reencode(path, staging / f"{name}-q50.jpg", 50),
                    imaging.resize(path, staging / f"{name}-half.jpg", 0.5)]
    env = base_env(state, DUPWATCH_QUEUE__BATCH_SIZE="4")
    first = Service(["run", "--hash-only", str(root)], env, tmp_path / "run1.log")
    services.append(first)
    wait_for(lambda: "ready: model" in first.stderr(), 120, what="a worker")
    landed = [copy_into(src, root / f"{i:02d}-{src.name}") for i, src in enumerate(sources)]

    conn = redis.Redis(unix_socket_path=str(state / "redis.sock"))
    started = StartedJobRegistry(q.INGEST_QUEUE, connection=conn)

    def mid_batch() -> bool:
        decided, undecided = _counts(state)
        return decided > 0 and undecided > 0 and started.count > 0

    wait_for(mid_batch, 60, interval=0.01, what="a worker inside a batch with verdicts already given")
    assert first.stop(signal.SIGTERM, timeout=60) == 0, first.stderr()
    conn.close()
    decided_first, _ = _counts(state)

    second = Service(["run", "--hash-only", str(root)], env, tmp_path / "run2.log")
    services.append(second)
    wait_for(lambda: _counts(state) == (len(landed), 0), 120, what="every file's verdict after the restart")
    assert second.stop(signal.SIGTERM, timeout=60) == 0, second.stderr()

    rows = catalog_rows(state)
    assert sorted(r["path"] for r in rows) == sorted(str(p) for p in landed)  # one row per file, none lost
    assert all(r["verdict"] in ("new", "exact-copy", "edited-copy", "similar") for r in rows), rows
    printed = collections.Counter(line.split()[2] for s in (first, second) for line in s.verdict_lines())
    assert printed == collections.Counter(str(p) for p in landed)  # each verdict announced exactly once
    logged = collections.Counter(json.loads(line)["file"]["id"]
                                 for line in (state / "events.jsonl").read_text().splitlines())
    assert sorted(logged) == sorted(r["id"] for r in rows) and set(logged.values()) == {1}
    print(f"verdicts before SIGTERM: {decided_first}, after the restart: {len(landed) - decided_first}")


def test_sighup_changes_a_threshold_live_and_logs_are_json(tmp_path: Path, services: list, photos) -> None:
    root, state, edits = tmp_path / "in", tmp_path / "state", tmp_path / "edits"
    root.mkdir()
    edits.mkdir()
    config = tmp_path / "dupwatch.toml"
    config.write_text("[match]\nphash_max_distance = -1\nwindow_max_distance = -1\ndhash_max_distance = -1\n"
                      "confirm_phash_distance = -1\n")  # every clause of the hash rule off
    service = Service(["run", "--hash-only", "--config", str(config), "--log-format", "json", str(root)],
                      base_env(state), tmp_path / "daemon.log")
    services.append(service)
    wait_for(lambda: "ready: model" in service.stderr(), 120, what="a worker")

    def land(src: Path, name: str) -> str:
        dest = copy_into(src, root / name)
        return wait_for(lambda: _verdicts(service).get(str(dest)), 60, what=f"a verdict for {name}")

    assert land(photos["astronaut"], "original.jpg") == "new"
    assert land(imaging.crop(photos["astronaut"], edits / "crop.jpg"), "crop.jpg") == "new"  # hashes disabled

    config.write_text("# back to the defaults\n")
    service.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: "configuration reloaded" in service.stderr(), 30, what="the reload")
    assert land(imaging.reencode(photos["astronaut"], edits / "q40.jpg", 40), "q40.jpg") == "edited-copy"
    assert service.proc.poll() is None  # reloaded, not restarted
    assert service.stop(signal.SIGTERM) == 0

    records = [json.loads(line) for line in service.stderr().splitlines() if line.strip()]  # every line is JSON
    reload = next(r for r in records if r["msg"].startswith("configuration reloaded"))
    assert reload["level"] == "info" and reload["logger"] == "daemon.service.loop" and isinstance(reload["ts"], float)
    assert any(r["logger"] == "workers.worker" for r in records)  # worker processes log JSON too
    db = sqlite3.connect(f"file:{state / 'catalog.sqlite3'}?mode=ro", uri=True)
    verdicts = dict(db.execute("SELECT path, verdict FROM files"))
    db.close()
    assert verdicts == {str(root / "original.jpg"): "new", str(root / "crop.jpg"): "new",
                        str(root / "q40.jpg"): "edited-copy"}
