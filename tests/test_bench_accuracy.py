"""Smoke test of the edited-copy benchmark: data set builder, imagehash anchors, metric math and the
`dupwatch scan` output parsing (against a stand-in script, since the real command may not exist)."""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import imagehash
import pytest

# `bench` is a plain folder at the repository root, not an installed package; make it importable
# however pytest is started.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import accuracy, dataset, edits  # noqa: E402
from bench.metrics import (  # noqa: E402
    Prediction,
    average_precision,
    pr_curve,
    precision_recall_at,
    recall_at_precision,
    recall_by_family,
)
from bench.photos import licence_of, skimage_photos  # noqa: E402

TINY_PHOTOS = ("skimage:astronaut", "skimage:coffee", "skimage:rocket")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dataset.Entry]]:
    """Two originals with six edits each (one per family) and one distractor, 256 px."""
    photos = [p for p in skimage_photos() if p.id in TINY_PHOTOS]
    out = tmp_path_factory.mktemp("acc")
    dataset.build(out, photos, seed=1, per_original=6, distractor_fraction=1 / 3, max_side=256)
    return out, dataset.load_manifest(out)


def test_dataset_layout(tiny: tuple[Path, list[dataset.Entry]]) -> None:
    out, entries = tiny
    roles = [e.role for e in entries]
    assert roles.count("original") == 2 and roles.count("edit") == 12 and roles.count("distractor") == 1
    assert roles[:2] == ["original", "original"], "originals come first in the stream"
    assert {e.family for e in entries if e.role == "edit"} == {
        "exact", "mild", "geometric", "overlay", "colour", "combo"}
    for entry in entries:
        assert (out / entry.file).is_file()
    info = json.loads((out / "dataset.json").read_text())
    assert set(info["photos"]) == set(TINY_PHOTOS)
    assert all(p["licence"] for p in info["photos"].values())


def test_dataset_is_deterministic(tiny: tuple[Path, list[dataset.Entry]], tmp_path: Path) -> None:
    out, entries = tiny
    photos = [p for p in skimage_photos() if p.id in TINY_PHOTOS]
    again = dataset.build(tmp_path / "again", photos, seed=1, per_original=6,
                          distractor_fraction=1 / 3, max_side=256)
    assert [e.file for e in again] == [e.file for e in entries]
    for entry in entries:
        assert (tmp_path / "again" / entry.file).read_bytes() == (out / entry.file).read_bytes()


def test_phash_finds_exact_copies_and_jpeg(tiny: tuple[Path, list[dataset.Entry]]) -> None:
    out, entries = tiny
    files = [e.file for e in entries]
    run = accuracy.run_anchor("pHash", imagehash.phash, out, files)
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


FAKE_DUPWATCH = """
import json, sys
args = sys.argv[1:]
assert args[0] == "scan" and "--state-dir" in args
files = open(args[args.index("--files-from") + 1]).read().split()
for i, path in enumerate(files):
    # the first file is new; every other one: 'edited-copy' of the first, except the last: 'similar'
    verdict = "new" if i == 0 else "similar" if i == len(files) - 1 else "edited-copy"
    match = None if i == 0 else files[0]
    print(json.dumps({"path": path, "verdict": verdict, "match": match,
                      "score": None if i == 0 else 80.0, "hash_distance": None, "reason": None}))
"""


def test_dupwatch_contract_with_stand_in(tiny: tuple[Path, list[dataset.Entry]], tmp_path: Path) -> None:
    out, entries = tiny
    script = tmp_path / "fake_dupwatch.py"
    script.write_text(textwrap.dedent(FAKE_DUPWATCH))
    files = [e.file for e in entries]
    run = accuracy.run_dupwatch(f"{sys.executable} {script}", out, files, hash_only=True)
    assert run.name == "dupwatch --hash-only"
    assert len(run.predictions) == len(files) - 2 and run.predictions[0].match == files[0]
    result = accuracy.evaluate(run, entries, len(files))
    right = sum(e.group == entries[0].group for e in entries[1:-1] if e.role == "edit")
    assert result["default_recall"] == pytest.approx(right / 12, abs=1e-4)  # rounded to 4 places
    last = entries[-1]
    assert result["similar"]["edits"] == (last.role == "edit")
    assert result["distractor_false_at_default"] == 1  # the one distractor got a non-new verdict


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
