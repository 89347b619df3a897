"""The multi-index hash search returns exactly what the exhaustive search returns.

The reference is `ExhaustiveHashIndex` (the search every verdict used before the index existed). To afford
100,000+ queries on 2 cores, the test checks them against `reference_best`, the same numpy comparisons
broadcast over a batch of queries, and first holds `reference_best` itself to `ExhaustiveHashIndex.best`
on a sample. Stored rows form clusters (near copies and exact twins, so that equal scores occur and
"earliest among equals" is exercised); queries are random, or planted: a stored hash with k random bits
flipped, placed where a real edit would put it (one of the 8 flips/rotations, the full frame landing on a
stored crop window, a pad window landing on a stored full frame, dHash, or pHash and dHash both moderately
close), under several rules. The index under test always probes (its segments are small, and by default
a segment that costs more to probe than to scan is scanned); a second index with default costs is
checked on a sample, so the scan path is held to the same answers. An eighth of the queries are probed ahead
(`probe_ahead`) before the rows of their stage are added, and finished with `best(..., probed=)`.
The seed is printed; set HASHINDEX_SEED to replay a failure.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys

import numpy as np
import pytest

from daemon.index.hashindex import ExhaustiveHashIndex, HashHit, HashIndex, HashRule, _hit, _Table, chunk_widths
from workers.hashing import hamming

W = 9  # windows per file, as in workers.hashing.WINDOWS
RULES = (
    HashRule(8, 6, 6, 14, 10),  # the shipped defaults
    HashRule(12, 10, 8, 18, 12),  # looser
    HashRule(4, -1, -1, -1, -1),  # only the full frame and its flips
    HashRule(-1, 8, 10, 16, -1),  # no flips, no agreement clause
    HashRule(30, 24, 26, 34, 30),  # so loose that, at default costs, every segment is scanned
)
STAGES = 5  # the index grows in stages, queried after each (segments merge and re-tune as it grows)
ROWS_PER_STAGE = 160
QUERIES_PER_STAGE = 20_500


def _random(rng: np.random.Generator, *shape: int) -> np.ndarray:
    return rng.integers(np.iinfo(np.int64).min, np.iinfo(np.int64).max, size=shape, dtype=np.int64,
                        endpoint=True)


def _flip(rng: np.random.Generator, values: np.ndarray, max_bits: int) -> np.ndarray:
    """Each value with 0..max_bits distinct random bits flipped."""
    flat = np.asarray(values, np.int64).reshape(-1)
    k = rng.integers(0, max_bits + 1, len(flat))
    chosen = rng.random((len(flat), 64)).argsort(axis=1).argsort(axis=1) < k[:, None]  # k random bits each
    masks = np.bitwise_or.reduce(np.where(chosen, np.uint64(1) << np.arange(64, dtype=np.uint64), np.uint64(0)),
                                 axis=1)
    return (flat.view(np.uint64) ^ masks).view(np.int64).reshape(np.shape(values))


def _stored_rows(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Windows [n, W] and dHashes [n]: a third random, the rest near copies or exact twins of earlier rows."""
    windows, dhash = _random(rng, n, W), _random(rng, n)
    for i in range(1, n):
        j = int(rng.integers(0, i))
        kind = rng.integers(0, 3)
        if kind == 1:  # near copy of an earlier row
            windows[i], dhash[i] = _flip(rng, windows[j], 10), _flip(rng, dhash[j:j + 1], 10)[0]
        elif kind == 2:  # exact twin: equal scores, the earlier must win
            windows[i], dhash[i] = windows[j], dhash[j]
    return windows, dhash


def _queries(rng: np.random.Generator, windows: np.ndarray, dhash: np.ndarray, ids: np.ndarray, q: int):
    """q queries (windows, dihedral, dhash, before_id, excluded, rule index), most planted on stored rows."""
    qwin, qdih, qd = _random(rng, q, W), _random(rng, q, 8), _random(rng, q)
    kinds = rng.integers(0, 6, q)
    src = rng.integers(0, len(windows), q)
    for t in range(q):
        j, kind = int(src[t]), int(kinds[t])
        if kind == 1:  # a flip or rotation of a stored full frame
            qdih[t, rng.integers(0, 8)] = _flip(rng, windows[j, :1], 14)[0]
        elif kind == 2:  # a crop: the query's full frame near one of a stored row's windows
            qdih[t, 0] = _flip(rng, windows[j, rng.integers(0, W):][:1], 12)[0]
        elif kind == 3:  # a pad: one of the query's windows near a stored full frame
            qwin[t, rng.integers(1, W)] = _flip(rng, windows[j, :1], 12)[0]
        elif kind == 4:  # dHash alone
            qd[t] = _flip(rng, dhash[j:j + 1], 14)[0]
        elif kind == 5:  # the agreement clause: pHash and dHash both moderately close
            qdih[t, 0] = _flip(rng, windows[j, :1], 18)[0]
            qd[t] = _flip(rng, dhash[j:j + 1], 14)[0]
        qwin[t, 0] = qdih[t, 0]  # the identity variant is the full frame
    before = np.where(rng.random(q) < 0.3, ids[-1] + 1, rng.integers(ids[0], ids[-1] + 2, q))
    excluded = [set(ids[rng.integers(0, len(ids), rng.integers(1, 4))].tolist()) | {int(ids[src[t]])}
                if rng.random() < 0.1 else set() for t in range(q)]
    rules = rng.integers(0, len(RULES), q)
    return qwin, qdih, qd, before, excluded, rules


