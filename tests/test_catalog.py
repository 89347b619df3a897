"""The catalog at scale: every per-file lookup of the owner plans as an index lookup, old catalogs are
migrated to the current schema, and start-up streams the decided rows instead of fetching them whole."""

from __future__ import annotations

import re
import shutil
import sqlite3
import time

import numpy as np
import pytest

from daemon.config import Settings
from daemon.index.catalog import SCHEMA_VERSION, Catalog
from daemon.index.owner import IndexOwner
from workers.hashing import WINDOWS

FULL_SCAN = re.compile(r"\bSCAN (files|not_duplicates)\b(?! USING (COVERING )?INDEX files_undecided)")
"""A plan step that walks a whole table. Scanning the partial index of undecided rows is fine: it holds
only the files still waiting for a verdict, however big the catalog grows."""


def _features(rng: np.random.Generator, n: int) -> dict:
    windows = rng.integers(-(2**62), 2**62, len(WINDOWS), dtype=np.int64)
    return {"sha256": f"{n % 7:064x}", "pixel_sha": f"{n % 5:064x}", "phash": int(windows[0]),
            "dhash": int(rng.integers(-(2**62), 2**62)), "windows": windows,
            "dihedral": rng.integers(-(2**62), 2**62, 8, dtype=np.int64), "width": 10, "height": 10}


def test_every_per_file_query_of_the_owner_is_an_index_lookup(tmp_path):
    catalog = Catalog(tmp_path / "catalog.sqlite3")
    owner = IndexOwner(Settings(state_dir=tmp_path, hash_only=True), catalog)
    rng = np.random.default_rng(0)
    ids = [owner.register(f"/w/{n}.jpg", 100 + n, n) for n in range(40)]
    catalog.conn.execute("INSERT INTO not_duplicates (a, b, marked_at) VALUES (?, ?, 0)", (ids[0], ids[7]))
    statements: list[str] = []
    catalog.conn.set_trace_callback(statements.append)
    owner.register("/w/late.jpg", 1, 1)
    for n, file_id in enumerate(ids):
        catalog.store_features(file_id, _features(rng, n))
    owner.decide_ready()
    catalog.by_path("/w/3.jpg")
    owner.moved("/w/3.jpg", "/w/3b.jpg")
    owner.deleted("/w/4.jpg")
    catalog.conn.set_trace_callback(None)
    verdicts = {r.verdict for r in map(catalog.get, ids)}
    assert {"exact-copy", "new"} <= verdicts  # the sha256 and pixel_sha lookups ran
    plans = {}
    for sql in {s for s in statements if s.split()[0].upper() in ("SELECT", "WITH", "UPDATE", "INSERT", "DELETE")}:
        plans[sql] = [row[3] for row in catalog.conn.execute(f"EXPLAIN QUERY PLAN {sql}")]
    assert any("files_pixel_sha" in " ".join(p) for p in plans.values())
    assert any("files_undecided" in " ".join(p) for p in plans.values())
    scans = {sql: plan for sql, plan in plans.items() if any(FULL_SCAN.search(step) for step in plan)}
    assert not scans, scans


OLD_SCHEMA = """
CREATE TABLE files (
    id INTEGER PRIMARY KEY AUTOINCREMENT, path TEXT NOT NULL, size INTEGER, mtime_ns INTEGER,
    state TEXT NOT NULL DEFAULT 'pending', current INTEGER NOT NULL DEFAULT 1, detected_at REAL NOT NULL,
    queued_at REAL, job_id TEXT, attempts INTEGER NOT NULL DEFAULT 0, sha256 TEXT, pixel_sha TEXT,
    phash INTEGER, dhash INTEGER, windows BLOB, dihedral BLOB, width INTEGER, height INTEGER, format TEXT,
    embedding BLOB, model TEXT, verdict TEXT, match_id INTEGER REFERENCES files(id), score REAL,
    hash_distance INTEGER, signal TEXT, error TEXT, decided_at REAL, deleted_at REAL
);
CREATE UNIQUE INDEX files_current_path ON files(path) WHERE current = 1;
CREATE INDEX files_sha256 ON files(sha256);
CREATE INDEX files_open ON files(state) WHERE state != 'decided';
CREATE INDEX files_decided_at ON files(decided_at);
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE not_duplicates (a INTEGER NOT NULL, b INTEGER NOT NULL, marked_at REAL NOT NULL, PRIMARY KEY (a, b));
INSERT INTO files (path, state, detected_at, pixel_sha, verdict) VALUES ('/w/a.png', 'decided', 1.0, 'ff', 'new');
"""
"""The catalog as dupwatch 0.1 wrote it: no schema version, no pixel_sha or undecided-row index."""


