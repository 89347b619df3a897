"""Verdicts as the catalog grows: distinct real photos scanned against catalogs of N synthetic images.

    python bench/scale.py                                   # 100k and 1M, hash-only, every photo
    python bench/scale.py --sizes 100000,100000 --vectors 0,1 --catalogs /var/tmp/scale --out bench/results/scale-DATE.txt
    python bench/scale.py --sizes 10000000 --catalogs /var/tmp/scale --fill-only   # fill ahead, then run

For each N, in a fresh child process (so peak RSS is that N's alone):
  1. N synthetic decided rows are written into a new catalog with the catalog's own schema (migrations
     included) through its batched write path in id order, FILL_BATCH rows per transaction (`land_many`,
     `store_features_many`, then one UPDATE marks the batch decided), with bulk-load PRAGMAs: uniformly
     random 64-bit pHashes (9 windows, 8 flips/rotations) and dHashes, random sha256 and pixel sha; with
     --vectors 1 also a random unit 512-d copy vector per row under SSCD's identity (float16, `vectors`).
     --catalogs DIR keeps each filled catalog and copies it on the next run (same seed, same rows); an
     older schema is migrated at its first open, timed apart from start-up.
  2. A first start, in its own process, with no snapshots: the hash index (and with vectors the usearch
     index) built from the catalog ("first start", with that process's peak RSS), then saved ("snapshot
     save"). Start-up: `IndexOwner(...)` on that catalog and those snapshots (maps the hash snapshot and
     reconciles it with the catalog; with vectors, also streams the decided rows to reconcile the vector
     snapshot).
  3. The photos: distinct real photographs (scikit-image's bundled ones and the curated Debian wallpapers
     and photos of bench/photos.py, the accuracy benchmark's sources), each used once and whole, so none is
     a copy of another; at most MAX_SIDE px. They go through the worker's own pipeline (decode, hashes; with
     vectors, SSCD too) and are registered. Each synthetic row that a photo hash-matches gets a file (an
     unrelated picture), so its chance match is looked at and verified as in a real archive. Then the owner
     decides them, features supplied, on its whole decide path (head read, every signal, any verification,
     indexing, commit, event): the first half stored as one batch and decided in one `decide_ready` call
     ("verdicts/s batched"), the second half one file at a time, each in its own call and transaction
     (per-verdict p50/p99, wall time and the process's CPU time, and "verdicts/s one at a time"). On a
     shared 2-core machine the wall-time p99 is mostly waiting for a core; the CPU time is the owner's own.
     Then the stream (`decide_stream`): --stream distinct collages of bench/scan_growth.py, the sustained
     rate (STREAM_BATCH a call) and the per-verdict p50/p99 over STREAM_SINGLE files one a call.
  4. Per photo, timed: the owner's evidence alone (every signal, no verification, no commit), the hash
     search alone with `HashIndex.best` and `ExhaustiveHashIndex.best` over the same rows (their answers
     must be equal, the run fails otherwise), and with vectors the copy-vector search: p50 / p99.
  5. Chance matches: a verdict that points to a synthetic row is a false match (no synthetic row is a
     copy of anything). Counted on the photos (with how many were planted decoys and how many the gradient
     look turned away), and on --probes random hash sets through the index (more queries, so the raw
     rate is measurable where the photos alone would show none), as matches per query.
Printed as a table (with the machine and load), and written to --out when given.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # `python bench/scale.py` as well as `python -m bench.scale`
    sys.path.insert(0, str(REPO))

from bench.machine import cpu_model


def _random_hashes(rng: np.random.Generator, *shape: int) -> np.ndarray:
    return rng.integers(np.iinfo(np.int64).min, np.iinfo(np.int64).max, size=shape, dtype=np.int64, endpoint=True)


MAX_SIDE = 1024
"""Photos are saved at most this wide or tall (as the accuracy benchmark's originals are)."""


def make_photos(folder: Path, n: int, seed: int = 0, debian_cache: Path | None = None) -> list[Path]:
    """Up to n distinct real photographs as JPEGs, in a seeded random order: scikit-image's bundled photos
    and, with `debian_cache`, the curated Debian wallpapers and photos (bench/photos.py, the accuracy
    benchmark's sources). Each source photograph is used once, whole, so that no photo is a copy of another
    (crops of a few photographs were copies of each other, and their verifications made the timed verdicts)."""
    from bench.photos import debian_photos, skimage_photos

    sources = skimage_photos() + (debian_photos(debian_cache) if debian_cache is not None else [])
    order = np.random.default_rng(seed).permutation(len(sources))[:n]
    paths = []
    for k, i in enumerate(order):
        img = sources[i].load()
        img.thumbnail((MAX_SIDE, MAX_SIDE))
        path = folder / f"photo{k:04d}.jpg"
        img.save(path, quality=90)
        paths.append(path)
    return paths


FILL_BATCH = 50_000
"""Rows per transaction of the fill: each of its three statements' batches runs in one transaction."""
STREAM_BATCH = 1000
"""Files stored, then decided, per `decide_ready` call in the stream: the daemon's own limit per call."""
STREAM_SINGLE = 2000
"""The stream's last files decided one a call, for the per-verdict p50/p99."""
BULK_PRAGMAS = ("PRAGMA synchronous=OFF", "PRAGMA cache_size=-2000000", "PRAGMA temp_store=MEMORY")
"""For the fill only (a crash mid-fill means filling again, so no fsync): a 2 GB page cache keeps the
random-keyed sha256 and pixel_sha index pages in memory as they grow."""


def fill_catalog(catalog, n: int, seed: int, copy_model: str | None = None, dim: int = 512) -> float:
    """N decided synthetic rows in id order through the catalog's own batched write path, FILL_BATCH rows
    per transaction: `land_many` registers them, `store_features_many` stores their features (vectors into
    `vectors`, as float16), one UPDATE per batch marks them decided `new`. Returns rows/s. With
    `copy_model`, each row also gets a random unit `dim`-d copy vector of that identity."""
    from workers.image.hashing import WINDOWS

    rng = np.random.default_rng(seed)
    vectors = np.random.default_rng(seed + 7)
    for pragma in BULK_PRAGMAS:
        catalog.conn.execute(pragma)
    started = time.monotonic()
    for lo in range(0, n, FILL_BATCH):
        k = min(FILL_BATCH, n - lo)
        windows, dihedral, dhash = _random_hashes(rng, k, len(WINDOWS)), _random_hashes(rng, k, 8), _random_hashes(rng, k)
        dihedral[:, 0] = windows[:, 0]
        digests = rng.integers(0, 256, (k, 64), dtype=np.uint8)
        ids = [i for i, _ in catalog.land_many([(f"/archive/{lo + i:08d}.jpg", 200_000, lo + i) for i in range(k)])]
        features = [{"sha256": digests[i, :32].tobytes().hex(), "pixel_sha": digests[i, 32:].tobytes().hex(),
                     "phash": int(windows[i, 0]), "dhash": int(dhash[i]), "windows": windows[i],
                     "dihedral": dihedral[i], "width": 1024, "height": 768, "format": "JPEG", "size": 200_000}
                    for i in range(k)]
        if copy_model is not None:
            v = vectors.standard_normal((k, dim), dtype=np.float32)
            v /= np.linalg.norm(v, axis=1, keepdims=True)
            for i, f in enumerate(features):
                f["copy_embedding"], f["copy_model"] = v[i], copy_model
        catalog.store_features_many(list(zip(ids, features, strict=True)))
        with catalog.transaction() as conn:
            conn.execute("UPDATE files SET state = 'decided', verdict = 'new', decided_at = ? WHERE id BETWEEN ? AND ?",
                         (time.time(), ids[0], ids[-1]))
    return n / (time.monotonic() - started)


def template_name(n: int, vectors: bool) -> str:
    return f"{n}{'-sscd' if vectors else ''}.sqlite3"


def fill_file(path: Path, n: int, seed: int, vectors: bool) -> float:
    """A new catalog at `path` holding the N synthetic rows (checkpointed: one file); returns rows/s."""
    from daemon.config import Settings
    from daemon.index.catalog import Catalog
    from workers.models.copy import copy_identity

    catalog = Catalog(path)
    rate = fill_catalog(catalog, n, seed, copy_identity(Settings().copy_model) if vectors else None) if n else 0.0
    catalog.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    catalog.close()
    return rate


def child(n: int, photos: list[Path], probes: int, exhaustive: int, seed: int, vectors: bool = False,
          catalogs: Path | None = None, stream: list[Path] | None = None) -> dict:
    """One N: build, start, scan, time, count. Returns the row of the table as a dict."""
    from daemon.config import Settings
    from daemon.index.catalog import Catalog
    from daemon.index.hashindex import ExhaustiveHashIndex
    from daemon.index.owner import HASH_SNAPSHOT, IndexOwner, _compile_hash_kernels
    _compile_hash_kernels(_default_rule())  # compile (or load) the numba kernels outside the timings
    out: dict = {"n": n, "vectors": vectors}
    with tempfile.TemporaryDirectory(dir=os.environ.get("SCALE_TMP")) as tmp:
        state = Path(tmp)
        settings = Settings(state_dir=state, hash_only=not vectors)
        path = state / "catalog.sqlite3"
        template = catalogs / template_name(n, vectors) if catalogs else None
        if template is not None and template.exists():  # filled by an earlier run: same seed, same rows
            shutil.copyfile(template, path)
            out["fill_rows_s"] = None
        else:
            out["fill_rows_s"] = fill_file(path, n, seed, vectors)
            if template is not None:
                shutil.copyfile(path, template)
        started = time.monotonic()
        Catalog(path).close()  # a template from an older schema is migrated here, outside the start-up
        out["migrate_s"] = time.monotonic() - started
        # first start, in its own process (its peak RSS is not this one's): no snapshots, the indexes are
        # built from the catalog, then saved
        done = subprocess.run([sys.executable, __file__, "--cold", str(state), "--child-vectors", str(int(vectors))],
                              capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"first start failed:\n{done.stderr[-3000:]}")
        out.update(json.loads(done.stdout.strip().splitlines()[-1]))
        out["hash_snapshot_b_per_row"] = sum(p.stat().st_size for p in (state / HASH_SNAPSHOT).iterdir()) / max(n, 1)
        started = time.monotonic()
        catalog = Catalog(path)
        owner = IndexOwner(settings, catalog)
        out["startup_s"] = time.monotonic() - started
        out["segments"] = len(owner.hashes._segments)
        pipeline = pipeline_for(settings, vectors)
        # all new to the catalog (the strict zip below fails if one were not)
        ids = [i for p in photos if (i := owner.register(str(p), p.stat().st_size, p.stat().st_mtime_ns)) is not None]
        feats = pipeline.run(list(zip(ids, map(str, photos), strict=True)))
        pipeline.close()
        rule = owner.thresholds.hashes
        out["decoys"] = plant_decoys(catalog, state / "archive", n, {
            hit.id for f in feats if f.windows is not None and f.dihedral is not None and f.dhash is not None
            and (hit := owner.hashes.best(f.windows, f.dihedral, f.dhash, f.id, rule)) is not None}, seed)
        # The whole decide path (head, every signal, any verification, index, commit, event), features
        # supplied. First half: stored as one batch and decided in one call, as the daemon does when results
        # arrive faster than it decides (verdicts/s). Second half: one file at a time, each decided on its
        # own (its own head read and transaction: the per-verdict latency, p50/p99).
        half = len(feats) // 2
        owner.accept(feats[:half])
        started = time.monotonic()
        events = owner.decide_ready(limit=half + 1)
        out["verdicts_s"] = len(events) / (time.monotonic() - started)
        assert len(events) == half, (len(events), half)
        each, cpu = [], []
        for f in feats[half:]:
            owner.accept([f])
            t0, c0 = time.perf_counter(), time.process_time()
            one = owner.decide_ready(limit=2)
            each.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)  # all threads' CPU: apart from the waits a busy machine adds
            assert len(one) == 1, (f.path, len(one))
            events += one
        out["decide_p50_ms"], out["decide_p99_ms"] = (float(np.percentile(each, q)) * 1e3 for q in (50, 99))
        out["decide_cpu_p50_ms"], out["decide_cpu_p99_ms"] = (float(np.percentile(cpu, q)) * 1e3 for q in (50, 99))
        out["single_verdicts_s"] = len(each) / sum(each)
        if stream:
            out.update(decide_stream(owner, pipeline_for(settings, vectors), stream, n, state, seed))
        out["photos"] = len(photos)
        out["photo_chance"] = sum(1 for e in events if e.matches and e.matches[0].file.id <= n)
        out["photo_copies"] = sum(1 for e in events if e.kind in ("edited-copy", "exact-copy"))
        out["looked_away"] = owner.looked_away
        # the owner's evidence alone per verdict (every signal, no verification, no commit), on the same photos
        rows = catalog.rows(ids)
        owned = []
        for row in rows:
            t0 = time.perf_counter()
            owner.evidence(row)
            owned.append(time.perf_counter() - t0)
        out["evidence_p50_ms"], out["evidence_p99_ms"] = (float(np.percentile(owned, q)) * 1e3 for q in (50, 99))
        if vectors:
            searched = []
            for row in rows:
                if row.copy_embedding is not None:
                    t0 = time.perf_counter()
                    owner.copies.search_vector(row.copy_embedding, row.id, settings.match.top_k, set())
                    searched.append(time.perf_counter() - t0)
            out["vector_p50_ms"], out["vector_p99_ms"] = (float(np.percentile(searched, q)) * 1e3 for q in (50, 99))
        # the hash search alone, new index and exhaustive over the same rows, same queries
        reference = ExhaustiveHashIndex(9)
        hashes = owner.hashes
        reference._n, reference._ids, reference._windows, reference._dhash, reference._live = (
            hashes._n, hashes._ids, hashes._windows, hashes._dhash, hashes._live)
        fast, slow = [], []
        for k, f in enumerate(feats):
            assert f.windows is not None and f.dihedral is not None and f.dhash is not None, f.error
            t0 = time.perf_counter()
            got = hashes.best(f.windows, f.dihedral, f.dhash, f.id, rule)
            fast.append(time.perf_counter() - t0)
            if k < exhaustive:
                t0 = time.perf_counter()
                want = reference.best(f.windows, f.dihedral, f.dhash, f.id, rule)
                slow.append(time.perf_counter() - t0)
                assert got == want, (n, f.path, got, want)
        out["hash_p50_ms"], out["hash_p99_ms"] = (float(np.percentile(fast, q)) * 1e3 for q in (50, 99))
        out["exh_p50_ms"], out["exh_p99_ms"] = (float(np.percentile(slow, q)) * 1e3 for q in (50, 99))
        out["exh_queries"] = len(slow)
        rng = np.random.default_rng(seed + 1)
        hits = 0
        before = 1 << 62
        for _ in range(probes):
            windows = _random_hashes(rng, 9)
            dihedral = _random_hashes(rng, 8)
            dihedral[0] = windows[0]
            hits += hashes.best(windows, dihedral, int(_random_hashes(rng, 1)[0]), before, rule) is not None
        out["probe_chance"], out["probes"] = hits, probes
        out["index_b_per_row"] = hashes.nbytes() / max(n, 1)
        disk = sum(p.stat().st_size for p in state.glob("catalog.sqlite3*"))
        out["disk_b_per_row"] = disk / max(n + len(photos), 1)
        out["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        owner.save()
        out["vector_b_per_row"] = sum(p.stat().st_size for p in state.glob("vectors-*/*.usearch")) / max(n, 1)
        owner.close()
        catalog.close()
        if vectors and stream:
            out.update(tail_missing_start(settings, state, stream[-1]))
    return out


def tail_missing_start(settings, state: Path, photo: Path) -> dict:
    """Start with the newest vector segment's snapshot (the open tail, holding the stream) deleted, as the
    daemon starts (its range rebuilt in the background): seconds until a new file's verdict is out, and
    until the range is whole again."""
    from daemon.index.catalog import Catalog
    from daemon.index.owner import IndexOwner

    copy = state / "after-restart.jpg"
    shutil.copyfile(photo, copy)
    pipeline = pipeline_for(settings, True)
    features = pipeline.run([(0, str(copy))])[0]  # as a worker with its model loaded has it ready
    pipeline.close()
    for tail in state.glob("vectors-*/tail.usearch"):
        tail.unlink()
    started = time.monotonic()
    catalog = Catalog(state / "catalog.sqlite3")
    owner = IndexOwner(settings, catalog, background=True)
    file_id = owner.register(str(copy), copy.stat().st_size, copy.stat().st_mtime_ns)
    owner.accept([dataclasses.replace(features, id=file_id)])
    assert len(owner.decide_ready(limit=2)) == 1
    out = {"startup_tail_missing_s": time.monotonic() - started,
           "tail_rebuild": (owner.copies.progress() or {}).get("rebuilding")}
    assert owner.copies.index is not None
    owner.copies.index.wait()
    out["tail_rebuilt_s"] = time.monotonic() - started
    owner.close()
    catalog.close()
    return out


def keys_of(row: dict) -> dict:
    """The row as `--json` prints it: the keys the project reads."""
    return {"size": row["n"], "vectors": row["vectors"], "verdicts_per_s": row.get("stream_s"),
            "p99_ms": row.get("stream_p99_ms"), "startup_s": row["startup_s"],
            "startup_tail_missing_s": row.get("startup_tail_missing_s"),
            "index_bytes_per_image": row["hash_snapshot_b_per_row"] + row["vector_b_per_row"]}


def pipeline_for(settings, vectors: bool):
    """The worker's own pipeline: decode and hashes, and SSCD with vectors."""
    from workers.models.loading import load_copy_model
    from workers.pipeline import Pipeline
    from workers.settings import DecodeSettings

    return Pipeline(DecodeSettings(), None, load_copy_model(settings)[0] if vectors else None)


def decide_stream(owner, pipeline, files: list[Path], n: int, state: Path, seed: int) -> dict:
    """The sustained rate: `files` (distinct collages) decided as the daemon decides a backlog, STREAM_BATCH
    stored and then decided in one `decide_ready` call at a time, features supplied (computed first, not
    timed); then the last STREAM_SINGLE one file a call, for per-verdict p50/p99 over enough samples that the
    p99 is not one slow call. The photos' batch above is about 90 verdicts right after start-up: too short to
    call sustained (one scheduler hiccup moves it by a tenth)."""
    ids = [i for p in files if (i := owner.register(str(p), p.stat().st_size, p.stat().st_mtime_ns)) is not None]
    feats = [f for lo in range(0, len(ids), 1000)
             for f in pipeline.run(list(zip(ids[lo:lo + 1000], map(str, files[lo:lo + 1000]), strict=True)))]
    pipeline.close()
    rule = owner.thresholds.hashes
    decoys = plant_decoys(owner.catalog, state / "archive", n, {
        hit.id for f in feats if f.windows is not None and f.dihedral is not None and f.dhash is not None
        and (hit := owner.hashes.best(f.windows, f.dihedral, f.dhash, f.id, rule)) is not None}, seed)
    single = min(STREAM_SINGLE, len(feats) // 5)
    batched, events = feats[:len(feats) - single], []
    wall = cpu = 0.0
    for lo in range(0, len(batched), STREAM_BATCH):
        owner.accept(batched[lo:lo + STREAM_BATCH])
        t0, c0 = time.perf_counter(), time.process_time()
        events += owner.decide_ready(limit=STREAM_BATCH + 1)
        wall, cpu = wall + time.perf_counter() - t0, cpu + time.process_time() - c0
    assert len(events) == len(batched), (len(events), len(batched))
    each, each_cpu = [], []
    for f in feats[len(batched):]:
        owner.accept([f])
        t0, c0 = time.perf_counter(), time.process_time()
        one = owner.decide_ready(limit=2)
        each.append(time.perf_counter() - t0)
        each_cpu.append(time.process_time() - c0)
        assert len(one) == 1, (f.path, len(one))
        events += one
    return {"stream": len(feats), "stream_batched": len(batched), "stream_s": len(batched) / wall,
            "stream_cpu_ms": cpu / len(batched) * 1e3,
            "stream_p50_ms": float(np.percentile(each, 50)) * 1e3, "stream_p99_ms": float(np.percentile(each, 99)) * 1e3,
            "stream_cpu_p99_ms": float(np.percentile(each_cpu, 99)) * 1e3, "stream_single": len(each),
            "stream_not_new": sum(1 for e in events if e.kind != "new"), "stream_decoys": decoys}


def cold_start(state: Path, vectors: bool) -> dict:
    """A start with no snapshots (the indexes built from the catalog), then the save that writes them."""
    from daemon.config import Settings
    from daemon.index.catalog import Catalog
    from daemon.index.owner import IndexOwner, _compile_hash_kernels

    _compile_hash_kernels(_default_rule())
    started = time.monotonic()
    catalog = Catalog(state / "catalog.sqlite3")
    owner = IndexOwner(Settings(state_dir=state, hash_only=not vectors), catalog)
    out = {"rebuild_s": time.monotonic() - started}
    started = time.monotonic()
    owner.save()
    out["save_s"] = time.monotonic() - started
    owner.close()
    catalog.close()
    out["cold_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


def plant_decoys(catalog, folder: Path, n: int, hit: set[int], seed: int) -> int:
    """Give each synthetic row a photo hash-matches a file: an unrelated picture (smoothed noise), so that
    the gradient look and the verification run on chance matches as they would in a real archive (a
    synthetic row's own path does not exist, and a match to a missing file is decided on hashes alone)."""
    from PIL import Image

    rng = np.random.default_rng(seed + 2)
    folder.mkdir(exist_ok=True)
    synthetic = sorted(i for i in hit if i <= n)
    for file_id in synthetic:
        noise = (rng.standard_normal((12, 16, 3)) * 60 + 128).clip(0, 255).astype(np.uint8)
        path = folder / f"{file_id}.jpg"
        Image.fromarray(noise).resize((640, 480), Image.Resampling.BICUBIC).save(path, quality=90)
        with catalog.transaction() as conn:
            conn.execute("UPDATE files SET path = ? WHERE id = ?", (str(path), file_id))
    return len(synthetic)


def _default_rule():
    from daemon.config import Settings
    from daemon.index.verdict import Thresholds

    return Thresholds.resolve(Settings(hash_only=True).match, None).hashes


def table(rows: list[dict]) -> str:
    head = ("catalogued", "vectors", "start-up s from snapshots", "first start s (no snapshots; peak RSS MiB)",
            "snapshot save s", "stream: verdicts/s batched (CPU ms a verdict)", "stream: per verdict p50/p99 ms (CPU p99)",
            "stream: not new (decoys)", "verdicts/s batched",
            "verdicts/s one at a time", "decide per verdict p50/p99 ms", "its CPU p50/p99 ms", "evidence p50/p99 ms", "hash p50/p99 ms",
            "vector p50/p99 ms", "exhaustive p50/p99 ms", "chance: photos (decoys, looked away)",
            "chance: random probes", "hash index B/row (snapshot)", "vector index B/row", "disk B/row", "peak RSS MiB")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        vec = r.get("vectors")
        lines.append("| " + " | ".join((
            f"{r['n']:,}", "512-d SSCD" if vec else "hash-only", f"{r['startup_s']:.2f}",
            f"{r['rebuild_s']:.1f} ({r['cold_rss_mib']:,.0f})", f"{r['save_s']:.1f}",
            *((f"{r['stream_s']:,.0f} of {r['stream_batched']:,} ({r['stream_cpu_ms']:.2f})",
               f"{r['stream_p50_ms']:.2f} / {r['stream_p99_ms']:.2f} of {r['stream_single']:,} ({r['stream_cpu_p99_ms']:.2f})",
               f"{r['stream_not_new']} of {r['stream']:,} ({r['stream_decoys']})") if "stream" in r else ("-",) * 3),
            f"{r['verdicts_s']:,.0f}",
            f"{r['single_verdicts_s']:,.0f}",
            f"{r['decide_p50_ms']:.2f} / {r['decide_p99_ms']:.2f}",
            f"{r['decide_cpu_p50_ms']:.2f} / {r['decide_cpu_p99_ms']:.2f}",
            f"{r['evidence_p50_ms']:.2f} / {r['evidence_p99_ms']:.2f}",
            f"{r['hash_p50_ms']:.2f} / {r['hash_p99_ms']:.2f}",
            f"{r['vector_p50_ms']:.2f} / {r['vector_p99_ms']:.2f}" if vec else "-",
            f"{r['exh_p50_ms']:.1f} / {r['exh_p99_ms']:.1f} ({r['exh_queries']} q)",
            f"{r['photo_chance']} of {r['photo_copies']} copies in {r['photos']} ({r['decoys']}, {r['looked_away']})",
            f"{r['probe_chance']} / {r['probes']:,} = {r['probe_chance'] / max(r['probes'], 1):.2%}",
            f"{r['index_b_per_row']:,.0f} ({r['hash_snapshot_b_per_row']:,.0f})",
            f"{r['vector_b_per_row']:,.0f}" if vec else "-",
            f"{r['disk_b_per_row']:,.0f}", f"{r['peak_rss_mib']:,.0f}")) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="100000,1000000")
    ap.add_argument("--vectors", default="0", help="per size, 0 (hash-only) or 1 (512-d SSCD vectors too), "
                    "comma-separated; one value applies to all sizes")
    ap.add_argument("--photos", type=int, default=1000, help="at most this many distinct photographs (all there are)")
    ap.add_argument("--debian-cache", type=Path, default=Path("/tmp/dupwatch-bench-debs"),
                    help="where bench/photos.py keeps the Debian photo packages (fetched when missing)")
    ap.add_argument("--no-debian", action="store_true", help="scikit-image's photos only (14)")
    ap.add_argument("--probes", type=int, default=20_000, help="random hash sets for the chance-match rate")
    ap.add_argument("--stream", type=int, default=10_000, help="distinct collages decided after the photos, "
                    "for the sustained rate (bench/scan_growth.py's; built once, kept under --catalogs); 0: none")
    ap.add_argument("--exhaustive", type=int, default=100, help="photos also searched exhaustively")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--catalogs", type=Path, help="keep each filled catalog here and reuse it on the next run "
                    "(the fill is most of a 10 M run)")
    ap.add_argument("--fill-only", action="store_true", help="fill the --catalogs for --sizes/--vectors that are "
                    "missing, print rows/s, and stop (start a 10 M fill ahead of the run)")
    ap.add_argument("--out", type=Path)
    ap.add_argument("--json", action="store_true", help="also print one JSON line per size with the keys "
                    "size, verdicts_per_s, p99_ms, startup_s, startup_tail_missing_s, index_bytes_per_image")
    ap.add_argument("--child", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--child-vectors", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--photo-dir", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--stream-dir", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--cold", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.cold is not None:
        print(json.dumps(cold_start(args.cold, bool(args.child_vectors))))
        return
    if args.child is not None:
        photos = sorted(args.photo_dir.glob("*.jpg"))
        stream = sorted(args.stream_dir.glob("*/*.jpg")) if args.stream_dir else None
        print(json.dumps(child(args.child, photos, args.probes, args.exhaustive, args.seed, bool(args.child_vectors),
                               args.catalogs, stream)))
        return
    header = (f"# bench/scale.py, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {cpu_model()}, "
              f"{os.cpu_count()} cores, load avg {os.getloadavg()[0]:.1f} at start\n"
              f"# $ python bench/scale.py {' '.join(argv if argv is not None else sys.argv[1:])}\n"
              f"# distinct real photographs scanned per N (scikit-image{'' if args.no_debian else ' + Debian'}, each once, whole); "
              "synthetic rows uniformly random (vectors: random unit)")
    print(header, flush=True)
    sizes = [int(s) for s in args.sizes.split(",")]
    flags = [int(v) for v in args.vectors.split(",")]
    flags = flags * len(sizes) if len(flags) == 1 else flags
    if args.fill_only:
        if args.catalogs is None:
            sys.exit("--fill-only fills --catalogs DIR")
        args.catalogs.mkdir(parents=True, exist_ok=True)
        for n, vec in zip(sizes, flags, strict=True):
            template = args.catalogs / template_name(n, bool(vec))
            if template.exists():
                continue
            partial = template.with_suffix(".filling")  # renamed when whole: a killed fill is never reused
            for stale in args.catalogs.glob(partial.name + "*"):
                stale.unlink()
            rate = fill_file(partial, n, args.seed, bool(vec))
            partial.rename(template)
            print(f"filled {template}: {n:,} rows at {rate:,.0f} rows/s, {template.stat().st_size / max(n, 1):,.0f} "
                  f"B/row, load avg {os.getloadavg()[0]:.1f}", flush=True)
        return
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        made = make_photos(Path(tmp), args.photos, args.seed, None if args.no_debian else args.debian_cache)
        print(f"# {len(made)} photos", flush=True)
        stream_dir = (args.catalogs or Path(tmp)) / f"stream-{args.stream}-{args.seed}"
        if args.stream and not (stream_dir / "done").exists():
            from bench.scan_growth import build_files

            build_files(stream_dir, args.stream, args.seed, os.cpu_count() or 1, not args.no_debian, "collage")
            (stream_dir / "done").touch()
        for n, vec in zip(sizes, flags, strict=True):
            cmd = [sys.executable, __file__, "--child", str(n), "--child-vectors", str(vec), "--photo-dir", tmp,
                   "--probes", str(args.probes), "--exhaustive", str(args.exhaustive), "--seed", str(args.seed)]
            if args.catalogs:
                cmd += ["--catalogs", str(args.catalogs)]
            if args.stream:
                cmd += ["--stream-dir", str(stream_dir)]
            done = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if done.returncode != 0:
                sys.exit(f"N={n} failed:\n{done.stderr[-3000:]}")
            rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
            if args.json:
                print(json.dumps(keys_of(rows[-1])), flush=True)
    text = f"{header}\n{table(rows)}\n# load avg at end {os.getloadavg()[0]:.1f}"
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
