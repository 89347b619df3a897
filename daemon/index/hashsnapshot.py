"""The hash index's snapshot on disk: its rows and its built tables, memory-mapped at start-up.

Rebuilding the index from the catalog took 28 s at 1 M rows (2 busy cores: SQLite streaming 12 s, table
builds 7 s, Python per row the rest), so about 5 minutes at 10 M. A snapshot makes start-up a few file
maps and a reconcile with the catalog (`IndexOwner._load`); like the usearch file it is only a cache: any
snapshot that is missing, torn, of another format or of another catalog is ignored and the index is
rebuilt from the catalog.

Layout: a folder holding `rows.bin` (the stored rows: ids, windows, dHashes, live flags, and in its header
the list of segments and the caller's metadata) and one `seg-LO-HI-WIDTHS.bin` per segment (its three
multi-index tables). Segments never change once built (a merge builds a new one), so a save writes only the
segments the folder lacks, then `rows.bin` (temp file + rename: the commit point), then removes segment
files no longer listed. At 10 M rows the rows file is about 0.9 GB and the segments about 3.6 GB, so the
periodic save after the first rewrites the rows and the few small segments built since.

Each file: 8 bytes (little-endian header length), a JSON header {"format", "meta", "arrays": [[name, dtype,
shape, offset], ...]}, then each array at a 64-byte aligned offset.
"""

from __future__ import annotations

import json
import logging
import mmap
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from daemon.index.catalog import Catalog
from daemon.index.hashindex import HashIndex, _Segment, _Table

log = logging.getLogger(__name__)

FORMAT = 1
"""Bumped whenever the layout or the index's table structure changes: an older snapshot is then rebuilt."""
ALIGN = 64