def reference_best(stored: ExhaustiveHashIndex, qwin, qdih, qd, before, excluded, rule: HashRule):
    """ExhaustiveHashIndex.best for a batch of queries sharing one rule: its distances, broadcast."""
    n = stored._n
    ids, full, wins, dh, live = (stored._ids[:n], stored._windows[:n, 0], stored._windows[:n], stored._dhash[:n],
                                 stored._live[:n])
    ph = hamming(full[None, :, None], qdih[:, None, :]).min(axis=2).astype(np.int64)
    crop = hamming(wins[None, :, :], qwin[:, None, :1]).min(axis=2).astype(np.int64)
    pad = hamming(full[None, :, None], qwin[:, None, :]).min(axis=2).astype(np.int64)
    d = hamming(dh[None, :], qd[:, None]).astype(np.int64)
    p = np.minimum(np.minimum(ph, crop), pad)
    ok = live[None, :] & (ids[None, :] < before[:, None])
    for t, skip in enumerate(excluded):
        if skip:
            ok[t] &= ~np.isin(ids, list(skip))
    ok &= ((ph <= rule.phash) | (crop <= rule.window) | (pad <= rule.window) | (d <= rule.dhash)
           | ((p <= rule.confirm_phash) & (d <= rule.confirm_dhash)))
    score = np.where(ok, 2 * p + d, 1 << 20)
    j = score.argmin(axis=1)  # the first (earliest) among equals
    return [_hit(int(ids[j[t]]), int(ph[t, j[t]]), int(crop[t, j[t]]), int(pad[t, j[t]]), int(d[t, j[t]]), rule)
            if ok[t, j[t]] else None for t in range(len(qd))]


@pytest.mark.slow
@pytest.mark.timeout(1800)  # about 45 s of CPU; a shared machine can stretch that several times
def test_index_returns_the_exhaustive_best_on_100k_random_and_planted_queries():
    seed = int(os.environ.get("HASHINDEX_SEED", np.random.SeedSequence().entropy % 2**32))
    print(f"HASHINDEX_SEED={seed}")
    rng = np.random.default_rng(seed)
    windows, dhash = _stored_rows(rng, STAGES * ROWS_PER_STAGE)
    ids = np.cumsum(rng.integers(1, 4, len(windows))) + 10
    index, reference = HashIndex(W, tail_rows=16, scan_factor=np.inf), ExhaustiveHashIndex(W)
    scanning = HashIndex(W, tail_rows=16)  # default costs: small segments are scanned, not probed
    checked = found = anchored = ahead_checked = 0
    for stage in range(STAGES):
        lo, hi = stage * ROWS_PER_STAGE, (stage + 1) * ROWS_PER_STAGE
        qwin, qdih, qd, before, excluded, rules = _queries(rng, windows[:hi], dhash[:hi], ids[:hi],
                                                           QUERIES_PER_STAGE)
        for i in range(lo, lo + 5):  # a tail (unsealed rows) as the probes ahead are made
            index.add(int(ids[i]), windows[i], int(dhash[i]))
        # every 8th query probed ahead, before the rest of this stage's rows arrive (seals and merges follow):
        # the owner probes a batch ahead while it indexes the batch's own rows (IndexOwner._probe_ahead)
        ahead = {}
        for r, rule in enumerate(RULES):  # a call per rule, each for all of its queries
            sel = [t for t in range(0, QUERIES_PER_STAGE, 8) if rules[t] == r]
            ahead.update(zip(sel, index.probe_ahead([(qwin[t], qdih[t], int(qd[t])) for t in sel], rule)))
        for i in range(lo, hi):
            index.add(int(ids[i]), windows[i], int(dhash[i]))  # the first 5: already there, ignored
            scanning.add(int(ids[i]), windows[i], int(dhash[i]))
            reference.add(int(ids[i]), windows[i], int(dhash[i]))
        for gone in rng.choice(ids[:hi], 12, replace=False):  # removals, both sides
            index.remove(int(gone))
            scanning.remove(int(gone))
            reference.remove(int(gone))
        assert len(index._segments) > 1  # probing through several segments of different chunk widths
        for r, rule in enumerate(RULES):
            for start in range(0, QUERIES_PER_STAGE, 512):
                sel = np.flatnonzero(rules[start:start + 512] == r) + start
                want = reference_best(reference, qwin[sel], qdih[sel], qd[sel], before[sel],
                                      [excluded[t] for t in sel], rule)
                for k, t in enumerate(sel):
                    if k < 4:  # the batched reference is the exhaustive search itself
                        assert want[k] == reference.best(qwin[t], qdih[t], int(qd[t]), int(before[t]), rule,
                                                         excluded[t])
                        anchored += 1
                    got = index.best(qwin[t], qdih[t], int(qd[t]), int(before[t]), rule, excluded[t], ahead.get(t))
                    assert got == want[k], f"seed {seed}, stage {stage}, query {t}, {rule}, ahead {t in ahead}"
                    ahead_checked += t in ahead
                    found += got is not None
                    if k % 16 == 0:
                        assert scanning.best(qwin[t], qdih[t], int(qd[t]), int(before[t]), rule,
                                             excluded[t]) == want[k], f"seed {seed}: scan path"
                checked += len(sel)
    print(f"{checked} queries ({ahead_checked} probed ahead), {found} matches, {anchored} checked against "
          "ExhaustiveHashIndex.best")
    assert checked >= 100_000 and found > checked // 4 and checked - found > checked // 10
    assert ahead_checked >= checked // 9


