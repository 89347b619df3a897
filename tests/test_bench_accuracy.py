"""Smoke test of the edited-copy benchmark: the data set builder at its --small size, the metric math, the
Immaculate anchor's output parsing, and bench/accuracy.py running the REAL `dupwatch scan` CLI."""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import imagehash
import numpy as np
import pytest

# `bench` is a plain folder at the repository root, not an installed package; make it importable
# however pytest is started.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import accuracy, anchors, dataset, edits, negatives, templates
from bench.metrics import (
    Prediction,
    average_precision,
    group_pairs,
    merge_groups,
    pair_precision_recall,
    pr_curve,
    precision_recall_at,
    recall_at_precision,
    recall_by_family,
)
from bench.photos import licence_of, skimage_photos

pytestmark = pytest.mark.system

DUPWATCH = f"{sys.executable} -c 'from daemon.cli.main import main; main()'"


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dataset.Entry]]:
    """The --small data set: scikit-image photos only, 256 px, every kind of distractor."""
    out = tmp_path_factory.mktemp("acc")
    dataset.build(out, skimage_photos(), seed=1, size=dataset.SMALL)
    return out, dataset.load_manifest(out)


def test_dataset_layout(small: tuple[Path, list[dataset.Entry]]) -> None:
    out, entries = small
    roles = [e.role for e in entries]
    n_originals = roles.count("original")
    assert roles[:n_originals] == ["original"] * n_originals, "originals come first in the stream"
    assert roles.count("edit") == n_originals * dataset.SMALL.per_original
    assert {e.family for e in entries if e.role == "edit"} >= {"exact", "mild", "geometric", "overlay"}
    kinds = {e.kind for e in entries if e.role == "distractor"}
    assert kinds == {*dataset.PHOTO_USES, "astronomy", *negatives.SYNTHETIC}
    for entry in entries:
        assert (out / entry.file).is_file()
    info = json.loads((out / "dataset.json").read_text())
    assert set(info["photos"]) == {e.photo for e in entries if not e.photo.startswith("synthetic:")}
    assert all(p["licence"] for p in info["photos"].values())
    assert info["counts"]["distractor_kinds"]["template"] >= 2


def test_splits_are_two_independent_streams(small: tuple[Path, list[dataset.Entry]]) -> None:
    out, entries = small
    by_file = {e.file: e for e in entries}
    calibration, test = (dataset.load_manifest(out, split) for split in dataset.SPLITS)
    assert sorted(e.file for e in calibration + test) == sorted(by_file), "the splits partition the files"
    for split, stream in zip(dataset.SPLITS, (calibration, test)):
        assert {e.split for e in stream} == {split}
        assert all(e.source is not None and by_file[e.source].split == split
                   for e in stream if e.role == "edit"), "copy across splits"
        roles = [e.role for e in stream]
        assert roles.index("edit") > max(i for i, r in enumerate(roles) if r == "original")
    scenes: dict[str, set[str]] = {}
    for e in entries:
        if e.scene:
            scenes.setdefault(e.scene, set()).add(e.split)
    assert all(len(splits) == 1 for splits in scenes.values()), "one photo's pieces straddle the splits"
    originals = [sum(e.role == "original" for e in s) for s in (calibration, test)]
    assert originals[0] >= originals[1] > 0, "calibrate on at least as many originals as are tested"


def test_dataset_is_deterministic(small: tuple[Path, list[dataset.Entry]], tmp_path: Path) -> None:
    out, entries = small
    again = dataset.build(tmp_path / "again", skimage_photos(), seed=1, size=dataset.SMALL)
    assert [e.file for e in again] == [e.file for e in entries]
    for entry in entries:
        assert (tmp_path / "again" / entry.file).read_bytes() == (out / entry.file).read_bytes()


def test_template_pastes_share_the_frame_and_keep_the_photo() -> None:
    photos = [p.load() for p in skimage_photos() if p.id in ("skimage:astronaut", "skimage:coffee")]
    for name in templates.BUILDERS:
        a, b = (np.asarray(templates.paste(photo, name), dtype=int) for photo in photos)
        left, top, right, bottom = templates.template(name).slot
        outside = np.ones(a.shape[:2], bool)
        outside[top:bottom, left:right] = False
        assert np.array_equal(a[outside], b[outside]), f"{name}: frames differ"
        assert np.abs(a[top:bottom, left:right] - b[top:bottom, left:right]).mean() > 20, f"{name}: same photo"


