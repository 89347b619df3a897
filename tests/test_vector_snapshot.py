"""The usearch file is only a snapshot of the catalog: at start the owner tops it up and prunes it.

Real catalog (SQLite), real usearch index on disk, the owner's own ingest path; vectors are random unit
vectors, which is all the index sees of a model.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

import daemon.index.owner
from daemon.config import Settings
from daemon.index.catalog import Catalog
from daemon.index.owner import IndexOwner
from daemon.index.vectors import ModelVectors, VectorIndex
from workers.features import Features

DIM = 32


def unit(rng: np.random.Generator) -> np.ndarray:
    v = rng.standard_normal(DIM).astype(np.float32)
    return v / np.linalg.norm(v)


@pytest.fixture
def catalogued(tmp_path: Path) -> tuple[Settings, dict[int, np.ndarray], Path]:
    """Three decided files with embeddings, and the snapshot the owner saved of them."""
    settings = Settings(state_dir=tmp_path / "state", model={"name": "ViT-S-32", "pretrained": "/x/tiny.pt"})
    settings.state_dir.mkdir()
    catalog = Catalog(settings.state_dir / "catalog.sqlite3")
    owner = IndexOwner(settings, catalog)
    rng = np.random.default_rng(7)
    vectors = {}
    for i in range(3):
        file_id = owner.register(f"/in/{i}.jpg", 1000 + i, i)
        assert file_id is not None
        vectors[file_id] = unit(rng)
        owner.accept([Features(id=file_id, path=f"/in/{i}.jpg", sha256=f"{i:064x}", size=1000 + i,
                               embedding=vectors[file_id], model=owner.model_identity)])
    assert len(owner.decide_ready()) == 3
    owner.save()
    assert owner.vectors.index is not None
    snapshot = owner.vectors.index.folder
    catalog.close()
    return settings, vectors, snapshot


def keys(index: VectorIndex) -> list[int]:
    return [int(k) for p in index.parts if p.index is not None for k in p.index.keys]


def reopened(settings: Settings) -> IndexOwner:
    return IndexOwner(settings, Catalog(settings.state_dir / "catalog.sqlite3"))


def test_vectors_the_snapshot_lacks_are_added_from_the_catalog(catalogued) -> None:
    settings, vectors, snapshot = catalogued
    lost = max(vectors)
    old = VectorIndex(snapshot, DIM, settings.index.dtype)
    old.remove(lost)  # e.g. the daemon died after this verdict and before its next save
    old.save()
    assert len(VectorIndex(snapshot, DIM, settings.index.dtype)) == 2

    owner = reopened(settings)
    assert owner.vectors is not None and len(owner.vectors) == 3
    assert owner.vectors.index is not None  # opened from the snapshot
    assert owner.vectors.index.search(vectors[lost], 1)[0][0] == lost
    owner.catalog.close()


def test_vectors_the_catalog_does_not_have_are_dropped(catalogued) -> None:
    settings, vectors, snapshot = catalogued
    stray = 10_000  # e.g. a snapshot saved by a catalog that was since restored from an older backup
    old = VectorIndex(snapshot, DIM, settings.index.dtype)
    old.add(stray, unit(np.random.default_rng(8)))
    old.save()

    owner = reopened(settings)
    assert owner.vectors is not None and len(owner.vectors) == 3
    assert owner.vectors.index is not None  # opened from the snapshot
    assert stray not in keys(owner.vectors.index)
    assert {i for i, _ in owner.vectors.index.search(unit(np.random.default_rng(8)), 10)} == set(vectors)
    owner.catalog.close()


def test_start_up_reconciles_the_snapshot_range_by_range(tmp_path: Path, monkeypatch, caplog) -> None:
    """Start-up streams the catalog in id ranges (4 rows each here) and reconciles each range on its own:
    a snapshot that lost a run of vectors spanning several ranges, and that holds keys the catalog has
    no vector for (below its first id, between its ids, past its last), ends equal to the catalog."""
    settings = Settings(state_dir=tmp_path, model={"name": "ViT-S-32", "pretrained": "/x/tiny.pt"})
    catalog = Catalog(tmp_path / "catalog.sqlite3")
    owner = IndexOwner(settings, catalog)
    rng = np.random.default_rng(9)
    vectors: dict[int, np.ndarray] = {}
    hash_only: list[int] = []
    for i in range(30):
        file_id = owner.register(f"/in/{i}.jpg", 1000 + i, i)
        assert file_id is not None
        features = Features(id=file_id, path=f"/in/{i}.jpg", sha256=f"{i:064x}", size=1000 + i)
        if i % 7 == 3:  # decided without a vector: its id is a gap in the index's keys
            hash_only.append(file_id)
        else:
            vectors[file_id] = unit(rng)
            features = replace(features, embedding=vectors[file_id], model=owner.model_identity)
        owner.accept([features])
    assert len(owner.decide_ready()) == 30
    owner.save()
    assert owner.vectors.index is not None  # opened by the first vector
    snapshot = owner.vectors.index.folder
    catalog.close()

    ids = sorted(vectors)
    lost = ids[5:16]  # spans three of the 4-row ranges
    strays = [0, hash_only[1], hash_only[2], max(ids) + 1, 10_000]
    old = VectorIndex(snapshot, DIM, settings.index.dtype)
    for file_id in lost:
        old.remove(file_id)
    for file_id in strays:
        old.add(file_id, unit(rng))
    old.save()

    monkeypatch.setattr(daemon.index.owner, "LOAD_CHUNK", 4)
    with caplog.at_level(logging.INFO, logger="daemon.index.vectors"):
        owner = reopened(settings)
    # each range touched only its own keys: nothing dropped and re-added across a range's boundary
    assert f"added {len(lost)} vectors the snapshot lacked, dropped {len(strays)} the catalog" in caplog.text
    index = owner.vectors.index
    assert index is not None
    assert sorted(keys(index)) == ids
    for file_id in lost:
        assert index.search(vectors[file_id], 1)[0][0] == file_id
    owner.catalog.close()


def test_a_reload_after_one_that_failed_midway_starts_from_the_first_range(tmp_path: Path) -> None:
    """A batch rolled back reloads the indexes from the catalog: a stream that broke after its first
    range must not leave the next one resuming where it stopped."""
    rng = np.random.default_rng(11)
    vectors = {i: unit(rng) for i in range(1, 9)}
    rows = [{"id": i, "embedding_bytes": DIM * 4, "model": "m"} for i in sorted(vectors)]

    def fetch(ids: list[int]) -> list[tuple[int, bytes]]:
        return [(i, vectors[i].tobytes()) for i in ids]

    role = ModelVectors("semantic", "embedding", "model", "m", tmp_path, "f16")
    role.load_range(rows[:4], 4, fetch)  # ... and the stream fails here
    role.close()
    role.load_range(rows[:4], 4, fetch)
    role.load_range(rows[4:], None, fetch)
    assert role.index is not None
    assert sorted(keys(role.index)) == sorted(vectors)
