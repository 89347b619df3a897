"""Verdicts that found a match, newest first, a page at a time (the API's matches and the review page).

Keyset paging on (decided_at, id): a page starts after the last row of the page before, so it reads only its
own rows through the catalog's `files_matched` index (the first page as fast at 1 M files as at 10 k), and
verdicts decided while a reader pages land before its first page, never shifting a row from one page to
another (no row skipped or shown twice).
"""

from __future__ import annotations

import sqlite3
from typing import Any

from daemon.events import MATCH_KINDS


def page(conn: sqlite3.Connection, kind: str | None, since: float | None, include_dismissed: bool,
         cursor: str | None, limit: int) -> tuple[list[sqlite3.Row], str | None]:
    """(rows of `files` with `dismissed`, the cursor of the next page or None on the last). `cursor` is a
    page's next cursor ("<decided_at>_<id>"); raises ValueError for anything else."""
    sql = ("SELECT f.*, EXISTS (SELECT 1 FROM not_duplicates n WHERE (n.a = f.id AND n.b = f.match_id)"
           " OR (n.a = f.match_id AND n.b = f.id)) AS dismissed FROM files f WHERE f.state = 'decided'")
    args: list[Any] = []
    if kind is None or kind in MATCH_KINDS:  # spelt as the catalog's files_matched partial index
        sql += f" AND f.verdict IN ({', '.join(map(repr, MATCH_KINDS))})"
    if kind is not None:
        sql += " AND f.verdict = ?"
        args.append(kind)
    if since is not None:
        sql += " AND f.decided_at > ?"
        args.append(since)
    if cursor is not None:
        decided_at, file_id = cursor.rsplit("_", 1)
        sql += " AND (f.decided_at, f.id) < (?, ?)"
        args += [float(decided_at), int(file_id)]
    if not include_dismissed:
        sql += " AND NOT dismissed"
    rows = conn.execute(sql + " ORDER BY f.decided_at DESC, f.id DESC LIMIT ?", [*args, limit]).fetchall()
    last = rows[-1] if len(rows) == limit else None
    return rows, None if last is None else f"{last['decided_at']!r}_{last['id']}"
