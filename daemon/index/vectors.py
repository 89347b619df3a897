"""The usearch HNSW index over embeddings: a cache of the catalog, rebuilt or topped up from it.

Keys are catalog ids. Cosine metric over L2-normalised vectors; `score` is cosine x 100. The file on disk
is only ever a snapshot: on open, whatever the catalog has that the snapshot lacks is added, and whatever
it has that the catalog deleted is removed, so a crash between a verdict and a save costs nothing.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from daemon.index.catalog import vector_bytes, vector_from_sql

try:  # onnxruntime 1.32 segfaults on import once usearch 2.26 is loaded (a native-library clash; the
    import onnxruntime  # noqa: F401  other order is fine), so load it first wherever it is installed
except ImportError:  # the ONNX backend is an optional extra
    pass
from usearch.index import Index  # after onnxruntime, see above

log = logging.getLogger(__name__)

CONNECTIVITY = 16
"""HNSW graph degree. bench/index_bench.py at 1 M real-shaped 512-d vectors, f16, 2 cores: with
EXPANSION_ADD 64 and EXPANSION_SEARCH 128, recall@10 0.974, search p50 0.6 ms / p99 1.5 ms, 1.17 KB per
image. Degree 32 cost ~130 B more per image for +0.01 recall; expansion_add 128 halved the add rate."""
EXPANSION_ADD = 64
EXPANSION_SEARCH = 128
"""Recall falls ~0.02-0.06 per tenfold growth at a fixed value: raise it (256) past ~10 M vectors."""


class VectorIndex:
    def __init__(self, path: Path, ndim: int, dtype: str):
        self.path = Path(path)
        self.ndim = ndim
        self.index = Index(ndim=ndim, metric="cos", dtype=dtype, connectivity=CONNECTIVITY,
                           expansion_add=EXPANSION_ADD, expansion_search=EXPANSION_SEARCH)
        if self.path.is_file():
            try:
                self.index.load(str(self.path))
                if self.index.ndim != ndim:
                    raise ValueError(f"snapshot has {self.index.ndim} dimensions, model has {ndim}")
            except Exception as exc:  # noqa: BLE001 - a torn or foreign snapshot (any error): rebuild from the catalog
                log.warning("vector index snapshot %s unusable (%s); rebuilding", self.path, exc)
                self.index = Index(ndim=ndim, metric="cos", dtype=dtype, connectivity=CONNECTIVITY,
                                   expansion_add=EXPANSION_ADD, expansion_search=EXPANSION_SEARCH)
        self.dirty = False

    def __len__(self) -> int:
        return len(self.index)

    def reconciler(self) -> Reconciler:
        return Reconciler(self)

    def add_many(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        if len(ids):
            self.index.add(ids, vectors)
            self.dirty = True

    def add(self, file_id: int, vector: np.ndarray) -> None:
        if not self.index.contains(file_id):
            self.index.add(file_id, vector)
            self.dirty = True

    def remove(self, file_id: int) -> None:
        if self.index.contains(file_id):
            self.index.remove(file_id)
            self.dirty = True

    def search(self, vector: np.ndarray, k: int) -> list[tuple[int, float]]:
        """(id, score 0-100) of the k nearest, best first."""
        if len(self.index) == 0:
            return []
        found = self.index.search(vector, min(k, len(self.index)))
        return [(int(key), float((1.0 - dist) * 100.0)) for key, dist in zip(found.keys, found.distances)]

    def save(self) -> None:
        """Write a snapshot atomically (temp file + rename): a crash never leaves a torn index."""
        if not self.dirty:
            return
        tmp = self.path.with_suffix(".tmp")
        try:
            self.index.save(str(tmp))
            tmp.replace(self.path)
        except BaseException:
            tmp.unlink(missing_ok=True)  # a full disk: leave no half-written snapshot behind
            raise
        self.dirty = False


class Reconciler:
    """Brings a snapshot in line with the catalog one id range at a time, as start-up streams the catalog.

    The snapshot's keys are sorted once (8 bytes per key); each range compares only its own slice of them
    with the catalog's ids in that range, so no whole-catalog id list or set is ever held: at 10 M rows
    the old all-at-once comparison held every (id, size) pair as Python tuples, about 1 GB."""

    def __init__(self, index: VectorIndex):
        self.index = index
        keys = np.asarray(index.index.keys, dtype=np.int64) if len(index) else np.zeros(0, np.int64)
        self._keys = np.sort(keys)
        self._done = 0  # keys before this position are settled
        self._upto: int | None = -(2**63)
        self.added = self.removed = 0

    def range(self, ids: np.ndarray, upto: int | None) -> np.ndarray:
        """Drop the snapshot's keys in (previous upto, upto] that are not in `ids` (the catalog's ids with a
        vector of this index in that range, increasing); return the ids the snapshot lacks. `upto` None
        closes the last range: every key past it is dropped."""
        if self._upto is None or (upto is not None and upto < self._upto):
            raise ValueError("ranges must be reconciled in increasing id order")
        if len(ids) and (ids[0] <= self._upto or (upto is not None and ids[-1] > upto)):
            raise ValueError("ids outside the range")
        end = len(self._keys) if upto is None else int(np.searchsorted(self._keys, upto, side="right"))
        have, self._done, self._upto = self._keys[self._done:end], end, upto
        stale = np.setdiff1d(have, ids, assume_unique=True)
        if len(stale):
            self.index.index.remove(stale)
            self.index.dirty = True
            self.removed += len(stale)
        missing = np.setdiff1d(ids, have, assume_unique=True)
        self.added += len(missing)
        return missing


class ModelVectors:
    """One model's vectors in the owner: the identity it accepts, the catalog columns that hold them, and a
    usearch index (one file per identity) opened on the first vector, so two models never share an index."""

    def __init__(self, role: str, column: str, model_column: str, identity: str | None, state_dir: Path,
                 dtype: str):
        self.role, self.column, self.model_column = role, column, model_column
        self.identity = identity
        self.state_dir, self.dtype = Path(state_dir), dtype
        self.index: VectorIndex | None = None
        self._foreign: set[str] = set()
        self._reconciler: Reconciler | None = None  # during start-up's stream only

    def __len__(self) -> int:
        return len(self.index) if self.index is not None else 0

    def _open(self, ndim: int) -> VectorIndex:
        if self.index is None:
            tag = hashlib.sha1((self.identity or "").encode()).hexdigest()[:10]
            self.index = VectorIndex(self.state_dir / f"vectors-{tag}.usearch", ndim, self.dtype)
        return self.index

    def vector(self, row) -> np.ndarray | None:
        """The row's vector when it was made by this identity (a vector of another model is not comparable)."""
        value = getattr(row, self.column)
        return value if value is not None and getattr(row, self.model_column) == self.identity else None

    def load_range(self, rows: list[Any], upto: int | None,
                   fetch: Callable[[list[int]], list[tuple[int, bytes]]]) -> None:
        """Reconcile the snapshot with one id range of the catalog, as start-up streams it: `rows` are the
        decided rows with ids in (the previous call's `upto`, `upto`] (None: to the end), as
        `Catalog.decided_features` yields them (vectors measured, not read); `fetch(ids)` returns (id, vector
        bytes) of the ids the snapshot lacks. Call with `upto=None` last, so keys past the catalog's end go."""
        sized = f"{self.column}_bytes"
        mine = [(r["id"], r[sized]) for r in rows if r[sized] is not None and r[self.model_column] == self.identity]
        if self._reconciler is None:
            if not mine:  # nothing of this identity yet: leave the snapshot closed until a vector comes
                return
            self._reconciler = self._open(mine[0][1] // vector_bytes(1)).reconciler()
        missing = self._reconciler.range(np.fromiter((i for i, _ in mine), np.int64, len(mine)), upto)
        for start in range(0, len(missing), 10_000):
            got = fetch([int(i) for i in missing[start:start + 10_000]])
            self._reconciler.index.add_many(np.asarray([i for i, _ in got], np.int64),
                                            np.stack([vector_from_sql(v) for _, v in got]))
        if upto is None:
            done, self._reconciler = self._reconciler, None
            if done.added or done.removed:
                log.info("%s vector index: added %d vectors the snapshot lacked, dropped %d the catalog does not "
                         "have", self.role, done.added, done.removed)

    def close(self) -> None:
        """Forget the index and any reconcile under way (unsaved changes too): the next start-up stream
        reopens the snapshot and reconciles it from the first range, even after one that failed midway."""
        self.index = None
        self._reconciler = None

    def add(self, row) -> None:
        value = getattr(row, self.column)
        if value is None:
            return
        if getattr(row, self.model_column) != self.identity:
            model = getattr(row, self.model_column) or ""
            if model not in self._foreign:
                self._foreign.add(model)
                log.warning("a worker's %s vectors come from %s but this index uses %s: they are not indexed",
                            self.role, model, self.identity)
            return
        self._open(len(value)).add(row.id, value)

    def search(self, row, k: int, excluded: set[int]) -> list[tuple[int, float]]:
        """(id, score 0-100) of the nearest files EARLIER than the row, by the row's vector, best first."""
        vector = self.vector(row)
        return [] if vector is None else self.search_vector(vector, row.id, k, excluded)

    def search_vector(self, vector: np.ndarray, before_id: int, k: int, excluded: set[int]) -> list[tuple[int, float]]:
        if self.index is None:
            return []
        return [(i, s) for i, s in self.index.search(vector, k) if i < before_id and i not in excluded]

    def remove(self, file_id: int) -> None:
        if self.index is not None:
            self.index.remove(file_id)

    def save(self) -> None:
        if self.index is not None:
            self.index.save()
