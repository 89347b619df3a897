"""The index owner: the single writer that turns worker features into verdicts.

Verdicts are decided strictly in catalog-id (arrival) order: a file waits until every earlier file has
its features, so a verdict can only point to an earlier file and never has to be revised. The verdicts of
a batch of consecutive files, their state changes and their webhook outbox rows commit in one SQLite
transaction; the hash table and vector indexes are caches that can always be rebuilt from the catalog.

A batch's hash searches are probed ahead on a second thread (`_probe_ahead`) while the writer evaluates,
indexes and commits the rows before them; each search is finished in order on the writer's thread.

Geometric verification (workers.verify) never runs in the owner: a row whose evidence is not conclusive, or an
edited copy whose `edit` is to be explained, gets a `VerifyRequest` sent to its `Verifier` (the daemon's: a job
for the workers; a one-process command's: threads of its own), and the writer goes on evaluating (and indexing)
the rows after it; verdicts are committed strictly in arrival order as their answers arrive. Rows waiting for an
answer stay queued between calls of `decide_ready`, so the daemon's loop, which receives the answers, never
blocks on one.

Changes on disk (a file replaced, deleted, moved, or its folder moved out) arrive on the watcher's thread.
Their catalog rows change there and then (the catalog serialises writers, and the order against new
landings on the same path must hold), but the hash table and the usearch index take no locks and usearch
may reallocate while adding, so the ids to forget are queued (`retire`) and dropped by the thread that
decides (`decide_ready`), before its next verdict.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import queue
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from daemon import __version__
from daemon.config import Settings
from daemon.events import FileInfo, Match, VerdictEvent
from daemon.index import hashsnapshot
from daemon.index.catalog import Catalog, Row, read_only_connection
from daemon.index.hashindex import HashHit, HashIndex, HashRule, Probed
from daemon.index.pictures import PictureVectors
from daemon.index.vectors import ModelVectors, fetch_vectors
from daemon.index.verdict import Decision, Evidence, Thresholds, decide, inner_rows, pair_score, to_verify
from workers.features import Features
from workers.hashing import WINDOWS
from workers.models.base import identity_of
from workers.models.copy import copy_identity
from workers.precheck import geometry
from workers.verify import LocalVerifier, Verified, VerifyRequest

log = logging.getLogger(__name__)

Sink = Callable[[VerdictEvent], None]

PROBE_CHUNK = 16
"""Rows a task of the prober thread probes ahead, in one kernel call (see `_probe_ahead`): few enough that
the writer's first row of a batch waits little (~7 ms at 10 M), enough that a hand-off costs little."""
MAX_WAITING = 64
"""Rows evaluated ahead of the oldest unanswered verification; past this the writer waits for it (or, in
the daemon, stops evaluating until a later call): it bounds the verifications in flight."""
LOAD_CHUNK = 50_000
"""Decided rows per id range of start-up's stream: what is held at once besides the indexes."""
MOVE_PAIRING_S = 120.0
"""How long a file marked deleted can still turn up under another name as itself (`_arrived`): a move between
two roots reaches their two observers as a delete and a create, in either order."""

HASH_SNAPSHOT = "hashes"
"""The hash index snapshot's folder in the state dir (daemon.index.hashsnapshot)."""
EXACT_KEYS = (("sha256", "sha256"), ("pixel_sha", "pixels"))
"""(catalog column, signal) by which an exact copy is found, in the order they are tried."""


@dataclass(frozen=True)
class Lookups:
    """The catalog's exact lookups for a batch of rows, read in one statement per kind before the batch is
    evaluated (`IndexOwner._lookups`). Rows committed after the read stay in `_uncommitted` until the
    batch is evaluated (`_release_later`), so the two together see what a per-row query would."""

    excluded: dict[int, set[int]]  # row id -> never_copies_of
    first: dict[str, dict[tuple[str, int], int | None]]  # column -> (value, row id) -> first_decided_with


class Verifier(Protocol):
    """Where the owner sends its verifications (workers.verify.LocalVerifier, or the daemon's queue)."""

    def submit(self, request: VerifyRequest) -> Future[Verified]: ...

    def close(self) -> None: ...


