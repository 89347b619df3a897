"""The index owner: the single writer that turns worker features into verdicts.

Verdicts are decided strictly in catalog-id (arrival) order: a file waits until every earlier file has
its features, so a verdict can only point to an earlier file and never has to be revised. The verdicts of
a batch of consecutive files, their state changes and their webhook outbox rows commit in one SQLite
transaction; the hash table and vector index are caches that can always be rebuilt from the catalog.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

from daemon import __version__
from daemon.catalog import Catalog, Row
from daemon.config import Settings
from daemon.events import FileInfo, Match, VerdictEvent
from daemon.hashindex import HashIndex
from daemon.vectors import VectorIndex
from daemon.verdict import Decision, Thresholds, decide
from workers.features import Features
from workers.hashing import WINDOWS
from workers.models.base import identity_of

log = logging.getLogger("dupwatch.owner")

Sink = Callable[[VerdictEvent], None]


class IndexOwner:
    def __init__(self, settings: Settings, catalog: Catalog, sinks: Iterable[Sink] = (),
                 on_commit: Callable[[Any, VerdictEvent], None] | None = None):
        self.settings = settings
        self.catalog = catalog
        self.sinks = list(sinks)
        self.on_commit = on_commit  # called inside the verdict's transaction (webhook outbox)
        self.model_identity = None if settings.hash_only else identity_of(settings.model)
        self.thresholds = Thresholds.resolve(settings.match, None if settings.hash_only else settings.model)
        self.hashes = HashIndex(len(WINDOWS))
        self.vectors: VectorIndex | None = None
        self._foreign_models: set[str] = set()
        self.decided = 0  # verdicts decided by this process (status line, metrics)
        self._load()

    # --- start-up ------------------------------------------------------------------------------------

    def _load(self) -> None:
        """Rebuild the hash table and top up the vector snapshot from the catalog, streamed in id order.

        The hash table is built once from arrays (one segment), not row by row: at 10 M rows that is one
        counting sort instead of a merge per 2 k rows."""
        started = time.monotonic()
        keep = self.settings.match.keep_deleted
        width = len(WINDOWS) * 8
        hashed: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        vec_ids: list[np.ndarray] = []
        batch: list[Any] = []
        for r in self.catalog.decided_features(include_deleted=keep):
            batch.append(r)
            if len(batch) == 50_000:
                hashed.append(self._hash_arrays(batch, width))
                vec_ids.append(self._vector_ids(batch))
                batch = []
        if batch:
            hashed.append(self._hash_arrays(batch, width))
            vec_ids.append(self._vector_ids(batch))
        self.hashes.load(hashed)
        if self.vectors is not None:
            missing = self.vectors.reconcile(np.concatenate(vec_ids) if vec_ids else np.zeros(0, np.int64))
            for start in range(0, len(missing), 10_000):
                chunk = missing[start:start + 10_000]
                rows = self.catalog.query(
                    f"SELECT id, embedding FROM files WHERE id IN ({','.join('?' * len(chunk))}) ORDER BY id",
                    [int(i) for i in chunk])
                self.vectors.add_many(np.asarray([r["id"] for r in rows], np.int64),
                                      np.stack([np.frombuffer(r["embedding"], np.float32) for r in rows]))
            if len(missing):
                log.info("vector index: added %d vectors the snapshot lacked", len(missing))
        log.info("index loaded: %d hashed, %d vectors in %.2fs", len(self.hashes),
                 len(self.vectors) if self.vectors else 0, time.monotonic() - started)

    @staticmethod
    def _hash_arrays(rows: list[Any], width: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(ids, windows [n, W], dhash) of the rows hashed with this build's windows (others are skipped,
        as `HashIndex.add` skips them)."""
        rows = [r for r in rows if r["windows"] is not None and r["dhash"] is not None and len(r["windows"]) == width]
        ids = np.fromiter((r["id"] for r in rows), np.int64, len(rows))
        windows = np.frombuffer(b"".join(r["windows"] for r in rows), np.int64).reshape(len(rows), width // 8)
        return ids, windows, np.fromiter((r["dhash"] for r in rows), np.int64, len(rows))

    def _vector_ids(self, rows: list[Any]) -> np.ndarray:
        """Ids of the rows embedded by this index's model; opens the vector index at the first one."""
        ids = [r["id"] for r in rows if r["embedding_bytes"] is not None and r["model"] == self.model_identity]
        if ids and self.vectors is None:
            first = next(r for r in rows if r["id"] == ids[0])
            self._open_vectors(first["embedding_bytes"] // 4)
        return np.asarray(ids, np.int64)

    def _open_vectors(self, ndim: int) -> None:
        tag = hashlib.sha1((self.model_identity or "").encode()).hexdigest()[:10]
        path = Path(self.settings.state_dir) / f"vectors-{tag}.usearch"
        self.vectors = VectorIndex(path, ndim, self.settings.index.dtype)

    # --- the flow ------------------------------------------------------------------------------------

    def register(self, path: str, size: int | None, mtime_ns: int | None) -> int | None:
        return self.catalog.register(path, size, mtime_ns)

    def accept(self, features: Iterable[Features]) -> int:
        """Store worker results. Duplicates (a re-queued job finishing twice) are ignored."""
        stored = 0
        for f in features:
            stored += self.catalog.store_features(f.id, f.stored())
        return stored

    def decide_ready(self, limit: int = 1000) -> list[VerdictEvent]:
        """Decide every featured file at the head of the arrival order, up to the first pending one."""
        events: list[VerdictEvent] = []
        while len(events) < limit:
            head = self.catalog.head(min(256, limit - len(events)))
            ready = list(itertools.takewhile(lambda row: row.state != "pending", head))
            if ready:
                events += self._decide_batch(ready)
            if not ready or len(ready) < len(head):
                break
        return self._emit(events)

    def _emit(self, events: list[VerdictEvent]) -> list[VerdictEvent]:
        for event in events:
            for sink in self.sinks:
                try:
                    sink(event)
                except Exception:  # a broken sink must not stop verdicts
                    log.exception("sink %r failed", sink)
        return events

    def _decide_batch(self, rows: list[Row]) -> list[VerdictEvent]:
        """Verdicts, state changes and outbox rows of consecutive rows in one transaction: one commit (one
        WAL sync) per batch instead of per file. Each row is indexed in memory as soon as it is decided,
        so the next row of the batch can match it; the catalog reads of the batch see its own uncommitted
        verdicts (same connection). If the batch fails, nothing of it is committed, and the in-memory
        indexes are rebuilt from the catalog so they hold no verdict the catalog lacks."""
        events: list[VerdictEvent] = []
        try:
            with self.catalog.transaction() as conn:
                for row in rows:
                    decision = self.evaluate(row) if row.error is None else Decision("error")
                    now = time.time()
                    cur = conn.execute(
                        "UPDATE files SET state = 'decided', verdict = ?, match_id = ?, score = ?,"
                        " hash_distance = ?, signal = ?, edit = ?, decided_at = ? WHERE id = ? AND state = 'featured'",
                        (decision.kind, decision.match_id, decision.score, decision.hash_distance,
                         decision.signal, None if decision.edit is None else json.dumps(decision.edit), now,
                         row.id))
                    event = self._event(row, decision, now)
                    if cur.rowcount == 1 and self.on_commit is not None:
                        self.on_commit(conn, event)
                    if row.error is None:
                        self._index(row)
                    events.append(event)
        except BaseException:
            log.error("a batch of %d verdicts was rolled back; rebuilding the in-memory index", len(rows))
            self.hashes = HashIndex(len(WINDOWS))
            self._load()
            raise
        self.decided += len(events)
        return events

    def evaluate(self, row: Row, excluded: set[int] | None = None) -> Decision:
        """The verdict for a featured row against everything decided before it (no writes)."""
        keep = self.settings.match.keep_deleted
        excluded = excluded if excluded is not None else self._not_duplicates(row.id)
        exact = None
        for column, signal in (("sha256", "sha256"), ("pixel_sha", "pixels")):
            value = getattr(row, column)
            if value is not None:
                hit = self.catalog.decided_with(column, value, row.id, include_deleted=keep, excluded=excluded)
                if hit is not None:
                    exact = (hit.id, signal)
                    break
        hashed = None
        if row.windows is not None and row.dihedral is not None and row.dhash is not None:
            hashed = self.hashes.best(row.windows, row.dihedral, row.dhash, row.id, self.thresholds.hashes, excluded)
        neighbours: list[tuple[int, float]] = []
        if row.embedding is not None and self.vectors is not None and row.model == self.model_identity:
            neighbours = [(i, s) for i, s in self.vectors.search(row.embedding, self.settings.match.top_k)
                          if i < row.id and i not in excluded]
        return decide(exact, hashed, neighbours, self.thresholds)

    def _not_duplicates(self, file_id: int) -> set[int]:
        rows = self.catalog.query("SELECT a, b FROM not_duplicates WHERE a = ? OR b = ?", (file_id, file_id))
        return {r["a"] if r["b"] == file_id else r["b"] for r in rows}

    def _index(self, row: Row) -> None:
        if row.windows is not None and row.dhash is not None:
            self.hashes.add(row.id, row.windows, row.dhash)
        if row.embedding is None:
            return
        if row.model != self.model_identity:
            if row.model not in self._foreign_models:
                self._foreign_models.add(row.model or "")
                log.warning("a worker embeds with %s but this index uses %s: those vectors are not indexed",
                            row.model, self.model_identity)
            return
        if self.vectors is None:
            self._open_vectors(len(row.embedding))
        assert self.vectors is not None
        self.vectors.add(row.id, row.embedding)

    def _event(self, row: Row, decision: Decision, now: float) -> VerdictEvent:
        matches: tuple[Match, ...] = ()
        if decision.match_id is not None:
            m = self.catalog.get(decision.match_id)
            assert m is not None
            matches = (Match(file=_info(m), kind=decision.kind, score=decision.score or 0.0,
                             hash_distance=decision.hash_distance, signal=decision.signal or "",
                             edit=decision.edit),)
        return VerdictEvent(kind=decision.kind, file=_info(row), detected_at=row.detected_at, decided_at=now,
                            matches=matches, reason=row.error, version=__version__)

    # --- changes on disk -----------------------------------------------------------------------------

    def deleted(self, path: str) -> None:
        file_id = self.catalog.deleted(path)
        if file_id is not None and not self.settings.match.keep_deleted:
            self.hashes.remove(file_id)
            if self.vectors is not None:
                self.vectors.remove(file_id)

    def moved(self, src: str, dest: str) -> bool:
        return self.catalog.moved(src, dest)

    def save(self) -> None:
        if self.vectors is not None:
            self.vectors.save()


def event_for(row: Row, catalog: Catalog) -> VerdictEvent:
    """The event of an already decided row (for `scan` re-runs and the API)."""
    decision = Decision(row.verdict or "error", row.match_id, row.score, row.hash_distance, row.signal, row.edit)
    matches: tuple[Match, ...] = ()
    if row.match_id is not None:
        m = catalog.get(row.match_id)
        if m is not None:
            matches = (Match(_info(m), decision.kind, decision.score or 0.0, decision.hash_distance,
                             decision.signal or "", decision.edit),)
    return VerdictEvent(kind=decision.kind, file=_info(row), detected_at=row.detected_at,
                        decided_at=row.decided_at or 0.0, matches=matches, reason=row.error, version=__version__)


def _info(row: Row) -> FileInfo:
    return FileInfo(id=row.id, path=row.path, size=row.size, sha256=row.sha256, width=row.width,
                    height=row.height)
