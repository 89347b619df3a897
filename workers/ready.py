"""Whether this worker may take jobs: Redis accepts its user, and every watched root is visible here.

A fleet worker runs on a host of its own: its password can be wrong, the Redis ACL can lack a rule, the mount
holding the roots can be missing. None of these is the files' fault, so the worker takes no jobs while one holds
(a job taken would end in `error` verdicts for files that other workers can read, or in a traceback), says why
in one log line, and looks again with a growing pause until it clears.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path

import redis

from workers import queue as q

log = logging.getLogger(__name__)

RETRY_S = (1.0, 2.0, 5.0, 10.0, 30.0)
"""Pauses between looks while the worker may not take jobs; the last one repeats."""


def redis_problem(conn: redis.Redis, name: str) -> str | None:
    """Why Redis will not serve this worker, or None. Touches the keys a worker needs first (its record,
    the ingest queue), so a missing ACL rule shows here, named, rather than as a traceback mid-job."""
    try:
        conn.ping()
        conn.hgetall(q.WORKER_KEY.format(name=name))
        conn.llen(q.ingest_queue(conn).key)
    except redis.AuthenticationError as exc:  # WRONGPASS, NOAUTH, a disabled user
        return f"Redis refused the worker's login ({_one_line(exc)}): check the user and password in redis.url"
    except redis.exceptions.NoPermissionError as exc:
        return (f"Redis's ACL refused the worker ({_one_line(exc)}): give its user the rules of "
                f"deploy/redis-acl.conf")
    except redis.ConnectionError as exc:
        return f"Redis is unreachable ({_one_line(exc)})"
    except redis.RedisError as exc:
        return f"Redis answered with an error ({_one_line(exc)})"
    return None


def roots_problem(roots: Sequence[Path]) -> str | None:
    """The first watched root this host cannot list, or None. Jobs carry paths: a worker on a host without
    the roots' mount would fail every file it took."""
    for root in roots:
        if not (os.path.isdir(root) and os.access(root, os.R_OK | os.X_OK)):
            return f"the watched root {root} is not visible on this host (is it mounted here, at that path?)"
    return None


def wait_until_ready(conn: redis.Redis, name: str, roots: Sequence[Path]) -> None:
    """Return once Redis serves this worker and its roots are visible. Each distinct problem is logged once,
    as one line, and its clearing too; SIGTERM meanwhile ends the process as usual (no job is held)."""
    said: str | None = None
    tries = 0
    while (problem := redis_problem(conn, name) or roots_problem(roots)) is not None:
        if problem != said:
            log.error("worker %s takes no jobs: %s; looking again in %.0f s, then up to every %.0f s", name,
                      problem, RETRY_S[0], RETRY_S[-1])
            said = problem
        time.sleep(RETRY_S[min(tries, len(RETRY_S) - 1)])
        tries += 1
    if said is not None:
        log.warning("worker %s: ready, taking jobs", name)


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__
