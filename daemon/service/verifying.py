"""The daemon's verifier: each verification the index owner asks for is a job for the workers.

The daemon process does no image work: a `VerifyRequest` goes to the verify queue (workers.queue), a worker
aligns the pair and appends the answer to the results stream, and the loop hands it over (`deliver`), which
completes the future the owner's in-order commit waits on. Nothing here survives a restart, and nothing needs
to: a row waiting for its verification is still undecided in the catalog, so the next start evaluates it again
and asks the same question under the same job id.

A job can be lost like a feature job (its worker died mid-job, Redis restarted empty, a worker popped it and
died before starting it, it failed): `check`, run at every reconcile, sends such a request again, and after
`max_attempts` sends answers it with no verification (the owner then decides on the scores alone, as it does
for a pair whose file is gone), so one file that kills its workers cannot hold back every verdict after it.
"""

from __future__ import annotations

import json
import logging
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import redis
from rq.exceptions import NoSuchJobError
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer

from workers import library_internals as internals
from workers import queue as q
from workers.verify import Verified, VerifyRequest

log = logging.getLogger(__name__)


@dataclass
class _Asked:
    """A request waiting for its answer."""

    future: Future[Verified]
    request: dict[str, Any]
    sent: bool = False  # enqueued (False: Redis was away; `check` sends it)
    sends: int = 0
    missing: bool = False  # its job was missing from Redis at the last check
    in_hand_since: float | None = None  # when a check first saw it popped by a worker and not started


@dataclass
class QueueVerifier:
    """Verifications as rq jobs on the verify queue; answers by `deliver`, losses repaired by `check`."""

    conn: redis.Redis
    job_timeout: int | None = None
    max_attempts: int = 3
    _asked: dict[str, _Asked] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.queue = q.verify_queue(self.conn, self.job_timeout)

    def __len__(self) -> int:
        return len(self._asked)

    def submit(self, request: VerifyRequest) -> Future[Verified]:
        job_id = request.job_id()
        asked = self._asked.get(job_id)
        if asked is None:
            asked = self._asked[job_id] = _Asked(Future(), request.to_json())
            self._send(job_id, asked)
        return asked.future

    def deliver(self, body: bytes | str) -> None:
        """An answer from the results stream. One nobody waits for (a duplicate of a job sent again, or asked
        by an earlier run of the daemon) is dropped."""
        message = json.loads(body)
        asked = self._asked.pop(message["job"], None)
        if asked is not None:
            asked.future.set_result(Verified.from_json(message["answer"]))

    def check(self, dead_worker: str | None = None) -> None:
        """Send again each request whose job is lost; `dead_worker`: a worker known to have died just now,
        whose started jobs are lost without waiting for its record to expire."""
        if not self._asked:
            return
        queued = set(self.queue.get_job_ids())
        in_hand = set(internals.intermediate_list(self.queue).get_job_ids())
        for job_id, asked in list(self._asked.items()):
            if not asked.sent:
                self._send(job_id, asked)
            elif job_id in queued:  # waiting its turn: nothing to read (most of them, behind a backlog)
                asked.missing, asked.in_hand_since = False, None
            elif self._lost(job_id, asked, in_hand, dead_worker):
                self._send_again(job_id, asked)

    def close(self) -> None:
        """Nothing to stop: unanswered rows stay undecided in the catalog and are asked again at the next start."""

    def _lost(self, job_id: str, asked: _Asked, in_hand: set[str], dead_worker: str | None) -> bool:
        try:
            job = Job.fetch(job_id, connection=self.conn, serializer=JSONSerializer)
            status = job.get_status(refresh=False)
        except NoSuchJobError:
            # a finished job is deleted as its answer is appended: missing at one check, its answer may still
            # be unread; missing at two, it is gone (Redis restarted empty, or the answer went to a daemon that died)
            lost, asked.missing = asked.missing, True
            return lost
        asked.missing = False
        if status == JobStatus.FAILED:
            return True
        if status == JobStatus.STARTED:
            return job.worker_name == dead_worker or \
                q.job_runner(self.conn, job.worker_name or "", job.started_at) != q.RUNNING
        if status == JobStatus.QUEUED:  # and not in the queue as it was read
            if job_id not in in_hand:
                return False  # started since the queue was read: the next check sees it so
            now = time.monotonic()
            asked.in_hand_since = asked.in_hand_since or now
            return now - asked.in_hand_since >= q.WORKER_TTL_S  # popped by a worker that died before starting it
        return False

    def _send_again(self, job_id: str, asked: _Asked) -> None:
        try:
            Job.fetch(job_id, connection=self.conn, serializer=JSONSerializer).delete()  # frees the id
        except NoSuchJobError:
            pass
        internals.intermediate_list(self.queue).remove(job_id)
        asked.missing, asked.in_hand_since = False, None
        if asked.sends >= self.max_attempts:
            log.warning("verification %s lost %d times: deciding file %s without it", job_id, asked.sends,
                        asked.request["file_id"])
            del self._asked[job_id]
            asked.future.set_result(Verified())
            return
        log.info("verification %s lost (its worker died, or Redis lost it): sending it again", job_id)
        self._send(job_id, asked)

    def _send(self, job_id: str, asked: _Asked) -> None:
        try:
            q.enqueue_verify(self.queue, job_id, asked.request)
        except redis.RedisError as exc:
            asked.sent = False
            log.debug("verification %s not sent (%s); sent at the next check", job_id, exc)
            return
        asked.sent = True
        asked.sends += 1