def test_phash_finds_exact_copies_and_jpeg(small: tuple[Path, list[dataset.Entry]]) -> None:
    out, entries = small
    files = [e.file for e in entries]
    run = accuracy.run_phash(out, files)
    assert run.error is None and run.peak_rss_mib and run.peak_rss_mib > 0
    by_query = {p.query: p for p in run.predictions}
    groups = {e.file: e.group for e in entries}
    for entry in entries:
        if entry.family == "exact":
            prediction = by_query[entry.file]
            assert groups[prediction.match] == entry.group
            assert prediction.score >= 64 - 4
    result = accuracy.evaluate(run, entries, len(files))
    assert 0 < result["micro_ap"] <= 1
    assert result["recall_at_p99"] <= result["recall_at_p90"]
    assert result["family_recall_at_default"]["exact"] == 1.0


def test_phash_survives_jpeg_q30() -> None:
    photo = next(p for p in skimage_photos() if p.id == "skimage:coffee").load()
    compressed, params = edits.jpeg(photo, None)  # type: ignore[arg-type]  # jpeg draws nothing
    assert params == {"quality": 30}
    assert imagehash.phash(photo) - imagehash.phash(compressed) <= 4


# Hand-made stream: o1, o2 originals; e1a, e1b edits of o1; e2a edit of o2; d a distractor.
GROUPS = {"o1": "o1", "o2": "o2", "e1a": "o1", "e1b": "o1", "e2a": "o2", "d": "d"}
FAMILIES = {"e1a": "mild", "e1b": "geometric", "e2a": "geometric"}
PREDICTIONS = [
    Prediction("e1a", "o1", 90),   # right
    Prediction("d", "o1", 80),     # wrong: distractors have no copy
    Prediction("e1b", "e1a", 70),  # right: another edit of the same original
    Prediction("e2a", "o1", 70),   # wrong original, tied score with the line above
    Prediction("o2", "o1", 50),    # wrong
]


def test_metric_math_on_known_answer() -> None:
    points = pr_curve(PREDICTIONS, GROUPS, positives=3)
    assert [(p.threshold, p.precision, round(p.recall, 4)) for p in points] == [
        (90, 1.0, 0.3333), (80, 0.5, 0.3333), (70, 0.5, 0.6667), (50, 0.4, 0.6667)]
    assert average_precision(points) == pytest.approx(1 / 3 + 1 / 3 * 0.5)
    assert recall_at_precision(points, 0.99) == (pytest.approx(1 / 3), 90)
    assert recall_at_precision(points, 0.5) == (pytest.approx(2 / 3), 70)
    assert recall_at_precision([p for p in points if p.threshold < 90], 0.99) == (0.0, None)
    assert recall_by_family(PREDICTIONS, GROUPS, FAMILIES, 90) == {"geometric": 0.0, "mild": 1.0}
    assert recall_by_family(PREDICTIONS, GROUPS, FAMILIES, 70) == {"geometric": 0.5, "mild": 1.0}
    assert recall_by_family(PREDICTIONS, GROUPS, FAMILIES, None) == {"geometric": 0.0, "mild": 0.0}
    assert precision_recall_at(PREDICTIONS, GROUPS, 3, 75) == (0.5, pytest.approx(1 / 3))


def test_pair_metrics_and_merged_groups() -> None:
    assert merge_groups([["a", "b"], ["b", "c"], ["d", "e"], ["f"]]) == [["a", "b", "c"], ["d", "e"]]
    truth = group_pairs([["o1", "e1a", "e1b"], ["o2", "e2a"]])
    assert len(truth) == 4
    predicted = group_pairs(merge_groups([["e1a", "o1"], ["e2a", "o1"]]))  # one wrong link chains o2's copy in
    assert pair_precision_recall(predicted, truth) == (pytest.approx(1 / 3), pytest.approx(1 / 4))
    assert pair_precision_recall(set(), truth) == (1.0, 0.0)


