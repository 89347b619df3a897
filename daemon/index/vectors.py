"""The usearch HNSW indexes over embeddings: a cache of the catalog, kept as sealed segments and an open tail.

Keys are catalog ids. Cosine metric over L2-normalised vectors; `score` is cosine x 100. Rows are decided and
indexed in id order, so the index is a stack of id ranges, as the hash index is: each sealed segment holds the
vectors of one range (lo, hi] and its file is written once, when it is sealed or built, and never again; the
open tail holds every id past the last sealed range, and is the only file a save rewrites (at most
TAIL_VECTORS vectors). A full tail is sealed; segments of one size tier merge into one of the next, rebuilt on
a background thread (usearch releases the GIL while it adds), up to MAX_SEGMENT vectors. A search fans out
over every segment and the tail and merges their top k.

The files on disk are only snapshots. On open, each range is reconciled with the catalog as start-up streams
it: keys the catalog dropped are removed (in memory: a sealed file is not rewritten for a deletion), vectors the
tail lacks are added. A segment whose file is missing or unusable, and the tail when its file is, become
ranges to rebuild from the catalog on a background thread: verdicts flow meanwhile with the hash index and the
loaded segments (`progress` says what is partial), and a missing file costs at most that range's rebuild.

Layout: a folder `vectors-<identity tag>/` holding `manifest.json` (the commit point: the sealed ranges and
where the tail starts, written last, temp file + rename), one `seg-LO-HI.usearch` per sealed range and
`tail.usearch`. Files the manifest does not list are leftovers of a merge or rebuild cut short, removed at
the next save.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import sqlite3
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from daemon.index.catalog import vector_bytes, vector_from_sql
from daemon.index.rebuilds import REBUILDING

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

TAIL_VECTORS = 65_536
"""The open tail is sealed at this many vectors: the most a save rewrites (about 75 MB in f16) and the most
a lost tail file costs to rebuild (about 30 s at 2,300 adds/s on 2 cores)."""
MERGE_FACTOR = 4
"""Size-tiered merging: this many adjacent segments of one tier merge into one of the next. Each vector is
rebuilt about log4(MAX_SEGMENT / TAIL_VECTORS) = 2 times over its life."""
MAX_SEGMENT = 1_048_576
"""No merge grows a segment past this, and a range rebuilt from the catalog is cut into segments of this
size: it bounds what one lost file costs (about 8 min of background adds on 2 cores) while keeping a 10 M
index to about ten segments to search."""
FETCH_CHUNK = 10_000
"""Vectors read from the catalog per query while a range is rebuilt (SQLite's IN list, bounded memory)."""
FORMAT = 1

Fetch = Callable[[list[int]], list[tuple[int, bytes]]]
"""(id, vector bytes) of the given ids, read from the catalog."""


def fetch_vectors(query: Callable[[str, list[int]], Sequence[Any]], column: str,
                  ids: list[int]) -> list[tuple[int, bytes]]:
    """(id, vector bytes) of `ids` in the catalog's `vectors` table, in id order; `query(sql, args)` runs
    it on whichever connection the caller's thread may use."""
    got = query(f"SELECT file_id, {column} FROM vectors WHERE file_id IN ({','.join('?' * len(ids))}) "
                "ORDER BY file_id", ids)
    return [(int(r[0]), r[1]) for r in got]


def _new_index(ndim: int, dtype: str) -> Index:
    return Index(ndim=ndim, metric="cos", dtype=dtype, connectivity=CONNECTIVITY,
                 expansion_add=EXPANSION_ADD, expansion_search=EXPANSION_SEARCH)


@dataclass(eq=False)
class Part:
    """One id range (lo, hi] of the index: a sealed segment, or the tail (hi None). `index` is None while
    the range is rebuilt from the catalog (`pending` holds its ids, `built` how many are added so far)."""

    lo: int
    hi: int | None
    index: Index | None
    pending: list[np.ndarray] = field(default_factory=list)
    built: int = 0
    dirty: bool = False  # a sealed segment whose file must be written (new, rebuilt, or patched at load)
    removed: list[int] | None = None  # ids removed while a merge reads this segment (None: no merge)

    @property
    def name(self) -> str:
        return "tail.usearch" if self.hi is None else f"seg-{self.lo}-{self.hi}.usearch"

    def __len__(self) -> int:
        return len(self.index) if self.index is not None else 0

    def holds(self, file_id: int) -> bool:
        return self.lo < file_id and (self.hi is None or file_id <= self.hi)

    @property
    def tier(self) -> int:
        n, tier = len(self), 0
        while n >= TAIL_VECTORS * MERGE_FACTOR ** (tier + 1):
            tier += 1
        return tier


class VectorIndex:
    """Sealed segments and an open tail in one folder (see the module docstring). `background`: merges and
    rebuilds run on a thread of their own (the daemon); otherwise in the caller's thread at once (one-shot
    commands and read-only owners, which never write files: `writable` False)."""

    def __init__(self, folder: Path, ndim: int, dtype: str, *, writable: bool = True, background: bool = False,
                 reader: Callable[[], sqlite3.Connection] | None = None, column: str = "copy_embedding",
                 role: str = "copy"):
        self.folder, self.ndim, self.dtype, self.role = Path(folder), ndim, dtype, role
        self.writable, self.background = writable, background
        self._reader, self._column = reader, column
        self._lock = threading.Lock()  # guards `parts` swaps and removals against the background thread
        self._wake = threading.Condition(self._lock)
        self._thread: threading.Thread | None = None
        self._closed = False
        self._writing: set[str] = set()  # files the background thread writes and has not listed in `parts` yet
        self._tail_dirty = False
        self._manifest_dirty = False
        self.parts: list[Part] = self._open()

    # --- files ---------------------------------------------------------------------------------------

    def _open(self) -> list[Part]:
        """The parts the manifest lists, each loaded from its file or left to rebuild; a missing or foreign
        manifest leaves one tail over every id, to rebuild."""
        try:
            manifest = json.loads((self.folder / "manifest.json").read_text())
            if (manifest.get("format"), manifest.get("ndim"), manifest.get("dtype")) != (FORMAT, self.ndim, self.dtype):
                raise ValueError(f"snapshot of format {manifest.get('format')}, {manifest.get('ndim')} dimensions, "
                                 f"{manifest.get('dtype')}")
            ranges = [(int(lo), int(hi)) for lo, hi in manifest["segments"]]
            tail_lo = int(manifest["tail"])
        except FileNotFoundError:
            return [Part(0, None, None)]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("vector index snapshot %s unusable (%s); rebuilding from the catalog", self.folder, exc)
            return [Part(0, None, None)]
        parts = [Part(lo, hi, self._load(self.folder / f"seg-{lo}-{hi}.usearch")) for lo, hi in ranges]
        return [*parts, Part(tail_lo, None, self._load(self.folder / "tail.usearch"))]

    def _load(self, path: Path) -> Index | None:
        try:
            index = _new_index(self.ndim, self.dtype)
            index.load(str(path))
            if index.ndim != self.ndim:
                raise ValueError(f"{index.ndim} dimensions, the model has {self.ndim}")
            return index
        except Exception as exc:  # noqa: BLE001 - missing, torn or foreign (any error): rebuilt from the catalog
            log.warning("vector segment %s unusable (%s); its range is rebuilt from the catalog", path, exc)
            return None

    def _write(self, index: Index, name: str) -> None:
        """Write one file atomically (temp file + rename): a crash never leaves a torn segment."""
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = self.folder / (name + ".tmp")
        try:
            index.save(str(tmp))
            tmp.replace(self.folder / name)
        except BaseException:
            tmp.unlink(missing_ok=True)  # a full disk: leave no half-written snapshot behind
            raise

    def save(self) -> None:
        """Write what changed: sealed segments not yet on disk, the tail if it changed, then the manifest
        (the commit point), then remove files the manifest no longer lists."""
        if not self.writable:
            return
        with self._lock:
            parts = list(self.parts)  # the manifest's view: files it lists are kept below
            dirty = [p for p in parts if p.dirty and p.index is not None]
        for part in dirty:
            assert part.index is not None
            self._write(part.index, part.name)
            part.dirty = False
        tail = parts[-1]
        if self._tail_dirty and tail.index is not None:
            self._tail_dirty = False
            self._write(tail.index, tail.name)
        if not (dirty or self._manifest_dirty or not (self.folder / "manifest.json").is_file()):
            return
        self._manifest_dirty = False
        manifest = {"format": FORMAT, "ndim": self.ndim, "dtype": self.dtype,
                    "segments": [[p.lo, p.hi] for p in parts[:-1]], "tail": tail.lo}
        tmp = self.folder / "manifest.json.tmp"
        tmp.write_text(json.dumps(manifest))
        tmp.replace(self.folder / "manifest.json")
        with self._lock:  # keep what the manifest lists, what a swap since listed, and what is being written
            keep = {p.name for p in (*parts, *self.parts) if p.index is not None} | self._writing
            for path in self.folder.glob("*.usearch"):
                if path.name not in keep:
                    path.unlink()

    # --- reconcile -----------------------------------------------------------------------------------

    def reconciler(self) -> Reconciler:
        return Reconciler(self)

    def _finish_load(self, fetch: Fetch | None = None) -> None:
        """After the reconcile: a tail that was rebuilt-pending becomes sealed ranges to rebuild and a new
        empty tail starts past them; then rebuilds and merges start on the background thread, or run now
        (without `background`) with `fetch`, the stream's own read of the catalog."""
        tail = self.parts[-1]
        if tail.index is None:
            ids = np.concatenate(tail.pending) if tail.pending else np.zeros(0, np.int64)
            parts, lo = self.parts[:-1], tail.lo
            for start in range(0, len(ids), MAX_SEGMENT):
                chunk = ids[start:start + MAX_SEGMENT]
                parts.append(Part(lo, int(chunk[-1]), None, [chunk]))
                lo = int(chunk[-1])
            parts.append(Part(lo, None, _new_index(self.ndim, self.dtype)))
            self.parts = parts
            self._tail_dirty = self._manifest_dirty = True
        if len(self.parts[-1]) >= TAIL_VECTORS:
            self._seal()
        if not self.background:
            self._work(fetch)
            return
        self._report()
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="vector-segments", daemon=True)
            self._thread.start()

    # --- the flow (the owner's writer thread) -------------------------------------------------------

    def __len__(self) -> int:
        return sum(len(p) for p in self.parts)

    def add_many(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Add to the tail (ids past every sealed range, increasing)."""
        if len(ids):
            self.parts[-1].index.add(ids, vectors)  # type: ignore[union-attr]  # the tail is always built
            self._tail_dirty = True
            if len(self.parts[-1]) >= TAIL_VECTORS:
                self._seal()

    def add(self, file_id: int, vector: np.ndarray) -> None:
        tail = self.parts[-1].index
        assert tail is not None
        if not tail.contains(file_id):
            self.add_many(np.asarray([file_id], np.int64), vector[None, :])

    def remove(self, file_id: int) -> None:
        """Drop a deleted file's vector (in memory: a sealed file keeps it until the reconcile at the next
        start drops it again)."""
        with self._lock:
            for part in self.parts:
                if part.holds(file_id):
                    if part.index is not None and part.index.contains(file_id):
                        part.index.remove(file_id)
                        if part.hi is None:
                            self._tail_dirty = True
                    if part.removed is not None:
                        part.removed.append(file_id)
                    if part.index is None:  # not rebuilt yet: leave it out of the rebuild
                        part.pending = [p[p != file_id] for p in part.pending]
                    return

    def search(self, vector: np.ndarray, k: int, before_id: int | None = None) -> list[tuple[int, float]]:
        """(id, score 0-100) of the k nearest over every built part (ranges past `before_id` skipped), best
        first."""
        found: list[tuple[int, float]] = []
        for part in self.parts:
            index = part.index
            if index is None or len(index) == 0 or (before_id is not None and part.lo >= before_id):
                continue
            got = index.search(vector, min(k, len(index)))
            found.extend((int(key), float((1.0 - dist) * 100.0)) for key, dist in zip(got.keys, got.distances))
        found.sort(key=lambda kv: (-kv[1], kv[0]))
        return found[:k]

    def _seal(self) -> None:
        """The full tail becomes a sealed segment (written at the next save), a new tail starts past it."""
        tail = self.parts[-1]
        assert tail.index is not None
        hi = int(np.max(np.asarray(tail.index.keys)))
        with self._lock:
            self.parts = [*self.parts[:-1], Part(tail.lo, hi, tail.index, dirty=True),
                          Part(hi, None, _new_index(self.ndim, self.dtype))]
            self._wake.notify()
        self._tail_dirty = self._manifest_dirty = True
        if not self.background:
            self._work()

    # --- rebuilds and merges (background) ------------------------------------------------------------

    def progress(self) -> dict[str, Any]:
        """What is partial: the ranges being rebuilt from the catalog and how far each is."""
        parts = list(self.parts)
        rebuilding = [{"index": self.role, "lo": p.lo, "hi": p.hi, "built": p.built,
                       "total": int(sum(len(a) for a in p.pending))} for p in parts if p.index is None]
        return {"segments": len(parts) - 1, "vectors": len(self), "rebuilding": rebuilding}

    def _report(self) -> None:
        """Leave the rebuild's progress in `rebuilding.json` for `dupwatch status` (another process); the
        file goes when nothing is left to rebuild."""
        if not self.writable:
            return
        path = self.folder / REBUILDING
        rebuilding = self.progress()["rebuilding"]
        if not rebuilding:
            path.unlink(missing_ok=True)
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(rebuilding))
        tmp.replace(path)

    def _run(self) -> None:
        while True:
            with self._lock:
                while not self._closed and self._next() is None:
                    self._wake.wait()
                if self._closed:
                    return
            try:
                self._work()
            except _Closed:
                return
            except Exception:
                log.exception("building a vector segment failed; its range stays partial until the next start")
                return

    def _next(self) -> tuple[str, list[Part]] | None:
        """The next job: the oldest range to rebuild, else the newest run of MERGE_FACTOR adjacent built
        segments of one tier whose merge stays within MAX_SEGMENT."""
        sealed = self.parts[:-1]
        for part in sealed:
            if part.index is None:
                return "rebuild", [part]
        for end in range(len(sealed), MERGE_FACTOR - 1, -1):
            run = sealed[end - MERGE_FACTOR:end]
            if (all(p.index is not None and p.tier == run[0].tier for p in run)
                    and sum(len(p) for p in run) <= MAX_SEGMENT):
                return "merge", run
        return None

    def _work(self, fetch: Fetch | None = None) -> None:
        """Run jobs until none is left (`_next`); ranges are rebuilt through `fetch`, else through a
        connection of the thread's own (`reader`)."""
        while not self._closed:
            with self._lock:
                job = self._next()
                if job is None:
                    return
                kind, run = job
                for p in run:
                    p.removed = []
            built = self._rebuild(run[0], fetch) if kind == "rebuild" else self._merge(run)
            merged = Part(run[0].lo, run[-1].hi, built)
            if self.writable:
                with self._lock:
                    self._writing.add(merged.name)
                self._write(built, merged.name)  # sealed: written once, here, off the writer's thread
            with self._lock:
                self._writing.discard(merged.name)
                for p in run:
                    for file_id in p.removed or ():
                        if built.contains(file_id):
                            built.remove(file_id)
                at = self.parts.index(run[0])
                self.parts = [*self.parts[:at], merged, *self.parts[at + len(run):]]
                self._manifest_dirty = True
            if kind == "rebuild":
                self._report()
            log.info("vector segment %s: %d vectors (%s)", merged.name, len(built), kind)

    def _merge(self, run: list[Part]) -> Index:
        built = _new_index(self.ndim, self.dtype)
        for part in run:
            assert part.index is not None
            with self._lock:
                keys = np.asarray(part.index.keys, np.int64)
            for start in range(0, len(keys), FETCH_CHUNK):
                self._check()
                chunk = keys[start:start + FETCH_CHUNK]
                with self._lock:  # no removal in the middle of a read
                    vectors = np.asarray(part.index.get(chunk, dtype="f32"), np.float32)
                built.add(chunk, vectors, threads=2)
        return built

    def _rebuild(self, part: Part, fetch: Fetch | None) -> Index:
        built = _new_index(self.ndim, self.dtype)
        conn = None
        if fetch is None:
            if self._reader is None:
                raise RuntimeError("no catalog to rebuild a vector segment from")
            conn = self._reader()
            fetch = functools.partial(fetch_vectors, lambda sql, args: conn.execute(sql, args).fetchall(),
                                      self._column)
        try:
            ids = np.concatenate(part.pending) if part.pending else np.zeros(0, np.int64)
            for start in range(0, len(ids), FETCH_CHUNK):
                self._check()
                got = fetch([int(i) for i in ids[start:start + FETCH_CHUNK]])
                if got:
                    built.add(np.asarray([i for i, _ in got], np.int64),
                              np.stack([vector_from_sql(v) for _, v in got]), threads=2)
                part.built = len(built)
                if conn is not None:
                    self._report()
        finally:
            if conn is not None:
                conn.close()
        return built

    def _check(self) -> None:
        """Stop a build between two chunks once `close` is called (a 1 M build takes minutes)."""
        if self._closed:
            raise _Closed

    def wait(self) -> None:
        """Block until no rebuild or merge is left (benchmarks, tests)."""
        while True:
            with self._lock:
                if self._next() is None or self._thread is None or not self._thread.is_alive():
                    return
            threading.Event().wait(0.05)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._wake.notify()
        if self._thread is not None:
            self._thread.join()


