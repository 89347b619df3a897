"""In-memory table of the perceptual hashes of decided files: an exact, sublinear search and its reference.

Three pHash comparisons catch three kinds of edit: the copy's 8 flips/rotations against each original's
full frame (mirrors, 90-degree turns), the copy's full frame against each original's sub-windows (crops),
and the copy's sub-windows against each original's full frame (padding, pasting onto a bigger canvas).
dHash is a second, partly independent opinion: two hashes that agree at moderate distances are as safe as
one hash that is close.

`ExhaustiveHashIndex` compares the query with every stored row (about 190 ns per row per verdict: 1.9 s
at 10 M). It stays as the reference the tests and bench/scale.py hold `HashIndex` to, and `nearest()`
(ranking for `query`, whatever the distance) still scans: it has no radius to index by.

`HashIndex` answers `best()` by multi-index hashing: a hash within r = a*m + b bits of the query (0 <= b < m),
split into m chunks, has one of any b+1 chunks within a bits of the query's chunk or one of the other m-b-1
within a-1 (else the chunk distances sum to at least (b+1)(a+1) + (m-b-1)a = r+1). Each stored hash is filed
under each of its chunks (a counting sort into buckets); a query enumerates the buckets within its chunk
radius (a for the b+1 narrowest chunks, a-1 for the rest: at r=6 over 3 chunks of 21-22 bits that is 277
buckets, where a for every chunk visited 718), keeps the entries whose whole hash is within r, and verifies every such
candidate exactly with the same rule and the same order (2*pHash + dHash, earliest among equals) as the
exhaustive search. So the answer is the exhaustive one, not an approximation. Every clause is indexed:
full frame vs the query's 8 flips/rotations (radius `phash`) and vs the query's pad windows (`window`),
stored crop windows vs the query's full frame (`window`), dHash (`dhash`), and the agreement clause via
dHash at `confirm_dhash` (then pHash checked exactly). Radii are read from the rule at each query, so a
SIGHUP that changes them needs no rebuild; where a radius is so large that probing a segment would cost
more than scanning it, that segment is scanned (exact either way).

Rows arrive one at a time (in id order), so the index is a stack of segments built like an LSM tree: new
rows sit in a small tail that is scanned; a full tail becomes a segment, and segments of similar size
merge into one rebuilt with chunks re-tuned to its size (about log2(entries) bits, so a bucket holds about
one entry). Sizes double like a binary counter: about log2(N / TAIL_ROWS) segments, each row rebuilt that
many times over the catalog's life. A query's probe of every segment and table is one kernel call
(`probe_many`, several queries at once): `probe_ahead` runs it for a batch of queries on the owner's second
thread with the GIL released, and `best(..., probed=)` finishes each search with the rows added since by
range. The probe, verify and build loops are compiled with numba
(daemon.index.hashkernels), imported when the first segment is built: until then (fewer than TAIL_ROWS rows, such
as a scan of a small folder) `best()` is the exhaustive search itself, and the process never pays numba's
import and kernels (about 120 MiB and 1.2 CPU-s on 2 cores, 2026-11-27).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from workers.hashing import hamming


@dataclass(frozen=True)
class HashRule:
    """When a hash match makes an edited copy (distances in bits of 64; -1 disables a clause)."""

    phash: int  # full frame and its flips/rotations
    window: int  # crop and pad comparisons (more candidates, so a tighter bound)
    dhash: int
    confirm_phash: int  # ... or pHash within this AND dHash within confirm_dhash, for the same file
    confirm_dhash: int


@dataclass(frozen=True)
class HashHit:
    id: int
    distance: int  # the distance of the signal that decided (pHash bits, or dHash bits for "dhash")
    dhash_distance: int
    signal: str  # "phash", "phash-crop", "phash-pad", "dhash", "phash+dhash"


SIGNALS = ("phash", "phash-crop", "phash-pad", "dhash", "phash+dhash")
"""The rule's clauses in the order that names the signal of a match accepted by several."""