def test_a_v0_1_catalog_is_upgraded_in_place(tmp_path):
    path = tmp_path / "catalog.sqlite3"
    old = sqlite3.connect(path)
    old.executescript(OLD_SCHEMA)
    old.close()
    catalog = Catalog(path)
    assert catalog.schema_version == SCHEMA_VERSION == 5
    assert catalog.meta_get("schema_version") == "5"
    indexes = {r["name"] for r in catalog.query("SELECT name FROM sqlite_master WHERE type = 'index'")}
    assert {"files_pixel_sha", "files_undecided", "not_duplicates_b", "files_deleted"} <= indexes
    assert catalog.decided_with("pixel_sha", "ff", 10, include_deleted=False).path == "/w/a.png"
    assert catalog.get(1).edit is None  # the edit column was added in place
    catalog.close()
    assert Catalog(path).schema_version == 5  # opening again changes nothing


def _schema2_catalog(path, vectors: dict[int, tuple[np.ndarray, np.ndarray]]) -> None:
    """A catalog as dupwatch wrote it at schema 2: float32 vectors in the `files` rows."""
    old = sqlite3.connect(path)
    old.executescript(OLD_SCHEMA.replace("embedding BLOB, model TEXT,", "embedding BLOB, model TEXT, copy_embedding BLOB, "
                                         "copy_model TEXT, copy_inner BLOB, edit TEXT,"))
    old.execute("INSERT INTO meta VALUES ('schema_version', '2')")
    for file_id, (semantic, copy) in vectors.items():
        old.execute("INSERT INTO files (id, path, state, detected_at, verdict, dhash, embedding, model, copy_embedding,"
                    " copy_model) VALUES (?, ?, 'decided', 1.0, 'new', 0, ?, 'clip', ?, 'sscd')",
                    (file_id, f"/w/{file_id}.jpg", semantic.tobytes(), copy.tobytes()))
    old.commit()
    old.close()


def test_a_schema_2_catalog_moves_its_vectors_out_of_the_files_rows(tmp_path):
    rng = np.random.default_rng(3)
    unit = [v / np.linalg.norm(v) for v in rng.normal(size=(6, 512)).astype(np.float32)]
    vectors = {2: (unit[0], unit[1]), 3: (unit[2], unit[3]), 5: (unit[4], unit[5])}
    path = tmp_path / "catalog.sqlite3"
    _schema2_catalog(path, vectors)
    catalog = Catalog(path)
    assert catalog.schema_version == 5
    columns = {r["name"] for r in catalog.query("PRAGMA table_info(files)")}
    assert not columns & {"embedding", "copy_embedding", "copy_inner"}  # the hot rows hold no vectors
    assert {"model", "copy_model", "edit"} <= columns
    stored = catalog.query("SELECT file_id, length(embedding) AS n, length(copy_embedding) AS c FROM vectors")
    assert {(r["file_id"], r["n"], r["c"]) for r in stored} == {(i, 1024, 1024) for i in vectors}  # float16
    for file_id, (semantic, copy) in vectors.items():
        row = catalog.get(file_id)
        assert row.embedding.dtype == np.float32 and row.copy_inner is None
        assert np.abs(row.embedding - semantic).max() < 1e-3 and np.abs(row.copy_embedding - copy).max() < 1e-3
    sizes = {r["id"]: r["embedding_bytes"] for r in catalog.decided_features(include_deleted=False)}
    assert sizes == {1: None, 2: 1024, 3: 1024, 5: 1024}  # row 1: OLD_SCHEMA's own, with no vectors
    catalog.close()
    assert Catalog(path).schema_version == 5  # opening again changes nothing


