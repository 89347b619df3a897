"""The vector index as sealed segments and an open tail: files written once, a lost file rebuilt alone (in the
background, while verdicts flow), searches over every segment as good as the exhaustive search.

Real catalog (SQLite), real usearch indexes on disk, the owner's own ingest path; vectors are random unit
vectors, which is all the index sees of a model. Segment sizes are shrunk so that a few hundred files make
several segments and merges.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pytest

from daemon.config import Settings
from daemon.index import vectors
from daemon.index.catalog import Catalog
from daemon.index.owner import IndexOwner
from daemon.index.rebuilds import describe, rebuilding
from daemon.index.vectors import VectorIndex
from workers.features import Features

DIM = 32


@pytest.fixture(autouse=True)
def small_segments(monkeypatch) -> None:
    monkeypatch.setattr(vectors, "TAIL_VECTORS", 16)
    monkeypatch.setattr(vectors, "MERGE_FACTOR", 2)
    monkeypatch.setattr(vectors, "MAX_SEGMENT", 64)


def unit(rng: np.random.Generator, n: int, dim: int = DIM) -> np.ndarray:
    v = rng.standard_normal((n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def owner_on(state: Path, background: bool = False) -> IndexOwner:
    settings = Settings(state_dir=state, model={"name": "ViT-S-32", "pretrained": "/x/tiny.pt"})
    return IndexOwner(settings, Catalog(state / "catalog.sqlite3"), background=background)


def decide(owner: IndexOwner, vecs: np.ndarray, start: int) -> dict[int, np.ndarray]:
    """Catalog and decide one file per vector; {id: vector}."""
    out = {}
    for i, v in enumerate(vecs, start):
        file_id = owner.register(f"/in/{i}.jpg", 1000 + i, i)
        assert file_id is not None
        owner.accept([Features(id=file_id, path=f"/in/{i}.jpg", sha256=f"{i:064x}", size=1000 + i,
                               embedding=v, model=owner.model_identity)])
        out[file_id] = v
    assert len(owner.decide_ready(limit=len(vecs))) == len(vecs)
    return out


def stats(folder: Path) -> dict[str, tuple[int, int]]:
    return {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in folder.glob("seg-*.usearch")}


def keys(index: VectorIndex) -> list[int]:
    return sorted(int(k) for p in index.parts if p.index is not None for k in p.index.keys)


@pytest.fixture
def filled(tmp_path: Path) -> tuple[Path, dict[int, np.ndarray], Path]:
    """150 decided files with vectors, saved: several sealed segments, some merged, and a tail."""
    state = tmp_path / "state"
    state.mkdir()
    owner = owner_on(state)
    vecs = decide(owner, unit(np.random.default_rng(1), 150), 0)
    owner.save()
    assert owner.vectors.index is not None
    folder = owner.vectors.index.folder
    assert len(owner.vectors.index.parts) >= 3 and 0 < len(owner.vectors.index.parts[-1]) < 16
    owner.close()
    owner.catalog.close()
    return state, vecs, folder


def test_sealed_segments_are_written_once_and_a_save_rewrites_the_tail(filled) -> None:
    state, _, folder = filled
    before = stats(folder)
    tail = (folder / "tail.usearch").stat().st_mtime_ns
    owner = owner_on(state)
    decide(owner, unit(np.random.default_rng(2), 1), 1000)  # one more file: the tail changes, no seal
    owner.save()
    assert stats(folder) == before
    assert (folder / "tail.usearch").stat().st_mtime_ns != tail
    owner.close()
    owner.catalog.close()


def test_a_lost_tail_costs_only_its_range(filled, monkeypatch) -> None:
    state, vecs, folder = filled
    monkeypatch.setattr(vectors, "MERGE_FACTOR", 1000)  # no merge: every file but the tail's stays as it was
    before = stats(folder)
    (folder / "tail.usearch").unlink()
    owner = owner_on(state)
    assert owner.vectors.index is not None
    assert keys(owner.vectors.index) == sorted(vecs)
    owner.save()
    kept = stats(folder)
    assert {k: v for k, v in kept.items() if k in before} == before  # no sealed file rewritten
    assert len(kept) == len(before) + 1  # the lost tail's range, sealed as a segment of its own
    owner.close()
    owner.catalog.close()


def test_a_lost_segment_is_rebuilt_in_the_background_while_verdicts_flow(filled, monkeypatch) -> None:
    state, vecs, folder = filled
    lost = min(folder.glob("seg-*.usearch"))
    lo, hi = (int(x) for x in lost.stem.split("-")[1:])
    lost.unlink()
    gate = threading.Event()
    real = vectors.fetch_vectors

    def gated(*args, **kwargs):
        if threading.current_thread().name == "vector-segments":
            assert gate.wait(30)
        return real(*args, **kwargs)

    monkeypatch.setattr(vectors, "fetch_vectors", gated)
    owner = owner_on(state, background=True)
    progress = owner.vectors.progress()
    assert progress is not None
    in_range = [i for i in vecs if lo < i <= hi]
    assert progress["rebuilding"] == [{"index": "semantic", "lo": lo, "hi": hi, "built": 0, "total": len(in_range)}]
    assert rebuilding(state) == progress["rebuilding"]  # what `dupwatch status` reads, from another process
    assert f"semantic vectors of ids {lo + 1}-{hi} rebuilding" in describe(rebuilding(state))
    rng = np.random.default_rng(3)
    more = decide(owner, unit(rng, 20), 2000)  # verdicts flow meanwhile (and seal the tail once)
    found = owner.vectors.search_vector(vecs[in_range[0]], 10**9, 1, set())
    assert found and found[0][0] != in_range[0]  # its range is not searchable yet
    gate.set()
    index = owner.vectors.index
    assert index is not None
    index.wait()
    assert owner.vectors.progress()["rebuilding"] == []  # type: ignore[index]
    assert rebuilding(state) == []
    assert keys(index) == sorted({**vecs, **more})
    assert owner.vectors.search_vector(vecs[in_range[0]], 10**9, 1, set())[0][0] == in_range[0]
    owner.save()
    manifest = json.loads((folder / "manifest.json").read_text())
    listed = {f"seg-{a}-{b}.usearch" for a, b in manifest["segments"]} | {"tail.usearch"}
    assert {p.name for p in folder.glob("*.usearch")} == listed  # merged-away files removed
    owner.close()
    owner.catalog.close()


def test_copies_are_found_through_the_segments_as_by_the_exhaustive_search(tmp_path: Path) -> None:
    """Planted copies (an original plus noise) among 3,000 vectors in 64 dimensions: the original is the
    exhaustive search's nearest, and the segmented index finds it for at least 0.99 of the copies."""
    rng = np.random.default_rng(4)
    base = unit(rng, 3000, 64)
    index = VectorIndex(tmp_path / "v", 64, "f16")
    index._finish_load()
    for start in range(0, len(base), 100):
        index.add_many(np.arange(start + 1, start + 101, dtype=np.int64), base[start:start + 100])
    assert sum(p.hi is not None for p in index.parts) >= 4 and max(len(p) for p in index.parts) > 16  # merged
    originals = rng.choice(len(base), 300, replace=False)
    copies = base[originals] + 0.3 * unit(rng, 300, 64) / np.sqrt(64) * 8
    copies /= np.linalg.norm(copies, axis=1, keepdims=True)
    exhaustive = np.argmax(copies @ base.T, axis=1) + 1
    assert (exhaustive == originals + 1).all()
    found = sum(int(o) in {i for i, _ in index.search(q, 5)} for q, o in zip(copies, exhaustive, strict=True))
    assert found / len(copies) >= 0.99