def test_immaculate_groups_become_pairs_and_stream_matches(tmp_path: Path) -> None:
    # The shape `immaculate DIR --json` prints (checked against immaculate 0.3.0): absolute paths.
    text = json.dumps({"exact": [[str(tmp_path / "queries/q2.jpg"), str(tmp_path / "originals/o1.jpg")]],
                       "near": [[str(tmp_path / "originals/o1.jpg"), str(tmp_path / "queries/q5.png")],
                                [str(tmp_path / "queries/q3.jpg"), str(tmp_path / "queries/q4.jpg")]],
                       "skipped": [str(tmp_path / "queries/q9.jpg")]})
    groups, skipped = anchors.parse_groups(text, tmp_path)
    assert groups == [["originals/o1.jpg", "queries/q2.jpg", "queries/q5.png"], ["queries/q3.jpg", "queries/q4.jpg"]]
    assert skipped == ["queries/q9.jpg"]
    files = ["originals/o1.jpg", "queries/q2.jpg", "queries/q3.jpg", "queries/q4.jpg", "queries/q5.png"]
    assert accuracy.group_predictions(groups, files) == [
        Prediction("queries/q2.jpg", "originals/o1.jpg", 1.0), Prediction("queries/q4.jpg", "queries/q3.jpg", 1.0),
        Prediction("queries/q5.png", "originals/o1.jpg", 1.0)]


def test_accuracy_runs_the_real_cli_on_the_small_data(small: tuple[Path, list[dataset.Entry]], tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    out, entries = small
    report = tmp_path / "acc.json"
    accuracy.main(["--data", str(out), "--split", "all", "--dupwatch", DUPWATCH, "--anchors", "phash",
                   "--mode", "hash-only=--hash-only", "--json", str(report)])
    text = capsys.readouterr().out
    assert "dupwatch hash-only" in text and "template" in text and "FAILED" not in text
    dupwatch, phash = json.loads(report.read_text())["results"]
    assert dupwatch["method"] == "dupwatch hash-only" and phash["method"] == "imagehash pHash"
    assert dupwatch["errors"] == 0 and dupwatch["images_per_s"] > 0 and dupwatch["peak_rss_mib"] > 0
    # Byte copies and lossless re-saves are found by any mode; the originals are never flagged.
    assert dupwatch["family_recall_at_default"]["exact"] == 1.0
    assert dupwatch["verdicts_by_op"]["original"] == {"new": sum(e.role == "original" for e in entries)}
    assert dupwatch["pair_recall"] > 0 and dupwatch["default_precision"] > 0.5
    flagged = dupwatch["distractors_flagged"]
    assert flagged["of"] == sum(e.role == "distractor" for e in entries)
    assert sum(k["of"] for k in flagged["by_kind"].values()) == flagged["of"]


def test_template_collisions_are_counted_apart(small: tuple[Path, list[dataset.Entry]]) -> None:
    _, entries = small
    # Two different pictures in the same frame, matched to each other.
    a, b = [e for e in entries if e.role == "distractor" and e.kind == "template"][:2]
    assert a.template == b.template and a.part != b.part
    star = next(e for e in entries if e.kind == "starfield")
    other = next(e for e in entries if e.kind == "starfield" and e.file != star.file)
    run = accuracy.MethodRun("m", [Prediction(b.file, a.file, 90.0), Prediction(other.file, star.file, 80.0)],
                             1.0, 50.0)
    result = accuracy.evaluate(run, entries, len(entries))
    assert result["false_matches"] == {"template_collisions": 1, "other": 1}
    assert result["distractors_flagged"]["count"] == 2
    assert result["distractors_flagged"]["by_kind"]["template"]["flagged"] == 1


def test_scan_output_out_of_order_is_rejected(tmp_path: Path) -> None:
    lines = [json.dumps({"path": str(tmp_path / name), "verdict": "new", "match": None, "score": None})
             for name in ("b.jpg", "a.jpg")]
    with pytest.raises(RuntimeError, match="out of order"):
        accuracy.parse_scan_output(lines, tmp_path, ["a.jpg", "b.jpg"])


def test_licence_lookup_follows_dep5() -> None:
    text = textwrap.dedent("""\
        Files: *
        Copyright: 2014 Someone
        License: GPL-2+

        Files: nature/Aqua.jpg
               nature/Garden.jpg
        Copyright: 2008, Charles
        License: CC-BY-4.0
        """)
    assert licence_of(text, "usr/share/backgrounds/mate/nature/Garden.jpg") == ("CC-BY-4.0", "2008, Charles")
    assert licence_of(text, "usr/share/backgrounds/mate/nature/Dune.jpg") == ("GPL-2+", "2014 Someone")
