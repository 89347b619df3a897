"""Fusion rules (daemon.index.verdict) and the hash table they consult: pure logic, exact expectations."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from daemon.config import MatchSettings
from daemon.index.hashindex import HashHit, HashIndex, HashRule
from daemon.index.verdict import Evidence, Thresholds, decide, hash_score, to_verify
from workers.settings import CopyModelSettings, ModelSettings

RULE = HashRule(phash=8, window=6, dhash=6, confirm_phash=14, confirm_dhash=10)
TH = Thresholds(RULE, copy_score=75.0, similar_score=85.0, verify_score=45.0, veto_score=25.0, min_inliers=15)
HASH_ONLY = Thresholds(RULE, copy_score=None, similar_score=None)


@dataclass(frozen=True)
class Found:
    """What workers.image.align returns, reduced to what the decision reads."""

    inliers: int
    overlap: float = 1.0
    on_picture: int | None = None


def test_exact_beats_everything():
    d = decide(Evidence(exact=(3, "sha256"), hashed=HashHit(5, 0, 0, "phash"), copies=[(7, 99.0)]), TH)
    assert (d.kind, d.match_id, d.score, d.signal) == ("exact-copy", 3, 100.0, "sha256")


def test_a_tight_hash_hit_is_an_edited_copy_scored_on_0_100():
    d = decide(Evidence(hashed=HashHit(4, 6, 20, "phash")), HASH_ONLY)
    assert (d.kind, d.match_id, d.hash_distance, d.signal) == ("edited-copy", 4, 6, "phash")
    assert d.score == hash_score(6) == 90.6


def test_the_closer_signal_wins_between_hash_and_copy_descriptor():
    d = decide(Evidence(hashed=HashHit(4, 8, 9, "phash"), hashed_copy_score=60.0, copies=[(9, 97.5)]), TH)
    assert (d.match_id, d.signal, d.score) == (9, "sscd", 97.5)


def test_the_copy_descriptor_alone_makes_a_copy_at_its_threshold():
    assert decide(Evidence(copies=[(9, 75.0)]), TH).kind == "edited-copy"
    assert decide(Evidence(copies=[(9, 74.9)]), TH).kind == "new"  # borderline, and nothing verified it


def test_a_hash_match_the_copy_descriptor_scores_far_below_a_copy_is_vetoed():
    star = Evidence(hashed=HashHit(4, 2, 3, "phash"), hashed_copy_score=12.0, copies=[(4, 12.0)])
    assert decide(star, TH).kind == "new"
    assert to_verify(star, TH) == []  # vetoed: nothing to verify either
    kept = Evidence(hashed=HashHit(4, 2, 3, "phash"), hashed_copy_score=30.0, copies=[(4, 30.0)])
    assert decide(kept, TH).kind == "edited-copy"


def test_a_loose_hash_match_needs_a_second_signal():
    loose = HashHit(4, 5, 5, "dhash")
    assert to_verify(Evidence(hashed=loose, hashed_copy_score=35.0), TH) == [4]
    assert decide(Evidence(hashed=loose, hashed_copy_score=35.0), TH).kind == "new"
    confirmed = decide(Evidence(hashed=loose, hashed_copy_score=35.0), TH, {4: Found(40)})
    assert (confirmed.kind, confirmed.signal, confirmed.alignment) == ("edited-copy", "dhash+geometry", Found(40))
    assert decide(Evidence(hashed=loose, hashed_copy_score=35.0), TH, {4: Found(5)}).kind == "new"
    assert decide(Evidence(hashed=loose, hashed_copy_score=50.0), TH).signal == "dhash+sscd"
    # hash-only: a verification that fails rejects it; with no verifier at all the rule stands alone
    assert decide(Evidence(hashed=loose), HASH_ONLY, {4: None}).kind == "new"
    assert decide(Evidence(hashed=loose), HASH_ONLY).kind == "edited-copy"


def test_a_hash_match_the_geometry_rejects_is_not_a_copy():
    """Two star fields: hashes and SSCD agree on them (under the copy score), the geometry does not."""
    stars = Evidence(hashed=HashHit(4, 2, 3, "phash"), hashed_copy_score=70.0, copies=[(4, 70.0)])
    assert to_verify(stars, TH) == [4]
    assert decide(stars, TH, {4: None}).kind == "new"
    assert decide(stars, TH, {4: Found(3)}).kind == "new"  # a few chance inliers are not a model
    assert decide(stars, TH).kind == "edited-copy"  # no verifier installed: the tight hash stands


def test_a_pixel_identical_alignment_confirms_a_hash_match():
    """workers.image.align returns 0 inliers for identical pixels (a PNG re-save of a JPEG: no features are
    needed); that is the strongest confirmation, not a failed one. Hash-only mode lost 42 of the 52
    re-encodes of the benchmark's test half to it."""
    resave = Evidence(hashed=HashHit(4, 0, 0, "phash"))
    assert to_verify(resave, HASH_ONLY) == [4]
    d = decide(resave, HASH_ONLY, {4: Found(0)})
    assert (d.kind, d.match_id, d.signal) == ("edited-copy", 4, "phash+geometry")
    assert decide(resave, HASH_ONLY, {4: Found(3)}).kind == "new"  # a few chance inliers still are not