def test_vectors_are_stored_apart_from_the_row_and_read_back_with_it(tmp_path):
    catalog = Catalog(tmp_path / "catalog.sqlite3")
    file_id = catalog.register("/w/a.jpg", 1, 1)
    vector = np.linspace(-1, 1, 64, dtype=np.float32)
    assert catalog.store_features(file_id, {"dhash": 7, "copy_embedding": vector, "copy_model": "sscd"})
    assert catalog.query("SELECT length(copy_embedding) AS n FROM vectors WHERE file_id = ?", (file_id,))[0]["n"] == 128
    row = catalog.head(1)[0]
    assert row.dhash == 7 and row.embedding is None and np.abs(row.copy_embedding - vector).max() < 1e-3
    assert not catalog.store_features(file_id, {"copy_embedding": -vector})  # no longer pending: ignored
    assert np.abs(catalog.get(file_id).copy_embedding - vector).max() < 1e-3


def test_a_catalog_from_a_newer_dupwatch_is_refused(tmp_path):
    catalog = Catalog(tmp_path / "catalog.sqlite3")
    catalog.meta_set("schema_version", "99")
    catalog.close()
    with pytest.raises(RuntimeError, match="schema 99"):
        Catalog(tmp_path / "catalog.sqlite3")


def test_deleted_ids_come_from_the_partial_index(tmp_path):
    catalog = Catalog(tmp_path / "catalog.sqlite3")
    ids = [catalog.register(f"/w/{i}.jpg", 1, 1) for i in range(6)]
    for i in (4, 1, 5):
        catalog.deleted(f"/w/{i}.jpg")
    assert catalog.deleted_ids(ids[4]).tolist() == [ids[1], ids[4]]  # increasing, up to the bound
    plan = " ".join(r[3] for r in catalog.query(
        "EXPLAIN QUERY PLAN SELECT id FROM files WHERE deleted_at IS NOT NULL AND id <= ? ORDER BY id", (9,)))
    assert "files_deleted" in plan, plan  # an index lookup, not a walk of every row


def test_decided_features_streams_every_row_in_id_order(tmp_path):
    catalog = Catalog(tmp_path / "catalog.sqlite3")
    ids = [catalog.register(f"/w/{n}.jpg", n, n) for n in range(7)]
    with catalog.transaction() as conn:
        conn.execute("UPDATE files SET state = 'decided', dhash = id")
    assert [r["id"] for r in catalog.decided_features(include_deleted=False, chunk=3)] == ids


def _featured_owner(tmp_path, n: int, on_commit=None) -> tuple[Catalog, IndexOwner, list[int]]:
    catalog = Catalog(tmp_path / "catalog.sqlite3")
    owner = IndexOwner(Settings(state_dir=tmp_path, hash_only=True), catalog, on_commit=on_commit)
    rng = np.random.default_rng(1)
    ids: list[int] = []
    for k in range(n):
        new = owner.register(f"/w/{k}.jpg", 100 + k, k)
        assert new is not None  # a fresh catalog: every path is new
        ids.append(new)
    for k, file_id in enumerate(ids):
        catalog.store_features(file_id, _features(rng, k))
    return catalog, owner, ids


def test_a_batch_of_verdicts_commits_once(tmp_path):
    catalog, owner, ids = _featured_owner(tmp_path, 30)
    statements: list[str] = []
    catalog.conn.set_trace_callback(statements.append)
    assert len(owner.decide_ready()) == 30
    catalog.conn.set_trace_callback(None)
    assert sum(s.strip().upper() == "COMMIT" for s in statements) == 1
    assert {catalog.get(i).state for i in ids} == {"decided"}


def test_a_failed_batch_commits_nothing_and_leaves_no_trace_in_the_index(tmp_path):
    calls = []

    def outbox(conn, event):  # the webhook outbox row fails on the 3rd verdict (say, disk full)
        calls.append(event.file.id)
        if len(calls) == 3:
            raise sqlite3.OperationalError("database or disk is full")

    catalog, owner, ids = _featured_owner(tmp_path, 10, on_commit=outbox)
    with pytest.raises(sqlite3.OperationalError):
        owner.decide_ready()
    assert {catalog.get(i).state for i in ids} == {"featured"}  # rolled back as a whole
    assert len(owner.hashes) == 0  # the two rows decided in memory before the failure were dropped
    assert [e.file.id for e in owner.decide_ready()] == ids  # and the next pass decides them all
    assert len(owner.hashes) == 10


