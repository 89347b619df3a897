"""Duplicate groups: copy verdicts joined into groups, each led by its earliest file.

A backfill answers "which of my files are copies of which": a verdict links a copy to ONE earlier
file, which may itself be a copy, so the groups are the connected components of those links. The
earliest file of a group is its original (verdicts only ever point to earlier files: docs/guarantees.md).
Pairs a reviewer marked "not a duplicate" are not links. `similar` verdicts are not copies and never
join a group.

Groups are read a page at a time (`page`, keyset on the original's id), so a report or the API never holds
every group. The HTML report is a paged contact sheet that opens offline: thumbnails are small and embedded
as data URIs, read through the workers' safe decoder from catalogued paths only (nothing outside the watched
roots).
"""

from __future__ import annotations

import base64
import html
import io
import json
import sqlite3
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from workers.decode import DecodeError, decode_file

COPY_KINDS = ("exact-copy", "edited-copy")
THUMBNAIL_PX = 120
"""Small: a page of 100 groups of a few files each stays a few MB with its thumbnails embedded."""


@dataclass
class Member:
    """One file of a group and how it got there (None for the original)."""

    id: int
    path: str
    verdict: str | None = None
    match_id: int | None = None
    match_path: str | None = None
    score: float | None = None
    summary: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "path": self.path, "verdict": self.verdict, "match": self.match_path,
                "score": self.score, "summary": self.summary}


@dataclass
class Group:
    original: Member
    copies: list[Member] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"original": self.original.to_dict(), "copies": [c.to_dict() for c in self.copies]}


_LINKED = (f"f.verdict IN ({', '.join(map(repr, COPY_KINDS))}) AND NOT EXISTS (SELECT 1 FROM not_duplicates n WHERE "
           "(n.a = f.id AND n.b = f.match_id) OR (n.a = f.match_id AND n.b = f.id))")
"""A file linked to the file it copies: a copy verdict not marked "not a duplicate" (the verdict list as the
catalog's `files_copy_of` partial index spells it, so that SQLite uses it)."""


def page(conn: sqlite3.Connection, after: int = 0, limit: int = 50) -> list[Group]:
    """The groups led by the `limit` earliest originals with an id past `after`; copies in arrival order.

    A copy links to one earlier file, so the groups are trees of those links and the original is the root:
    a file that others copy and that copies nothing itself. Keyset paging on the original's id (the next
    page starts after the last original shown): a page reads only its own groups, as fast at 1 M files as
    at 10 k, and groups formed while paging never move a group from one page to another."""
    groups: list[Group] = []
    while len(groups) < limit:
        leads = [r[0] for r in conn.execute(
            f"SELECT DISTINCT f.match_id FROM files f WHERE {_LINKED} AND f.match_id > ? ORDER BY f.match_id "
            "LIMIT ?", (after, limit))]
        if not leads:
            break
        after = leads[-1]
        linked = {r[0] for r in conn.execute(
            f"SELECT f.id FROM files f WHERE f.id IN ({','.join('?' * len(leads))}) AND {_LINKED}", leads)}
        for lead in leads:
            if lead not in linked and len(groups) < limit:
                groups.append(_group(conn, lead))
    return groups


def each(conn: sqlite3.Connection, per_page: int = 500) -> Iterator[Group]:
    """Every group, page by page (`page`): what a report writes as it goes, never all in memory."""
    after = 0
    while found := page(conn, after, per_page):
        yield from found
        after = found[-1].original.id


def _group(conn: sqlite3.Connection, lead: int) -> Group:
    rows = conn.execute(
        f"WITH RECURSIVE tree(id) AS (SELECT ? UNION ALL SELECT f.id FROM files f JOIN tree t ON f.match_id = t.id "
        f"WHERE {_LINKED}) SELECT f.id, f.path, f.verdict, f.match_id, f.score, f.edit, m.path AS match_path "
        "FROM files f JOIN files m ON m.id = f.match_id WHERE f.id IN (SELECT id FROM tree) AND f.id != ? "
        "ORDER BY f.id", (lead, lead)).fetchall()
    path = conn.execute("SELECT path FROM files WHERE id = ?", (lead,)).fetchone()[0]
    return Group(Member(lead, path), [Member(r["id"], r["path"], r["verdict"], r["match_id"], r["match_path"],
                                             r["score"], _summary(r["edit"], r["verdict"])) for r in rows])


def _summary(edit_json: str | None, verdict: str) -> str | None:
    """The edit's summary line (workers.align); a copy decided without an alignment has none."""
    if edit_json:
        return str(json.loads(edit_json).get("summary") or "")
    return "same bytes or pixels" if verdict == "exact-copy" else None


