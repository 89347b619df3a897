"""What the HTTP API may see of the daemon: one small interface, so the API never reaches into its parts.

Why a Protocol and not the `Daemon` itself: the API runs on its own threads beside a main loop that owns the
index, the catalog's writer and the sinks. Naming here exactly what the API reads (and which calls must run on
the main loop) keeps that rule checkable by mypy, and lets the daemon's internals change without the API
following them. `daemon.service.loop.Daemon` implements it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from daemon.config import Settings
    from daemon.events import VerdictEvent
    from daemon.health import Health
    from daemon.index.catalog import Row


@dataclass(frozen=True)
class IndexState:
    """The in-memory index as /readyz and /metrics report it."""

    hashed: int
    copy_vectors: int  # the copy descriptor's index (SSCD)
    vectors: int  # the semantic model's index
    catchup_done: bool
    stopping: bool
    watch_overflows: int = 0
    """inotify event-queue overflows the watcher has seen (each lost events and started a rescan)."""
    rebuilding: tuple[dict[str, Any], ...] = ()
    """Vector ranges being rebuilt from the catalog (index, lo, hi, built, total): searched by hashes and
    the loaded segments meanwhile."""


class DaemonPort(Protocol):
    """The daemon as the API sees it. Methods marked "main loop" must be called through `LoopCalls`."""

    started_at: float
    """When the daemon process started (unix seconds)."""

    redis_url: str
    """The Redis the daemon and its workers meet at (the API opens its own client with short timeouts)."""

    @property
    def settings(self) -> Settings:
        """The current settings: read per request, since SIGHUP replaces them (api.token, webhooks...)."""

    @property
    def catalog_path(self) -> Path:
        """The catalog file, which the API opens read-only."""

    @property
    def model_identity(self) -> str | None:
        """The embedding model the index holds vectors of (None: hash-only)."""

    def in_watched_root(self, path: str) -> bool:
        """Whether `path` lies inside a watched root: the API serves no bytes from anywhere else."""

    def index_state(self) -> IndexState:
        """Sizes and phase of the in-memory index (read without a lock: counts may be one verdict behind)."""

    @property
    def health(self) -> Health:
        """The degraded states with their episode counts and the private Redis's restarts (/metrics)."""

    def degraded(self) -> dict[str, str]:
        """What is wrong but not fatal (Redis down, disk full...), by part: /healthz and /readyz report it."""

    def health_counters(self) -> dict[str, Any]:
        """{"episodes": {reason: times entered}, "redis_restarts": n}: the metrics' counters of degraded states."""

    def webhook_stats(self) -> dict[str, Any]:
        """The webhook sender's counters and histograms (Deliverer.stats_snapshot)."""

    def add_sink(self, sink: Callable[[VerdictEvent], None]) -> None:
        """Be told of every committed verdict (the API's latency histogram)."""

    def signals(self, probe: Row) -> str:
        """Main loop. Which signals a search for `probe` could use ("hashes only", "hashes and ...")."""

    def rank(self, probe: Row, top_k: int) -> list[dict[str, Any]]:
        """Main loop: the catalogued files closest to an uploaded image's features."""

    def mark_not_duplicate(self, later: int, earlier: int, marked_at: float) -> None:
        """Main loop: never flag this pair again (committed between two verdict batches)."""
