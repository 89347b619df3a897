"""Duplicate groups: copy verdicts joined into groups, each led by its earliest file.

A backfill answers "which of my files are copies of which": a verdict links a copy to ONE earlier
file, which may itself be a copy, so the groups are the connected components of those links. The
earliest file of a group is its original (verdicts only ever point to earlier files: docs/guarantees.md).
Pairs a reviewer marked "not a duplicate" are not links. `similar` verdicts are not copies and never
join a group.

The HTML report is a contact sheet that opens offline: thumbnails are embedded as data URIs, read
through the workers' safe decoder from catalogued paths only (nothing outside the watched roots).
"""

from __future__ import annotations

import base64
import html
import io
import json
import sqlite3
from dataclasses import dataclass, field
from typing import Any

from workers.decode import DecodeError, decode_file

COPY_KINDS = ("exact-copy", "edited-copy")
THUMBNAIL_PX = 160


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


def collect(conn: sqlite3.Connection) -> list[Group]:
    """Every group with at least one copy, ordered by its original's arrival; copies in arrival order."""
    rows = conn.execute(
        "SELECT f.id, f.path, f.verdict, f.match_id, f.score, f.edit, m.path AS match_path FROM files f "
        "JOIN files m ON m.id = f.match_id WHERE f.state = 'decided' AND f.verdict IN (?, ?) "
        "AND NOT EXISTS (SELECT 1 FROM not_duplicates n WHERE (n.a = f.id AND n.b = f.match_id)"
        " OR (n.a = f.match_id AND n.b = f.id)) ORDER BY f.id", COPY_KINDS).fetchall()
    parent: dict[int, int] = {}

    def root(i: int) -> int:
        while parent.get(i, i) != i:
            i = parent[i]
        return i

    for r in rows:
        a, b = root(r["id"]), root(r["match_id"])
        parent[max(a, b)] = min(a, b)  # the earlier file leads
    copies: dict[int, list[Member]] = {}
    for r in rows:
        summary = _summary(r["edit"], r["verdict"])
        copies.setdefault(root(r["id"]), []).append(
            Member(r["id"], r["path"], r["verdict"], r["match_id"], r["match_path"], r["score"], summary))
    paths = {r["id"]: r["path"] for r in conn.execute(
        f"SELECT id, path FROM files WHERE id IN ({','.join('?' * len(copies))})", list(copies))}
    return [Group(Member(lead, paths[lead]), members) for lead, members in sorted(copies.items())]


def _summary(edit_json: str | None, verdict: str) -> str | None:
    """The edit's summary line (workers.align); a copy decided without an alignment has none."""
    if edit_json:
        return str(json.loads(edit_json).get("summary") or "")
    return "same bytes or pixels" if verdict == "exact-copy" else None


def render_text(groups: list[Group]) -> str:
    lines = []
    for g in groups:
        lines.append(f"{g.original.path}  ({len(g.copies)} cop{'y' if len(g.copies) == 1 else 'ies'})")
        for c in g.copies:
            score = "" if c.score is None else f" {round(c.score)}"
            lines.append(f"  {c.verdict:<12}{score:>4}  {c.path}  {c.summary or ''}".rstrip())
    return "\n".join(lines) if lines else "no duplicate groups"


def render_html(groups: list[Group], *, max_pixels: int, max_bytes: int) -> str:
    """A self-contained contact sheet: one section per group, the original first."""
    sections = []
    for n, g in enumerate(groups, 1):
        tiles = [_tile(g.original, "original", max_pixels, max_bytes)]
        tiles += [_tile(c, c.verdict or "", max_pixels, max_bytes) for c in g.copies]
        sections.append(f'<section class="group" data-original="{g.original.id}">'
                        f'<h2>Group {n}: {len(g.copies) + 1} files</h2><div class="tiles">{"".join(tiles)}</div>'
                        "</section>")
    copies = sum(len(g.copies) for g in groups)
    return (_HEAD + f"<h1>dupwatch duplicate groups</h1><p id=\"count\">{len(groups)} groups, {copies} copies</p>"
            + "".join(sections) + "</body></html>\n")


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
    image.save(buffer, "JPEG", quality=80)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode()


_HEAD = """<!doctype html><html lang="en"><head><meta charset="utf-8"><title>dupwatch duplicate groups</title>
<style>
body { font: 14px/1.4 system-ui, sans-serif; margin: 1em 1.5em; background: #f4f4f5; color: #18181b; }
.group { background: #fff; border-radius: 8px; padding: .5em 1em 1em; margin: 1em 0; box-shadow: 0 1px 2px #0002; }
.group h2 { font-size: 1em; margin: .3em 0 .6em; }
.tiles { display: flex; flex-wrap: wrap; gap: .8em; }
figure { margin: 0; width: 180px; font-size: .8em; word-break: break-all; }
figure img { display: block; max-width: 160px; max-height: 160px; border: 3px solid #d4d4d8; }
figure.original img { border-color: #16a34a; }
.gone { width: 160px; height: 100px; background: #e4e4e7; color: #71717a; display: grid; place-items: center; }
.summary { color: #3f3f46; }
</style></head><body>
"""
