"""Crash safety with real processes: files keep landing while a worker, the daemon or Redis is SIGKILLed.

Invariant §3.1/§3.2: afterwards every file has exactly one catalog row with a verdict, and the webhook
receiver got every event id. Hash-only mode and small noise images keep it fast: this tests ingest, not
detection. Each scenario drops 1,000 files through `dupwatch daemon --redis-url` plus separate
`dupwatch worker` processes, so each part can be killed on its own.
"""

from __future__ import annotations

import collections
import json
import os
import random
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import Receiver, RedisServer, Service, base_env, catalog_rows, wait_for

N_FILES = 1000
WRITE_RATE = 80.0
"""Files per second the writer drops: slow enough that every fault happens mid-stream."""

pytestmark = [pytest.mark.system, pytest.mark.timeout(180)]


def noise_png(path: Path, seed: int) -> None:
    """A small image of its own random content (distinct sha256 and hashes per seed)."""
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)).save(path)


class Fleet:
    """One daemon and N workers against the suite's real Redis, each a killable process."""

    def __init__(self, tmp: Path, redis_url: str, receiver: Receiver):
        self.tmp, self.redis_url = tmp, redis_url
        self.root, self.state = tmp / "in", tmp / "state"
        self.root.mkdir()
        hooks = [{"url": receiver.url, "kinds": ["new", "exact-copy", "edited-copy", "similar", "error"]}]
        self.env = base_env(self.state, DUPWATCH_HASH_ONLY="true", DUPWATCH_QUEUE__PENDING_RETRY_S="5",
                            DUPWATCH_QUEUE__BATCH_SIZE="16", DUPWATCH_WEBHOOKS=json.dumps(hooks),
                            DUPWATCH_REDIS__URL=redis_url, DUPWATCH_LOG_LEVEL="INFO")
        self.daemon: Service | None = None
        self.workers: dict[str, Service] = {}
        self.all: list[Service] = []

    def start_daemon(self) -> None:
        self.daemon = Service(["daemon", str(self.root)], self.env, self.tmp / "daemon.log")
        self.all.append(self.daemon)

    def start_worker(self, name: str) -> None:
        self.workers[name] = Service(["worker", "--name", name], self.env, self.tmp / f"{name}.log")
        self.all.append(self.workers[name])

    def kill_all(self) -> None:
        for s in self.all:
            s.stop(signal.SIGKILL, timeout=10)


@pytest.fixture
def fleet(tmp_path: Path, redis_server: RedisServer, redis_url: str, receiver: Receiver):
    f = Fleet(tmp_path, redis_url, receiver)
    yield f
    f.kill_all()
    if redis_server.proc is None or redis_server.proc.poll() is not None:
        redis_server.start()  # a scenario that failed mid-outage must not break the next test


def drop_files(root: Path, count: int, on_progress: Callable[[int], None]) -> list[Path]:
    """Write `count` files at WRITE_RATE, into 10 sub-folders; call on_progress(n) after each file."""
    for i in range(10):
        (root / f"d{i}").mkdir(exist_ok=True)
    paths = []
    started = time.monotonic()
    for i in range(count):
        path = root / f"d{i % 10}" / f"noise {i:04d}.png"
        noise_png(path, seed=i)
        paths.append(path)
        on_progress(i + 1)
        delay = started + (i + 1) / WRITE_RATE - time.monotonic()
        if delay > 0:
            time.sleep(delay)
    return paths


def assert_exactly_once(fleet: Fleet, receiver: Receiver, paths: list[Path], max_resent: int) -> None:
    """Every file one decided, non-error row; every event id at the receiver; at most `max_resent`
    deliveries sent twice (a daemon SIGKILLed between a receiver's 200 and recording it as sent)."""
    expected = {str(p) for p in paths}

    def settled() -> bool:
        rows = catalog_rows(fleet.state)
        return len(rows) >= len(expected) and all(r["state"] == "decided" for r in rows)

    wait_for(settled, 90, 0.5, what="every file decided")
    rows = catalog_rows(fleet.state)
    by_path = collections.Counter(r["path"] for r in rows)
    assert set(by_path) == expected
    assert max(by_path.values()) == 1, [p for p, n in by_path.items() if n > 1][:5]
    errors = [(r["path"], r["error"]) for r in rows if r["verdict"] == "error"]
    assert not errors, errors[:5]
    ids = {r["id"] for r in rows}

    def all_delivered() -> bool:
        return {e["file"]["id"] for e in receiver.events()} >= ids

    wait_for(all_delivered, 30, 0.2, what="every verdict delivered")
    time.sleep(1.0)  # a late duplicate would arrive now
    events = receiver.events()
    per_id = collections.Counter(e["id"] for e in events)
    assert len(per_id) == len(rows)
    assert {e["file"]["path"] for e in events} == expected
    resent = sum(n - 1 for n in per_id.values())
    assert resent <= max_resent, [i for i, n in per_id.items() if n > 1]