def _hit(file_id: int, phash: int, crop: int, pad: int, dhash: int, rule: HashRule) -> HashHit:
    """The hit for one accepted row from its exact distances: the first clause that accepts it decides."""
    p = min(phash, crop, pad)
    ok = (phash <= rule.phash, crop <= rule.window, pad <= rule.window, dhash <= rule.dhash,
          p <= rule.confirm_phash and dhash <= rule.confirm_dhash)
    signal = SIGNALS[ok.index(True)]
    distance = {"phash": phash, "phash-crop": crop, "phash-pad": pad, "dhash": dhash, "phash+dhash": p}[signal]
    return HashHit(file_id, distance, dhash, signal)


class ExhaustiveHashIndex:
    """Every stored row compared on every query: exact and simple, linear in the catalog.

    Rows are added in increasing id order (the owner decides in id order), so a row's position is found
    by binary search on the ids: no per-row dict (which cost ~100 B per row, 1 GB at 10 M).
    """

    def __init__(self, windows: int):
        self._n = 0
        self._ids = np.zeros(1024, dtype=np.int64)
        self._windows = np.zeros((1024, windows), dtype=np.int64)
        self._dhash = np.zeros(1024, dtype=np.int64)
        self._live = np.zeros(1024, dtype=bool)

    def __len__(self) -> int:
        return int(self._live[: self._n].sum())

    def _position(self, file_id: int) -> int | None:
        i = int(np.searchsorted(self._ids[: self._n], file_id))
        return i if i < self._n and self._ids[i] == file_id else None

    def _reserve(self, extra: int) -> None:
        need = self._n + extra
        if need <= len(self._ids):
            return
        size = max(need, 2 * len(self._ids))
        grow = size - len(self._ids)
        self._ids = np.concatenate([self._ids, np.zeros(grow, np.int64)])
        self._windows = np.concatenate([self._windows, np.zeros((grow, self._windows.shape[1]), np.int64)])
        self._dhash = np.concatenate([self._dhash, np.zeros(grow, np.int64)])
        self._live = np.concatenate([self._live, np.zeros(grow, bool)])

    def add(self, file_id: int, windows: np.ndarray, dhash: int) -> None:
        """Add a row; a row already present (or with another window count) is ignored."""
        if windows.shape[0] != self._windows.shape[1]:
            return
        if self._n and file_id <= self._ids[self._n - 1]:
            if self._position(file_id) is not None:
                return
            raise ValueError(f"hash index rows must arrive in id order: {file_id} after {self._ids[self._n - 1]}")
        self.add_many(np.array([file_id], np.int64), windows[None, :], np.array([dhash], np.int64))

    def add_many(self, ids: np.ndarray, windows: np.ndarray, dhash: np.ndarray) -> None:
        """Bulk add (start-up): new rows in increasing id order after every stored one, windows [n, W]."""
        n = len(ids)
        if n == 0:
            return
        if windows.shape != (n, self._windows.shape[1]):
            raise ValueError(f"add_many takes windows shaped [n, {self._windows.shape[1]}]")
        if (self._n and ids[0] <= self._ids[self._n - 1]) or (n > 1 and np.any(np.diff(ids) <= 0)):
            raise ValueError("hash index rows must arrive in increasing id order")
        self._reserve(n)
        lo = self._n
        self._ids[lo:lo + n], self._windows[lo:lo + n], self._dhash[lo:lo + n] = ids, windows, dhash
        self._live[lo:lo + n] = True
        self._n += n

    def remove(self, file_id: int) -> None:
        i = self._position(file_id)
        if i is not None:
            self._live[i] = False

    def remove_many(self, ids: np.ndarray) -> None:
        """`remove` for many rows at once (start-up's reconcile with the catalog's deletions)."""
        n = self._n
        self._live[:n][np.isin(self._ids[:n], ids)] = False

    def counts(self) -> tuple[int, int]:
        """Rows held and rows live: what a snapshot of this index would differ in."""
        return self._n, int(np.count_nonzero(self._live[:self._n]))

    def revive(self, file_id: int) -> None:
        """Match a removed row again (its file was found under another name)."""
        i = self._position(file_id)
        if i is not None:
            self._live[i] = True

    def distances(self, windows: np.ndarray, dihedral: np.ndarray, dhash: int, before_id: int,
                  excluded: Collection[int] = frozenset()) -> dict[str, np.ndarray] | None:
        """Per live file earlier than `before_id`: its id and each comparison's distance."""
        n = self._n
        mask = self._live[:n] & (self._ids[:n] < before_id)
        if excluded:
            mask &= ~np.isin(self._ids[:n], np.fromiter(excluded, np.int64))
        if not mask.any():
            return None
        stored = self._windows[:n][mask]
        full = stored[:, :1]
        return {
            "id": self._ids[:n][mask],
            "phash": hamming(full, dihedral[None, :]).min(axis=1),  # includes the identity
            "phash-crop": hamming(stored, windows[0]).min(axis=1),
            "phash-pad": hamming(full, windows[None, :]).min(axis=1),
            "dhash": hamming(self._dhash[:n][mask], np.int64(dhash)),
        }

    def best(self, windows: np.ndarray, dihedral: np.ndarray, dhash: int, before_id: int, rule: HashRule,
             excluded: Collection[int] = frozenset()) -> HashHit | None:
        """The closest earlier file that the rule accepts as an edited copy, or None."""
        d = self.distances(windows, dihedral, dhash, before_id, excluded)
        if d is None:
            return None
        p = np.minimum(np.minimum(d["phash"], d["phash-crop"]), d["phash-pad"])
        clauses = {
            "phash": d["phash"] <= rule.phash,
            "phash-crop": d["phash-crop"] <= rule.window,
            "phash-pad": d["phash-pad"] <= rule.window,
            "dhash": d["dhash"] <= rule.dhash,
            "phash+dhash": (p <= rule.confirm_phash) & (d["dhash"] <= rule.confirm_dhash),
        }
        accepted = np.logical_or.reduce(list(clauses.values()))
        if not accepted.any():
            return None
        idx = np.flatnonzero(accepted)
        j = int(idx[np.argmin(2 * p[idx] + d["dhash"][idx])])  # argmin keeps the earliest among equals
        return _hit(int(d["id"][j]), int(d["phash"][j]), int(d["phash-crop"][j]), int(d["phash-pad"][j]),
                    int(d["dhash"][j]), rule)

    def nearest(self, windows: np.ndarray, dihedral: np.ndarray, dhash: int, before_id: int, k: int) -> list[HashHit]:
        """The k closest earlier files by pHash (any variant), whatever the distance: for ranking queries.
        Exhaustive in both classes: with no radius there is nothing to index by."""
        d = self.distances(windows, dihedral, dhash, before_id)
        if d is None:
            return []
        p = np.minimum(np.minimum(d["phash"], d["phash-crop"]), d["phash-pad"])
        order = np.argsort(2 * p + d["dhash"], kind="stable")[:k]
        return [HashHit(int(d["id"][j]), int(p[j]), int(d["dhash"][j]), "phash") for j in order]