def render_text(groups: Iterable[Group]) -> str:
    lines = []
    for g in groups:
        lines.append(f"{g.original.path}  ({len(g.copies)} cop{'y' if len(g.copies) == 1 else 'ies'})")
        for c in g.copies:
            score = "" if c.score is None else f" {round(c.score)}"
            lines.append(f"  {c.verdict:<12}{score:>4}  {c.path}  {c.summary or ''}".rstrip())
    return "\n".join(lines) if lines else "no duplicate groups"


@dataclass(frozen=True)
class Written:
    groups: int
    pages: int


def write_html(conn: sqlite3.Connection | None, index: Path, per_page: int, *, max_pixels: int,
               max_bytes: int) -> Written:
    """A paged contact sheet: `index` holds the first `per_page` groups, `<stem>-2.html`... the next ones,
    each page linking to every other. Pages are written as the groups are read (one page in memory)."""
    def name(n: int) -> str:
        return index.name if n == 1 else f"{index.stem}-{n}{index.suffix}"

    pages: list[tuple[int, int]] = []  # (first group number, groups) per page written
    after = 0
    while True:
        found = page(conn, after, per_page) if conn is not None else []
        if pages and not found:
            break
        first = sum(k for _, k in pages) + 1
        (index.parent / name(len(pages) + 1)).write_text(
            _page_html(found, first, max_pixels=max_pixels, max_bytes=max_bytes), encoding="utf-8")
        pages.append((first, len(found)))
        if len(found) < per_page:
            break
        after = found[-1].original.id
    total = sum(k for _, k in pages)
    nav = " ".join(f'<a href="{html.escape(name(n))}">{first}-{first + k - 1}</a>'
                   for n, (first, k) in enumerate(pages, 1))
    for n in range(1, len(pages) + 1):  # the navigation, now that the page count is known
        path = index.parent / name(n)
        path.write_text(path.read_text(encoding="utf-8").replace(_NAV, f'<nav>{total} groups: {nav}</nav>'),
                        encoding="utf-8")
    return Written(total, len(pages))


def _page_html(groups: list[Group], first: int, *, max_pixels: int, max_bytes: int) -> str:
    """One self-contained page: one section per group, the original first."""
    sections = []
    for n, g in enumerate(groups, first):
        tiles = [_tile(g.original, "original", max_pixels, max_bytes)]
        tiles += [_tile(c, c.verdict or "", max_pixels, max_bytes) for c in g.copies]
        sections.append(f'<section class="group" data-original="{g.original.id}">'
                        f'<h2>Group {n}: {len(g.copies) + 1} files</h2><div class="tiles">{"".join(tiles)}</div>'
                        "</section>")
    copies = sum(len(g.copies) for g in groups)
    return (_HEAD + f"<h1>dupwatch duplicate groups</h1>{_NAV}<p id=\"count\">{len(groups)} groups, {copies} copies "
            "on this page</p>" + "".join(sections) + "</body></html>\n")


_NAV = "<!-- pages -->"


def _tile(member: Member, label: str, max_pixels: int, max_bytes: int) -> str:
    src = _thumbnail(member.path, max_pixels, max_bytes)
    picture = (f'<img src="{src}" alt="">' if src else '<div class="gone">image gone</div>')
    caption = f"<b>{html.escape(label)}</b> {html.escape(member.path)}"
    if member.summary:
        caption += f'<br><span class="summary">{html.escape(member.summary)}</span>'
    return f'<figure class="{"original" if member.verdict is None else "copy"}">{picture}<figcaption>{caption}</figcaption></figure>'


def _thumbnail(path: str, max_pixels: int, max_bytes: int) -> str | None:
    """A JPEG data URI, or None when the file is gone or no longer decodes."""
    try:
        image = decode_file(path, size=THUMBNAIL_PX, max_pixels=max_pixels, max_bytes=max_bytes).image
    except DecodeError:
        return None
    image.thumbnail((THUMBNAIL_PX, THUMBNAIL_PX))
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=70)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode()


_HEAD = """<!doctype html><html lang="en"><head><meta charset="utf-8"><title>dupwatch duplicate groups</title>
<style>
body { font: 14px/1.4 system-ui, sans-serif; margin: 1em 1.5em; background: #f4f4f5; color: #18181b; }
.group { background: #fff; border-radius: 8px; padding: .5em 1em 1em; margin: 1em 0; box-shadow: 0 1px 2px #0002; }
.group h2 { font-size: 1em; margin: .3em 0 .6em; }
.tiles { display: flex; flex-wrap: wrap; gap: .8em; }
figure { margin: 0; width: 140px; font-size: .8em; word-break: break-all; }
figure img { display: block; max-width: 120px; max-height: 120px; border: 3px solid #d4d4d8; }
figure.original img { border-color: #16a34a; }
.gone { width: 120px; height: 80px; background: #e4e4e7; color: #71717a; display: grid; place-items: center; }
.summary { color: #3f3f46; }
</style></head><body>
"""