def run_with_faults(fleet: Fleet, faults: dict[int, Callable[[], None]]) -> list[Path]:
    """Drop N_FILES; when the n-th file is written, run faults[n] in a separate thread (so the writer
    keeps writing through the fault)."""
    threads: list[threading.Thread] = []

    def progress(n: int) -> None:
        if n in faults:
            t = threading.Thread(target=faults[n])
            t.start()
            threads.append(t)

    paths = drop_files(fleet.root, N_FILES, progress)
    for t in threads:
        t.join(60)
    return paths


def wait_ready(fleet: Fleet) -> None:
    assert fleet.daemon is not None
    wait_for(lambda: "ready" in fleet.daemon.stderr() or "index loaded" in fleet.daemon.stderr(), 60,
             what="daemon start")


def test_worker_sigkilled_twice(fleet: Fleet, receiver: Receiver) -> None:
    fleet.start_daemon()
    fleet.start_worker("w1")
    fleet.start_worker("w2")
    wait_ready(fleet)

    def kill_and_restart(name: str) -> Callable[[], None]:
        def fault() -> None:
            fleet.workers[name].stop(signal.SIGKILL)
            time.sleep(1.0)
            fleet.start_worker(name)  # what systemd's Restart= does
        return fault

    paths = run_with_faults(fleet, {250: kill_and_restart("w1"), 600: kill_and_restart("w2")})
    assert_exactly_once(fleet, receiver, paths, max_resent=0)


def test_daemon_sigkilled_and_restarted(fleet: Fleet, receiver: Receiver) -> None:
    fleet.start_daemon()
    fleet.start_worker("w1")
    wait_ready(fleet)
    seed = int(os.environ.get("DUPWATCH_TEST_SEED") or time.time_ns())
    print(f"rerun this exact fault with DUPWATCH_TEST_SEED={seed}")  # pytest shows it when the test fails
    rng = random.Random(seed)
    kill_at = rng.randrange(250, 650)

    def fault() -> None:
        time.sleep(rng.uniform(0, 0.5))  # a random point in the daemon's cycle
        assert fleet.daemon is not None
        fleet.daemon.stop(signal.SIGKILL)
        time.sleep(1.5)  # files land while no daemon watches: the catch-up scan must find them
        fleet.start_daemon()

    paths = run_with_faults(fleet, {kill_at: fault})
    assert fleet.daemon is not None
    assert "catch-up scan" in wait_for(lambda: "catch-up scan" in fleet.daemon.stderr() and fleet.daemon.stderr(),
                                       60, what="catch-up log line")
    assert_exactly_once(fleet, receiver, paths, max_resent=1)


def test_redis_killed_and_restarted_empty(fleet: Fleet, receiver: Receiver, redis_server: RedisServer) -> None:
    fleet.start_daemon()
    fleet.start_worker("w1")
    fleet.start_worker("w2")
    wait_ready(fleet)

    def fault() -> None:
        redis_server.kill()
        time.sleep(2.0)
        redis_server.start()  # same port, no data: no queue, no jobs, no results stream

    paths = run_with_faults(fleet, {400: fault})
    assert_exactly_once(fleet, receiver, paths, max_resent=0)
    assert fleet.daemon is not None
    assert "Redis lost its data" in fleet.daemon.stderr()


def test_files_written_while_the_daemon_is_stopped_are_found_at_start(fleet: Fleet, receiver: Receiver) -> None:
    fleet.start_daemon()
    fleet.start_worker("w1")
    wait_ready(fleet)
    before = drop_files(fleet.root, 10, lambda n: None)
    wait_for(lambda: sum(r["state"] == "decided" for r in catalog_rows(fleet.state)) == 10, 30, what="first files")
    assert fleet.daemon is not None and fleet.daemon.stop() == 0
    offline = []
    for i in range(200):
        folder = fleet.root / "offline" / f"batch {i // 50}"
        folder.mkdir(parents=True, exist_ok=True)
        offline.append(folder / f"n{i}.png")
        noise_png(offline[-1], seed=10_000 + i)
    fleet.start_daemon()
    daemon = fleet.daemon
    assert daemon is not None

    def second_catch_up() -> str | None:
        lines = [ln for ln in daemon.stderr().splitlines() if "catch-up scan:" in ln]  # one log, both runs
        return lines[1] if len(lines) > 1 else None

    line = wait_for(second_catch_up, 60, what="the restarted daemon's catch-up log line")
    assert "210 files checked, 200 new or changed" in line
    assert "files/s" in line
    assert_exactly_once(fleet, receiver, before + offline, max_resent=0)