def test_start_up_rebuilds_a_missing_vector_snapshot_from_the_catalog(tmp_path):
    from workers.models.base import identity_of

    settings = Settings(state_dir=tmp_path)
    catalog = Catalog(tmp_path / "catalog.sqlite3")
    owner = IndexOwner(settings, catalog)
    rng = np.random.default_rng(2)
    ids = [owner.register(f"/w/{k}.jpg", 100 + k, k) for k in range(12)]
    for k, file_id in enumerate(ids):
        vector = rng.normal(size=64).astype(np.float32)
        catalog.store_features(file_id, {**_features(rng, k), "embedding": vector / np.linalg.norm(vector),
                                         "model": identity_of(settings.model)})
    owner.decide_ready()
    assert owner.vectors is not None and len(owner.vectors) == 12
    owner.save()
    snapshot = owner.vectors.index.folder
    assert len(IndexOwner(settings, catalog).vectors) == 12  # from the snapshot
    shutil.rmtree(snapshot)
    rebuilt = IndexOwner(settings, catalog)  # start-up reads only the blobs' lengths, then fetches the vectors
    assert rebuilt.vectors is not None and len(rebuilt.vectors) == 12 and rebuilt.vectors.index.ndim == 64
    assert rebuilt.vectors.index.search(catalog.get(ids[5]).embedding, 1)[0][0] == ids[5]


def test_a_scan_batch_lands_and_stores_its_features_in_one_commit_each(tmp_path):
    """`scan` registers a batch and stores its results in one transaction each, with the same outcome
    as file by file: new ids in order, a known version reported as None, a changed one replacing it."""
    catalog = Catalog(tmp_path / "catalog.sqlite3")
    owner = IndexOwner(Settings(state_dir=tmp_path, hash_only=True), catalog)
    first = owner.register("/w/kept.jpg", 5, 5)
    replaced = owner.register("/w/changed.jpg", 5, 5)
    statements: list[str] = []
    catalog.conn.set_trace_callback(statements.append)
    landed = [(f"/w/{n}.jpg", 100 + n, n) for n in range(20)] + [("/w/kept.jpg", 5, 5), ("/w/changed.jpg", 6, 6)]
    ids = owner.register_many(landed)
    assert sum(s.strip().upper() == "COMMIT" for s in statements) == 1
    assert ids[20] is None and None not in ids[:20] + ids[21:]
    assert ids[:20] == sorted(ids[:20]) and ids[0] > replaced and ids[21] > ids[19]  # arrival order
    assert catalog.by_path("/w/kept.jpg").id == first and catalog.by_path("/w/changed.jpg").id == ids[21]
    assert catalog.get(replaced) is None  # replaced before any worker read it: the final bytes get the verdict

    rng = np.random.default_rng(2)
    statements.clear()
    results = [(file_id, _features(rng, n)) for n, file_id in enumerate(ids[:20])]
    results[3][1].pop("pixel_sha")  # a result with other columns goes in the same transaction
    assert catalog.store_features_many(results) == 20
    assert sum(s.strip().upper() == "COMMIT" for s in statements) == 1
    assert catalog.store_features_many(results[:5]) == 0  # a re-queued job's duplicate results change nothing
    row = catalog.get(ids[3])
    assert row.state == "featured" and row.pixel_sha is None and np.array_equal(row.windows, results[3][1]["windows"])


def test_deciding_a_file_costs_four_statements_and_its_matches(tmp_path):
    """Per decided file the owner reads what it may not match (one statement for earlier versions and
    marked pairs), looks up its sha256 and pixel digest and writes its verdict; whether a file is still
    live comes from the row already read. Matches add the match's row for the event."""
    catalog, owner, ids = _featured_owner(tmp_path, 30)
    statements: list[str] = []
    catalog.conn.set_trace_callback(statements.append)
    events = owner.decide_ready()
    catalog.conn.set_trace_callback(None)
    matches = sum(e.best is not None for e in events)
    by_sha = sum(e.best is not None and e.best.signal == "sha256" for e in events)  # no pixel digest lookup
    reads_writes = [s for s in statements if s.split()[0].upper() in ("SELECT", "UPDATE", "INSERT")]
    assert len(reads_writes) <= 4 * len(ids) - by_sha + matches + 2, reads_writes


