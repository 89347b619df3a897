"""Pictures inside frames (workers.frames) on real photos in the frames benchmark's templates: found on their
own, matched to their source with `embedded` set, never matched to another picture through the frame they
share, and found again by a later bare copy. Blur and sharpening are named (workers.quality)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFilter

from bench import edits, frametemplates
from bench.explain import iou
from tests.conftest import base_env, dupwatch_cmd
from workers import frames
from workers.align import align

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def pictures(photos: dict[str, Path]) -> dict[str, Image.Image]:
    return {name: Image.open(path).convert("RGB") for name, path in photos.items()}


def _slots(name: str) -> list[list[float]]:
    chosen = frametemplates.frame(name)
    w, h = chosen.image.size
    return [[b[0] / w, b[1] / h, b[2] / w, b[3] / h] for b in chosen.slots]


@pytest.mark.parametrize("name", list(frametemplates.BUILDERS))
def test_each_picture_in_a_frame_is_found(pictures: dict[str, Image.Image], name: str) -> None:
    photos = [pictures[n] for n in ("astronaut", "coffee", "chelsea", "rocket")]
    placed = frametemplates.place(name, photos[:len(frametemplates.frame(name).slots)])
    placed.thumbnail((256, 256))  # the workers' decode size
    found = frames.find(placed)
    assert len(found) == len(_slots(name))
    for slot in _slots(name):
        assert max(iou(list(box), slot) for box in found) >= 0.85, (slot, found)


@pytest.mark.parametrize("name", ["rocket", "coins"])
def test_a_picture_with_frame_coloured_patches_is_found_whole(pictures: dict[str, Image.Image], name: str) -> None:
    """A photo whose own flat patches share the frame's colours (a white sky, a grey table) is still boxed
    to the frame's border, not cut short at the patch."""
    placed = frametemplates.place("social", [pictures[name]])
    placed.thumbnail((256, 256))
    found = frames.find(placed)
    assert len(found) == 1 and iou(list(found[0]), _slots("social")[0]) >= 0.85, found


