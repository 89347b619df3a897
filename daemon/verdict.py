"""Fusion: one verdict from all signals. Pure functions, no I/O, so the rules are easy to test and read.

Order of evidence: identical bytes or identical decoded pixels (exact-copy), then the copy-detection
signals (perceptual-hash distance, or embedding score over the copy threshold: edited-copy), then the
embedding over the lower similar threshold (similar). "Similar" is never reported as a copy.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from daemon import defaults
from daemon.config import MatchSettings
from daemon.hashindex import HashHit, HashRule
from workers.align import identity_edit
from workers.settings import ModelSettings


@dataclass(frozen=True)
class Thresholds:
    hashes: HashRule
    copy_score: float | None  # None: the embedding never makes a copy verdict
    similar_score: float | None

    @classmethod
    def resolve(cls, match: MatchSettings, model: ModelSettings | None) -> Thresholds:
        """Explicit settings win; else the model's calibrated pair; else no embedding verdicts.

        An uncalibrated model (a custom checkpoint) still embeds and can be searched with `query`, but
        its scores mean nothing until thresholds are set for it, so it makes no verdicts on its own.
        """
        calibrated = defaults.CALIBRATED.get((model.name, model.pretrained)) if model else None
        copy = match.copy_score if match.copy_score is not None else (calibrated[0] if calibrated else None)
        similar = match.similar_score if match.similar_score is not None else (
            calibrated[1] if calibrated else None)
        rule = HashRule(match.phash_max_distance, match.window_max_distance, match.dhash_max_distance,
                        match.confirm_phash_distance, match.confirm_dhash_distance)
        return cls(rule, copy, similar)


@dataclass(frozen=True)
class Decision:
    kind: str
    match_id: int | None = None
    score: float | None = None
    hash_distance: int | None = None
    signal: str | None = None
    edit: dict[str, Any] | None = None  # the alignment's explanation (workers.align), when one ran


def hash_score(distance: int) -> float:
    """A Hamming distance on the 0-100 scale: 100 for identical hashes, 50 for unrelated ones."""
    return round(100.0 * (1.0 - distance / 64.0), 1)


def decide(exact: tuple[int, str] | None, hashed: HashHit | None, neighbours: list[tuple[int, float]],
           th: Thresholds) -> Decision:
    """exact: (id, 'sha256'|'pixels'); hashed: the file the hash rule accepted (already thresholded);
    neighbours: (id, embedding score), best first, all earlier."""
    if exact is not None:
        return Decision("exact-copy", exact[0], 100.0, 0, exact[1], identity_edit())  # nothing to align
    copies: list[Decision] = []
    if hashed is not None:
        copies.append(Decision("edited-copy", hashed.id, hash_score(hashed.distance), hashed.distance,
                               hashed.signal))
    best_vec = neighbours[0] if neighbours else None
    if best_vec is not None and th.copy_score is not None and best_vec[1] >= th.copy_score:
        copies.append(Decision("edited-copy", best_vec[0], round(best_vec[1], 1),
                               _distance_to(best_vec[0], hashed), "clip"))
    if copies:
        return max(copies, key=lambda d: (d.score or 0.0, -(d.match_id or 0)))
    if best_vec is not None and th.similar_score is not None and best_vec[1] >= th.similar_score:
        return Decision("similar", best_vec[0], round(best_vec[1], 1), _distance_to(best_vec[0], hashed), "clip")
    return Decision("new")


def _distance_to(file_id: int, hashed: HashHit | None) -> int | None:
    return hashed.distance if hashed is not None and hashed.id == file_id else None