def test_a_batch_decided_at_once_finds_the_exact_copies_one_query_per_file_would(tmp_path):
    """The owner reads a batch's exact-copy lookups in one statement per kind before evaluating it. Each file
    must still get the earliest earlier file with its sha256 (else pixel sha) that is not excluded: not past a
    "not a duplicate" mark nor an earlier version of its own path (looked up again), and not missing a file
    of the same batch that a commit in the middle of the batch (more rows than MAX_WAITING) took out of the
    owner's uncommitted list."""
    from daemon.index.owner import MAX_WAITING

    catalog = Catalog(tmp_path / "catalog.sqlite3")
    owner = IndexOwner(Settings(state_dir=tmp_path, hash_only=True), catalog)
    rng = np.random.default_rng(1)
    n = 2 * MAX_WAITING + 40  # one head batch, committed twice in its middle
    paths = [f"/w/{k}.jpg" for k in range(n - 1)] + ["/w/3.jpg"]  # the last one: a new version of /w/3.jpg
    sha = [f"{k % 50:064x}" for k in range(n)]  # file k and k+50, k+100 are byte-identical
    pix = [f"{k % 29 + 1000:064x}" for k in range(n)]
    sha[n - 1] = sha[3]  # the new version of /w/3.jpg: byte-identical to its old version, which cannot count
    ids = []
    for k, p in enumerate(paths):  # each read by a worker before the next lands (the last replaces a featured row)
        ids.append(owner.register(p, 100 + k, k))
        catalog.store_features(ids[k], {**_features(rng, k), "sha256": sha[k], "pixel_sha": pix[k]})
    catalog.conn.execute("INSERT INTO not_duplicates (a, b, marked_at) VALUES (?, ?, 0)", (ids[0], ids[50]))
    events = owner.decide_ready()
    assert len(events) == n - 1  # the last: the bytes its path had, decided already; no second verdict
    assert catalog.get(ids[n - 1]).state == "decided" and catalog.get(ids[n - 1]).verdict == "new"

    def expected(k: int) -> tuple[str, int | None, str | None]:
        excluded = {ids[j] for j in range(k) if paths[j] == paths[k]}
        excluded |= {ids[50]} if k == 0 else {ids[0]} if k == 50 else set()
        for column, values, signal in (("sha256", sha, "sha256"), ("pixel_sha", pix, "pixels")):
            earlier = [ids[j] for j in range(k) if values[j] == values[k] and ids[j] not in excluded]
            if earlier:
                return "exact-copy", earlier[0], signal
        return "new", None, None

    got = {e.file.id: (e.kind, e.matches[0].file.id if e.matches else None, e.matches[0].signal if e.matches else None)
           for e in events}
    assert got == {ids[k]: expected(k) for k in range(n - 1)}
    assert got[ids[50]] == ("exact-copy", ids[21], "pixels")  # the excluded first twin is passed over
    assert got[ids[100]] == ("exact-copy", ids[0], "sha256")  # ids[0] was committed after the batch's read
    # a later batch, whose earliest twins were decided before it: marked "not a duplicate", or an earlier
    # version of the same path, the first twin is passed over for the next one
    marked, replaced = owner.register("/w/marked.jpg", 1, 1), owner.register("/w/7.jpg", 2, 2)
    catalog.conn.execute("INSERT INTO not_duplicates (a, b, marked_at) VALUES (?, ?, 0)", (ids[0], marked))
    catalog.store_features(marked, {**_features(rng, 0), "sha256": sha[0], "pixel_sha": "ab" * 32})
    catalog.store_features(replaced, {**_features(rng, 0), "sha256": sha[57], "pixel_sha": "cd" * 32})
    catalog.conn.execute("UPDATE files SET sha256 = 'ef' WHERE id = ?", (ids[7],))  # its old bytes were others
    later = {e.file.id: e.matches[0].file.id for e in owner.decide_ready()}
    assert later == {marked: ids[50], replaced: ids[57]}


