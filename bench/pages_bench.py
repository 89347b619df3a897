"""The first page of the paged views (matches, groups, the review page's two lists) at 10 k and at 1 M files.

    python bench/pages_bench.py --sizes 10000,1000000 --catalogs /var/tmp/scale --out bench/results/pages-DATE.txt

Catalogs of N decided synthetic rows (bench/scale.py's fill, kept in --catalogs and reused), copied, then one
row in 100 made a copy of an earlier row (exact-copy or edited-copy; four in five of those copy the fifth,
itself a copy: groups of a few files, some two links deep) and
one in 200 `similar`, in one transaction through the catalog's own connection (its schema, its indexes). Each
view's first page (50 rows) and the tenth page are read REPEATS times on a read-only connection, as the API
reads them: median and worst ms.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.machine import finish, header
from bench.scale import fill_file, template_name

REPEATS = 20
PAGE = 50


def plant(path: Path, n: int, seed: int) -> tuple[int, int]:
    """Make some rows copies and some similar; (copies, similar)."""
    from daemon.index.catalog import Catalog

    rng = np.random.default_rng(seed)
    catalog = Catalog(path)
    copies = np.sort(rng.choice(np.arange(2, n + 1), n // 100, replace=False))
    similar = np.setdiff1d(rng.choice(np.arange(2, n + 1), n // 200, replace=False), copies)
    with catalog.transaction() as conn:
        conn.executemany("UPDATE files SET verdict = ?, match_id = ?, score = 90 WHERE id = ?",
                         [("exact-copy" if k % 2 else "edited-copy",
                           int(copies[k // 5 * 5]) if k % 5 else int(rng.integers(1, i)), int(i))
                          for k, i in enumerate(copies)])
        conn.executemany("UPDATE files SET verdict = 'similar', match_id = ?, score = 80 WHERE id = ?",
                         [(int(rng.integers(1, i)), int(i)) for i in similar])
    catalog.close()
    return len(copies), len(similar)


def timed(read) -> tuple[float, float]:
    took = []
    for _ in range(REPEATS):
        t0 = time.perf_counter()
        read()
        took.append(time.perf_counter() - t0)
    return float(np.median(took)) * 1e3, max(took) * 1e3


def run(n: int, catalogs: Path, seed: int) -> dict:
    from daemon.index.catalog import read_only_connection
    from daemon.views import groups, matches

    template = catalogs / template_name(n, False)
    if not template.exists():
        catalogs.mkdir(parents=True, exist_ok=True)
        fill_file(template, n, seed, False)
    with tempfile.TemporaryDirectory(dir=os.environ.get("SCALE_TMP")) as tmp:
        path = Path(tmp) / "catalog.sqlite3"
        shutil.copyfile(template, path)
        planted = plant(path, n, seed)
        conn = read_only_connection(path)
        out: dict = {"n": n, "copies": planted[0], "similar": planted[1]}
        out["matches"] = timed(lambda: matches.page(conn, None, None, False, None, PAGE))
        cursor = None
        for _ in range(9):
            cursor = matches.page(conn, None, None, False, cursor, PAGE)[1] or cursor
        out["matches_10th"] = timed(lambda: matches.page(conn, None, None, False, cursor, PAGE))
        out["groups"] = timed(lambda: groups.page(conn, 0, PAGE))
        after = 0
        for _ in range(9):  # (the last page, where there are fewer than ten)
            found = groups.page(conn, after, PAGE)
            if len(found) < PAGE:
                break
            after = found[-1].original.id
        out["groups_10th"] = timed(lambda: groups.page(conn, after, PAGE))
        conn.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="10000,1000000")
    ap.add_argument("--catalogs", type=Path, default=Path("/var/tmp/scale"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    lines = [header("bench/pages_bench.py"),
             f"# {PAGE} rows a page, median / worst of {REPEATS} reads, ms",
             "| files | copies | similar | matches page 1 | matches page 10 | groups page 1 | groups page 10 |",
             "|---|---|---|---|---|---|---|"]
    print("\n".join(lines), flush=True)
    for n in (int(s) for s in args.sizes.split(",")):
        r = run(n, args.catalogs, args.seed)
        cells = " | ".join(f"{r[k][0]:.2f} / {r[k][1]:.2f}" for k in ("matches", "matches_10th", "groups", "groups_10th"))
        lines.append(f"| {n:,} | {r['copies']:,} | {r['similar']:,} | {cells} |")
        print(lines[-1], flush=True)
    finish(lines, args.out)


if __name__ == "__main__":
    main()