# --- the index -------------------------------------------------------------------------------------------

MAX_CHUNK_BITS = 22
"""Widest chunk: 4 M buckets (32 MiB of offsets) per chunk; wider would make offsets outweigh entries."""
TAIL_ROWS = 2048
"""Rows kept unindexed (scanned) before they become a segment: a scan of 2 k rows costs ~20 us."""


def chunk_widths(entries: int) -> list[int]:
    """Chunk widths summing to 64, each at most about log2(entries) bits (a bucket holds about one entry).

    The chunk count is rounded up, never to the nearest: one chunk too few makes every chunk wider, and
    each extra bit doubles that chunk's offsets (8 bytes per bucket). With 800 k crop entries (100 k rows)
    rounding 3.3 to 3 gave 21-22-bit chunks and 64 MiB of offsets, 640 B per row; 4 chunks of 16 bits
    hold 2 MiB."""
    target = max(4.0, math.log2(max(entries, 2)))
    m = max(math.ceil(64 / MAX_CHUNK_BITS), math.ceil(64 / target))
    return [64 // m + (1 if c < 64 % m else 0) for c in range(m)]


def _probe_cost(widths: list[int], radius: int) -> int:
    """Buckets a query visits in one table at this radius."""
    if radius < 0:
        return 0
    from daemon.index.hashkernels import chunk_radius  # only segments have a cost: numba is loaded by then

    m = len(widths)
    return sum(math.comb(w, j) for c, w in enumerate(widths) for j in range(min(chunk_radius(radius, m, c), w) + 1))


class _Table:
    """One multi-index table: each stored hash filed under each of its chunks, in bucket order."""

    def __init__(self, values: np.ndarray, per_row: int, lo: int):
        self.widths = chunk_widths(len(values))
        self.shifts = np.array([64 - sum(self.widths[: c + 1]) for c in range(len(self.widths))], np.int64)
        widths = np.array(self.widths, np.int64)
        self.off_base = np.concatenate([[0], np.cumsum((1 << widths) + 1)[:-1]]).astype(np.int64)
        self.offsets = np.zeros(int(((1 << widths) + 1).sum()), np.int64)
        self.ent_val = np.empty((len(widths), len(values)), np.uint64)
        self.ent_pos = np.empty((len(widths), len(values)), np.uint32)
        self.widths_arr = widths
        from daemon.index.hashkernels import build_table

        build_table(values.view(np.uint64), per_row, lo, self.shifts, widths, self.off_base, self.offsets,
                     self.ent_val, self.ent_pos)

    @classmethod
    def restore(cls, widths: np.ndarray, offsets: np.ndarray, ent_val: np.ndarray, ent_pos: np.ndarray) -> _Table:
        """A table as built before, from its arrays (daemon.index.hashsnapshot): nothing is rebuilt."""
        table = cls.__new__(cls)
        table.widths = [int(w) for w in widths]
        table.shifts = np.array([64 - sum(table.widths[: c + 1]) for c in range(len(table.widths))], np.int64)
        table.widths_arr = np.asarray(widths, np.int64)
        table.off_base = np.concatenate([[0], np.cumsum((1 << table.widths_arr) + 1)[:-1]]).astype(np.int64)
        if len(offsets) != int(((1 << table.widths_arr) + 1).sum()) or ent_val.shape != ent_pos.shape:
            raise ValueError("table arrays do not match their chunk widths")
        table.offsets, table.ent_val, table.ent_pos = offsets, ent_val, ent_pos
        return table

    def nbytes(self) -> int:
        return self.offsets.nbytes + self.ent_val.nbytes + self.ent_pos.nbytes

    def arrays(self) -> tuple[np.ndarray, ...]:
        """The table as daemon.index.hashkernels' probe takes it."""
        return tuple(np.ascontiguousarray(a) for a in (self.shifts, self.widths_arr, self.off_base, self.offsets,
                                                       self.ent_val, self.ent_pos))


class _Segment:
    """Stored positions [lo, hi) indexed three ways: full frames, crop windows, dHashes."""

    def __init__(self, lo: int, hi: int, windows: np.ndarray, dhash: np.ndarray):
        self.lo, self.hi = lo, hi
        self.full = _Table(np.ascontiguousarray(windows[lo:hi, 0]), 1, lo)
        crops = windows.shape[1] - 1
        self.crops = _Table(np.ascontiguousarray(windows[lo:hi, 1:]).reshape(-1), crops, lo) if crops else None
        self.dhash = _Table(np.ascontiguousarray(dhash[lo:hi]), 1, lo)
        self._cost: dict[tuple[tuple[int, ...], int, int], int] = {}

    @classmethod
    def restore(cls, lo: int, hi: int, tables: dict[str, _Table | None]) -> _Segment:
        """A segment as built before, from its tables (daemon.index.hashsnapshot)."""
        seg = cls.__new__(cls)
        seg.lo, seg.hi = lo, hi
        full, dhash = tables["full"], tables["dhash"]
        if full is None or dhash is None:
            raise ValueError("a segment needs its full-frame and dHash tables")
        seg.full, seg.crops, seg.dhash = full, tables["crops"], dhash
        seg._cost = {}
        return seg

    def nbytes(self) -> int:
        return sum(t.nbytes() for t in (self.full, self.crops, self.dhash) if t is not None)

    def probe_cost(self, full_radii: tuple[int, ...], crop_radius: int, dhash_radius: int) -> int:
        """Buckets one query visits at these radii (cached per radii)."""
        key = (full_radii, crop_radius, dhash_radius)
        if key not in self._cost:
            cost = sum(_probe_cost(self.full.widths, r) for r in full_radii)
            cost += _probe_cost(self.crops.widths, crop_radius) if self.crops else 0
            self._cost[key] = cost + _probe_cost(self.dhash.widths, dhash_radius)
        return self._cost[key]


_STAMP_MAX = int(np.iinfo(np.int32).max)
_NO_IDS = np.zeros(0, np.int64)
"""Per-query constants, made once: a verdict at 10 M costs about 0.3 ms, so microseconds of numpy setup show."""


@dataclass(frozen=True)
class Probed:
    """The probing half of one `HashIndex.best`, done ahead (`probe_ahead`): every position below `upto`
    that may match, from the index it was probed on. Rows from `upto` on are added by range when the
    search is finished, so rows indexed since (the batch's own) are searched all the same."""

    index: object
    rule: HashRule
    cands: np.ndarray
    upto: int


class _Scratch:
    """Per-thread candidate buffers: a stamp per stored position (seen this query) and the candidates."""

    def __init__(self) -> None:
        self.seen = np.zeros(1024, np.int32)
        self.cands = np.zeros(1024, np.int64)
        self.stamp = 0

    def reserve(self, k: int, n: int, capacity: int) -> int:
        """Ready for k queries over n positions: returns the stamp before theirs (query i takes stamp + i + 1).
        Grown to `capacity` (the stored rows' arrays, which double), not to n, which grows by one a verdict."""
        if len(self.seen) < n:
            self.seen = np.zeros(max(n, capacity), np.int32)
            self.cands = np.zeros(max(n, capacity), np.int64)
            self.stamp = 0
        if self.stamp + k >= _STAMP_MAX:
            self.seen[:] = 0
            self.stamp = 0
        stamp, self.stamp = self.stamp, self.stamp + k
        return stamp


class HashIndex(ExhaustiveHashIndex):
    """The exhaustive search's answers, through multi-index hashing (see the module docstring)."""

    def __init__(self, windows: int, tail_rows: int = TAIL_ROWS, scan_factor: float = 1.0):
        super().__init__(windows)
        self._tail_rows = tail_rows  # tests lower it, so that small tables are built of many segments
        self._scan_factor = scan_factor  # a segment is scanned when probing visits more buckets than this
        # times its rows; tests set it to infinity so that even their small segments are probed
        self._segments: list[_Segment] = []
        self._indexed = 0  # positions below this are in segments; the rest is the scanned tail
        self._scratch = _Scratch()  # best()'s, on the owner's thread
        self._ahead = _Scratch()  # probe_ahead()'s, on the one thread that probes ahead
        self._sealing = threading.Lock()  # segments and _indexed change together under it
        self._radii_cache: dict[tuple[HashRule, int, int], tuple] = {}
        self._plans: dict[tuple, tuple] = {}  # see _plan

    def add_many(self, ids: np.ndarray, windows: np.ndarray, dhash: np.ndarray) -> None:
        super().add_many(ids, windows, dhash)
        if self._n - self._indexed >= self._tail_rows:
            with self._sealing:
                self._seal()

    def load(self, chunks: Iterable[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> None:
        """Bulk load at start-up: (ids, windows, dhash) chunks in id order, then one segment built for all."""
        tail, self._tail_rows = self._tail_rows, 1 << 62
        try:
            for ids, windows, dhash in chunks:
                self.add_many(ids, windows, dhash)
        finally:
            self._tail_rows = tail
        if self._n - self._indexed >= self._tail_rows:
            self._seal()

    def _seal(self) -> None:
        """Turn the tail into a segment, then merge segments of similar size (rebuilt, chunks re-tuned)."""
        lo = self._indexed
        while self._segments and self._segments[-1].hi - self._segments[-1].lo <= self._n - lo:  # binary counter
            lo = self._segments.pop().lo
        self._segments.append(_Segment(lo, self._n, self._windows, self._dhash))
        self._indexed = self._n

    def nbytes(self) -> int:
        """Memory held: stored rows, segments, and the per-query scratch arrays (each thread's)."""
        rows = self._ids.nbytes + self._windows.nbytes + self._dhash.nbytes + self._live.nbytes
        scratch = sum(s.seen.nbytes + s.cands.nbytes for s in (self._scratch, self._ahead))
        return rows + sum(s.nbytes() for s in self._segments) + scratch

    def segmented(self) -> bool:
        """Whether any rows are in segments (probed); until then `best` scans every row."""
        return bool(self._segments)

    def _radii(self, rule: HashRule, dihedral: int, windows: int) -> tuple:
        """Per table, each query hash's radius: flips at `phash`, pad windows at `window` (full-frame
        table); the full frame at `window` (crop table); dHash at the larger of `dhash` and, when the
        agreement clause is on, `confirm_dhash` (candidates then checked against the whole rule).

        Cached per index, a few rules a process (settings, SIGHUP reloads). Not functools.lru_cache on the
        method: its cache is the class's and holds `self`, so an index the owner replaced (a rolled-back
        batch rebuilds it) was never freed, gigabytes at 10 M."""
        key = (rule, dihedral, windows)
        got = self._radii_cache.get(key)
        if got is None:
            if len(self._radii_cache) >= 16:
                self._radii_cache.clear()
            got = self._radii_cache[key] = self._radii_of(rule, dihedral, windows)
        return got

    @staticmethod
    def _radii_of(rule: HashRule, dihedral: int, windows: int) -> tuple:
        full_r = np.array([rule.phash] * dihedral + [rule.window] * windows, np.int64)
        agree = rule.confirm_dhash if rule.confirm_phash >= 0 else -1
        return (tuple(full_r.tolist()), full_r, np.array([rule.window], np.int64),
                np.array([max(rule.dhash, agree)], np.int64),
                np.array([rule.phash, rule.window, rule.dhash, rule.confirm_phash, rule.confirm_dhash], np.int64))

    def _plan(self, segments: tuple[_Segment, ...], rule: HashRule, dihedral: int, windows: int) -> tuple:
        """What `probe_many` walks for these segments at this rule's radii: the tables of the probed segments
        (a numba typed list, with each table's kind) and the ranges of those scanned instead. Cached: the
        segments change once every TAIL_ROWS rows."""
        key = (tuple(id(seg) for seg in segments), rule, dihedral, windows)
        got = self._plans.get(key)
        if got is None or got[0] != segments:
            import numba
            from numba.typed import List

            radii, _, crop_r, dhash_r, _ = self._radii(rule, dihedral, windows)
            tables = List.empty_list(numba.typeof(segments[0].full.arrays()))  # typed even when left empty
            kinds, scanned = [], []
            for seg in segments:
                if seg.probe_cost(radii, int(crop_r[0]), int(dhash_r[0])) >= self._scan_factor * (seg.hi - seg.lo):
                    scanned.append((seg.lo, seg.hi))
                    continue
                for kind, table in enumerate((seg.full, seg.crops, seg.dhash)):
                    if table is not None:
                        tables.append(table.arrays())
                        kinds.append(kind)
            if len(self._plans) >= 8:
                self._plans.clear()
            got = self._plans[key] = (segments, tables, np.array(kinds, np.int64),
                                      np.array(scanned, np.int64).reshape(-1, 2))
        return got[1:]

    def _candidates(self, segments: tuple[_Segment, ...], queries: Sequence[tuple[np.ndarray, np.ndarray, int]],
                    rule: HashRule, scratch: _Scratch, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Every position of `segments` that may match each query (windows, dihedral, dhash): one kernel
        call for them all. Returns the candidates concatenated and their bounds [k + 1]."""
        from daemon.index.hashkernels import probe_many

        if not segments:
            return _NO_IDS, np.zeros(len(queries) + 1, np.int64)
        dihedral, windows = len(queries[0][1]), len(queries[0][0])
        tables, kinds, scanned = self._plan(segments, rule, dihedral, windows)
        _, full_r, crop_r, dhash_r, _ = self._radii(rule, dihedral, windows)
        qwin = np.array([q[0] for q in queries], np.int64).view(np.uint64)
        full_q = np.concatenate([np.array([q[1] for q in queries], np.int64).view(np.uint64), qwin], axis=1)
        dh_q = np.array([[q[2]] for q in queries], np.int64).view(np.uint64)
        stamp = scratch.reserve(len(queries), n, len(self._ids))
        return probe_many(tables, kinds, scanned, full_q, full_r, np.ascontiguousarray(qwin[:, :1]), crop_r, dh_q,
                          dhash_r, scratch.seen, stamp, scratch.cands)

    def probe_ahead(self, queries: Sequence[tuple[np.ndarray, np.ndarray, int]], rule: HashRule) -> list[Probed]:
        """The probing half of `best` for each query (windows, dihedral, dhash): most of a search at 10 M
        (bucket reads, each a cache miss), on the segments as they are now, for `best(..., probed=)` to finish
        later. Safe on one other thread while the owner's thread adds rows and searches: segments never change
        once built, the list of them is read under the lock sealing holds, the scratch is this thread's own,
        and one kernel call per batch of queries holds the GIL for none of its work (a call per segment and
        table, each taking the GIL back, left the prober waiting on the writer's Python: slower than none)."""
        with self._sealing:
            segments, upto = tuple(self._segments), self._indexed
        cands, bounds = self._candidates(segments, queries, rule, self._ahead, upto)
        return [Probed(self, rule, cands[bounds[i]:bounds[i + 1]], upto) for i in range(len(queries))]

    def best(self, windows: np.ndarray, dihedral: np.ndarray, dhash: int, before_id: int, rule: HashRule,
             excluded: Collection[int] = frozenset(), probed: Probed | None = None) -> HashHit | None:
        """The closest earlier file that the rule accepts as an edited copy, or None (exact). `probed`: this
        query's `probe_ahead`, if it was made (on this index); the rows added since are searched by range."""
        n = self._n
        if not self._segments:  # all rows in the tail: the scan is the exhaustive search, no kernels needed
            return super().best(windows, dihedral, dhash, before_id, rule, excluded)
        from daemon.index.hashkernels import verify

        if probed is None or probed.index is not self or probed.rule != rule:
            probed = Probed(self, rule, self._candidates(tuple(self._segments), [(windows, dihedral, dhash)], rule,
                                                         self._scratch, n)[0], self._indexed)
        cands = np.concatenate([probed.cands, np.arange(probed.upto, n, dtype=np.int64)])
        qwin = np.array(windows, np.int64).view(np.uint64)
        qdih = np.array(dihedral, np.int64).view(np.uint64)
        qd = np.array([dhash], np.int64).view(np.uint64)
        rule_arr = self._radii(rule, len(qdih), len(qwin))[4]
        skip = np.sort(np.fromiter(excluded, np.int64)) if excluded else _NO_IDS
        pos, ph, crop, pad, d = verify(cands, self._ids, self._windows.view(np.uint64),
                                        self._dhash.view(np.uint64), self._live, before_id, skip, qwin, qdih, qd[0],
                                        rule_arr).tolist()
        if pos < 0:
            return None
        return _hit(int(self._ids[pos]), ph, crop, pad, d, rule)