def _write_pages(catalog: Catalog, megabytes: int, tag: str) -> None:
    """About `megabytes` of new pages through the writer's own transactions (a meta value per commit)."""
    blob = "x" * 100_000
    for k in range(megabytes * 10):
        with catalog.transaction() as conn:
            conn.execute("INSERT INTO meta (key, value) VALUES (?, ?)", (f"{tag}{k}", blob))


def test_the_write_ahead_log_is_copied_into_the_catalog_off_the_writers_commits(tmp_path):
    """A background checkpoint, not the writer: the database file grows to hold what was committed without
    another commit, and with the thread stopped, 8 MB of commits (past SQLite's own 1,000-page automatic
    checkpoint, which ran inside the commit that crossed it) leave the copying to it."""
    path = tmp_path / "catalog.sqlite3"
    catalog = Catalog(path)
    empty = path.stat().st_size
    _write_pages(catalog, 4, "first")
    deadline = time.monotonic() + 10
    while path.stat().st_size < empty + 4_000_000 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert path.stat().st_size >= empty + 4_000_000, "the log was never copied into the database file"
    catalog._checkpointer.close()
    copied = path.stat().st_size
    _write_pages(catalog, 8, "second")
    time.sleep(1)
    assert path.stat().st_size == copied, "a commit checkpointed on the writer's own time"
    catalog.conn.close()


def test_a_batch_probed_ahead_finds_the_hash_matches_one_file_at_a_time_would(tmp_path):
    """Once the hash index has segments, the owner probes a batch's hash searches ahead on a second thread,
    before the batch's own rows are indexed. A file of the batch that is a near copy of an earlier file of
    the same batch, or of one decided before it, must get the verdict and the match that deciding one file a
    call (each search made in order, on the writer's thread) gives."""
    from daemon.index.hashindex import TAIL_ROWS

    rng = np.random.default_rng(7)
    old, new = TAIL_ROWS + 60, 300
    feats = [{**_features(rng, k), "sha256": f"{k:064x}", "pixel_sha": f"{k + 10**6:064x}"} for k in range(old + new)]
    for k in range(old, old + new):
        if k % 3 == 2:
            continue  # a third of the batch: new pictures
        source = feats[rng.integers(0, old) if k % 3 == 0 else rng.integers(old, k)]  # before it, or in the batch
        near = np.array(source["windows"], np.int64)
        near[0] ^= 0b101 << int(rng.integers(0, 60))  # 2 bits off the full frame: within the shipped radius
        feats[k].update(windows=near, phash=int(near[0]), dhash=source["dhash"])
        feats[k]["dihedral"][0] = near[0]
    verdicts = []
    for one_at_a_time in (False, True):
        catalog = Catalog(tmp_path / f"catalog{one_at_a_time}.sqlite3")
        owner = IndexOwner(Settings(state_dir=tmp_path / str(one_at_a_time), hash_only=True), catalog)
        ids = [owner.register(f"/w/{k}.jpg", 100 + k, k) for k in range(old + new)]
        for file_id, f in zip(ids[:old], feats[:old], strict=True):
            catalog.store_features(file_id, f)
        assert len(owner.decide_ready(limit=old + 1)) == old and owner.hashes.segmented()
        for file_id, f in zip(ids[old:], feats[old:], strict=True):
            catalog.store_features(file_id, f)
        events = [e for _ in range(new) for e in owner.decide_ready(limit=1)] if one_at_a_time else owner.decide_ready()
        assert one_at_a_time or owner._prober is not None  # the batch was probed ahead
        verdicts.append([(e.kind, ids.index(e.matches[0].file.id) if e.matches else None) for e in events])
        owner.close()
        catalog.close()
    batch, in_order = verdicts
    assert batch == in_order
    matched = [m for kind, m in batch if kind == "edited-copy"]
    assert sum(m is not None and m >= old for m in matched) > new // 4  # matches inside the batch
    assert sum(m is not None and m < old for m in matched) > new // 4  # and before it
