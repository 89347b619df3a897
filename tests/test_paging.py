"""Matches and groups a page at a time: keyset cursors that never skip or repeat a row while verdicts are added.

Real catalog, the owner's own decide path (hash-only: exact copies by sha256); the pages are read on a
read-only connection as the API reads them.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from daemon.config import Settings
from daemon.index.catalog import Catalog, read_only_connection
from daemon.index.owner import IndexOwner
from daemon.views import groups, matches
from workers.features import Features


class Archive:
    def __init__(self, state: Path):
        self.catalog = Catalog(state / "catalog.sqlite3")
        self.owner = IndexOwner(Settings(state_dir=state, hash_only=True), self.catalog)
        self.n = 0

    def land(self, content: int) -> int:
        """A file whose bytes are those of `content`: a new file the first time, an exact copy after."""
        self.n += 1
        path = f"/in/{self.n}.jpg"
        file_id = self.owner.register(path, 1000, self.n)
        assert file_id is not None
        self.owner.accept([Features(id=file_id, path=path, sha256=f"{content:064x}", size=1000)])
        assert len(self.owner.decide_ready()) == 1
        return file_id


@pytest.fixture
def archive(tmp_path: Path):
    a = Archive(tmp_path)
    yield a
    a.catalog.close()


def test_matches_pages_neither_skip_nor_repeat_while_verdicts_are_added(archive: Archive) -> None:
    for content in range(6):
        archive.land(content)
    before = [archive.land(content % 6) for content in range(14)]  # 14 copies
    conn = read_only_connection(archive.catalog.path)
    seen: list[int] = []
    cursor = None
    pages = 0
    while True:
        rows, cursor = matches.page(conn, None, None, False, cursor, 4)
        seen += [r["id"] for r in rows]
        pages += 1
        archive.land(pages % 6)  # a verdict decided between two pages: newer than every page after the first
        if cursor is None:
            break
    assert sorted(seen) == sorted(before) and len(seen) == len(set(seen))
    assert pages == 4
    with pytest.raises(ValueError):
        matches.page(conn, None, None, False, "not a cursor", 4)
    conn.close()


def test_groups_pages_neither_skip_nor_repeat_while_copies_are_added(archive: Archive) -> None:
    leads = [archive.land(content) for content in range(10)]
    for content in range(10):
        archive.land(content)  # each original gets a copy: ten groups
    conn = read_only_connection(archive.catalog.path)
    shown: list[int] = []
    after = 0
    for _ in range(10):  # four pages and the empty one; more would be a page repeated
        found = groups.page(conn, after, 3)
        if not found:
            break
        shown += [g.original.id for g in found]
        after = found[-1].original.id
        archive.land(len(shown) % 10)  # another copy, of a group already shown or of one to come
        archive.land(100 + len(shown))  # and a new file that nothing copies: never a group
    assert shown == leads
    every = list(groups.each(conn, per_page=4))
    assert [g.original.id for g in every] == leads
    assert sum(len(g.copies) for g in every) == 10 + 4  # the copies added while paging are in their groups
    conn.close()


def test_the_first_page_reads_through_an_index(archive: Archive) -> None:
    """SQLite walks the paged views' keyset indexes, so the first page costs the same at any catalog size."""
    conn = read_only_connection(archive.catalog.path)
    plans = []
    real = conn.execute

    class Explaining:
        def execute(self, sql: str, args=()):
            plans.append(" ".join(r[3] for r in real("EXPLAIN QUERY PLAN " + sql, args)))
            return real(sql, args)

    matches.page(Explaining(), None, None, False, None, 5)  # type: ignore[arg-type]
    groups.page(Explaining(), 0, 5)  # type: ignore[arg-type]
    assert "files_matched" in plans[0] and "TEMP B-TREE" not in plans[0]
    assert "files_copy_of" in plans[1] and "TEMP B-TREE" not in plans[1]
    conn.close()


def test_the_html_report_is_an_index_page_and_one_page_per_n_groups(archive: Archive, tmp_path: Path) -> None:
    leads = [archive.land(content) for content in range(7)]
    for content in range(7):
        archive.land(content)
    conn = read_only_connection(archive.catalog.path)
    index = tmp_path / "report" / "groups.html"
    index.parent.mkdir()
    written = groups.write_html(conn, index, 3, max_pixels=10**7, max_bytes=10**7)
    conn.close()
    assert (written.groups, written.pages) == (7, 3)
    names = ["groups.html", "groups-2.html", "groups-3.html"]
    assert sorted(p.name for p in index.parent.iterdir()) == sorted(names)
    shown = []
    for name in names:
        text = (index.parent / name).read_text()
        assert all(f'href="{other}"' in text for other in names)  # every page links to every page
        shown += [int(x) for x in re.findall(r'data-original="(\d+)"', text)]
    assert shown == leads