def test_a_borderline_copy_score_confirmed_by_verification_is_accepted():
    ev = Evidence(copies=[(9, 60.0), (3, 20.0)])
    assert to_verify(ev, TH) == [9]
    d = decide(ev, TH, {9: Found(80)})
    assert (d.kind, d.match_id, d.signal, d.alignment) == ("edited-copy", 9, "sscd+geometry", Found(80))
    assert decide(ev, TH, {9: None}).kind == "new"
    assert to_verify(Evidence(copies=[(9, 80.0)]), TH) == []  # conclusive: no verification spent


def test_a_verification_needs_the_frames_to_overlap_and_inliers_off_a_shared_frame():
    """Issue 11's false alerts that verification confirmed: two shots of one scene panned apart (hundreds of
    inliers on the strip they share, overlap 0.2-0.3) and two photos in one template (inliers on the frame,
    few on the pictures). Neither is a copy; a crop (overlap 1) with its inliers on the picture is."""
    ev = Evidence(copies=[(9, 60.0)])
    assert decide(ev, TH, {9: Found(101, overlap=1.0)}).kind == "edited-copy"
    assert decide(ev, TH, {9: Found(101, overlap=0.28)}).kind == "new"
    assert decide(ev, TH, {9: Found(84, on_picture=13)}).kind == "new"
    assert decide(ev, TH, {9: Found(84, on_picture=40)}).kind == "edited-copy"
    hashed = Evidence(hashed=HashHit(4, 2, 3, "phash"), hashed_copy_score=70.0)
    assert decide(hashed, TH, {4: Found(200, overlap=0.2)}).kind == "new"


def test_similar_comes_only_from_the_semantic_model_and_is_never_a_copy():
    d = decide(Evidence(similar=[(9, 88.0)]), TH)
    assert (d.kind, d.match_id, d.score, d.signal) == ("similar", 9, 88.0, "clip")
    assert decide(Evidence(similar=[(9, 80.0)]), TH).kind == "new"
    assert decide(Evidence(similar=[(9, 99.0)]), TH).kind == "similar"  # a high semantic score is no copy


def test_an_uncalibrated_model_makes_no_verdicts():
    assert decide(Evidence(copies=[(1, 100.0)], similar=[(1, 100.0)]), HASH_ONLY).kind == "new"


