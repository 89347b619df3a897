"""The hash index's compiled loops (numba): building a multi-index table, probing it, verifying candidates.

A module of their own so that numba (about 64 MiB and 0.45 CPU-s to import, 57 MiB and 0.75 CPU-s more to
load these kernels from its cache, 2 cores, 2026-11-27) is imported only when daemon.index.hashindex builds its
first segment: a catalog under TAIL_ROWS rows is searched exhaustively with numpy and never needs it.
"""

from __future__ import annotations

import numba
import numpy as np

_M1 = np.uint64(0x5555555555555555)
_M2 = np.uint64(0x3333333333333333)
_M4 = np.uint64(0x0F0F0F0F0F0F0F0F)
_H01 = np.uint64(0x0101010101010101)


@numba.njit(cache=True, inline="always")
def _popcount(x: np.uint64) -> int:
    x = x - ((x >> np.uint64(1)) & _M1)
    x = (x & _M2) + ((x >> np.uint64(2)) & _M2)
    x = (x + (x >> np.uint64(4))) & _M4
    return int((x * _H01) >> np.uint64(56))


@numba.njit(cache=True)
def build_table(values, per_row, lo, shifts, widths, off_base, offsets, ent_val, ent_pos):  # pragma: no cover
    """Counting sort of `values` (uint64, `per_row` per stored row) into each chunk's buckets."""
    n = values.shape[0]
    for c in range(shifts.shape[0]):
        mask = (np.uint64(1) << np.uint64(widths[c])) - np.uint64(1)
        shift = np.uint64(shifts[c])
        base = off_base[c]
        buckets = 1 << widths[c]
        for e in range(n):
            offsets[base + np.int64((values[e] >> shift) & mask) + 1] += 1
        for k in range(buckets):
            offsets[base + k + 1] += offsets[base + k]
        fill = offsets[base:base + buckets].copy()
        for e in range(n):
            k = np.int64((values[e] >> shift) & mask)
            i = fill[k]
            fill[k] += 1
            ent_val[c, i] = values[e]
            ent_pos[c, i] = lo + e // per_row


@numba.njit(cache=True, inline="always")
def chunk_radius(r: int, m: int, c: int) -> int:
    """Chunk c's probe radius (of m) for a whole-hash radius r = a*m + b: a for the last b+1 chunks (the
    narrowest: `chunk_widths` puts the extra bits first), a-1 (-1: not probed) for the others. A hash
    within r has some chunk within its radius, or the chunk distances would sum past r."""
    a, b = r // m, r % m
    return a if c >= m - b - 1 else a - 1


