"""The hash index snapshot: start-up takes the index from it, and a stale, missing or unusable one ends in
exactly the index a rebuild from the catalog gives (the catalog is the truth; the snapshot is a cache).

The reference in each test is an owner started with no snapshot at all (the stream-and-build path); both
are compared on their live rows and on the answers of `best()` to queries planted near stored rows
(deleted ones included), also against the exhaustive search over the catalog's eligible rows."""

from __future__ import annotations

import logging
import shutil

import numpy as np
import pytest

from daemon.config import Settings
from daemon.index.catalog import Catalog
from daemon.index.hashindex import ExhaustiveHashIndex
from daemon.index.owner import HASH_SNAPSHOT, IndexOwner
from workers.image.hashing import WINDOWS


def _fill(catalog: Catalog, n: int, rng: np.random.Generator, prefix: str = "/w") -> list[int]:
    """n decided rows with random hashes, through the catalog's batched write path."""
    first = catalog.query("SELECT coalesce(max(id), 0) FROM files")[0][0]
    ids = [i for i, _ in catalog.land_many([(f"{prefix}/{first + k}.jpg", 1, 1) for k in range(n)]) if i is not None]
    hashes = rng.integers(-(2**63), 2**63 - 1, (n, len(WINDOWS) + 9), dtype=np.int64, endpoint=True)
    catalog.store_features_many([(i, {"dhash": int(h[0]), "windows": h[1:1 + len(WINDOWS)], "dihedral": h[-8:],
                                      "phash": int(h[1])}) for i, h in zip(ids, hashes, strict=True)])
    with catalog.transaction() as conn:
        conn.execute("UPDATE files SET state = 'decided', verdict = 'new' WHERE id BETWEEN ? AND ?", (ids[0], ids[-1]))
    return ids


def _live(owner: IndexOwner) -> list[int]:
    h = owner.hashes
    return h._ids[: h._n][h._live[: h._n]].tolist()