class _Closed(Exception):
    """The index was closed while the background thread built a segment: the build is dropped."""


class Reconciler:
    """Brings the snapshot in line with the catalog one id range at a time, as start-up streams the catalog.

    Each built part's keys are sorted once (8 bytes per key); each stream range compares only its own slice
    of them with the catalog's ids in that range, so no whole-catalog id list or set is ever held. Ranges of
    parts to rebuild only collect their ids (8 bytes each)."""

    def __init__(self, index: VectorIndex):
        self.index = index
        self._upto: int | None = -(2**63)
        self.added = self.removed = 0
        self._keys = []
        for part in index.parts:
            keys = np.sort(np.asarray(part.index.keys if part.index is not None else (), np.int64))
            inside = _between(keys, part.lo, part.hi)
            if len(inside) < len(keys):  # keys outside the part's own range: never searched for, dropped
                assert part.index is not None
                part.index.remove(np.setdiff1d(keys, inside, assume_unique=True))
                self.removed += len(keys) - len(inside)
            self._keys.append(inside)

    def range(self, ids: np.ndarray, upto: int | None) -> np.ndarray:
        """Drop the snapshot's keys in (previous upto, upto] that are not in `ids` (the catalog's ids with a
        vector of this index in that range, increasing); return the ids the built parts lack (to add to
        the tail, or to a sealed part that lost them: written again at the next save). `upto` None closes
        the last range: every key past it is dropped."""
        if self._upto is None or (upto is not None and upto < self._upto):
            raise ValueError("ranges must be reconciled in increasing id order")
        if len(ids) and (ids[0] <= self._upto or (upto is not None and ids[-1] > upto)):
            raise ValueError("ids outside the range")
        low, self._upto = self._upto, upto
        missing = []
        for part, keys in zip(self.index.parts, self._keys, strict=True):
            lo, hi = max(part.lo, low), part.hi if upto is None or (part.hi is not None and part.hi < upto) else upto
            if hi is not None and hi <= lo:
                continue
            mine = _between(ids, lo, hi)
            if part.index is None:
                if len(mine):
                    part.pending.append(mine)
                continue
            have = _between(keys, lo, hi)
            stale = np.setdiff1d(have, mine, assume_unique=True)
            if len(stale):
                part.index.remove(stale)
                self.index._tail_dirty |= part.hi is None
                self.removed += len(stale)
            lacking = np.setdiff1d(mine, have, assume_unique=True)
            if len(lacking):
                part.dirty |= part.hi is not None
                self.index._manifest_dirty |= part.hi is not None
                missing.append(lacking)
        got = np.concatenate(missing) if missing else np.zeros(0, np.int64)
        self.added += len(got)
        return got

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Add vectors `range` found lacking, each to the part whose range holds it."""
        for part in self.index.parts:
            if part.index is None:
                continue
            inside = np.fromiter((part.holds(int(i)) for i in ids), bool, len(ids))
            if inside.any():
                part.index.add(ids[inside], vectors[inside])
                self.index._tail_dirty |= part.hi is None


def _between(sorted_ids: np.ndarray, lo: int, hi: int | None) -> np.ndarray:
    """The slice of increasing ids in (lo, hi] (hi None: to the end)."""
    start = int(np.searchsorted(sorted_ids, lo, side="right"))
    end = len(sorted_ids) if hi is None else int(np.searchsorted(sorted_ids, hi, side="right"))
    return sorted_ids[start:end]


class ModelVectors:
    """One model's vectors in the owner: the identity it accepts, the catalog columns that hold them, and a
    segmented index (one folder per identity) opened on the first vector, so two models never share one.
    `reader`: a new read-only connection to the catalog, for ranges rebuilt on the background thread."""

    def __init__(self, role: str, column: str, model_column: str, identity: str | None, state_dir: Path,
                 dtype: str, *, reader: Callable[[], sqlite3.Connection] | None = None, writable: bool = True,
                 background: bool = False):
        self.role, self.column, self.model_column = role, column, model_column
        self.identity = identity
        self.state_dir, self.dtype = Path(state_dir), dtype
        self.reader, self.writable, self.background = reader, writable, background
        self.index: VectorIndex | None = None
        self._foreign: set[str] = set()
        self._reconciler: Reconciler | None = None  # during start-up's stream only

    def __len__(self) -> int:
        return len(self.index) if self.index is not None else 0

    @property
    def folder(self) -> Path:
        tag = hashlib.sha1((self.identity or "").encode()).hexdigest()[:10]
        return self.state_dir / f"vectors-{tag}"

    def _open(self, ndim: int) -> VectorIndex:
        if self.index is None:
            old = self.folder.with_suffix(".usearch")  # the single-file snapshot of earlier versions
            if old.is_file() and self.writable:
                old.unlink()
            self.index = VectorIndex(self.folder, ndim, self.dtype, writable=self.writable,
                                     background=self.background, reader=self.reader, column=self.column,
                                     role=self.role)
        return self.index

    def vector(self, row) -> np.ndarray | None:
        """The row's vector when it was made by this identity (a vector of another model is not comparable)."""
        value = getattr(row, self.column)
        return value if value is not None and getattr(row, self.model_column) == self.identity else None

    def load_range(self, rows: list[Any], upto: int | None,
                   fetch: Fetch) -> None:
        """Reconcile the snapshot with one id range of the catalog, as start-up streams it: `rows` are the
        decided rows with ids in (the previous call's `upto`, `upto`] (None: to the end), as
        `Catalog.decided_features` yields them (vectors measured, not read); `fetch(ids)` returns (id, vector
        bytes) of the ids the built parts lack. Call with `upto=None` last, so keys past the catalog's end
        go, and rebuilds start."""
        sized = f"{self.column}_bytes"
        mine = [(r["id"], r[sized]) for r in rows if r[sized] is not None and r[self.model_column] == self.identity]
        if self._reconciler is None:
            if not mine:  # nothing of this identity yet: leave the snapshot closed until a vector comes
                return
            self._reconciler = self._open(mine[0][1] // vector_bytes(1)).reconciler()
        missing = self._reconciler.range(np.fromiter((i for i, _ in mine), np.int64, len(mine)), upto)
        for start in range(0, len(missing), FETCH_CHUNK):
            got = fetch([int(i) for i in missing[start:start + FETCH_CHUNK]])
            self._reconciler.add(np.asarray([i for i, _ in got], np.int64),
                                 np.stack([vector_from_sql(v) for _, v in got]))
        if upto is None:
            done, self._reconciler = self._reconciler, None
            if done.added or done.removed:
                log.info("%s vector index: added %d vectors the snapshot lacked, dropped %d the catalog does not "
                         "have", self.role, done.added, done.removed)
            done.index._finish_load(fetch)

    def close(self) -> None:
        """Forget the index and any reconcile under way (unsaved changes too): the next start-up stream
        reopens the snapshot and reconciles it from the first range, even after one that failed midway."""
        if self.index is not None:
            self.index.close()
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
        if self.index is None:  # the catalog had no vector of this identity at start: whatever a snapshot
            index = self._open(len(value))  # holds is stale
            index.reconciler().range(np.zeros(0, np.int64), None)
            index._finish_load()
        assert self.index is not None
        self.index.add(row.id, value)

    def search(self, row, k: int, excluded: set[int]) -> list[tuple[int, float]]:
        """(id, score 0-100) of the nearest files EARLIER than the row, by the row's vector, best first."""
        vector = self.vector(row)
        return [] if vector is None else self.search_vector(vector, row.id, k, excluded)

    def search_vector(self, vector: np.ndarray, before_id: int, k: int, excluded: set[int]) -> list[tuple[int, float]]:
        if self.index is None:
            return []
        return [(i, s) for i, s in self.index.search(vector, k, before_id) if i < before_id and i not in excluded]

    def remove(self, file_id: int) -> None:
        if self.index is not None:
            self.index.remove(file_id)

    def save(self) -> None:
        if self.index is not None:
            self.index.save()

    def progress(self) -> dict[str, Any] | None:
        """The index's parts and what is being rebuilt (None before the first vector)."""
        return None if self.index is None else self.index.progress()

