"""The gradient look before a hash-only verification: it names the geometry the matching clause found,
keeps real copies in that geometry, turns away unrelated pictures, and the owner skips SIFT for those."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from daemon.config import Settings
from daemon.index.catalog import Catalog
from daemon.index.owner import IndexOwner
from workers.hashing import DIHEDRAL, WINDOWS
from workers.pipeline import Pipeline
from workers.precheck import GRADIENT_MAX_FRACTION, Geometry, geometry, gradient_distance
from workers.settings import DecodeSettings
from workers.verify import LocalVerifier


def _window(img: Image.Image, index: int) -> Image.Image:
    x0, y0, x1, y1 = WINDOWS[index]
    return img.crop((round(x0 * img.width), round(y0 * img.height), round(x1 * img.width), round(y1 * img.height)))


def _features(paths: list[Path]):
    pipeline = Pipeline(DecodeSettings(), None)
    try:
        return pipeline.run([(i, str(p)) for i, p in enumerate(paths)])
    finally:
        pipeline.close()


@pytest.fixture(scope="module")
def edits(photos, tmp_path_factory) -> dict[str, Path]:
    """Copies of the coffee photo whose hash matches go through each clause's geometry."""
    out = tmp_path_factory.mktemp("edits")
    src = Image.open(photos["coffee"])
    made = {"mirror": src.transpose(Image.Transpose.FLIP_LEFT_RIGHT), "crop": _window(src, 2)}
    canvas = Image.new("RGB", (round(src.width / 0.89), round(src.height / 0.89)), (20, 20, 20))
    canvas.paste(src, (0, 0))  # the original sits where the copy's window 5 (corner-anchored, 0.89) is
    made["pad"] = canvas
    paths = {}
    for name, img in made.items():
        paths[name] = out / f"{name}.jpg"
        img.save(paths[name], quality=90)
    return paths


@pytest.mark.parametrize(("edit", "signal", "expected"), [
    ("mirror", "phash", Geometry("dihedral", DIHEDRAL.index(Image.Transpose.FLIP_LEFT_RIGHT))),
    ("crop", "phash-crop", Geometry("crop", 2)),
    ("pad", "phash-pad", Geometry("pad", 5)),
])
def test_a_copy_is_looked_at_in_the_geometry_its_clause_found(photos, edits, edit, signal, expected):
    original, copy = _features([photos["coffee"], edits[edit]])
    geo = geometry(signal, copy.windows, copy.dihedral, original.windows)
    assert geo == expected
    looked = gradient_distance(str(edits[edit]), str(photos["coffee"]), geo)
    assert looked is not None and looked <= GRADIENT_MAX_FRACTION / 2
    # the same pair as plain full frames is much further apart: the geometry is what makes it agree
    plain = gradient_distance(str(edits[edit]), str(photos["coffee"]), Geometry("dihedral", 0))
    assert plain is not None and plain > 2 * looked


@pytest.mark.parametrize("other", ["astronaut", "chelsea", "rocket", "camera", "coins", "grass"])
def test_an_unrelated_photo_is_turned_away(photos, other):
    for geo in (Geometry("dihedral", 0), Geometry("dihedral", 3), Geometry("crop", 4), Geometry("pad", 1)):
        assert gradient_distance(str(photos[other]), str(photos["coffee"]), geo) > GRADIENT_MAX_FRACTION


def test_a_file_that_cannot_be_read_gets_no_look(photos, tmp_path):
    assert gradient_distance(str(tmp_path / "gone.jpg"), str(photos["coffee"]), Geometry("dihedral", 0)) is None


def _owner_with(tmp_path, original: Path, forged_from: Path | None = None) -> tuple[IndexOwner, list]:
    """A hash-only owner with `original` decided. `forged_from`: store that file's hashes for it instead,
    so the next file hash-matches a picture it has nothing to do with (a chance match at scale)."""
    catalog = Catalog(tmp_path / "catalog.sqlite3")
    owner = IndexOwner(Settings(state_dir=tmp_path, hash_only=True), catalog)
    calls: list[tuple[str, str]] = []
    verifier = owner.verifier
    assert isinstance(verifier, LocalVerifier)  # a one-process owner verifies in its own threads
    aligner = verifier.aligner

    def counted(copy: str, other: str, **kw):
        calls.append((copy, other))
        return aligner(copy, other, **kw)

    verifier.aligner = counted
    first = owner.register(str(original), 1, 1)
    assert first is not None
    feats = _features([forged_from or original])[0]
    feats.id, feats.path = first, str(original)  # read under the catalogued name
    owner.accept([feats])
    assert [e.kind for e in owner.decide_ready()] == ["new"]
    return owner, calls


def _decide(owner: IndexOwner, path: Path):
    file_id = owner.register(str(path), 2, 2)
    assert file_id is not None
    feats = _features([path])[0]
    feats.id = file_id
    owner.accept([feats])
    return owner.decide_ready()[0]


def test_a_chance_hash_match_is_rejected_without_a_verification(photos, edits, tmp_path):
    # the astronaut photo is catalogued under the coffee photo's hashes: the mirrored coffee hash-matches it
    owner, calls = _owner_with(tmp_path, photos["astronaut"], forged_from=photos["coffee"])
    event = _decide(owner, edits["mirror"])
    assert event.kind == "new"
    assert owner.looked_away == 1 and calls == []  # turned away by the look: SIFT never ran
    owner.close()


def test_a_real_hash_only_copy_is_still_verified_and_found(photos, edits, tmp_path):
    owner, calls = _owner_with(tmp_path, photos["coffee"])
    event = _decide(owner, edits["mirror"])
    assert event.kind == "edited-copy" and event.matches[0].signal == "phash+geometry"
    assert owner.looked_away == 0 and len(calls) == 1
    owner.close()

