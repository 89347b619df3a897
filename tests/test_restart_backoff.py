"""How long `dupwatch run` waits before restarting a local worker that died."""

from __future__ import annotations

from daemon.service.runner import WORKER_RESTART_BACKOFF_S, WORKER_STABLE_S, RestartBackoff


def test_a_worker_that_lived_long_enough_restarts_after_the_shortest_delay_again() -> None:
    """Deaths in a row climb the delays; a life of WORKER_STABLE_S means the worker was working, so the
    crash after it waits the shortest delay, not the longest one an old crash loop reached."""
    backoff = RestartBackoff()
    crash_loop = [backoff.delay("w0", 0.5) for _ in range(len(WORKER_RESTART_BACKOFF_S) + 1)]
    assert crash_loop == [*WORKER_RESTART_BACKOFF_S, WORKER_RESTART_BACKOFF_S[-1]]
    assert backoff.delay("w0", WORKER_STABLE_S) == WORKER_RESTART_BACKOFF_S[0]
    assert backoff.delay("w0", WORKER_STABLE_S - 1) == WORKER_RESTART_BACKOFF_S[1]  # a new loop climbs again
    assert backoff.delay("w1", 0.5) == WORKER_RESTART_BACKOFF_S[0]  # each worker counts its own deaths
