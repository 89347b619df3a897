"""The parts of rq and httpx that dupwatch uses beyond their public API, in one module.

Each is named here and nowhere else, and tests/test_library_internals.py pins each one against the installed
library, so a release that moves one fails that test rather than a crash-recovery path in production. The rest of
the code calls these functions; `grep -rn "\\._[a-z]" --include=*.py daemon workers` should find no other
library's private name.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import redis
from rq import Queue, SimpleWorker
from rq.intermediate_queue import IntermediateQueue
from rq.job import Job
from rq.worker import BaseWorker

if TYPE_CHECKING:
    import httpcore
    import httpx


def shutdown_requested(worker: BaseWorker) -> bool:
    """Whether rq's SIGTERM/SIGINT handler asked `worker` to stop. rq records it only in a private attribute: an
    idle worker stops by an exception, without setting its `_stop_requested` flag either, and there is no
    accessor. A loop that ended without it ended because Redis went away, and is rebuilt."""
    return worker._shutdown_requested_date is not None


class PromptWorker(SimpleWorker):
    """rq's SimpleWorker whose control-channel thread wakes every second. rq's waits up to 60 s for a message,
    and with no subscription (rq's teardown unsubscribes first) redis-py's wait is the whole 60 s, which the
    teardown then joins: an idle worker asked to stop took until `run`'s stop timeout killed it (4 of 6 idle
    stops, 23 s). rq's `subscribe` as it is, but for that sleep; its exception handler is private."""

    def subscribe(self) -> None:
        self.pubsub = self.connection.pubsub()
        self.pubsub.subscribe(**{self.pubsub_channel_name: self.handle_payload})
        self.pubsub_thread = self.pubsub.run_in_thread(  # type: ignore[assignment]  # rq declares it None
            sleep_time=PUBSUB_WAKE_S, daemon=True, exception_handler=self._pubsub_exception_handler)


PUBSUB_WAKE_S = 1.0
"""How long the control-channel thread of a `PromptWorker` waits at most before it looks whether to stop."""


def worker_record_key(name: str) -> str:
    """The Redis key of rq's own record of the worker `name` (its registration). A worker whose loop ended with a
    Redis outage drops it, since rq refuses to register a new loop over a live-looking record."""
    return SimpleWorker.redis_worker_namespace_prefix + name


def intermediate_list(queue: Queue) -> IntermediateQueue:
    """rq's list of jobs a worker has popped but not yet marked started (it moves a job there first)."""
    return queue.intermediate_queue


def where_is(conn: redis.Redis, queue: Queue, job: Job) -> tuple[bool, bool, bool]:
    """(in `queue`, in its intermediate list, its hash still says queued), read in one MULTI so the three agree.
    Reads rq's Redis layout directly: the queue and intermediate lists by key, the job hash's `status` field."""
    with conn.pipeline() as pipe:
        pipe.lpos(queue.key, job.id)
        pipe.lpos(intermediate_list(queue).key, job.id)
        pipe.hget(job.key, "status")
        in_queue, in_hand, status = pipe.execute()
    return in_queue is not None, in_hand is not None, status == b"queued"


def set_connection_pool(transport: httpx.HTTPTransport, pool: httpcore.ConnectionPool) -> None:
    """Make `transport` send through `pool`. httpx has no setting for httpcore's network backend; the pool is the
    only thing its transport holds, so a pool built with the backend wanted replaces it."""
    transport._pool = pool