class IndexOwner:
    def __init__(self, settings: Settings, catalog: Catalog, sinks: Iterable[Sink] = (),
                 on_commit: Callable[[Any, VerdictEvent], None] | None = None, *, warm_kernels: bool = False,
                 background: bool = False, verifier: Verifier | None = None):
        """`warm_kernels`: load the hash index's compiled kernels at start even while the catalog is too small
        to need them (the daemon: so the verdict that builds the first segment does not wait for them).
        One-shot commands leave them to that first segment, which a small folder never reaches.
        `background`: vector segments lost from disk are rebuilt, and segments merged, on a thread of their
        own while verdicts flow (the daemon); one-shot commands build them before their first verdict.
        `verifier`: where verifications run; by default threads of this process (`workers.verify`)."""
        self.settings = settings
        self.warm_kernels = warm_kernels
        self.catalog = catalog
        self.sinks = list(sinks)
        self.on_commit = on_commit  # called inside the verdict's transaction (webhook outbox)
        self.model_identity = None if settings.hash_only else identity_of(settings.model)
        self.copy_identity = None if settings.hash_only else copy_identity(settings.copy_model)
        self.thresholds = Thresholds.resolve(settings.match, None if settings.hash_only else settings.model,
                                             None if settings.hash_only else settings.copy_model)
        self.hashes = HashIndex(len(WINDOWS))
        self.copies, self.vectors = (
            ModelVectors(role, column, model_column, identity, settings.state_dir, settings.index.dtype,
                         reader=lambda: read_only_connection(catalog.path), writable=not catalog.read_only,
                         background=background)
            for role, column, model_column, identity in (
                ("copy", "copy_embedding", "copy_model", self.copy_identity),
                ("semantic", "embedding", "model", self.model_identity)))
        self.pictures = PictureVectors(self.copy_identity, settings.index.dtype)  # pictures inside frames
        self.verifier: Verifier = verifier if verifier is not None else LocalVerifier(
            max_pixels=settings.decode.max_pixels, max_bytes=settings.decode.max_file_bytes)
        self._prober: ThreadPoolExecutor | None = None  # see _probe_ahead
        # (column, value) -> ids of rows evaluated but not yet committed (waiting on a verification ahead
        # of them): the catalog's exact lookups cannot see them, so exact copies are looked up here too
        self._uncommitted: dict[tuple[str, str], list[int]] = {}
        self._release_later: list[Row] | None = None  # committed rows kept in `_uncommitted` (see Lookups)
        # rows evaluated and indexed, in arrival order, whose verdicts wait for their answers (see _commit)
        self._waiting: deque[tuple[Row, Evidence | None, Future | None, Future | None]] = deque()
        self._seen: set[int] = set()  # the ids in `_waiting`
        self.decided = 0  # verdicts decided by this process (status line, metrics)
        self.looked_away = 0  # hash-only matches the gradient look rejected before a verification (bench/scale.py)
        # ids to drop from the indexes, or (True) to take back in: a deleted file found again under another name
        self._retired: queue.SimpleQueue[tuple[int, bool]] = queue.SimpleQueue()
        self._load()

    # --- start-up ------------------------------------------------------------------------------------

    def _load(self) -> None:
        """Rebuild the hash table and reconcile the vector snapshots with the catalog, streamed in id order.

        The hash table is built once from arrays (one segment), not row by row: at 10 M rows that is one
        counting sort instead of a merge per 2 k rows. The vector snapshots are reconciled range by range
        as the stream goes (`ModelVectors.load_range`), so no whole-catalog id list is held."""
        started = time.monotonic()
        if self.warm_kernels:
            _compile_hash_kernels(self.thresholds.hashes)
        keep = self.settings.match.keep_deleted
        width = len(WINDOWS) * 8
        self._hashes_saved: tuple[int, int] | None = None  # (rows, live rows) of the snapshot on disk
        after = self._restore_hashes(keep)  # rows up to `after` come from the snapshot
        vectors_on = self.copy_identity is not None or self.model_identity is not None
        hashed: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        batch: list[Any] = []
        for r in self.catalog.decided_features(include_deleted=keep, chunk=LOAD_CHUNK,
                                               after=0 if vectors_on else after):  # vector snapshots: every row
            batch.append(r)
            if len(batch) == LOAD_CHUNK:
                self._load_range(batch, batch[-1]["id"], hashed, width, after)
                batch = []
        self._load_range(batch, None, hashed, width, after)
        self.hashes.load(hashed)
        self.pictures.load(self.catalog, keep)
        log.info("index loaded: %d hashed (%s), %d copy vectors, %d semantic vectors in %.2fs", len(self.hashes),
                 f"snapshot up to id {after}" if after else "no snapshot", len(self.copies), len(self.vectors),
                 time.monotonic() - started)

    def _restore_hashes(self, keep: bool) -> int:
        """Take the hash index from its snapshot when it fits the catalog (`hashsnapshot.restore`); return the
        id of its last row (0: no snapshot, everything is streamed and built)."""
        got = hashsnapshot.restore(self._hash_snapshot, len(WINDOWS), self.catalog, keep)
        if not isinstance(got, tuple):
            if got is not None:
                log.warning("hash index snapshot does not fit the catalog (%s): rebuilding it from the catalog", got)
            self._discard_snapshot()
            return 0
        self.hashes, last, self._hashes_saved = got
        return last

    def _discard_snapshot(self) -> None:
        """Remove a hash snapshot that was not used (see `hashsnapshot.discard`); a read-only owner (`query`)
        writes nothing, so it leaves it to the daemon."""
        if not self.catalog.read_only:
            hashsnapshot.discard(self._hash_snapshot)

    @property
    def _hash_snapshot(self) -> Path:
        return Path(self.settings.state_dir) / HASH_SNAPSHOT

    def _hash_state(self) -> tuple[int, int]:
        """What a save would change: rows held and rows live."""
        return self.hashes.counts()

    def _load_range(self, rows: list[Any], upto: int | None, hashed: list, width: int, after: int) -> None:
        """One id range of start-up's stream: its hash arrays (of rows past the snapshot) kept for the one
        build, its vectors reconciled."""
        if rows and rows[-1]["id"] > after:
            hashed.append(self._hash_arrays([r for r in rows if r["id"] > after], width))
        for role in (self.copies, self.vectors):
            def fetch(ids: list[int], column: str = role.column) -> list[tuple[int, bytes]]:
                return fetch_vectors(self.catalog.query, column, ids)

            role.load_range(rows, upto, fetch)

    @staticmethod
    def _hash_arrays(rows: list[Any], width: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(ids, windows [n, W], dhash) of the rows hashed with this build's windows (others are skipped,
        as `HashIndex.add` skips them)."""
        rows = [r for r in rows if r["windows"] is not None and r["dhash"] is not None and len(r["windows"]) == width]
        ids = np.fromiter((r["id"] for r in rows), np.int64, len(rows))
        windows = np.frombuffer(b"".join(r["windows"] for r in rows), np.int64).reshape(len(rows), width // 8)
        return ids, windows, np.fromiter((r["dhash"] for r in rows), np.int64, len(rows))

    # --- the flow ------------------------------------------------------------------------------------

    def register(self, path: str, size: int | None, mtime_ns: int | None,
                 inode: tuple[int, int] | None = None) -> int | None:
        """Catalog a landed version of `path`; the version it replaces stops matching. A file the catalog
        holds under a name that no longer holds it (`inode`: its (st_dev, st_ino)) is that row moved, not a
        landing: None, as for a version already known. Any thread."""
        if inode is not None and self._arrived(path, size, mtime_ns, inode):
            return None
        new_id, replaced = self.catalog.land(path, size, mtime_ns, inode)
        if replaced is not None:
            self.retire(replaced)
        return new_id

    def _arrived(self, path: str, size: int | None, mtime_ns: int | None, inode: tuple[int, int]) -> bool:
        """Follow a move the watcher could not pair (a folder renamed twice before its first event was read,
        a file moved in and renamed at once, a move between roots or while the daemon was down): a row of
        this very file under another name that is gone moves here. A name that still holds the file is a
        hard link, and this landing is a file of its own."""
        for row in self.catalog.holders(inode, size, mtime_ns, path, time.time() - MOVE_PAIRING_S):
            if _holds(row.path, inode):
                continue
            if row.current:
                self.moved(row.path, path)
            else:
                replaced = self.catalog.revive(row.id, path)
                if replaced is not None:
                    self.retire(replaced)
                self._retired.put((row.id, True))
            log.debug("%s is %s moved", path, row.path)
            return True
        return False

    def register_many(self, landed: Sequence[tuple[str, int | None, int | None]]) -> list[int | None]:
        """`register` for a batch of (path, size, mtime_ns), in one catalog transaction (`scan`)."""
        out = []
        for new_id, replaced in self.catalog.land_many(landed):
            if replaced is not None:
                self.retire(replaced)
            out.append(new_id)
        return out

    def accept(self, features: Iterable[Features]) -> list[Row]:
        """Store worker results, a batch in one transaction. Duplicates (a re-queued job finishing twice)
        are ignored. Returns the rows whose file was moved after its job was queued: their result is that of
        the old name (often `vanished`), not of the file, so it is not stored and they are to be queued again."""
        results = list(features)
        moved = self.catalog.renamed_since_read([(f.id, f.path) for f in results])
        stale = {row.id for row in moved}
        self.catalog.store_features_many([(f.id, f.stored()) for f in results if f.id not in stale])
        return moved

    def decide_ready(self, limit: int = 1000, *, wait: bool = True) -> list[VerdictEvent]:
        """Decide every featured file at the head of the arrival order, up to the first pending one.

        Each row is evaluated and indexed in order (so the next row sees it); a row that needs a geometric
        verification waits for it in a queue while later rows are evaluated, and verdicts commit in arrival
        order, each run of finished ones in one transaction. `wait`: return only when every row evaluated has
        its verdict; without it (the daemon, whose loop receives the answers), rows still waiting for an answer
        stay queued for a later call, and at most MAX_WAITING of them are evaluated ahead."""
        self._drop_retired()
        events: list[VerdictEvent] = []
        waiting = self._waiting
        while (room := limit - len(events) - len(waiting)) > 0:
            asked = min(256, room) + len(waiting)
            rows = self.catalog.head(asked)
            head = [r for r in rows if r.id not in self._seen]
            ready = list(itertools.takewhile(lambda row: row.state != "pending", head))
            known = self._lookups([row for row in ready if row.error is None])
            self._release_later = []  # see _commit: until the batch is evaluated, `known` cannot see commits
            try:
                full = self._evaluate_batch(ready, known, events, wait)
            finally:
                for row in self._release_later:
                    self._release(row)
                self._release_later = None
            events += self._commit(waiting, wait=False)
            if full or not ready or len(ready) < len(head) or len(rows) < asked:  # fewer than asked: none was left
                break
        if wait:
            events += self._commit(waiting, wait=True)  # the writer waits for the answers here; it computes nothing
        return self._emit(events)

    def _evaluate_batch(self, ready: list[Row], known: Lookups, events: list[VerdictEvent], wait: bool) -> bool:
        """Evaluate, index and queue each row of a head batch in order (see `decide_ready`). True when it
        stopped early: MAX_WAITING rows wait for answers and `wait` is off."""
        waiting = self._waiting
        probed = self._probe_ahead(ready)
        for k, row in enumerate(ready):
            if len(waiting) >= MAX_WAITING and not wait:
                events += self._commit(waiting, wait=False)
                if len(waiting) >= MAX_WAITING:
                    return True
            self._seen.add(row.id)
            evidence = self.evidence(row, known=known, probed=probed(k)) if row.error is None else None
            for key in self._exact_keys(row):
                self._uncommitted.setdefault(key, []).append(row.id)
            verification = self._verify(row, evidence) if evidence is not None else None
            explanation = self._explain(row, evidence) if evidence is not None and verification is None else None
            waiting.append((row, evidence, verification, explanation))
            # Live as head() read it: a deletion after that read is retired before the next verdict.
            if row.error is None and (self.settings.match.keep_deleted or _live(row)):
                self._index(row)  # (content replaced or deleted before its verdict: never indexed)
            if len(waiting) > MAX_WAITING and wait:
                events += self._commit(waiting, wait=True)
        return False

    def _probe_ahead(self, ready: list[Row]) -> Callable[[int], Probed | None]:
        """Start the probing half of the batch's hash searches on a second thread (`HashIndex.probe_ahead`),
        PROBE_CHUNK rows a task, in order; returns each row's result by its place in `ready`, waiting for it.

        Why: at 10 M the probe (thousands of bucket reads, each a cache miss) is about half a verdict, and it
        needs nothing the batch's earlier verdicts change: their rows are searched by range when the search is
        finished (`best(..., probed=)`), so the answer is the one a search in order gives. The writer meanwhile
        checks exact copies, verifies candidates, indexes and commits: the two overlap on two cores. A single
        row (the daemon keeping up) is searched on the writer's thread: a hand-off would only add latency."""
        index, rule = self.hashes, self.thresholds.hashes
        if len(ready) < 2 or not index.segmented():
            return lambda k: None
        if self._prober is None:
            self._prober = ThreadPoolExecutor(1, thread_name_prefix="dupwatch-probe")

        def probe(rows: list[Row]) -> list[Probed | None]:
            queries = [_hash_query(r) if r.error is None else None for r in rows]
            found = iter(index.probe_ahead([q for q in queries if q is not None], rule) if any(queries) else [])
            return [next(found) if q is not None else None for q in queries]

        tasks = [self._prober.submit(probe, ready[lo:lo + PROBE_CHUNK]) for lo in range(0, len(ready), PROBE_CHUNK)]
        return lambda k: tasks[k // PROBE_CHUNK].result()[k % PROBE_CHUNK]

    def _lookups(self, rows: list[Row]) -> Lookups:
        """The catalog's exact lookups for a batch of rows about to be evaluated, one statement per kind
        (earlier versions and "not a duplicate" pairs, then sha256 and pixel sha), instead of three per row."""
        keep = self.settings.match.keep_deleted
        first = {column: self.catalog.first_decided_with(
            column, [(v, row.id) for row in rows if (v := getattr(row, column)) is not None], include_deleted=keep)
            for column, _ in EXACT_KEYS}
        return Lookups(self.catalog.never_copies_of_many([(row.path, row.id) for row in rows]), first)

    def _emit(self, events: list[VerdictEvent]) -> list[VerdictEvent]:
        for event in events:
            for sink in self.sinks:
                try:
                    sink(event)
                except Exception:  # a broken sink must not stop verdicts
                    log.exception("sink %r failed", sink)
        return events

    def _verify(self, row: Row, evidence: Evidence) -> Future | None:
        """Submit the verifications this row's evidence asks for, or None when it is conclusive. A hash match
        with no copy-descriptor score for it (hash-only) gets the gradient look first (workers.precheck)."""
        candidates = to_verify(evidence, self.thresholds) if self.settings.match.verify else []
        if not candidates:
            return None
        hash_only = evidence.hashed if evidence.hashed_copy_score is None else None
        return self._align_later(row, candidates, hash_only)

    def _explain(self, row: Row, evidence: Evidence) -> Future | None:
        """The alignment of a copy that its scores decided without a verification, so that every edited copy
        carries its `edit`. It explains the verdict and never changes it."""
        if not self.settings.match.explain_edits:
            return None
        decision = decide(evidence, self.thresholds)
        if decision.kind != "edited-copy" or decision.match_id is None:
            return None
        return self._align_later(row, [decision.match_id])

    def _align_later(self, row: Row, candidates: list[int], hashed: HashHit | None = None) -> Future[Verified]:
        """Ask the verifier for the candidates' alignments; `hashed`: a hash-only match among them, looked at
        first (its geometry comes from the hashes: no image is read here)."""
        others = self.catalog.rows(candidates)
        look = None
        for other in others:
            if hashed is not None and other.id == hashed.id and other.windows is not None:
                assert row.windows is not None and row.dihedral is not None  # it was hash-matched
                look = (other.id, geometry(hashed.signal, row.windows, row.dihedral, other.windows))
        return self.verifier.submit(VerifyRequest(row.id, row.path, tuple((r.id, r.path) for r in others), look,
                                                  (row.size, row.mtime_ns), self.settings.watch.follow_symlinks))

    def _commit(self, waiting: deque, wait: bool) -> list[VerdictEvent]:
        """Commit the head of `waiting` in one transaction: every row whose verification is done (all of
        them when `wait`). If the batch fails, nothing of it is committed, and the in-memory indexes are
        rebuilt from the catalog so they hold no verdict the catalog lacks."""
        batch = []
        while waiting and (wait or all(f is None or f.done() for f in waiting[0][2:])):
            row, evidence, verification, explanation = waiting.popleft()
            self._seen.discard(row.id)
            if self._release_later is not None:  # a batch's `Lookups` were read before this commit
                self._release_later.append(row)
            else:
                self._release(row)
            if evidence is None:
                batch.append((row, Decision("error")))
                continue
            verified = verification.result() if verification is not None else None
            if verified is not None:
                self.looked_away += verified.looked_away
            decision = decide(evidence, self.thresholds, verified.alignments if verified is not None else None)
            if explanation is not None and decision.alignment is None and decision.match_id is not None:
                decision = replace(decision, alignment=explanation.result().alignments.get(decision.match_id))
            batch.append((row, decision))
        if not batch:
            return []
        events: list[VerdictEvent] = []
        try:
            with self.catalog.transaction() as conn:
                done: dict[int, tuple[Row, Decision]] = {}
                for row, decision in batch:
                    if decision.edit is None and decision.alignment is not None:  # the verification's alignment
                        decision = replace(decision, edit=decision.alignment.edit)
                    unchanged = self._same_bytes(row, done)
                    decision = unchanged or decision
                    done[row.id] = (row, decision)
                    now = time.time()
                    cur = conn.execute(
                        "UPDATE files SET state = 'decided', verdict = ?, match_id = ?, score = ?,"
                        " hash_distance = ?, signal = ?, edit = ?, decided_at = ? WHERE id = ? AND state = 'featured'",
                        (decision.kind, decision.match_id, decision.score, decision.hash_distance,
                         decision.signal, None if decision.edit is None else json.dumps(decision.edit), now,
                         row.id))
                    if unchanged is not None:
                        continue  # the bytes this path already had, and their verdict: nothing to announce
                    event = self._event(row, decision, now)
                    if cur.rowcount == 1 and self.on_commit is not None:
                        self.on_commit(conn, event)
                    events.append(event)
        except BaseException:
            log.error("a batch of %d verdicts was rolled back; rebuilding the in-memory index", len(batch))
            waiting.clear()
            self._seen.clear()
            self._uncommitted.clear()
            if self._release_later is not None:
                self._release_later.clear()
            self.hashes = HashIndex(len(WINDOWS))
            self.copies.close()
            self.vectors.close()
            self.pictures.close()
            self._load()
            raise
        self.decided += len(events)
        return events

    def _same_bytes(self, row: Row, done: dict[int, tuple[Row, Decision]]) -> Decision | None:
        """The verdict of the version of this path that `row` replaced when it holds the very same bytes (an
        mtime set back, the same file copied over itself, a write read before its landing was seen): those
        bytes were decided already, and a second verdict would announce them twice. `done`: this commit's
        rows so far, whose verdicts the catalog does not show yet."""
        if row.replaces is None or row.sha256 is None or row.error is not None:
            return None
        if row.replaces in done:
            before, decision = done[row.replaces]
        else:
            found = self.catalog.get(row.replaces)
            if found is None or found.state != "decided" or found.verdict is None:
                return None
            before, decision = found, Decision(found.verdict, found.match_id, found.score, found.hash_distance,
                                               found.signal, edit=found.edit)
        return decision if before.error is None and before.sha256 == row.sha256 else None

    def _release(self, row: Row) -> None:
        """A committed row's exact keys leave `_uncommitted`: the catalog's lookups see it now."""
        for key in self._exact_keys(row):
            ids = self._uncommitted.get(key)
            if ids is not None and row.id in ids:
                ids.remove(row.id)
                if not ids:
                    del self._uncommitted[key]

    def evidence(self, row: Row, excluded: set[int] | None = None, known: Lookups | None = None,
                 probed: Probed | None = None) -> Evidence:
        """Every signal for a featured row against everything decided before it (no writes). `known`: the
        catalog's lookups read for this row's batch (`decide_ready`); without it they are read here.
        `probed`: its hash search's probe, made ahead (`_probe_ahead`)."""
        keep = self.settings.match.keep_deleted
        if excluded is None:  # never a copy of a pair marked "not a duplicate", nor of its own earlier version
            excluded = known.excluded[row.id] if known is not None else self.catalog.never_copies_of(row.path, row.id)
        exact = None
        for column, signal in EXACT_KEYS:
            value = getattr(row, column)
            if value is not None:
                hit = known.first[column][(value, row.id)] if known is not None else None
                if known is None or (hit is not None and hit in excluded):  # the earliest is excluded: ask again
                    found = self.catalog.decided_with(column, value, row.id, include_deleted=keep, excluded=excluded)
                    hit = found.id if found is not None else None
                ahead = [i for i in self._uncommitted.get((column, value), ()) if i < row.id and i not in excluded]
                if hit is not None or ahead:
                    exact = (hit if hit is not None else ahead[0], signal)
                    break
        if exact is not None:
            return Evidence(exact=exact)
        query = _hash_query(row)
        hashed = self.hashes.best(*query, row.id, self.thresholds.hashes, excluded, probed) if query else None
        k = self.settings.match.top_k
        mine = self.copies.vector(row)
        inner = row.copy_inner if mine is not None else None
        pictures = inner_rows(inner, len(mine)) if inner is not None and mine is not None else None
        queries = [] if mine is None else [mine, *(pictures if pictures is not None else ())]
        candidates = {i for q in queries for i, _ in self.copies.search_vector(q, row.id, k, excluded)}
        candidates |= self.pictures.search(queries, row.id, k, excluded)
        if hashed is not None and mine is not None:
            candidates.add(hashed.id)
        scores = {}
        for other in self.catalog.rows(sorted(candidates)):
            theirs = self.copies.vector(other)
            if theirs is not None and mine is not None:  # no candidates without `mine`
                scores[other.id] = pair_score(mine, inner, theirs, other.copy_inner)
        copies = sorted(scores.items(), key=lambda item: (-item[1], item[0]))[:k]
        hashed_score = scores.get(hashed.id) if hashed is not None else None
        return Evidence(None, hashed, hashed_score, copies, self.vectors.search(row, k, excluded))

    def evaluate(self, row: Row, excluded: set[int] | None = None) -> Decision:
        """The verdict for a featured row without verification (queries and what-ifs: no writes)."""
        return decide(self.evidence(row, excluded), self.thresholds)

    @staticmethod
    def _exact_keys(row: Row) -> list[tuple[str, str]]:
        if row.error is not None:
            return []
        return [(c, v) for c, _ in EXACT_KEYS if (v := getattr(row, c)) is not None]

    def _index(self, row: Row) -> None:
        if row.windows is not None and row.dhash is not None:
            self.hashes.add(row.id, row.windows, row.dhash)
        self.copies.add(row)
        self.vectors.add(row)
        self.pictures.add(row)

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
        """A file was deleted (or moved out of the roots). Any thread."""
        file_id = self.catalog.deleted(path)
        if file_id is not None:
            self.retire(file_id)

    def deleted_under(self, folder: str) -> None:
        """A folder was deleted or moved out of the roots: its files stop matching. Any thread."""
        for file_id in self.catalog.deleted_under(folder):
            self.retire(file_id)

    def moved(self, src: str, dest: str) -> bool:
        """A file moved inside the roots; a file it was renamed over stops matching. Any thread."""
        known, replaced = self.catalog.moved(src, dest)
        if replaced is not None:
            self.retire(replaced)
        return known

    def retire(self, file_id: int) -> None:
        """Queue a file whose content is gone for removal from the indexes (see the module docstring)."""
        self._retired.put((file_id, False))

    def _drop_retired(self) -> None:
        while True:
            try:
                file_id, back = self._retired.get_nowait()
            except queue.Empty:
                return
            if self.settings.match.keep_deleted:
                continue  # deleted files stay in the indexes
            if not back:
                self.hashes.remove(file_id)
                self.copies.remove(file_id)
                self.vectors.remove(file_id)
                self.pictures.remove(file_id)
            elif (row := self.catalog.get(file_id)) is not None and row.state == "decided" and row.error is None:
                self.hashes.revive(file_id)
                self.copies.add(row)
                self.vectors.add(row)
                self.pictures.add(row)

    def save(self) -> None:
        """Snapshot the indexes (each only when changed since it was loaded or last saved; never from a
        read-only owner)."""
        if self.catalog.read_only:
            return
        self.copies.save()
        self.vectors.save()
        state = self._hash_state()
        if state[0] and state != self._hashes_saved:
            hashsnapshot.save(self.hashes, self._hash_snapshot, {"keep_deleted": self.settings.match.keep_deleted})
            self._hashes_saved = state

    def close(self) -> None:
        self.verifier.close()
        self.copies.close()
        self.vectors.close()
        if self._prober is not None:
            self._prober.shutdown(wait=True, cancel_futures=True)




def _compile_hash_kernels(rule: HashRule) -> None:
    """Compile (first start: seconds) or load from numba's cache the hash index's kernels now, at start-up,
    rather than inside the first verdict, where it would stall the first files behind it. Its one-row segment
    is probed, never scanned (scan_factor infinite): a scanned segment would leave the probe uncompiled."""
    warm = HashIndex(len(WINDOWS), tail_rows=1, scan_factor=float("inf"))
    warm.add(1, np.zeros(len(WINDOWS), np.int64), 0)
    warm.best(np.zeros(len(WINDOWS), np.int64), np.zeros(8, np.int64), 0, 2, rule)


def _hash_query(row: Row) -> tuple[np.ndarray, np.ndarray, int] | None:
    """The row's hash search query (windows, dihedral, dhash), or None when it has no hashes."""
    if row.windows is None or row.dihedral is None or row.dhash is None:
        return None
    return row.windows, row.dihedral, row.dhash


def event_for(row: Row, catalog: Catalog) -> VerdictEvent:
    """The event of an already decided row (for `scan` re-runs and the API)."""
    decision = Decision(row.verdict or "error", row.match_id, row.score, row.hash_distance, row.signal,
                        edit=row.edit)
    matches: tuple[Match, ...] = ()
    if row.match_id is not None:
        m = catalog.get(row.match_id)
        if m is not None:
            matches = (Match(_info(m), decision.kind, decision.score or 0.0, decision.hash_distance,
                             decision.signal or "", decision.edit),)
    return VerdictEvent(kind=decision.kind, file=_info(row), detected_at=row.detected_at,
                        decided_at=row.decided_at or 0.0, matches=matches, reason=row.error, version=__version__)


def _holds(path: str, inode: tuple[int, int]) -> bool:
    """Whether the name `path` still names the file `inode` ((st_dev, st_ino))."""
    try:
        st = os.lstat(path)
    except OSError:
        return False
    return (st.st_dev, st.st_ino) == inode


def _live(row: Row) -> bool:
    """Current and not deleted: content that still exists on disk."""
    return row.current == 1 and row.deleted_at is None


def _info(row: Row) -> FileInfo:
    return FileInfo(id=row.id, path=row.path, size=row.size, sha256=row.sha256, width=row.width,
                    height=row.height)