def test_a_bare_photo_holds_no_framed_picture(pictures: dict[str, Image.Image]) -> None:
    """Whole photos and their top halves (a sky, a wall): a patch of a photo left out of its flat colours is
    no picture placed in a frame."""
    for name, photo in pictures.items():
        for part in (photo, photo.crop((0, 0, photo.width, photo.height // 2))):
            small = part.copy()
            small.thumbnail((256, 256))
            assert frames.find(small) == [], name


def _scan(state: Path, paths: list[Path]) -> list[dict]:
    listing = state.parent / "files.txt"
    listing.write_text("".join(f"{p}\n" for p in paths))
    proc = subprocess.run(dupwatch_cmd() + ["scan", "--files-from", str(listing)], env=base_env(state),
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr
    return [json.loads(line) for line in proc.stdout.splitlines()]


def test_framed_pictures_match_their_source_and_not_each_other(pictures: dict[str, Image.Image],
                                                                tmp_path: Path) -> None:
    """The default (SSCD) scan: a screenshot of a catalogued photo is its edited copy, embedded where the
    frame shows it, also when cropped to fit the frame; a different photo in the same frame is new; a bare
    crop of a picture first seen in a chat screenshot finds that screenshot."""
    files = tmp_path / "in"
    files.mkdir()
    source = files / "source.jpg"
    pictures["astronaut"].save(source, quality=92)
    shown = files / "social.png"
    frametemplates.place("social", [pictures["astronaut"]]).save(shown)
    other = files / "social-other.png"
    frametemplates.place("social", [pictures["chelsea"]]).save(other)
    chat = files / "chat.png"
    frametemplates.place("chat", [pictures["coffee"]]).save(chat)
    rocket = files / "rocket.jpg"
    pictures["rocket"].save(rocket, quality=92)
    chat_other = files / "chat-other.png"  # a portrait picture in the chat: the photo cropped to fit it
    frametemplates.place("chat", [pictures["rocket"]]).save(chat_other)
    bare = files / "bare.jpg"  # cropped, so that no hash window of the chat frame holds it
    coffee = pictures["coffee"]
    coffee.crop((coffee.width // 10, coffee.height // 10, coffee.width * 9 // 10, coffee.height * 9 // 10)).save(
        bare, quality=80)
    records = _scan(tmp_path / "state", [source, shown, other, chat, rocket, chat_other, bare])
    by = {Path(r["path"]).name: r for r in records}
    assert by["social.png"]["verdict"] == "edited-copy" and by["social.png"]["match"] == str(source)
    edit = by["social.png"]["edit"]
    assert edit["embedded"] is not None and iou(edit["embedded"], _slots("social")[0]) >= 0.8, edit
    assert "shown inside a larger page" in edit["summary"]
    for name in ("social-other.png", "chat.png"):
        assert by[name]["verdict"] == "new", by[name]
    cropped = by["chat-other.png"]
    assert cropped["verdict"] == "edited-copy" and cropped["match"] == str(rocket), cropped
    assert cropped["edit"]["embedded"] is not None and iou(cropped["edit"]["embedded"], _slots("chat")[0]) >= 0.7
    assert by["bare.jpg"]["verdict"] == "edited-copy" and by["bare.jpg"]["match"] == str(chat), by["bare.jpg"]


@pytest.mark.parametrize("make, word", [
    (lambda image: edits.blur(image, np.random.default_rng(1))[0], "blurred"),
    (lambda image: image.filter(ImageFilter.UnsharpMask(2, 150, 3)), "sharpened"),
])
def test_blur_and_sharpening_are_named(pictures: dict[str, Image.Image], make, word: str) -> None:
    original = pictures["astronaut"]
    result = align(make(original), original)
    assert result is not None
    assert result.edit["quality"] == [word] and word in result.edit["summary"], result.edit
    assert "no visible change" not in result.edit["summary"]


@pytest.mark.parametrize("make", [lambda image: edits.jpeg(image, np.random.default_rng(1))[0],
                                  lambda image: edits.resize_half(image, np.random.default_rng(1))[0]])
def test_compression_and_resizing_are_not_called_blur(pictures: dict[str, Image.Image], make) -> None:
    original = pictures["astronaut"]
    result = align(make(original), original)
    assert result is not None
    assert result.edit["quality"] == [], result.edit


def test_a_bare_picture_finds_the_frame_it_was_first_seen_in(pictures: dict[str, Image.Image],
                                                             tmp_path: Path) -> None:
    """The picture index on real SSCD vectors: a chat screenshot's picture is a key of its own, so the bare
    picture's vector finds that file, by its id, among framed files whose whole vectors are mostly frame;
    a removed file is found no more."""
    from daemon.config import Settings
    from daemon.index.pictures import PictureVectors
    from workers.models.loading import load_copy_model
    from workers.pipeline import Pipeline

    copier, _ = load_copy_model(Settings())
    assert copier is not None
    paths = []
    for k, name in enumerate(("coffee", "rocket", "camera")):
        paths.append(tmp_path / f"chat-{k}.png")
        frametemplates.place("chat", [pictures[name]]).save(paths[-1])
    paths.append(tmp_path / "collage.png")
    frametemplates.place("collage", [pictures[n] for n in ("astronaut", "chelsea", "rocket", "camera")]).save(paths[-1])
    paths.append(tmp_path / "bare.jpg")
    pictures["coffee"].save(paths[-1], quality=80)
    paths.append(tmp_path / "tile.jpg")
    pictures["chelsea"].save(paths[-1], quality=80)
    pipeline = Pipeline(Settings().decode, None, copier)
    try:
        feats = pipeline.run([(10 + k, str(p)) for k, p in enumerate(paths)])
    finally:
        pipeline.close()
    index = PictureVectors(feats[0].copy_model, "f16")
    for f in feats[:4]:
        index.add(f)
    vectors = [f.copy_embedding for f in feats]
    assert all(v is not None for v in vectors)
    found = [0 if f.copy_inner is None else len(f.copy_inner) // 512 for f in feats]
    assert found == [1, 1, 1, 4, 0, 0]  # one picture per chat, four tiles, none in a bare photo
    bare, tile = vectors[4], vectors[5]
    assert bare is not None and tile is not None
    assert index.search([bare], before_id=14, k=1, excluded=set()) == {10}
    assert index.search([tile], before_id=15, k=1, excluded=set()) == {13}
    assert index.search([bare], before_id=10, k=1, excluded=set()) == set()  # earlier files only
    index.remove(10)
    assert 10 not in index.search([bare], before_id=14, k=3, excluded=set())


def test_a_bare_picture_matched_to_its_framed_copy_is_not_embedded(pictures: dict[str, Image.Image]) -> None:
    """A bare picture matched to the smaller one in a chat screenshot shows a part of that screenshot with
    more around it: the match sits on a larger canvas of picture, not inside a page."""
    result = align(pictures["coffee"], frametemplates.place("chat", [pictures["coffee"]]))
    assert result is not None and result.edit["crop"] is not None
    assert result.edit["embedded"] is None and "inside a larger page" not in result.edit["summary"], result.edit
