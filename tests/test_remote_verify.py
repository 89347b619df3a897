"""Verification runs in the workers: the daemon process sends the question and receives the answer, and aligns
nothing itself; a verification whose worker dies is asked again. The daemon runs in this process (its real
loop, on a thread), against a real Redis; workers are real processes, or rq's own worker in this process where
the test plays the workers' part."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from PIL import Image
from rq import SimpleWorker
from rq.serializers import JSONSerializer

import workers.align
import workers.verify
from daemon.config import Settings
from daemon.events import VerdictEvent
from daemon.service.loop import Daemon
from tests.conftest import Service, base_env, copy_into, wait_for
from tests.test_worker_crash import take_and_die
from workers import jobs
from workers import queue as q
from workers.pipeline import Pipeline
from workers.settings import DecodeSettings

pytestmark = pytest.mark.system


@pytest.fixture
def mirror(photos, tmp_path) -> Path:
    """The coffee photo mirrored: a hash-only match (pHash of the flipped frame) that only a verification
    confirms, and whose edit says `flip`."""
    path = tmp_path / "mirror.jpg"
    Image.open(photos["coffee"]).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(path, quality=90)
    return path


@pytest.fixture
def daemon(tmp_path, redis_url) -> Iterator[tuple[Path, list[VerdictEvent]]]:
    """A hash-only daemon serving in this process; yields its root and the events it emits."""
    root = tmp_path / "in"
    root.mkdir()
    settings = Settings(state_dir=tmp_path / "state", hash_only=True, api={"enabled": False},
                        watch={"settle_ms": 300}, queue={"batch_ms": 100, "max_attempts": 3})
    d = Daemon(settings, [root], redis_url, console=False)
    d.open()
    events: list[VerdictEvent] = []
    d.add_sink(events.append)
    loop = threading.Thread(target=d.serve, name="daemon-loop", daemon=True)
    loop.start()
    wait_for(d.catchup_done.is_set, 60, what="the daemon watching")
    try:
        yield root, events
    finally:
        d.stopping.set()
        loop.join(30)
        d.close()


def verdict(events: list[VerdictEvent], path: Path, timeout: float, work=None) -> VerdictEvent:
    """The event for `path`; `work`: called while waiting (the test doing a worker's part)."""
    def found() -> VerdictEvent | None:
        if work is not None:
            work()
        return next((e for e in events if e.file.path == str(path)), None)

    return wait_for(found, timeout, interval=0.1, what=f"the verdict for {path.name}")


def test_the_daemon_process_aligns_nothing_and_the_edit_comes_from_a_worker(daemon, photos, mirror, tmp_path,
                                                                          redis_url, services, monkeypatch):
    root, events = daemon
    ran: list[str] = []
    for module, name in ((workers.verify, "verify"), (workers.verify, "gradient_distance"), (workers.align, "align")):
        real = getattr(module, name)
        monkeypatch.setattr(module, name, lambda *a, _real=real, _name=name, **k: ran.append(_name) or _real(*a, **k))
    env = base_env(tmp_path / "worker-state", DUPWATCH_HASH_ONLY="true", DUPWATCH_REDIS__URL=redis_url)
    services.append(Service(["worker"], env, tmp_path / "worker.log"))

    original = copy_into(photos["coffee"], root / "coffee.jpg")
    assert verdict(events, original, 120).kind == "new"
    copy = copy_into(mirror, root / "coffee-mirrored.jpg")
    event = verdict(events, copy, 60)
    assert event.kind == "edited-copy" and event.matches[0].signal == "phash+geometry"
    assert event.matches[0].file.path == str(original)
    edit = event.matches[0].edit
    assert edit is not None and edit["flip"] == "horizontal", edit  # the worker's alignment, carried by the verdict
    assert ran == [], f"image work ran in the daemon process: {ran}"


def test_a_verification_lost_with_its_worker_is_asked_again(daemon, photos, mirror, redis_url):
    root, events = daemon
    conn = redis.Redis.from_url(redis_url)
    jobs.install(Pipeline(DecodeSettings(), None, None))

    def run(queue) -> None:  # rq's worker in this process takes what is queued there, then stops
        if len(queue):
            SimpleWorker([queue], connection=conn, serializer=JSONSerializer, name=f"w-{uuid.uuid4().hex[:8]}").work(
                burst=True, with_scheduler=False)

    try:
        features = q.ingest_queue(conn)
        original = copy_into(photos["coffee"], root / "coffee.jpg")
        assert verdict(events, original, 60, lambda: run(features)).kind == "new"
        copy = copy_into(mirror, root / "coffee-mirrored.jpg")
        asked = q.verify_queue(conn)
        wait_for(lambda: run(features) or len(asked) == 1, 60, interval=0.1, what="the verification job")

        doomed = take_and_die(conn, "doomed", asked)  # a worker takes it and is never heard of again
        wait_for(lambda: doomed in asked.get_job_ids(), 30, what="the verification asked again")
        assert not [e for e in events if e.file.path == str(copy)]  # the verdict waited for it

        event = verdict(events, copy, 60, lambda: run(asked))
        assert event.kind == "edited-copy" and event.matches[0].signal == "phash+geometry"
        assert event.matches[0].edit is not None and event.matches[0].edit["flip"] == "horizontal"
    finally:
        conn.close()