@numba.njit(cache=True)
def probe(queries, radii, shifts, widths, off_base, offsets, ent_val, ent_pos, seen, stamp, out, n_out):  # pragma: no cover
    """Add to `out` every stored position with an entry within its query's radius; returns the new count.
    Buckets are enumerated per chunk at its `chunk_radius` with Gosper's hack (masks of j set bits).

    Why three passes per chunk (keys, then bounds, then entries): at 10 M rows the buckets lie far apart and
    each visit is a cache miss on `offsets` and another on `ent_val`. Walking bucket by bucket makes every
    miss wait for the one before (the entry loop's bounds come from the offsets just loaded); gathering all
    the bounds first, then touching each bucket's first entry, issues the misses independently, so the CPU
    overlaps them. Same buckets, same entries, same order of candidates as one pass."""
    m = shifts.shape[0]
    cap = 256
    keys = np.empty(cap, np.int64)
    starts = np.empty(cap, np.int64)
    ends = np.empty(cap, np.int64)
    n_ent = ent_val.shape[1]
    for qi in range(queries.shape[0]):
        r = radii[qi]
        if r < 0:
            continue
        q = queries[qi]
        for c in range(m):
            per_chunk = chunk_radius(r, m, c)
            if per_chunk < 0:
                continue
            w = widths[c]
            shift = np.uint64(shifts[c])
            limit = np.int64(1) << w
            qk = np.int64((q >> shift) & np.uint64(limit - 1))
            base = off_base[c]
            nk = 0
            for j in range(min(per_chunk, w) + 1):
                v = (np.int64(1) << j) - 1
                while v < limit:
                    if nk == cap:
                        cap *= 2
                        grown = np.empty(cap, np.int64)
                        grown[:nk] = keys[:nk]
                        keys = grown
                        starts = np.empty(cap, np.int64)
                        ends = np.empty(cap, np.int64)
                    keys[nk] = base + (qk ^ v)
                    nk += 1
                    if v == 0:
                        break
                    low = v & -v
                    ripple = v + low
                    v = (((ripple ^ v) >> 2) // low) | ripple
            for t in range(nk):
                starts[t] = offsets[keys[t]]
                ends[t] = offsets[keys[t] + 1]
            touched = np.uint64(0)
            for t in range(nk):
                if starts[t] < n_ent:
                    touched ^= ent_val[c, starts[t]]
            if touched == np.uint64(1) and n_ent < 0:  # never true: keeps the touching loads from being dropped
                return -1
            for t in range(nk):
                for i in range(starts[t], ends[t]):
                    if _popcount(ent_val[c, i] ^ q) <= r:
                        p = ent_pos[c, i]
                        if seen[p] != stamp:
                            seen[p] = stamp
                            out[n_out] = p
                            n_out += 1
    return n_out


@numba.njit(cache=True)
def add_range(lo, hi, seen, stamp, out, n_out):  # pragma: no cover
    """Candidates by scanning: every position in [lo, hi) (segments where probing costs more)."""
    for p in range(lo, hi):
        if seen[p] != stamp:
            seen[p] = stamp
            out[n_out] = p
            n_out += 1
    return n_out


@numba.njit(cache=True)
def verify(cands, ids, windows, dhash, live, before_id, excluded, qwin, qdih, qd, rule):  # pragma: no cover
    """Exact distances of each candidate; the accepted one with the least 2p + d, earliest among equals.
    Returns [position or -1, phash, crop, pad, dhash]."""
    best = np.array([-1, 0, 0, 0, 0], dtype=np.int64)
    best_score = 1 << 30
    nw = windows.shape[1]
    for t in range(cands.shape[0]):
        p = cands[t]
        if not live[p] or ids[p] >= before_id:
            continue
        if excluded.shape[0]:
            k = np.searchsorted(excluded, ids[p])
            if k < excluded.shape[0] and excluded[k] == ids[p]:
                continue
        full = windows[p, 0]
        ph = 64
        for k in range(qdih.shape[0]):
            ph = min(ph, _popcount(full ^ qdih[k]))
        crop = 64
        for k in range(nw):
            crop = min(crop, _popcount(windows[p, k] ^ qwin[0]))
        pad = 64
        for k in range(qwin.shape[0]):
            pad = min(pad, _popcount(full ^ qwin[k]))
        d = _popcount(dhash[p] ^ qd)
        pmin = min(ph, crop, pad)
        if not (ph <= rule[0] or crop <= rule[1] or pad <= rule[1] or d <= rule[2]
                or (pmin <= rule[3] and d <= rule[4])):
            continue
        score = 2 * pmin + d
        if score < best_score or (score == best_score and p < best[0]):
            best_score = score
            best[0], best[1], best[2], best[3], best[4] = p, ph, crop, pad, d
    return best


@numba.njit(cache=True, nogil=True)
def probe_many(tables, kinds, scanned, full_q, full_r, crop_q, crop_r, dh_q, dh_r, seen, stamp, scratch):  # pragma: no cover
    """Candidates of k queries in one call (the GIL released throughout: the owner's prober thread runs it
    beside the writer). Query i is row i of full_q [k, F] (its flips/rotations and pad windows, at full_r),
    crop_q [k, 1] (its full frame against stored crop windows, at crop_r) and dh_q [k, 1] (dHash, at dh_r);
    `tables` are the segments' tables, kinds[t] 0 (full frame), 1 (crops) or 2 (dHash), and `scanned` the
    [lo, hi) position ranges of the segments scanned instead of probed. Query i takes stamp + i + 1.
    Returns the candidates of all queries concatenated and their bounds [k + 1]."""
    k = full_q.shape[0]
    bounds = np.zeros(k + 1, np.int64)
    res = np.empty(4096, np.int64)
    total = 0
    for i in range(k):
        s = stamp + i + 1
        n = 0
        for t in range(len(tables)):
            shifts, widths, off_base, offsets, ent_val, ent_pos = tables[t]
            if kinds[t] == 0:
                n = probe(full_q[i], full_r, shifts, widths, off_base, offsets, ent_val, ent_pos, seen, s, scratch, n)
            elif kinds[t] == 1:
                n = probe(crop_q[i], crop_r, shifts, widths, off_base, offsets, ent_val, ent_pos, seen, s, scratch, n)
            else:
                n = probe(dh_q[i], dh_r, shifts, widths, off_base, offsets, ent_val, ent_pos, seen, s, scratch, n)
        for r in range(scanned.shape[0]):
            n = add_range(scanned[r, 0], scanned[r, 1], seen, s, scratch, n)
        if total + n > res.shape[0]:
            grown = np.empty(max(2 * res.shape[0], total + n), np.int64)
            grown[:total] = res[:total]
            res = grown
        res[total:total + n] = scratch[:n]
        total += n
        bounds[i + 1] = total
    return res[:total], bounds
