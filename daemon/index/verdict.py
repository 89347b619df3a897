"""Fusion: one verdict from all signals. Pure functions, no I/O, so the rules are easy to test and read.

Order of evidence: identical bytes or identical decoded pixels (exact-copy); then the copy signals,
which confirm or veto each other (edited-copy); then the semantic model's score (similar, never a copy).

- The copy descriptor (SSCD) alone makes a copy at `copy_score`. Between `verify_score` and `copy_score`
  its evidence is not conclusive (SSCD scores two halves of one star field 82): geometric verification
  (workers.align) decides.
- A hash match the copy descriptor scores under `veto_score` is not a copy (look-alike textures).
- Any other hash match is verified where a verifier is installed: hashes and SSCD agree on star fields,
  the geometry does not. Without a verifier (or when the earlier file is gone): a match at the tight
  full-frame radius (`phash`) stands alone; a looser clause (dHash alone, the pHash/dHash agreement, a crop
  or pad window: chances that grow with the catalog) needs the copy descriptor at `verify_score` as a
  second signal; in hash-only mode the rule stands alone, as it did before either signal existed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from daemon import defaults
from daemon.config import MatchSettings
from daemon.index.hashindex import HashHit, HashRule
from workers.align import identity_edit
from workers.settings import CopyModelSettings, ModelSettings

TIGHT_SIGNALS = ("phash",)
"""Hash clauses conclusive on their own: the full frame (and its flips/rotations) at the pHash radius."""


@dataclass(frozen=True)
class Thresholds:
    hashes: HashRule
    copy_score: float | None  # copy descriptor score for a copy on its own; None: no copy descriptor verdicts
    similar_score: float | None  # semantic score for `similar`; None: no `similar` verdicts
    verify_score: float | None = None  # borderline copy score that a verification can confirm
    veto_score: float | None = None  # a hash match the copy descriptor scores under this is not a copy
    min_inliers: int = defaults.MIN_INLIERS
    min_overlap: float = defaults.MIN_OVERLAP

    @classmethod
    def resolve(cls, match: MatchSettings, model: ModelSettings | None,
                copy_model: CopyModelSettings | None = None) -> Thresholds:
        """Explicit settings win; else the model's calibrated values; else no verdicts from that model.

        An uncalibrated model (a custom checkpoint or .onnx) still embeds and can be searched with `query`,
        but its scores mean nothing until thresholds are set for it, so it makes no verdicts on its own.
        """
        semantic = defaults.CALIBRATED.get((model.name, model.pretrained)) if model else None
        copy = (defaults.CALIBRATED_COPY.get((copy_model.name, copy_model.input_size, copy_model.resize))
                if copy_model is not None and copy_model.name != "none" else None)

        def pick(value: float | None, fallback: float | None) -> float | None:
            return value if value is not None else fallback

        rule = HashRule(match.phash_max_distance, match.window_max_distance, match.dhash_max_distance,
                        match.confirm_phash_distance, match.confirm_dhash_distance)
        return cls(rule,
                   copy_score=pick(match.copy_score, copy[0] if copy else None),
                   similar_score=pick(match.similar_score, semantic[1] if semantic else None),
                   verify_score=pick(match.verify_score, copy[1] if copy else None),
                   veto_score=pick(match.veto_score, copy[2] if copy else None),
                   min_inliers=match.min_inliers, min_overlap=match.min_overlap)


@dataclass(frozen=True)
class Evidence:
    """What the owner found for one file, before any verification."""

    exact: tuple[int, str] | None = None  # (id, 'sha256' | 'pixels')
    hashed: HashHit | None = None  # the file the hash rule accepted (already thresholded)
    hashed_copy_score: float | None = None  # the copy descriptor's score for that pair, when both have vectors
    copies: list[tuple[int, float]] = field(default_factory=list)  # copy descriptor neighbours, best first
    similar: list[tuple[int, float]] = field(default_factory=list)  # semantic neighbours, best first


@dataclass(frozen=True)
class Decision:
    kind: str
    match_id: int | None = None
    score: float | None = None
    hash_distance: int | None = None
    signal: str | None = None
    alignment: Any = None  # the workers.align.Alignment a verification found: computed once, reused for `edit`
    edit: dict[str, Any] | None = None  # the copy's edit object (workers.align) as stored and reported


def hash_score(distance: int) -> float:
    """A Hamming distance on the 0-100 scale: 100 for identical hashes, 50 for unrelated ones."""
    return round(100.0 * (1.0 - distance / 64.0), 1)


def pair_score(query: np.ndarray, query_inner: np.ndarray | None, other: np.ndarray,
               other_inner: np.ndarray | None) -> float:
    """The copy descriptor's score (0-100) for a pair, where either may hold pictures inside a frame
    (`*_inner`: one vector per picture, concatenated; workers.frames).

    When both are framed, their whole frames are not compared: two different pictures in one screenshot
    template, letterbox or caption layout share the frame, and the frame scored them 43-55 on the bench,
    above a photo against its own screenshot. The pictures are compared instead (with each other and with
    the other's whole frame, for a copy framed twice)."""
    mine, theirs = inner_rows(query_inner, len(query)), inner_rows(other_inner, len(other))
    pairs = [(mine, theirs), (mine, other[None]), (query[None], theirs)]
    if mine is None or theirs is None:
        pairs.append((query[None], other[None]))
    return max(float((a @ b.T).max()) for a, b in pairs if a is not None and b is not None) * 100.0


def inner_rows(inner: np.ndarray | None, dim: int) -> np.ndarray | None:
    """The pictures' vectors [n, dim] of a framed file's `copy_inner`, None for a file with none."""
    return None if inner is None else inner.reshape(-1, dim)


def to_verify(ev: Evidence, th: Thresholds) -> list[int]:
    """The candidates whose evidence is not conclusive, which a geometric verification would settle: a
    borderline copy-descriptor score, and any hash match the copy descriptor neither vetoes nor confirms on
    its own (hashes and SSCD both score star fields and textures alike; the geometry tells them apart)."""
    if ev.exact is not None:
        return []
    out: list[int] = []
    best = ev.copies[0] if ev.copies else None
    if best is not None and _borderline(best[1], th):
        out.append(best[0])
    h = ev.hashed
    conclusive = th.copy_score is not None and ev.hashed_copy_score is not None and \
        ev.hashed_copy_score >= th.copy_score
    if h is not None and h.id not in out and not _vetoed(ev, th) and not conclusive:
        out.append(h.id)
    return out


def decide(ev: Evidence, th: Thresholds, verified: Mapping[int, Any] | None = None) -> Decision:
    """The verdict. `verified` maps each candidate a verification ran for to its Alignment (None: no
    alignment found); a candidate absent from it was not verified (no verifier, or its file is gone), and
    is decided on the scores alone."""
    if ev.exact is not None:
        return Decision("exact-copy", ev.exact[0], 100.0, 0, ev.exact[1], edit=identity_edit())  # nothing to align
    verified = verified or {}

    def confirmed(file_id: int) -> Any:
        a = verified.get(file_id)
        if a is None or a.inliers == 0:  # inliers 0: identical pixels at the aligned size, no features needed
            return a
        support = a.inliers if a.on_picture is None else a.on_picture  # a shared frame is no support
        return a if support >= th.min_inliers and a.overlap >= th.min_overlap else None

    copies: list[Decision] = []
    best = ev.copies[0] if ev.copies else None
    if best is not None and th.copy_score is not None and best[1] >= th.copy_score:
        copies.append(Decision("edited-copy", best[0], round(best[1], 1), _distance_to(best[0], ev.hashed), "sscd"))
    elif best is not None and _borderline(best[1], th) and confirmed(best[0]) is not None:
        copies.append(Decision("edited-copy", best[0], round(best[1], 1), _distance_to(best[0], ev.hashed),
                               "sscd+geometry", confirmed(best[0])))
    h = ev.hashed
    if h is not None and not _vetoed(ev, th):
        second = None
        if h.id in verified:  # verified: the geometry decides
            second = "+geometry" if confirmed(h.id) is not None else None
        elif h.signal in TIGHT_SIGNALS or ev.hashed_copy_score is None or th.verify_score is None:
            second = ""  # a tight match, or hash-only: the hash rule alone, as before any other signal
        elif ev.hashed_copy_score >= th.verify_score:
            second = "+sscd"  # a loose match needs a second signal
        if second is not None:
            copies.append(Decision("edited-copy", h.id, hash_score(h.distance), h.distance, h.signal + second,
                                   confirmed(h.id)))
    if copies:
        return max(copies, key=lambda d: (d.score or 0.0, -(d.match_id or 0)))
    top = ev.similar[0] if ev.similar else None
    if top is not None and th.similar_score is not None and top[1] >= th.similar_score:
        return Decision("similar", top[0], round(top[1], 1), _distance_to(top[0], ev.hashed), "clip")
    return Decision("new")


def _borderline(score: float, th: Thresholds) -> bool:
    return th.verify_score is not None and th.copy_score is not None and th.verify_score <= score < th.copy_score


def _vetoed(ev: Evidence, th: Thresholds) -> bool:
    return ev.hashed_copy_score is not None and th.veto_score is not None and ev.hashed_copy_score < th.veto_score


def _distance_to(file_id: int, hashed: HashHit | None) -> int | None:
    return hashed.distance if hashed is not None and hashed.id == file_id else None
