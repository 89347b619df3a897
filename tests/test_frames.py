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


def test_a_bare_photo_holds_no_framed_picture(pictures: dict[str, Image.Image]) -> None:
    for name, photo in pictures.items():
        small = photo.copy()
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
    frame shows it; a different photo in the same frame is new; a bare re-save of a picture first seen in a
    chat screenshot finds that screenshot."""
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
    chat_other = files / "chat-other.png"
    frametemplates.place("chat", [pictures["rocket"]]).save(chat_other)
    bare = files / "bare.jpg"
    pictures["coffee"].save(bare, quality=80)
    records = _scan(tmp_path / "state", [source, shown, other, chat, chat_other, bare])
    by = {Path(r["path"]).name: r for r in records}
    assert by["social.png"]["verdict"] == "edited-copy" and by["social.png"]["match"] == str(source)
    edit = by["social.png"]["edit"]
    assert edit["embedded"] is not None and iou(edit["embedded"], _slots("social")[0]) >= 0.8, edit
    assert "shown inside a larger page" in edit["summary"]
    for name in ("social-other.png", "chat.png", "chat-other.png"):
        assert by[name]["verdict"] == "new", by[name]
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
