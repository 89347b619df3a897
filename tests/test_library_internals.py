"""The private parts of rq and httpx that dupwatch relies on (workers/library_internals.py) still behave as it
expects against the installed versions, and no other module reaches for them."""

from __future__ import annotations

import re
import signal
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer

import httpcore
import httpx
import pytest
from rq import Queue, SimpleWorker
from rq.exceptions import StopRequested
from rq.job import JobStatus
from rq.serializers import JSONSerializer

from tests.conftest import REPO_ROOT
from workers import library_internals as internals
from workers import queue as q

PRIVATE = re.compile(r"_shutdown_requested_date|redis_worker_namespace_prefix|intermediate_queue"
                     r"|(?<!self)\._pool\b|[\"']rq:(?:queue|job|worker|wip|intermediate)")
"""rq's private attributes and Redis keys, and another object's `_pool` (httpx's transport holds one)."""


def test_no_other_module_uses_the_private_names():
    users = []
    for path in [*REPO_ROOT.glob("daemon/**/*.py"), *REPO_ROOT.glob("workers/**/*.py"), *REPO_ROOT.glob("bench/*.py")]:
        if path.name == "library_internals.py":
            continue
        users += [f"{path.relative_to(REPO_ROOT)}: {m}" for m in PRIVATE.findall(path.read_text())]
    assert not users, users


def test_a_stop_signal_is_seen_by_shutdown_requested(redis_url: str):
    conn = q.connect(redis_url)
    worker = SimpleWorker([q.ingest_queue(conn)], connection=conn, serializer=JSONSerializer, name="pin-stop")
    assert not internals.shutdown_requested(worker)
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        with pytest.raises(StopRequested):  # an idle worker stops by this exception
            worker.request_stop(signal.SIGTERM, None)  # rq's own SIGTERM handler
    finally:
        for s, h in handlers.items():
            signal.signal(s, h)
    assert internals.shutdown_requested(worker)


@pytest.mark.parametrize("worker_class", [internals.PromptWorker, pytest.param(SimpleWorker, marks=pytest.mark.xfail(
    strict=True, reason="rq's own subscribe: its teardown waits out a 60 s control-channel wait"))])
def test_an_idle_workers_teardown_ends_at_once(redis_url: str, worker_class):
    """A stop asked while the worker idles ends in about a second: rq's teardown unsubscribes, then joins the
    control-channel thread, which then waits its whole `sleep_time` for a subscription."""
    conn = q.connect(redis_url)
    worker = worker_class([q.ingest_queue(conn)], connection=conn, serializer=JSONSerializer, name="pin-teardown")
    worker.subscribe()
    time.sleep(0.3)
    worker.pubsub.unsubscribe()  # as rq's teardown does first; the thread then waits for a subscription
    time.sleep(0.5)
    done = threading.Thread(target=worker.unsubscribe, daemon=True)
    done.start()
    done.join(5)
    assert not done.is_alive()


def test_worker_record_key_is_where_rq_registers_a_worker(redis_url: str):
    conn = q.connect(redis_url)
    worker = SimpleWorker([q.ingest_queue(conn)], connection=conn, serializer=JSONSerializer, name="pin-record")
    worker.register_birth()
    assert conn.exists(internals.worker_record_key("pin-record"))
    worker.register_death()
    conn.delete(internals.worker_record_key("pin-record"))


def test_where_is_follows_a_job_from_the_queue_to_a_workers_hand(redis_url: str):
    conn = q.connect(redis_url)
    queue = q.ingest_queue(conn)
    job = q.enqueue_batch(queue, [(1, "/in/a.jpg", 10, 20)])
    assert job is not None
    assert internals.where_is(conn, queue, job) == (True, False, True)
    # as a worker pops it: moved to the intermediate list, its hash still saying queued
    popped = Queue.dequeue_any([queue], timeout=None, connection=conn, serializer=JSONSerializer)
    assert popped is not None and popped[0].id == job.id
    assert internals.where_is(conn, queue, job) == (False, True, True)
    assert job.id in internals.intermediate_list(queue).get_job_ids()
    job.set_status(JobStatus.STARTED)
    assert internals.where_is(conn, queue, job) == (False, True, False)
    internals.intermediate_list(queue).remove(job.id)
    assert internals.where_is(conn, queue, job)[1] is False


class _Recording(httpcore.NetworkBackend):
    def __init__(self) -> None:
        self.inner = httpcore.SyncBackend()
        self.connects = 0

    def connect_tcp(self, host, port, timeout=None, local_address=None, socket_options=None):
        self.connects += 1
        return self.inner.connect_tcp(host, port, timeout, local_address, socket_options)


class _Ok(BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


def test_set_connection_pool_sends_the_transports_requests_through_that_pool():
    server = HTTPServer(("127.0.0.1", 0), _Ok)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        backend = _Recording()
        transport = httpx.HTTPTransport()
        internals.set_connection_pool(transport, httpcore.ConnectionPool(network_backend=backend))
        with httpx.Client(transport=transport) as client:
            assert client.get(f"http://127.0.0.1:{server.server_port}/").status_code == 204
        assert backend.connects == 1
    finally:
        server.shutdown()
