"""In-memory table of the perceptual hashes of decided files, searched exhaustively.

Exhaustive Hamming search over packed 64-bit hashes is exact and, with numpy's popcount, costs about
a few ns per comparison; the table is rebuilt from the catalog at start. Three comparisons catch three kinds
of edit: the copy's 8 flips/rotations against each original's full frame (mirrors, 90-degree turns),
the copy's full frame against each original's sub-windows (crops), and the copy's sub-windows against
each original's full frame (padding, pasting onto a bigger canvas).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from workers.hashing import hamming


@dataclass(frozen=True)
class HashHit:
    id: int
    distance: int
    signal: str  # "phash" (with the variant) or "dhash"


class HashIndex:
    def __init__(self, windows: int):
        self._n = 0
        self._ids = np.zeros(1024, dtype=np.int64)
        self._windows = np.zeros((1024, windows), dtype=np.int64)
        self._dhash = np.zeros(1024, dtype=np.int64)
        self._live = np.zeros(1024, dtype=bool)
        self._pos: dict[int, int] = {}

    def __len__(self) -> int:
        return int(self._live[: self._n].sum())

    def add(self, file_id: int, windows: np.ndarray, dhash: int) -> None:
        if file_id in self._pos or windows.shape[0] != self._windows.shape[1]:
            return
        if self._n == len(self._ids):
            grow = len(self._ids)
            self._ids = np.concatenate([self._ids, np.zeros(grow, np.int64)])
            self._windows = np.concatenate([self._windows, np.zeros((grow, self._windows.shape[1]), np.int64)])
            self._dhash = np.concatenate([self._dhash, np.zeros(grow, np.int64)])
            self._live = np.concatenate([self._live, np.zeros(grow, bool)])
        i = self._n
        self._ids[i], self._windows[i], self._dhash[i], self._live[i] = file_id, windows, dhash, True
        self._pos[file_id] = i
        self._n += 1

    def remove(self, file_id: int) -> None:
        i = self._pos.get(file_id)
        if i is not None:
            self._live[i] = False

    def nearest(self, windows: np.ndarray, dihedral: np.ndarray, dhash: int, before_id: int,
                excluded: set[int] = frozenset()) -> tuple[HashHit | None, HashHit | None]:
        """Best pHash hit and best dHash hit among live files earlier than `before_id`."""
        n = self._n
        if n == 0:
            return None, None
        mask = self._live[:n] & (self._ids[:n] < before_id)
        if excluded:
            mask &= ~np.isin(self._ids[:n], np.fromiter(excluded, np.int64))
        if not mask.any():
            return None, None
        stored = self._windows[:n][mask]
        ids = self._ids[:n][mask]
        full = stored[:, :1]
        d_turn = hamming(full, dihedral[None, :]).min(axis=1)  # copy flipped/rotated
        d_crop = hamming(stored, windows[0]).min(axis=1)  # copy is a crop of the original
        d_pad = hamming(full, windows[None, :]).min(axis=1)  # original sits inside the copy
        p = np.minimum(np.minimum(d_turn, d_crop), d_pad)
        pi = int(np.argmin(p))  # argmin takes the first, i.e. the earliest file among equals
        d = hamming(self._dhash[:n][mask], np.int64(dhash))
        di = int(np.argmin(d))
        return HashHit(int(ids[pi]), int(p[pi]), "phash"), HashHit(int(ids[di]), int(d[di]), "dhash")