@pytest.fixture
def index() -> HashIndex:
    idx = HashIndex(2, tail_rows=1)  # every row sealed into a segment at once: the probe path, not the tail
    for file_id, full in ((10, 0b1111), (20, 0b1111), (30, 0b111)):
        idx.add(file_id, np.array([full, -1], np.int64), 0)
    return idx


def _best(idx: HashIndex, full: int, before_id: int = 100, excluded: frozenset[int] = frozenset()) -> HashHit | None:
    return idx.best(np.array([full, -1], np.int64), np.full(8, full, np.int64), 0, before_id,
                    HashRule(8, 6, -1, -1, -1), excluded)


def test_removed_rows_are_never_returned_and_the_next_best_is(index):
    assert _best(index, 0b1111).id == 10  # twins at distance 0: the earlier
    index.remove(10)
    assert _best(index, 0b1111).id == 20
    index.remove(20)
    assert _best(index, 0b1111) == HashHit(30, 1, 0, "phash")
    index.remove(30)
    assert _best(index, 0b1111) is None and len(index) == 0


def test_only_earlier_rows_that_are_not_excluded(index):
    assert _best(index, 0b111, before_id=30).id == 10  # 30 is the query itself: not earlier
    assert _best(index, 0b111, before_id=10) is None
    assert _best(index, 0b1111, excluded=frozenset({10})).id == 20
    assert _best(index, 0b1111, excluded=frozenset({10, 20})).id == 30


def test_rows_must_arrive_in_id_order(index):
    index.add(20, np.array([0, 0], np.int64), 0)  # already there: ignored, as a re-run would
    assert _best(index, 0).id == 30
    with pytest.raises(ValueError):
        index.add(15, np.array([0, 0], np.int64), 0)


def test_an_index_that_has_answered_queries_is_freed_when_dropped():
    """The owner drops its index and builds another after a rolled-back batch: at 10 M the old one is
    gigabytes, so nothing the queries cached (such as the radii per rule) may keep it alive."""
    import gc
    import weakref

    index = HashIndex(2, tail_rows=1)  # not the fixture: pytest holds on to a fixture's value
    index.add(10, np.array([0b1111, -1], np.int64), 0)
    assert _best(index, 0b1111).id == 10  # the probe path, which caches the rule's radii
    dropped = weakref.ref(index)
    del index
    gc.collect()
    assert dropped() is None


@pytest.mark.parametrize("entries", [2_048, 100_000, 800_000, 1_000_000, 8_000_000, 80_000_000])
def test_no_chunk_is_wider_than_log2_of_its_entries(entries):
    """Each extra bit of a chunk doubles its bucket offsets (8 B a bucket): a chunk wider than log2(entries)
    makes the offsets outweigh the entries (800 k crop entries in 22-bit chunks: 64 MiB for 100 k rows)."""
    widths = chunk_widths(entries)
    assert sum(widths) == 64
    assert max(widths) <= math.ceil(math.log2(entries))


def test_a_table_of_800k_entries_holds_less_offsets_than_entries():
    values = np.random.default_rng(5).integers(-(2**63), 2**63 - 1, 800_000, dtype=np.int64, endpoint=True)
    table = _Table(values, 8, 0)
    assert table.offsets.nbytes <= table.ent_val.nbytes // 2
    assert sorted(table.ent_val[0].tolist()) == sorted(values.view(np.uint64).tolist())


