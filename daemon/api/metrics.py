"""Prometheus metrics for the API's /metrics.

Counts of files, verdicts and errors are read from the catalog at scrape time, not counted in memory:
the catalog is the truth, so the numbers survive restarts, agree with `dupwatch status`, and a counter
never goes backwards (rows and verdicts are never removed). Only what the catalog does not keep cheaply
is measured live: the detected -> decided latency (an owner sink) and the webhook sender's counters
(Deliverer.stats_snapshot()). Everything lives in a registry of its own, not prometheus_client's global
one, so nothing else in the process leaks into the output.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import redis
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

from daemon.events import KINDS, VerdictEvent
from daemon.health import REASONS
from daemon.notify import outbox
from daemon.notify.deliverer import LATENCY_BUCKETS_S
from daemon.views.status import catalog_counts, redis_status

if TYPE_CHECKING:
    from daemon.api.port import DaemonPort

MODEL_STATES = ("loaded", "hash-only", "off", "unavailable", "no workers")
"""What the workers report about each model (daemon.views.status.redis_status)."""


class Metrics:
    def __init__(self, daemon: DaemonPort, read_catalog: Callable[[], sqlite3.Connection], client: redis.Redis):
        self.registry = CollectorRegistry()
        self.latency = Histogram(
            "dupwatch_verdict_latency_seconds", "Time from a file being detected to its verdict being committed.",
            buckets=LATENCY_BUCKETS_S, registry=self.registry)
        self.registry.register(_Collector(daemon, read_catalog, client))

    def observe(self, event: VerdictEvent) -> None:
        """Owner sink: called once per verdict, after its commit."""
        self.latency.observe(max(0.0, event.decided_at - event.detected_at))

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _Collector:
    """Reads the catalog, Redis, the in-memory index and the webhook sender at each scrape."""

    def __init__(self, daemon: DaemonPort, read_catalog: Callable[[], sqlite3.Connection], client: redis.Redis):
        self.daemon, self.read_catalog, self.client = daemon, read_catalog, client

    def collect(self) -> list[Metric]:
        return [*self._catalog(), *self._redis(), *self._index(), *self._webhooks(), *self._health(),
                _gauge("dupwatch_start_time_seconds", "When this daemon process started (unix seconds).",
                       self.daemon.started_at)]

    def _catalog(self) -> list[Metric]:
        conn = self.read_catalog()
        try:
            counts = catalog_counts(conn)
            deliveries = outbox.counts_by_state(conn)
        finally:
            conn.close()
        verdicts = CounterMetricFamily("dupwatch_verdicts", "Verdicts committed, by kind.", labels=["kind"])
        for kind in KINDS:
            verdicts.add_metric([kind], counts["verdicts"].get(kind, 0))
        errors = CounterMetricFamily("dupwatch_errors", "Error verdicts, by reason code.", labels=["reason"])
        for reason, n in sorted(counts["errors"].items()):
            errors.add_metric([reason or "unknown"], n)
        queued = GaugeMetricFamily("dupwatch_webhook_outbox", "Webhook deliveries in the outbox, by state.",
                                   labels=["state"])
        for state in outbox.STATES:
            queued.add_metric([state], deliveries.get(state, 0))
        return [
            CounterMetricFamily("dupwatch_files_seen", "Files that landed in a watched root (each new version "
                                "of a path counts).", value=counts["files"]),
            _gauge("dupwatch_files_pending", "Files seen that have no verdict yet.", counts["pending"]),
            verdicts, errors, queued,
        ]

    def _redis(self) -> list[Metric]:
        try:
            live = redis_status(self.client, self.daemon.settings)
        except redis.RedisError:
            return [_gauge("dupwatch_redis_up", "1 when Redis answers.", 0)]
        up = _gauge("dupwatch_redis_up", "1 when Redis answers.", 1)
        depth = GaugeMetricFamily("dupwatch_queue_depth", "Work waiting in Redis: batch jobs queued for "
                                  "workers, result batches not yet read by the index owner.", labels=["queue"])
        for name, n in live["queues"].items():
            depth.add_metric([name], n)
        model = GaugeMetricFamily("dupwatch_model_state", "1 for the semantic model's state as the workers "
                                  "report it ('unavailable': no 'similar' verdicts against the configuration).",
                                  labels=["state"])
        copy = GaugeMetricFamily("dupwatch_copy_model_state", "1 for the copy descriptor's state as the workers "
                                 "report it ('unavailable': edited copies by hashes only against the "
                                 "configuration).", labels=["state"])
        for state in MODEL_STATES:
            model.add_metric([state], int(live["model"]["state"] == state))
            copy.add_metric([state], int(live["copy_model"]["state"] == state))
        return [up, depth, model, copy, _gauge("dupwatch_workers", "Workers registered in Redis.", len(live["workers"]))]

    def _index(self) -> list[Metric]:
        index = self.daemon.index_state()
        size = GaugeMetricFamily("dupwatch_index_entries", "Files searchable in the in-memory indexes.",
                                 labels=["index"])
        size.add_metric(["hash"], index.hashed)
        size.add_metric(["copy_vector"], index.copy_vectors)
        size.add_metric(["vector"], index.vectors)
        rebuild = GaugeMetricFamily("dupwatch_index_rebuild_vectors", "Vectors of ranges being rebuilt from the "
                                    "catalog (searched by hashes and the loaded segments meanwhile): built and total.",
                                    labels=["index", "of"])
        for part in index.rebuilding:
            rebuild.add_metric([part["index"], "built"], part["built"])
            rebuild.add_metric([part["index"], "total"], part["total"])
        overflows = CounterMetricFamily(
            "dupwatch_watch_overflows", "inotify event-queue overflows (events lost; each starts a rescan).",
            value=index.watch_overflows)
        return [size, rebuild, overflows]

    def _health(self) -> list[Metric]:
        now, counters = self.daemon.degraded(), self.daemon.health_counters()
        degraded = GaugeMetricFamily("dupwatch_degraded", "1 while the daemon waits on this (files wait, "
                                     "work resumes by itself).", labels=["reason"])
        episodes = CounterMetricFamily("dupwatch_degraded_episodes", "Times the daemon entered this degraded "
                                       "state.", labels=["reason"])
        for reason in REASONS:
            degraded.add_metric([reason], int(reason in now))
            episodes.add_metric([reason], counters["episodes"][reason])
        return [degraded, episodes, CounterMetricFamily("dupwatch_redis_restarts", "Times the private Redis "
                                                        "died and was started again.", value=counters["redis_restarts"])]

    def _webhooks(self) -> list[Metric]:
        stats = self.daemon.webhook_stats()
        counters = [
            CounterMetricFamily("dupwatch_webhook_sent", "Webhook deliveries accepted by their receiver.",
                                value=stats["sent"]),
            CounterMetricFamily("dupwatch_webhook_failed_attempts", "Webhook attempts that did not succeed.",
                                value=stats["failed_attempts"]),
            CounterMetricFamily("dupwatch_webhook_retried", "Failed webhook attempts scheduled for a retry.",
                                value=stats["retried"]),
            CounterMetricFamily("dupwatch_webhook_dead", "Webhook deliveries given up (dead-lettered).",
                                value=stats["dead"]),
        ]
        return [*counters,
                _histogram("dupwatch_webhook_request_seconds", "Webhook HTTP round trips, failures included.",
                           stats["request_seconds"]),
                _histogram("dupwatch_webhook_delivery_lag_seconds", "Detection to webhook delivered.",
                           stats["delivery_lag_seconds"])]


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=value)


def _histogram(name: str, doc: str, hist: dict[str, Any]) -> HistogramMetricFamily:
    """Deliverer histograms are already cumulative per upper bound, as Prometheus wants them."""
    buckets = [(_le(le), n) for le, n in sorted(hist["buckets"].items())] + [("+Inf", hist["count"])]
    return HistogramMetricFamily(name, doc, buckets=buckets, sum_value=hist["sum"])


def _le(bound: float) -> str:
    return repr(float(bound))