def _assert_same_answers(owner: IndexOwner, reference: IndexOwner, catalog: Catalog, keep: bool = False) -> None:
    assert _live(owner) == _live(reference)
    eligible = catalog.query("SELECT id, dhash, windows FROM files WHERE state = 'decided' AND error IS NULL"
                             + ("" if keep else " AND deleted_at IS NULL") + " ORDER BY id")
    assert _live(reference) == [r["id"] for r in eligible]
    exhaustive = ExhaustiveHashIndex(len(WINDOWS))
    for r in eligible:
        exhaustive.add(r["id"], np.frombuffer(r["windows"], np.int64), r["dhash"])
    every = catalog.query("SELECT id, dhash, windows, dihedral FROM files WHERE windows IS NOT NULL ORDER BY id")
    rng = np.random.default_rng(11)
    rule = owner.thresholds.hashes
    found = 0
    for r in every[:: max(1, len(every) // 300)]:  # planted near stored rows, deleted ones included
        windows = np.frombuffer(r["windows"], np.int64).copy()
        windows[0] ^= np.int64(1 << int(rng.integers(0, 63)))
        dihedral = np.frombuffer(r["dihedral"], np.int64).copy()
        dihedral[0] = windows[0]
        args = (windows, dihedral, int(r["dhash"]), 1 << 62, rule)
        got = owner.hashes.best(*args)
        assert got == reference.hashes.best(*args) == exhaustive.best(*args), r["id"]
        found += got is not None
    assert found > 100


@pytest.fixture
def catalog(tmp_path):
    catalog = Catalog(tmp_path / "catalog.sqlite3")
    yield catalog
    catalog.close()


def _settings(tmp_path, keep: bool = False) -> Settings:
    return Settings(state_dir=tmp_path / "state", hash_only=True, match={"keep_deleted": keep})


def _rebuilt(tmp_path, catalog: Catalog, keep: bool = False) -> IndexOwner:
    """The reference: an owner started with no snapshot (the snapshot is put back afterwards)."""
    folder = tmp_path / "state" / HASH_SNAPSHOT
    aside = tmp_path / "aside"
    if folder.exists():
        shutil.move(folder, aside)
    try:
        return IndexOwner(_settings(tmp_path, keep), catalog)
    finally:
        if aside.exists():
            shutil.move(aside, folder)


def test_a_stale_snapshot_is_brought_up_to_date_exactly(tmp_path, catalog, caplog):
    rng = np.random.default_rng(5)
    ids = _fill(catalog, 3000, rng)
    first = IndexOwner(_settings(tmp_path), catalog)
    first.hashes.remove(ids[7])  # a deletion the owner saw before the save (retired), in the catalog too
    catalog.deleted(f"/w/{ids[7] - 1}.jpg")
    first.save()
    # after the save: deletions below its last row and past it, new rows, an error row
    for i in ids[100:160]:
        catalog.deleted(f"/w/{i - 1}.jpg")
    more = _fill(catalog, 700, rng)
    for i in more[::70]:
        catalog.deleted(f"/w/{i - 1}.jpg")
    failed = catalog.register("/w/bad.jpg", 1, 1)
    catalog.fail_pending(failed, "unreadable")
    with catalog.transaction() as conn:
        conn.execute("UPDATE files SET state = 'decided', verdict = 'error' WHERE id = ?", (failed,))
    _fill(catalog, 50, rng)
    with caplog.at_level(logging.INFO, logger="daemon.index.owner"):
        restored = IndexOwner(_settings(tmp_path), catalog)
    assert f"snapshot up to id {ids[-1]}" in caplog.text  # the snapshot was used, not a rebuild
    _assert_same_answers(restored, _rebuilt(tmp_path, catalog), catalog)
    restored.save()  # the repaired index saved: the next start needs no repair and gives the same
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="daemon.index.owner"):
        again = IndexOwner(_settings(tmp_path), catalog)
    assert f"snapshot up to id {_live(restored)[-1]}" in caplog.text
    _assert_same_answers(again, restored, catalog)


def _break_rows_file(folder):
    rows = folder / "rows.bin"
    rows.write_bytes(rows.read_bytes()[:-1000])


def _drop_segment(folder):
    next(folder.glob("seg-*.bin")).unlink()


@pytest.mark.parametrize("damage", [_break_rows_file, _drop_segment])
def test_a_torn_snapshot_is_rebuilt_from_the_catalog(tmp_path, catalog, caplog, damage):
    _fill(catalog, 2500, np.random.default_rng(6))
    IndexOwner(_settings(tmp_path), catalog).save()
    damage(tmp_path / "state" / HASH_SNAPSHOT)
    with caplog.at_level(logging.INFO):
        owner = IndexOwner(_settings(tmp_path), catalog)
    assert "unusable" in caplog.text and "no snapshot" in caplog.text
    _assert_same_answers(owner, _rebuilt(tmp_path, catalog), catalog)


def test_a_snapshot_of_another_catalog_is_not_used(tmp_path, catalog, caplog):
    _fill(catalog, 2500, np.random.default_rng(7))
    IndexOwner(_settings(tmp_path), catalog).save()
    other = Catalog(tmp_path / "other.sqlite3")  # same ids, other pictures (a catalog restored or replaced)
    _fill(other, 2500, np.random.default_rng(8))  # same size: segments of the same range and widths
    with caplog.at_level(logging.INFO):
        owner = IndexOwner(_settings(tmp_path), other)
    assert "does not fit the catalog" in caplog.text
    _assert_same_answers(owner, _rebuilt(tmp_path, other), other)
    owner.save()  # the rebuilt index's snapshot: none of the old one's files may pass for its own
    caplog.clear()
    with caplog.at_level(logging.INFO):
        again = IndexOwner(_settings(tmp_path), other)
    assert "snapshot up to id" in caplog.text
    _assert_same_answers(again, owner, other)
    other.close()


def test_a_snapshot_that_dropped_rows_the_catalog_keeps_is_not_used(tmp_path, catalog, caplog):
    ids = _fill(catalog, 2500, np.random.default_rng(9))
    for i in ids[:30]:
        catalog.deleted(f"/w/{i - 1}.jpg")
    IndexOwner(_settings(tmp_path), catalog).save()  # deleted rows left out
    with caplog.at_level(logging.INFO):
        owner = IndexOwner(_settings(tmp_path, keep=True), catalog)  # now they must match
    assert "keep_deleted changed" in caplog.text
    _assert_same_answers(owner, _rebuilt(tmp_path, catalog, keep=True), catalog, keep=True)


def test_a_read_only_owner_neither_removes_nor_writes_a_snapshot(tmp_path, catalog):
    """`query` opens the catalog read-only: an unusable snapshot is rebuilt in its memory only, and left on
    disk for the daemon (a read-only command writes nothing in the state dir)."""
    _fill(catalog, 2500, np.random.default_rng(10))
    IndexOwner(_settings(tmp_path), catalog).save()
    folder = tmp_path / "state" / HASH_SNAPSHOT
    _break_rows_file(folder)
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    reader = Catalog(tmp_path / "catalog.sqlite3", read_only=True)
    owner = IndexOwner(_settings(tmp_path), reader)
    owner.save()
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    _assert_same_answers(owner, _rebuilt(tmp_path, catalog), catalog)
    reader.close()
