"""In-memory table of the perceptual hashes of decided files, searched exhaustively.

Exhaustive Hamming search over packed 64-bit hashes is exact and, with numpy's popcount, costs a few ns
per comparison; the table is rebuilt from the catalog at start. Three pHash comparisons catch three kinds
of edit: the copy's 8 flips/rotations against each original's full frame (mirrors, 90-degree turns),
the copy's full frame against each original's sub-windows (crops), and the copy's sub-windows against
each original's full frame (padding, pasting onto a bigger canvas). dHash is a second, partly
independent opinion: two hashes that agree at moderate distances are as safe as one hash that is close.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from workers.hashing import hamming


@dataclass(frozen=True)
class HashRule:
    """When a hash match makes an edited copy (distances in bits of 64; -1 disables a clause)."""

    phash: int  # full frame and its flips/rotations
    window: int  # crop and pad comparisons (more candidates, so a tighter bound)
    dhash: int
    confirm_phash: int  # ... or pHash within this AND dHash within confirm_dhash, for the same file
    confirm_dhash: int


@dataclass(frozen=True)
class HashHit:
    id: int
    distance: int  # the distance of the signal that decided (pHash bits, or dHash bits for "dhash")
    dhash_distance: int
    signal: str  # "phash", "phash-crop", "phash-pad", "dhash", "phash+dhash"


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

    def distances(self, windows: np.ndarray, dihedral: np.ndarray, dhash: int, before_id: int,
                  excluded: set[int] = frozenset()) -> dict[str, np.ndarray] | None:
        """Per live file earlier than `before_id`: its id and each comparison's distance."""
        n = self._n
        mask = self._live[:n] & (self._ids[:n] < before_id)
        if excluded:
            mask &= ~np.isin(self._ids[:n], np.fromiter(excluded, np.int64))
        if not mask.any():
            return None
        stored = self._windows[:n][mask]
        full = stored[:, :1]
        return {
            "id": self._ids[:n][mask],
            "phash": hamming(full, dihedral[None, :]).min(axis=1),  # includes the identity
            "phash-crop": hamming(stored, windows[0]).min(axis=1),
            "phash-pad": hamming(full, windows[None, :]).min(axis=1),
            "dhash": hamming(self._dhash[:n][mask], np.int64(dhash)),
        }

    def best(self, windows: np.ndarray, dihedral: np.ndarray, dhash: int, before_id: int, rule: HashRule,
             excluded: set[int] = frozenset()) -> HashHit | None:
        """The closest earlier file that the rule accepts as an edited copy, or None."""
        d = self.distances(windows, dihedral, dhash, before_id, excluded)
        if d is None:
            return None
        p = np.minimum(np.minimum(d["phash"], d["phash-crop"]), d["phash-pad"])
        clauses = {
            "phash": d["phash"] <= rule.phash,
            "phash-crop": d["phash-crop"] <= rule.window,
            "phash-pad": d["phash-pad"] <= rule.window,
            "dhash": d["dhash"] <= rule.dhash,
            "phash+dhash": (p <= rule.confirm_phash) & (d["dhash"] <= rule.confirm_dhash),
        }
        accepted = np.logical_or.reduce(list(clauses.values()))
        if not accepted.any():
            return None
        idx = np.flatnonzero(accepted)
        j = int(idx[np.argmin(2 * p[idx] + d["dhash"][idx])])  # argmin keeps the earliest among equals
        signal = next(name for name, ok in clauses.items() if ok[j])
        distance = int(d["dhash"][j]) if signal == "dhash" else int(d[signal][j] if signal in d else p[j])
        return HashHit(int(d["id"][j]), distance, int(d["dhash"][j]), signal)

    def nearest(self, windows: np.ndarray, dihedral: np.ndarray, dhash: int, before_id: int, k: int) -> list[HashHit]:
        """The k closest earlier files by pHash (any variant), whatever the distance: for ranking queries."""
        d = self.distances(windows, dihedral, dhash, before_id)
        if d is None:
            return []
        p = np.minimum(np.minimum(d["phash"], d["phash-crop"]), d["phash-pad"])
        order = np.argsort(2 * p + d["dhash"], kind="stable")[:k]
        return [HashHit(int(d["id"][j]), int(p[j]), int(d["dhash"][j]), "phash") for j in order]