def test_thresholds_come_from_settings_then_calibration_then_nothing():
    calibrated = Thresholds.resolve(MatchSettings(), ModelSettings(), CopyModelSettings())
    assert calibrated.similar_score == 85.0 and calibrated.copy_score is not None
    assert calibrated.veto_score <= calibrated.verify_score < calibrated.copy_score
    custom = Thresholds.resolve(MatchSettings(), ModelSettings(pretrained="/models/mine.pt"),
                                CopyModelSettings(name="/models/mine.onnx"))
    assert custom.copy_score is None and custom.similar_score is None  # uncalibrated: no vector verdicts
    explicit = Thresholds.resolve(MatchSettings(copy_score=95, similar_score=90), ModelSettings(pretrained="/m.pt"),
                                  CopyModelSettings(name="/m.onnx"))
    assert (explicit.copy_score, explicit.similar_score) == (95, 90)
    assert Thresholds.resolve(MatchSettings(), None, None).copy_score is None  # hash-only


def bits(n: int) -> int:
    return (1 << n) - 1


def test_hash_index_only_returns_earlier_live_files():
    idx = HashIndex(windows=3)
    base = np.array([0x0F0F, 0x00FF, 0x0FF0], dtype=np.int64)
    idx.add(1, base, 0x1234)
    idx.add(5, base ^ 0b111, 0x1234)  # 3 bits away
    dihedral = np.full(8, base[0] ^ 0b1, dtype=np.int64)
    assert idx.best(base ^ 0b1, dihedral, 0x1234, before_id=5, rule=RULE) == HashHit(1, 1, 0, "phash")
    idx.remove(1)
    assert idx.best(base, dihedral, 0x1234, before_id=10, rule=RULE).id == 5
    assert idx.best(base, dihedral, 0x1234, before_id=1, rule=RULE) is None


def test_each_clause_of_the_rule_and_its_bound():
    idx = HashIndex(windows=2)
    idx.add(1, np.array([0, bits(40)], dtype=np.int64), 0)
    far = np.array([bits(30), bits(30)], dtype=np.int64)
    probe = lambda windows, dihedral, dhash: idx.best(np.asarray(windows, np.int64),
                                                      np.full(8, dihedral, np.int64), dhash, 2, RULE)
    assert probe([bits(8), bits(30)], bits(8), bits(30)).signal == "phash"  # 8 <= 8
    assert probe([bits(10), bits(30)], bits(10), bits(30)) is None  # 10 > 8 and no other clause
    assert probe([bits(40) ^ bits(6), bits(30)], bits(30), bits(30)).signal == "phash-crop"  # window 1, 6 bits
    assert probe(far, bits(30), bits(6)).signal == "dhash"
    assert probe([bits(14), bits(30)], bits(14), bits(10)).signal == "phash+dhash"  # both moderately close
    assert probe([bits(14), bits(30)], bits(14), bits(12)) is None


def test_negative_hashes_count_bits_correctly():
    idx = HashIndex(windows=1)
    idx.add(1, np.array([-1], dtype=np.int64), -1)  # all 64 bits set
    (hit,) = idx.nearest(np.array([0], dtype=np.int64), np.zeros(8, np.int64), 0, before_id=2, k=3)
    assert hit.distance == 64 and hit.dhash_distance == 64


def test_an_excluded_twin_does_not_hide_a_later_identical_file(tmp_path):
    """Three byte-identical files: with the pair (3, 1) marked "not a duplicate", 3 still matches 2."""
    from daemon.config import Settings
    from daemon.index.catalog import Catalog
    from daemon.index.owner import IndexOwner

    catalog = Catalog(tmp_path / "catalog.sqlite3")
    owner = IndexOwner(Settings(state_dir=tmp_path, hash_only=True), catalog)
    ids = [catalog.register(f"/x/{n}.jpg", 10, n) for n in range(3)]
    for i in ids:
        catalog.store_features(i, {"sha256": "ab" * 32})
    owner.decide_ready()
    third = catalog.get(ids[2])
    assert (third.verdict, third.match_id) == ("exact-copy", ids[0])
    assert owner.evaluate(third, excluded={ids[0]}).match_id == ids[1]
