"""The catalog: SQLite (WAL), the source of truth for every file dupwatch has seen.

One row per landing of a file. `id` is the arrival order: "earlier" means a smaller id, and verdicts
are decided strictly in id order, so a verdict can only ever point to an earlier file. A row moves
pending -> featured (worker result stored) -> decided (verdict committed); a crash at any point leaves
a state from which the daemon resumes without losing or repeating a verdict. The usearch index is a
cache of the decided rows' embeddings and is rebuilt from here when missing or stale.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from daemon.index.checkpointer import BACKSTOP_PAGES, Checkpointer
from workers.features import FEATURE_FIELDS

SCHEMA = """
CREATE TABLE IF NOT EXISTS files (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    path         TEXT NOT NULL,
    size         INTEGER,
    mtime_ns     INTEGER,
    state        TEXT NOT NULL DEFAULT 'pending',   -- pending | featured | decided
    current      INTEGER NOT NULL DEFAULT 1,        -- 0 once deleted or superseded by a new landing
    detected_at  REAL NOT NULL,
    queued_at    REAL,
    job_id       TEXT,                               -- the rq job last carrying this file
    attempts     INTEGER NOT NULL DEFAULT 0,
    sha256       TEXT,
    pixel_sha    TEXT,
    phash        INTEGER,
    dhash        INTEGER,
    windows      BLOB,                               -- int64[] pHashes of sub-windows (crop robustness)
    dihedral     BLOB,                               -- int64[8] pHashes of flips and rotations
    width        INTEGER,
    height       INTEGER,
    format       TEXT,
    model        TEXT,                               -- identity of the model of `vectors.embedding`
    copy_model   TEXT,                               -- identity of the model of `vectors.copy_embedding`
    verdict      TEXT,
    match_id     INTEGER REFERENCES files(id),
    score        REAL,
    hash_distance INTEGER,
    signal       TEXT,
    error        TEXT,
    decided_at   REAL,
    deleted_at   REAL
);
CREATE UNIQUE INDEX IF NOT EXISTS files_current_path ON files(path) WHERE current = 1;
CREATE INDEX IF NOT EXISTS files_path ON files(path);              -- earlier versions of a path
CREATE INDEX IF NOT EXISTS files_sha256 ON files(sha256);
CREATE INDEX IF NOT EXISTS files_open ON files(state) WHERE state != 'decided';
CREATE INDEX IF NOT EXISTS files_decided_at ON files(decided_at);
-- the paged views' keyset orders (daemon.views): matches newest first, groups by the file copied
CREATE INDEX IF NOT EXISTS files_matched ON files(decided_at, id) WHERE verdict IN ('exact-copy', 'edited-copy', 'similar');
CREATE INDEX IF NOT EXISTS files_copy_of ON files(match_id) WHERE verdict IN ('exact-copy', 'edited-copy');
CREATE TABLE IF NOT EXISTS vectors (
    file_id        INTEGER PRIMARY KEY REFERENCES files(id),
    embedding      BLOB,                             -- float16[dim], L2-normalised (semantic: similar)
    copy_embedding BLOB,                             -- float16[dim], L2-normalised (copy descriptor)
    copy_inner     BLOB                              -- float16[dim]: the picture inside a frame (query only)
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS not_duplicates (
    a INTEGER NOT NULL, b INTEGER NOT NULL, marked_at REAL NOT NULL, PRIMARY KEY (a, b)
);
"""

ADDED_COLUMNS = {"copy_model": "TEXT", "edit": "TEXT", "dev": "INTEGER", "ino": "INTEGER", "replaces": "INTEGER"}
"""Columns newer than the first schema: added in place to a catalog made before them (`edit`: the copy's
edit object as JSON, workers.align; `dev`, `ino`: the file's identity on disk, which follows it through
renames and names every hard link of it; `replaces`: the version of the same path this landing replaced)."""

VECTOR_COLUMNS = ("embedding", "copy_embedding", "copy_inner")
"""The `vectors` table's columns: a file's model vectors, kept out of the hot `files` rows (schema 3)."""

VECTOR_DTYPE = np.float16
"""How vectors are stored: half the bytes of float32, and the usearch index holds them as f16 anyway."""

MAX_BATCH = 256
"""Files per statement of the batched lookups (two parameters each: far below SQLite's 32,766)."""

SCHEMA_VERSION = 5
"""Recorded in `meta` as `schema_version`. A catalog from dupwatch 0.1 has none: it is version 1."""

MIGRATIONS: dict[int, str] = {
    2: """
-- Every lookup the owner makes per file is an index lookup: without these, at 1 M rows `decided_with`
-- on pixel_sha walked every earlier row (154 ms) and `head()` scanned the table (112-780 ms).
CREATE INDEX IF NOT EXISTS files_pixel_sha ON files(pixel_sha);
CREATE INDEX IF NOT EXISTS files_undecided ON files(id) WHERE state != 'decided';
CREATE INDEX IF NOT EXISTS not_duplicates_b ON not_duplicates(b);
""",
    3: """
-- Vectors leave the hot rows: with one 512-d float32 embedding in it a row took 4.2 KB (1 M rows: 4.26 GB),
-- and every head(), get() and rows() read those pages. They move to `vectors` as float16, then the
-- columns go (DROP COLUMN rewrites `files` once). f16(): a function the catalog's connection registers.
INSERT OR IGNORE INTO vectors (file_id, embedding, copy_embedding, copy_inner)
    SELECT id, f16(embedding), f16(copy_embedding), f16(copy_inner) FROM files
    WHERE embedding IS NOT NULL OR copy_embedding IS NOT NULL OR copy_inner IS NOT NULL;
ALTER TABLE files DROP COLUMN embedding;
ALTER TABLE files DROP COLUMN copy_embedding;
ALTER TABLE files DROP COLUMN copy_inner;
""",
    4: """
-- The deleted rows by id, for the hash index snapshot's reconcile at start-up (a partial index: deletions
-- only). Below its last row a snapshot can only differ from the catalog by deletions (rows are decided in id
-- order and a decided row never changes otherwise), so this lookup replaces a walk of every row.
CREATE INDEX IF NOT EXISTS files_deleted ON files(id) WHERE deleted_at IS NOT NULL;
""",
    5: """
-- A file by what it is on disk: a landing whose inode a row already holds under a name that is gone is that
-- row moved (a rename inotify could not pair, a move between roots or while the daemon was down); the other
-- names of a hard link whose bytes changed through one of them.
CREATE INDEX IF NOT EXISTS files_inode ON files(ino) WHERE ino IS NOT NULL;
""",
}
"""Version -> the script that upgrades a catalog from the version before it, in one transaction with its
version stamp."""

ROW_SQL = ("SELECT files.*, v.embedding, v.copy_embedding, v.copy_inner FROM files "
           "LEFT JOIN vectors v ON v.file_id = files.id")
"""A whole row as `Row` holds it: the file and its vectors (one rowid lookup in `vectors`)."""


@dataclass
class Row:
    """A catalog row as the index owner uses it."""

    id: int
    path: str
    size: int | None
    mtime_ns: int | None
    state: str
    detected_at: float
    sha256: str | None = None
    pixel_sha: str | None = None
    phash: int | None = None
    dhash: int | None = None
    windows: np.ndarray | None = None
    dihedral: np.ndarray | None = None
    width: int | None = None
    height: int | None = None
    format: str | None = None
    embedding: np.ndarray | None = None
    model: str | None = None
    copy_embedding: np.ndarray | None = None
    copy_model: str | None = None
    copy_inner: np.ndarray | None = None
    error: str | None = None
    verdict: str | None = None
    match_id: int | None = None
    score: float | None = None
    hash_distance: int | None = None
    signal: str | None = None
    edit: dict[str, Any] | None = None
    decided_at: float | None = None
    deleted_at: float | None = None
    current: int = 1
    dev: int | None = None
    ino: int | None = None
    replaces: int | None = None
    attempts: int = 0
    queued_at: float | None = None
    job_id: str | None = None

    @classmethod
    def from_sql(cls, r: sqlite3.Row) -> Row:
        keys = r.keys()
        data = {k: r[k] for k in keys if k in cls.__dataclass_fields__}
        for key in ("windows", "dihedral"):
            if data.get(key) is not None:
                data[key] = np.frombuffer(data[key], dtype=np.int64)
        for key in VECTOR_COLUMNS:
            if data.get(key) is not None:
                data[key] = vector_from_sql(data[key])
        if data.get("edit") is not None:
            data["edit"] = json.loads(data["edit"])
        return cls(**data)


class CatalogError(RuntimeError):
    """The catalog file is damaged: a one-line message naming the file, the cause and the way out."""

    def __init__(self, path: Path, cause: str):
        super().__init__(f"catalog {path} is unusable: {cause}. Restore it from a backup, or move it aside to "
                         "start a new, empty catalog (every file in the roots is then decided again); dupwatch "
                         "never starts empty over it")


SQLITE_MAGIC = b"SQLite format 3\0"


def check_file(path: Path) -> None:
    """Refuse a catalog that exists but cannot be the one dupwatch wrote, before SQLite opens it: SQLite
    takes a 0-byte file for a new database (a truncated catalog would silently start empty) and notices
    a cut-off file only when it reads a missing page. A missing file is fine: that is a first start."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            header = fh.read(100)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise CatalogError(path, f"cannot be read ({exc.strerror})") from exc
    if size == 0:
        raise CatalogError(path, "the file is empty (0 bytes): it was truncated")
    if len(header) < 100 or not header.startswith(SQLITE_MAGIC):
        raise CatalogError(path, "it is not an SQLite database (its header is damaged or it was overwritten)")
    page_size = int.from_bytes(header[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    pages = int.from_bytes(header[28:32], "big")
    change_counter, valid_for = header[24:28], header[92:96]
    if change_counter == valid_for and size < page_size * pages and not _wal_has_frames(path):
        raise CatalogError(path, f"the file is truncated ({size} of {page_size * pages} bytes)")


def _wal_has_frames(path: Path) -> bool:
    """Whether the write-ahead log holds frames past its 32-byte header. A checkpoint copies them into the
    database file in page order, header page first: one cut short by a full disk leaves a file shorter than
    its header says, whose missing pages are still in the log (SQLite reads them from there)."""
    try:
        return path.with_name(path.name + "-wal").stat().st_size > 32
    except OSError:
        return False


class Catalog:
    """Thread-safe access to the catalog database. Writers serialise on one lock (single writer)."""

    def __init__(self, path: Path, read_only: bool = False):
        """`read_only`: open an existing catalog for reading only (`query`); never create one."""
        self.path = Path(path)
        self.read_only = read_only
        self._lock = threading.RLock()
        check_file(self.path)
        if read_only:
            if not self.path.is_file():
                raise RuntimeError(f"no catalog at {self.path}: nothing has been catalogued there yet "
                                   "(set --state-dir to the daemon's)")
            self.conn = read_only_connection(self.path)
            return
        with self.checked():
            self.conn = connect(self.path)
            with self._lock:
                self.conn.executescript(SCHEMA)  # executescript commits on its own
                have = {r["name"] for r in self.conn.execute("PRAGMA table_info(files)")}
                added = dict(ADDED_COLUMNS)
                if self._version() < 3:  # what migration 3 moves out: a catalog older than the copy model lacks some
                    added.update({c: "BLOB" for c in VECTOR_COLUMNS})
                for column, kind in added.items():  # idempotent, unlike a migration step
                    if column not in have:
                        self.conn.execute(f"ALTER TABLE files ADD COLUMN {column} {kind}")
                self.schema_version = self._migrate()
            self.conn.execute(f"PRAGMA wal_autocheckpoint={BACKSTOP_PAGES}")
            self._checkpointer = Checkpointer(connect(self.path))

    def _migrate(self) -> int:
        """Bring an older catalog up to SCHEMA_VERSION, one step per version, each step with its version
        stamp in one transaction (a crash mid-way resumes at that step)."""
        version = self._version()
        if version > SCHEMA_VERSION:
            raise RuntimeError(f"{self.path} has catalog schema {version}; this dupwatch knows up to "
                               f"{SCHEMA_VERSION}: upgrade dupwatch")
        for step in range(version + 1, SCHEMA_VERSION + 1):
            self.conn.executescript(f"BEGIN IMMEDIATE; {MIGRATIONS[step]}"
                                    "INSERT INTO meta (key, value) VALUES ('schema_version', "
                                    f"'{step}') ON CONFLICT(key) DO UPDATE SET value = '{step}'; COMMIT;")
        return SCHEMA_VERSION

    def _version(self) -> int:
        row = self.conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        return int(row["value"]) if row else 1

    @contextmanager
    def checked(self) -> Iterator[None]:
        """Turn SQLite's "malformed" and "not a database" errors into a CatalogError naming the file."""
        try:
            yield
        except sqlite3.DatabaseError as exc:
            if type(exc) is not sqlite3.DatabaseError and "malformed" not in str(exc):
                raise  # locked, disk full, a constraint: not damage
            raise CatalogError(self.path, f"SQLite says {exc}") from exc

    def close(self) -> None:
        with self._lock:
            if hasattr(self, "_checkpointer"):
                self._checkpointer.close()
            if hasattr(self, "conn"):
                self.conn.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One atomic write: the verdict, its outbox rows and its state change commit together."""
        with self._lock:
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                yield self.conn
            except BaseException:
                self.conn.execute("ROLLBACK")
                raise
            self.conn.execute("COMMIT")

    def query(self, sql: str, args: Sequence[Any] = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self.conn.execute(sql, args).fetchall()

    # --- landing -----------------------------------------------------------------------------------

    def register(self, path: str, size: int | None, mtime_ns: int | None) -> int | None:
        """Record a landed file; return its new id, or None when this exact version is already known."""
        return self.land(path, size, mtime_ns)[0]

    def land(self, path: str, size: int | None, mtime_ns: int | None,
             inode: tuple[int, int] | None = None) -> tuple[int | None, int | None]:
        """Record a landed file: (its new id or None when this exact version is already known, the id of
        the version it replaced or None).

        A path whose size or mtime changed is a new landing: the old row stops being current and counts
        as deleted, since its content is gone from disk (it must stop matching new files). An old row
        still pending (no worker has read it) is dropped instead: the bytes it was queued for are gone, and
        the final bytes get the one verdict.
        """
        return self.land_many([(path, size, mtime_ns)], [inode])[0]

    def land_many(self, landed: Sequence[tuple[str, int | None, int | None]],
                  inodes: Sequence[tuple[int, int] | None] | None = None) -> list[tuple[int | None, int | None]]:
        """`land` for each (path, size, mtime_ns) in order (with its (st_dev, st_ino) where known), in one
        transaction: a scan batch costs one commit instead of one per file, and a crash leaves either the
        whole batch registered or none of it (a rerun registers it again)."""
        now = time.time()
        out: list[tuple[int | None, int | None]] = []
        with self.transaction() as c:
            for k, (path, size, mtime_ns) in enumerate(landed):
                dev, ino = (inodes[k] if inodes else None) or (None, None)
                old = c.execute("SELECT id, size, mtime_ns, state, replaces FROM files "
                                "WHERE path = CAST(? AS TEXT) AND current = 1", (sql_path(path),)).fetchone()
                replaced = replaces = None
                if old is not None:
                    if old["size"] == size and old["mtime_ns"] == mtime_ns:
                        if ino is not None:  # a row from before identities were recorded learns its own
                            c.execute("UPDATE files SET dev = ?, ino = ? WHERE id = ? AND ino IS NULL",
                                      (dev, ino, old["id"]))
                        out.append((None, None))
                        continue
                    if old["state"] == "pending":
                        c.execute("DELETE FROM files WHERE id = ?", (old["id"],))
                        replaces = old["replaces"]
                    else:
                        c.execute("UPDATE files SET current = 0, deleted_at = ? WHERE id = ?", (now, old["id"]))
                        replaced = replaces = int(old["id"])
                cur = c.execute("INSERT INTO files (path, size, mtime_ns, detected_at, dev, ino, replaces) "
                                "VALUES (CAST(? AS TEXT), ?, ?, ?, ?, ?, ?)",
                                (sql_path(path), size, mtime_ns, now, dev, ino, replaces))
                assert cur.lastrowid is not None  # set by every INSERT
                out.append((cur.lastrowid, replaced))
        return out

    def holders(self, inode: tuple[int, int], size: int | None, mtime_ns: int | None, path: str,
                deleted_since: float) -> list[Row]:
        """Rows of this very file (same device, inode, size and mtime) under names other than `path`: current
        ones, and ones marked deleted after `deleted_since` (a move's two halves can arrive in either order,
        from two roots' observers), newest first."""
        return [Row.from_sql(r) for r in self.query(
            f"{ROW_SQL} WHERE ino = ? AND dev = ? AND size IS ? AND mtime_ns IS ? AND path != CAST(? AS TEXT) "
            "AND (current = 1 OR deleted_at > ?) ORDER BY current DESC, id DESC",
            (inode[1], inode[0], size, mtime_ns, sql_path(path), deleted_since))]

    def other_names(self, inode: tuple[int, int], path: str, size: int | None, mtime_ns: int | None) -> list[str]:
        """Current paths other than `path` that catalogue this inode at another version: hard links whose
        bytes were just changed through `path`, without any event under their own names."""
        return [r["path"] for r in self.query(
            "SELECT path FROM files WHERE ino = ? AND dev = ? AND current = 1 AND path != CAST(? AS TEXT) "
            "AND (size IS NOT ? OR mtime_ns IS NOT ?)", (inode[1], inode[0], sql_path(path), size, mtime_ns))]

    def never_copies_of(self, path: str, file_id: int) -> set[int]:
        """Ids a file can never be a copy of: the earlier versions of its path, and the files a person
        marked "not a duplicate" of it."""
        return self.never_copies_of_many([(path, file_id)])[file_id]

    def never_copies_of_many(self, files: Sequence[tuple[str, int]]) -> dict[int, set[int]]:
        """`never_copies_of` for each (path, id), in one statement: the owner asks it for a whole batch of
        files before deciding them (one statement per file was a tenth of a verdict at 10 M rows).
        UNION ALL, not UNION: a UNION's de-duplication builds a temporary b-tree, which cost more than the
        three index lookups (0.05 ms of 0.06 at 1 M, 2026-11-28); the set de-duplicates."""
        out: dict[int, set[int]] = {file_id: set() for _, file_id in files}
        for at in range(0, len(files), MAX_BATCH):
            part = files[at:at + MAX_BATCH]
            values = ",".join("(CAST(? AS TEXT), ?)" for _ in part)
            for r in self.query(
                    f"WITH q(path, id) AS (VALUES {values}) "
                    "SELECT q.id, f.id FROM q JOIN files f ON f.path = q.path AND f.id < q.id "
                    "UNION ALL SELECT q.id, n.b FROM q JOIN not_duplicates n ON n.a = q.id "
                    "UNION ALL SELECT q.id, n.a FROM q JOIN not_duplicates n ON n.b = q.id",
                    [x for path, file_id in part for x in (sql_path(path), file_id)]):
                out[r[0]].add(r[1])
        return out

    def known_versions(self) -> dict[str, tuple[int, int]]:
        """path -> (size, mtime_ns) of every current row: what the catch-up scan compares against."""
        return {r["path"]: (r["size"], r["mtime_ns"])
                for r in self.query("SELECT path, size, mtime_ns FROM files WHERE current = 1")}

    def current_paths(self, after_id: int, limit: int) -> list[tuple[int, str]]:
        """(id, path) of up to `limit` current rows with ids above `after_id`, in id order: one range of a
        sweep that visits a 10 M-row catalog without ever holding all its paths."""
        return [(int(r["id"]), r["path"]) for r in self.query(
            "SELECT id, path FROM files WHERE current = 1 AND id > ? ORDER BY id LIMIT ?", (after_id, limit))]

    def mark_queued(self, ids: Sequence[int], job_id: str) -> None:
        now = time.time()
        with self.transaction() as c:
            c.executemany("UPDATE files SET queued_at = ?, job_id = ? WHERE id = ? AND state = 'pending'",
                          [(now, job_id, i) for i in ids])

    def count_attempt(self, ids: Sequence[int]) -> None:
        """One more attempt for pending files whose job a worker took and then died on (or that failed):
        what `queue.max_attempts` counts. Being queued again is no attempt."""
        with self.transaction() as c:
            c.executemany("UPDATE files SET attempts = attempts + 1 WHERE id = ? AND state = 'pending'",
                          [(i,) for i in ids])

    def pending(self, older_than: float | None = None) -> list[Row]:
        """Pending rows (no worker result yet), optionally only those queued (or, never queued, detected)
        before `older_than`."""
        sql = f"{ROW_SQL} WHERE state = 'pending'"
        args: list[Any] = []
        if older_than is not None:
            sql += " AND COALESCE(queued_at, detected_at) < ?"
            args.append(older_than)
        return [Row.from_sql(r) for r in self.query(sql + " ORDER BY id", args)]

    def pending_of_jobs(self, job_ids: Collection[str]) -> list[Row]:
        """Pending rows last queued in one of these jobs (a few: the jobs workers hold)."""
        if not job_ids:
            return []
        marks = ",".join("?" * len(job_ids))
        return [Row.from_sql(r) for r in self.query(
            f"{ROW_SQL} WHERE state = 'pending' AND job_id IN ({marks}) ORDER BY id", list(job_ids))]

    # --- features and verdicts ---------------------------------------------------------------------

    def store_features(self, file_id: int, features: dict[str, Any]) -> bool:
        """Store a worker's result for a pending row. False when the row is no longer pending
        (a duplicate result from a re-queued job): results are idempotent."""
        return self.store_features_many([(file_id, features)]) == 1

    def store_features_many(self, results: Sequence[tuple[int, dict[str, Any]]]) -> int:
        """`store_features` for a batch of (id, features) in one transaction, one statement per set of
        columns (a batch's results mostly share one); vectors go to their own table, only for rows that
        were still pending. Returns how many rows were still pending."""
        with self.transaction() as c:
            ids = [file_id for file_id, _ in results]
            pending: set[int] = set()
            for i in range(0, len(ids), 500):  # under SQLite's bound-parameter limit
                chunk = ids[i:i + 500]
                pending.update(r[0] for r in c.execute(
                    f"SELECT id FROM files WHERE state = 'pending' AND id IN ({', '.join('?' * len(chunk))})", chunk))
            groups: dict[tuple[str, ...], list[tuple[Any, ...]]] = {}
            vector_groups: dict[tuple[str, ...], list[tuple[Any, ...]]] = {}
            for file_id, features in results:
                if file_id not in pending:
                    continue  # a duplicate result from a re-queued job: results are idempotent
                pending.discard(file_id)
                cols = tuple(k for k in FEATURE_FIELDS if k in features and k not in VECTOR_COLUMNS)
                groups.setdefault(cols, []).append((*(_to_sql(features[k]) for k in cols), file_id))
                vectors = tuple(k for k in VECTOR_COLUMNS if features.get(k) is not None)
                if vectors:
                    vector_groups.setdefault(vectors, []).append(
                        (file_id, *(vector_to_sql(features[k]) for k in vectors)))
            stored = 0
            for cols, rows in groups.items():
                sets = "".join(f"{k} = ?, " for k in cols)
                stored += c.executemany(f"UPDATE files SET {sets}state = 'featured' WHERE id = ? AND state = 'pending'",
                                        rows).rowcount
            for vectors, rows in vector_groups.items():
                c.executemany(f"INSERT OR REPLACE INTO vectors (file_id, {', '.join(vectors)}) "
                              f"VALUES (?{', ?' * len(vectors)})", rows)
        return stored

    def fail_pending(self, file_id: int, reason: str) -> None:
        """Turn a pending row that exhausted its attempts into a featured row carrying an error."""
        with self.transaction() as c:
            c.execute("UPDATE files SET state = 'featured', error = ? WHERE id = ? AND state = 'pending'",
                      (reason, file_id))

    def head(self, limit: int) -> list[Row]:
        """The oldest undecided rows, in id order: verdicts are decided from here and only here."""
        return [Row.from_sql(r) for r in self.query(
            f"{ROW_SQL} WHERE state != 'decided' ORDER BY id LIMIT ?", (limit,))]

    def decided_with(self, column: str, value: Any, before_id: int, *, include_deleted: bool,
                     excluded: Collection[int] = ()) -> Row | None:
        """The earliest decided row with column == value among files earlier than `before_id`, skipping
        `excluded` ids (pairs marked "not a duplicate")."""
        live = "" if include_deleted else " AND deleted_at IS NULL"
        skip = f" AND id NOT IN ({','.join('?' * len(excluded))})" if excluded else ""
        rows = self.query(f"{ROW_SQL} WHERE {column} = ? AND id < ? AND state = 'decided'"
                          f"{live}{skip} AND error IS NULL ORDER BY id LIMIT 1", (value, before_id, *excluded))
        return Row.from_sql(rows[0]) if rows else None

    def first_decided_with(self, column: str, keys: Sequence[tuple[Any, int]], *,
                           include_deleted: bool) -> dict[tuple[Any, int], int | None]:
        """For each (value, before_id): the id of `decided_with`'s row with no exclusions, or None; in one
        statement for a whole batch (each value is still one index lookup, ORDER BY id LIMIT 1)."""
        live = "" if include_deleted else " AND deleted_at IS NULL"
        out: dict[tuple[Any, int], int | None] = {}
        for at in range(0, len(keys), MAX_BATCH):
            part = keys[at:at + MAX_BATCH]
            values = ",".join("(?, ?)" for _ in part)
            for r in self.query(
                    f"WITH q(value, before) AS (VALUES {values}) SELECT q.value, q.before, (SELECT id FROM files "
                    f"WHERE {column} = q.value AND id < q.before AND state = 'decided'{live} AND error IS NULL "
                    "ORDER BY id LIMIT 1) FROM q", [x for key in part for x in key]):
                out[(r[0], r[1])] = r[2]
        return out

    def get(self, file_id: int) -> Row | None:
        rows = self.query(f"{ROW_SQL} WHERE id = ?", (file_id,))
        return Row.from_sql(rows[0]) if rows else None

    def rows(self, ids: Sequence[int]) -> list[Row]:
        """The rows of these ids, in id order (the owner scores a file's candidates from their vectors)."""
        if not ids:
            return []
        return [Row.from_sql(r) for r in self.query(
            f"{ROW_SQL} WHERE id IN ({','.join('?' * len(ids))}) ORDER BY id", list(ids))]

    def by_path(self, path: str) -> Row | None:
        rows = self.query(f"{ROW_SQL} WHERE path = CAST(? AS TEXT) AND current = 1", (sql_path(path),))
        return Row.from_sql(rows[0]) if rows else None

    def deleted_ids(self, upto: int) -> np.ndarray:
        """Ids up to `upto` of every deleted row, increasing (through the partial index `files_deleted`)."""
        rows = self.query("SELECT id FROM files WHERE deleted_at IS NOT NULL AND id <= ? ORDER BY id", (upto,))
        return np.fromiter((r[0] for r in rows), np.int64, len(rows))

    def decided_features(self, include_deleted: bool, chunk: int = 50_000, after: int = 0) -> Iterator[sqlite3.Row]:
        """(id, dhash, windows, embedding_bytes, model, copy_embedding_bytes, copy_model) of every decided,
        error-free row with an id above `after`, in id order: what the in-memory hash table is rebuilt from and the vector snapshots
        reconciled against. Embeddings
        are only measured here (SQLite reads a blob's length without its pages): the few vectors a
        snapshot lacks are fetched by id afterwards."""
        live = "" if include_deleted else " AND deleted_at IS NULL"
        while True:  # in id ranges, so start-up memory does not grow with the catalog
            with self._lock:
                rows = self.conn.execute(
                    "SELECT id, dhash, windows, length(v.embedding) AS embedding_bytes, model, "
                    "length(v.copy_embedding) AS copy_embedding_bytes, copy_model FROM files "
                    "LEFT JOIN vectors v ON v.file_id = files.id WHERE id > ? AND state = 'decided' "
                    f"AND error IS NULL{live} ORDER BY id LIMIT ?", (after, chunk)).fetchall()
            if not rows:
                return
            yield from rows
            after = rows[-1]["id"]

    # --- moves and deletions -----------------------------------------------------------------------

    def moved(self, src: str, dest: str) -> tuple[bool, int | None]:
        """Follow a move inside the roots: same content, new path. (whether src was known, the id of the
        file the move replaced at dest or None)."""
        with self.transaction() as c:
            row = c.execute("SELECT id FROM files WHERE path = CAST(? AS TEXT) AND current = 1",
                            (sql_path(src),)).fetchone()
            if row is None:
                return False, None
            return True, self._take_path(c, int(row["id"]), dest)

    def revive(self, file_id: int, dest: str) -> int | None:
        """A row marked deleted whose file turned up again under `dest` (moved between roots, its delete seen
        first): current again, at its new path. Returns the id of the file it replaced at dest, or None."""
        with self.transaction() as c:
            return self._take_path(c, file_id, dest, revive=True)

    @staticmethod
    def _take_path(c: sqlite3.Connection, file_id: int, dest: str, revive: bool = False) -> int | None:
        old = c.execute("SELECT id FROM files WHERE path = CAST(? AS TEXT) AND current = 1 AND id != ?",
                        (sql_path(dest), file_id)).fetchone()
        if old is not None:
            c.execute("UPDATE files SET current = 0, deleted_at = ? WHERE id = ?", (time.time(), old["id"]))
        back = ", current = 1, deleted_at = NULL" if revive else ""
        c.execute(f"UPDATE files SET path = CAST(? AS TEXT){back} WHERE id = ?", (sql_path(dest), file_id))
        return None if old is None else int(old["id"])

    def renamed_since_read(self, read: Sequence[tuple[int, str]]) -> list[Row]:
        """Of these (id, path a worker read it under): the pending rows that no longer have that path (moved
        while queued). Their results describe a name, not the file: they are queued again under the new one."""
        stale: list[Row] = []
        for at in range(0, len(read), MAX_BATCH):
            part = dict(read[at:at + MAX_BATCH])
            stale += [row for row in (Row.from_sql(r) for r in self.query(
                f"{ROW_SQL} WHERE state = 'pending' AND id IN ({','.join('?' * len(part))}) ORDER BY id",
                list(part))) if row.path != part[row.id]]
        return stale

    def deleted(self, path: str) -> int | None:
        """Mark a file deleted; return its id (so the index can stop matching it)."""
        with self.transaction() as c:
            row = c.execute("SELECT id FROM files WHERE path = CAST(? AS TEXT) AND current = 1",
                            (sql_path(path),)).fetchone()
            if row is None:
                return None
            c.execute("UPDATE files SET current = 0, deleted_at = ? WHERE id = ?", (time.time(), row["id"]))
            return int(row["id"])

    def deleted_under(self, folder: str) -> list[int]:
        """Mark every current file below `folder` deleted (a folder removed, or moved out of the roots);
        return their ids."""
        prefix = folder.rstrip("/") + "/"
        upper = prefix[:-1] + "0"  # '0' follows '/': the range holds exactly the paths starting with prefix
        with self.transaction() as c:
            ids = [int(r["id"]) for r in c.execute(
                "SELECT id FROM files WHERE current = 1 AND path >= CAST(? AS TEXT) AND path < CAST(? AS TEXT)",
                (sql_path(prefix), sql_path(upper)))]
            c.executemany("UPDATE files SET current = 0, deleted_at = ? WHERE id = ?",
                          [(time.time(), i) for i in ids])
        return ids

    # --- reporting ---------------------------------------------------------------------------------

    def meta_get(self, key: str) -> str | None:
        rows = self.query("SELECT value FROM meta WHERE key = ?", (key,))
        return rows[0]["value"] if rows else None

    def meta_set(self, key: str, value: str) -> None:
        with self.transaction() as c:
            c.execute("INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = ?",
                      (key, value, value))


def connect(path: Path) -> sqlite3.Connection:
    """A connection in WAL mode with a busy timeout, for the owner or a read-only helper."""
    conn = sqlite3.connect(str(path), timeout=30, isolation_level=None, check_same_thread=False)
    conn.row_factory = sqlite3.Row
    conn.text_factory = _text
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA foreign_keys=ON")
    conn.create_function("f16", 1, _f16, deterministic=True)  # schema 3's migration
    return conn


def read_only_connection(path: Path) -> sqlite3.Connection:
    """A read-only connection (the API, `status`, `query`): it can neither write the catalog nor create
    one where none exists (sqlite3.OperationalError then)."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10, check_same_thread=False)
    conn.row_factory = sqlite3.Row
    conn.text_factory = _text
    return conn


def sql_path(path: str) -> str | bytes:
    """A path as an SQL parameter, always bound through `CAST(? AS TEXT)`. A name that is not valid
    UTF-8 arrives with surrogate escapes (PEP 383), which sqlite3 refuses to bind as text: it goes as
    its original bytes instead, which the cast stores as TEXT holding those very bytes, so the catalog
    keeps the exact name and `_text` gives it back unchanged."""
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return os.fsencode(path)
    return path


def _text(data: bytes) -> str:
    """TEXT columns as str; bytes that are not UTF-8 (file names, see `sql_path`) as surrogate escapes."""
    return data.decode("utf-8", "surrogateescape")


def vector_to_sql(vector: np.ndarray) -> bytes:
    return np.asarray(vector, VECTOR_DTYPE).tobytes()


def vector_from_sql(blob: bytes) -> np.ndarray:
    """A stored vector as the float32 the owner computes with."""
    return np.frombuffer(blob, VECTOR_DTYPE).astype(np.float32)


def vector_bytes(ndim: int) -> int:
    """A stored vector's size in bytes (start-up reads blob lengths, not blobs)."""
    return ndim * np.dtype(VECTOR_DTYPE).itemsize


def _f16(blob: bytes | None) -> bytes | None:
    """A float32 vector blob (schema 2 and before) as the float16 blob `vectors` holds."""
    return None if blob is None else vector_to_sql(np.frombuffer(blob, np.float32))


def _to_sql(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tobytes()
    return value