def write_arrays(path: Path, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
    """Write `arrays` and `meta` to `path` atomically (temp file, fsync, rename)."""
    specs: list[list[Any]] = []
    offset = 0
    for name, a in arrays.items():
        specs.append([name, a.dtype.str, list(a.shape), offset])
        offset += -(-a.nbytes // ALIGN) * ALIGN
    header = json.dumps({"format": FORMAT, "meta": meta, "arrays": specs}).encode()
    start = -(-(8 + len(header)) // ALIGN) * ALIGN
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as fh:
            fh.write(len(header).to_bytes(8, "little") + header)
            for (_, _, _, at), a in zip(specs, arrays.values(), strict=True):
                fh.seek(start + at)
                fh.write(np.ascontiguousarray(a).data)
            fh.truncate(start + offset)
            fh.flush()
            os.fsync(fh.fileno())
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)  # a full disk: leave no gigabytes of half a snapshot behind
        raise


def read_arrays(path: Path) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """(meta, arrays) of a file `write_arrays` wrote, memory-mapped copy-on-write: writable (a change stays
    in memory and never reaches the file), and writable arrays are what the compiled kernels were compiled
    for (a read-only array is another numba type, compiled again at the first query). The map is populated
    at once (MAP_POPULATE): the probes' random bucket reads would otherwise each fault a page in during the
    first verdicts after a start (2 ms a verdict at 1 M instead of 0.3). Raises ValueError when the file is
    torn or of another format."""
    size = path.stat().st_size
    with open(path, "rb") as fh:
        length = int.from_bytes(fh.read(8), "little")
        if not 0 < length <= size - 8:
            raise ValueError(f"{path.name}: bad header length")
        head = json.loads(fh.read(length))
        if head.get("format") != FORMAT:
            raise ValueError(f"{path.name}: format {head.get('format')}, this dupwatch reads {FORMAT}")
        mapped = mmap.mmap(fh.fileno(), size, flags=mmap.MAP_PRIVATE | getattr(mmap, "MAP_POPULATE", 0),
                           prot=mmap.PROT_READ | mmap.PROT_WRITE)
    start = -(-(8 + length) // ALIGN) * ALIGN
    arrays = {}
    for name, dtype, shape, offset in head["arrays"]:
        count = int(np.prod(shape))
        if start + offset + count * np.dtype(dtype).itemsize > size:
            raise ValueError(f"{path.name}: truncated at {name}")
        arrays[name] = np.frombuffer(mapped, dtype, count, start + offset).reshape(shape)
    return head["meta"], arrays


_TABLES = ("full", "crops", "dhash")


def _segment_name(seg: _Segment) -> str:
    widths = "_".join("x".join(map(str, t.widths)) for t in (seg.full, seg.crops, seg.dhash) if t is not None)
    return f"seg-{seg.lo}-{seg.hi}-{widths}.bin"


def save(index: HashIndex, folder: Path, meta: dict[str, Any]) -> None:
    """Write the index to `folder` (created if missing): new segments, then the rows file, then clean up."""
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for seg in index._segments:
        name = _segment_name(seg)
        names.append(name)
        if not (folder / name).exists():
            arrays: dict[str, np.ndarray] = {}
            for t in _TABLES:
                table = getattr(seg, t)
                if table is not None:
                    arrays |= {f"{t}.offsets": table.offsets, f"{t}.ent_val": table.ent_val,
                               f"{t}.ent_pos": table.ent_pos, f"{t}.widths": table.widths_arr}
            write_arrays(folder / name, {"lo": seg.lo, "hi": seg.hi}, arrays)
    n = index._n
    write_arrays(folder / "rows.bin", {**meta, "segments": names, "indexed": index._indexed},
                 {"ids": index._ids[:n], "windows": index._windows[:n], "dhash": index._dhash[:n],
                  "live": index._live[:n]})
    for stale in folder.glob("seg-*.bin*"):
        if stale.name not in names:
            stale.unlink()


def discard(folder: Path) -> None:
    """Remove a snapshot that was not used: its segment files must not be mistaken for those of the index
    rebuilt in its place (same rows range and widths, other content) at the next save."""
    if folder.is_dir():
        shutil.rmtree(folder)


def load(folder: Path, windows: int, tail_rows: int | None = None) -> tuple[HashIndex, dict[str, Any]] | None:
    """The index saved in `folder` and the metadata saved with it, or None when there is no usable
    snapshot (missing, torn, another format, another window count: logged)."""
    if not (folder / "rows.bin").is_file():
        return None
    try:
        meta, rows = read_arrays(folder / "rows.bin")
        if rows["windows"].shape[1:] != (windows,):
            raise ValueError(f"{rows['windows'].shape[1:]} windows per row, this build hashes {windows}")
        index = HashIndex(windows) if tail_rows is None else HashIndex(windows, tail_rows=tail_rows)
        index._ids, index._windows, index._dhash, index._live = rows["ids"], rows["windows"], rows["dhash"], rows["live"]
        index._n = len(rows["ids"])
        index._indexed = int(meta["indexed"])
        for name in meta["segments"]:
            seg_meta, arrays = read_arrays(folder / name)
            index._segments.append(_Segment.restore(seg_meta["lo"], seg_meta["hi"], {
                t: _Table.restore(arrays[f"{t}.widths"], arrays[f"{t}.offsets"], arrays[f"{t}.ent_val"],
                                  arrays[f"{t}.ent_pos"]) if f"{t}.widths" in arrays else None for t in _TABLES}))
        edges = [0, *(s.hi for s in index._segments)]
        if [s.lo for s in index._segments] != edges[:-1] or edges[-1] != index._indexed or index._indexed > index._n:
            raise ValueError("segments do not tile the indexed rows")
    except (OSError, ValueError, KeyError, TypeError, json.JSONDecodeError) as exc:
        log.warning("hash index snapshot %s unusable (%s); rebuilding from the catalog", folder, exc)
        return None
    index._reserve(index._tail_rows)  # the rows move to memory now, not inside the first verdict (1 s at 10 M)
    return index, meta


def restore(folder: Path, windows: int, catalog: Catalog, keep_deleted: bool
            ) -> tuple[HashIndex, int, tuple[int, int]] | str | None:
    """The snapshot's index when it fits the catalog, with the rows deleted since it was saved removed: (index,
    id of its last row, its counts as saved). None when there is no usable snapshot; a reason when there is one
    that does not fit (then the index is rebuilt from the catalog).

    Exact: rows are decided and indexed in id order and a decided row never changes but for its deletion,
    so at or below the snapshot's last row the catalog differs from it only by deletions, found through
    the `files_deleted` index. Whatever breaks that reasoning (the catalog restored from a backup, or
    replaced, or `keep_deleted` changed) fails a check here."""
    got = load(folder, windows)
    if got is None or got[0]._n == 0:
        return None
    index, meta = got
    n = index._n
    last = int(index._ids[n - 1])
    row = catalog.get(last)
    deleted = catalog.deleted_ids(last)
    dead = index._ids[:n][~index._live[:n]]
    if meta.get("keep_deleted") != keep_deleted:
        return "match.keep_deleted changed"
    if (row is None or row.state != "decided" or row.error is not None or row.dhash != int(index._dhash[n - 1])
            or row.windows is None or not np.array_equal(row.windows, index._windows[n - 1])):
        return f"its last row, id {last}, is not the catalog's"
    if len(dead) and (keep_deleted or not np.isin(dead, deleted).all()):
        return "it dropped rows the catalog holds"
    saved = index.counts()
    if not keep_deleted and len(deleted):
        index.remove_many(np.asarray(deleted, np.int64))
    return index, last, saved
