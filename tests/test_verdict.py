"""Fusion rules (daemon.verdict) and the hash table they consult: pure logic, exact expectations."""

from __future__ import annotations

import numpy as np

from daemon.config import MatchSettings, ModelSettings
from daemon.hashindex import HashHit, HashIndex
from daemon.verdict import Thresholds, decide, hash_score

TH = Thresholds(phash_max=10, dhash_max=8, copy_score=92.0, similar_score=85.0)


def test_exact_beats_everything():
    d = decide((3, "sha256"), HashHit(5, 0, "phash"), None, [(7, 99.0)], TH)
    assert (d.kind, d.match_id, d.score, d.signal) == ("exact-copy", 3, 100.0, "sha256")


def test_hash_within_threshold_is_an_edited_copy_scored_on_0_100():
    d = decide(None, HashHit(4, 6, "phash"), HashHit(4, 20, "dhash"), [], TH)
    assert (d.kind, d.match_id, d.hash_distance, d.signal) == ("edited-copy", 4, 6, "phash")
    assert d.score == hash_score(6) == 90.6


def test_the_closer_signal_wins_between_hash_and_embedding():
    d = decide(None, HashHit(4, 9, "phash"), None, [(9, 97.5)], TH)
    assert (d.match_id, d.signal, d.score) == (9, "clip", 97.5)


def test_similar_is_never_reported_as_a_copy():
    d = decide(None, HashHit(4, 30, "phash"), HashHit(4, 25, "dhash"), [(9, 88.0)], TH)
    assert (d.kind, d.match_id, d.score) == ("similar", 9, 88.0)
    assert decide(None, None, None, [(9, 80.0)], TH).kind == "new"


def test_disabled_signals_make_no_verdicts():
    off = Thresholds(phash_max=-1, dhash_max=-1, copy_score=None, similar_score=None)
    assert decide(None, HashHit(1, 0, "phash"), HashHit(1, 0, "dhash"), [(1, 100.0)], off).kind == "new"


def test_thresholds_come_from_settings_then_calibration_then_nothing():
    calibrated = Thresholds.resolve(MatchSettings(), ModelSettings())
    assert (calibrated.copy_score, calibrated.similar_score) == (92.0, 85.0)
    custom = Thresholds.resolve(MatchSettings(), ModelSettings(pretrained="/models/mine.pt"))
    assert custom.copy_score is None and custom.similar_score is None  # uncalibrated: no embedding verdicts
    explicit = Thresholds.resolve(MatchSettings(copy_score=95, similar_score=90), ModelSettings(pretrained="/m.pt"))
    assert (explicit.copy_score, explicit.similar_score) == (95, 90)
    assert Thresholds.resolve(MatchSettings(), None).copy_score is None  # hash-only


def test_hash_index_only_returns_earlier_live_files():
    idx = HashIndex(windows=3)
    base = np.array([0x0F0F, 0x00FF, 0x0FF0], dtype=np.int64)
    idx.add(1, base, 0x1234)
    idx.add(5, base ^ 0b111, 0x1234)  # 3 bits away
    dihedral = np.full(8, base[0] ^ 0b1, dtype=np.int64)
    phash, dhash = idx.nearest(base ^ 0b1, dihedral, 0x1234, before_id=5)
    assert phash == HashHit(1, 1, "phash") and dhash == HashHit(1, 0, "dhash")
    idx.remove(1)
    phash, _ = idx.nearest(base, dihedral, 0x1234, before_id=10)
    assert phash.id == 5
    assert idx.nearest(base, dihedral, 0x1234, before_id=1) == (None, None)


def test_negative_hashes_count_bits_correctly():
    idx = HashIndex(windows=1)
    idx.add(1, np.array([-1], dtype=np.int64), -1)  # all 64 bits set
    phash, dhash = idx.nearest(np.array([0], dtype=np.int64), np.zeros(8, np.int64), 0, before_id=2)
    assert phash.distance == 64 and dhash.distance == 64