def test_the_owners_warm_up_compiles_every_kernel_a_verdict_runs():
    """Start-up compiles (or loads from numba's cache) the kernels, so that the first verdict does not stall
    on it. In a fresh interpreter: a kernel left to the first query would have no signature yet."""
    code = ("from daemon.config import Settings; from daemon.index.verdict import Thresholds; "
            "from daemon.index.owner import _compile_hash_kernels; from daemon.index import hashkernels as h; "
            "_compile_hash_kernels(Thresholds.resolve(Settings(hash_only=True).match, None).hashes); "
            "print(*(len(k.signatures) for k in (h.build_table, h.probe_many, h.verify)))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=600,
                          cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert done.stdout.split() == ["1"] * 3, done.stdout


def _compositions(total: int, parts: int, caps: list[int]):
    """Every way of writing `total` as `parts` non-negative terms, term c at most caps[c]."""
    if parts == 1:
        if total <= caps[0]:
            yield (total,)
        return
    for first in range(min(total, caps[0]) + 1):
        for rest in _compositions(total - first, parts - 1, caps[1:]):
            yield (first, *rest)


@pytest.mark.parametrize("entries", [2_048, 100_000])  # 6 chunks of 10-11 bits, 4 of 16
def test_a_probe_finds_every_hash_at_the_radius_however_its_bits_fall_across_the_chunks(entries):
    """Chunks are probed at unequal radii (a = r // m for some, a - 1 for the others), so the hardest hash to
    find is one at exactly r bits whose flipped bits are spread over the chunks as evenly as they go: each
    split of r over the chunks is planted and must come back from the probe."""
    from daemon.index.hashkernels import probe

    rng = np.random.default_rng(7)
    query = np.uint64(rng.integers(0, 2**63))
    table = _Table(_random(rng, entries), 1, 0)
    widths, m = table.widths, len(table.widths)
    starts = [64 - sum(widths[: c + 1]) for c in range(m)]  # chunk c holds bits [starts[c], starts[c] + width)
    for r in range(10):
        planted = []
        for split in _compositions(r, m, widths):
            mask = 0
            for c, k in enumerate(split):
                bits = rng.choice(widths[c], k, replace=False)
                mask |= sum(1 << (starts[c] + int(b)) for b in bits)
            planted.append(int(query ^ np.uint64(mask)))
        values = np.concatenate([_random(rng, entries - len(planted)),
                                 np.array(planted, np.uint64).view(np.int64)])
        table = _Table(values, 1, 0)
        assert table.widths == widths
        seen, out = np.zeros(entries, np.int32), np.zeros(entries, np.int64)
        count = probe(np.array([query], np.uint64), np.array([r], np.int64), *table.arrays(), seen, 1, out, 0)
        found = set(out[:count].tolist())
        missing = [p for p in range(entries - len(planted), entries) if p not in found]
        assert not missing, f"r={r}, widths {widths}: {len(missing)} of {len(planted)} splits not probed"


def test_a_small_index_is_the_exhaustive_search_and_never_imports_numba():
    """Below TAIL_ROWS rows (a scan of a small folder) best() is the exhaustive search itself, and numba (about
    120 MiB and a second of CPU with its kernels) is not imported; the first segment brings the kernels, and
    the answers stay the exhaustive ones on both sides of it."""
    import subprocess
    import sys

    code = """
import sys
import numpy as np
from daemon.index.hashindex import TAIL_ROWS, ExhaustiveHashIndex, HashIndex, HashRule
rng = np.random.default_rng(7)
rule = HashRule(8, 6, 6, 14, 10)
rows = rng.integers(-2**63, 2**63 - 1, size=(TAIL_ROWS, 9), dtype=np.int64)
dh = rng.integers(-2**63, 2**63 - 1, size=TAIL_ROWS, dtype=np.int64)
index, reference = HashIndex(9), ExhaustiveHashIndex(9)
def answers():
    out = []
    for i in range(0, index._n, 97):
        w = rows[i] ^ np.int64(5)  # two bits off row i: a hit
        got = index.best(w, np.repeat(w[:1], 8), int(dh[i]), 10**9, rule)
        assert got == reference.best(w, np.repeat(w[:1], 8), int(dh[i]), 10**9, rule), i
        out.append(got)
    return out
for i in range(TAIL_ROWS - 1):
    index.add(i + 1, rows[i], int(dh[i]))
    reference.add(i + 1, rows[i], int(dh[i]))
assert all(a is not None for a in answers())
print("numba" in sys.modules, len(index._segments))
index.add(TAIL_ROWS, rows[-1], int(dh[-1]))
reference.add(TAIL_ROWS, rows[-1], int(dh[-1]))
assert all(a is not None for a in answers())
print("numba" in sys.modules, len(index._segments))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "0", "True", "1"]
