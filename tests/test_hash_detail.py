"""Hash search refuses images whose hashes are noise (workers.image.hashing.detail_batch, MIN_HASH_DETAIL).

Near-blank images (a black frame, a white page, a faint gradient) and sparse star fields have a pHash
plane whose low DCT coefficients sit within JPEG noise of their median: their bits say nothing about the
picture, so unrelated images of that kind matched at distance 0 (star fields and gradients were
15 of the 15 distractors flagged in hash-only mode). Real files through `dupwatch scan --hash-only`.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
from PIL import Image

from bench import negatives
from daemon.config import MatchSettings
from daemon.index.hashindex import HashIndex
from daemon.index.verdict import Thresholds
from tests.conftest import PHOTOS, base_env, dupwatch_cmd
from workers import defaults
from workers.image.hashing import WINDOWS, detail_batch, window_planes
from workers.pipeline import Pipeline
from workers.settings import DecodeSettings


def scan_hash_only(state: Path, paths: list[Path]) -> list[dict]:
    listing = state.parent / f"{state.name}-files.txt"
    listing.write_text("".join(f"{p}\n" for p in paths))
    proc = subprocess.run(dupwatch_cmd() + ["scan", "--hash-only", "--files-from", str(listing)],
                          env=base_env(state), capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr
    return [json.loads(line) for line in proc.stdout.splitlines()]


def gradient(dest: Path, lo: float, hi: float, vertical: bool = False) -> Path:
    """A grey ramp from `lo` to `hi` across the frame: one grey level of contrast is a blank page."""
    t = np.linspace(lo, hi, 480 if vertical else 640)
    plane = np.tile(t[:, None], (1, 640)) if vertical else np.tile(t[None, :], (480, 1))
    Image.fromarray(plane.astype(np.uint8)).convert("RGB").save(dest, quality=90)
    return dest


def solid(dest: Path, colour: tuple[int, int, int]) -> Path:
    Image.new("RGB", (640, 480), colour).save(dest, quality=90)
    return dest


def plane(path: Path) -> np.ndarray:
    with Image.open(path) as img:
        return window_planes(img)[:1]


def test_photos_have_detail_and_blank_images_and_star_fields_do_not(photos, tmp_path):
    """The measure separates what it must: every sample photo is above the bar, blanks and sparse skies under."""
    real = {name: float(detail_batch(plane(photos[name]))[0]) for name in PHOTOS}
    assert min(real.values()) >= defaults.MIN_HASH_DETAIL, real
    sky = tmp_path / "sky.jpg"
    negatives.star_field(np.random.default_rng(1), (640, 480)).save(sky, quality=90)
    blanks = [solid(tmp_path / "black.jpg", (5, 5, 5)), gradient(tmp_path / "ramp.jpg", 40, 41, vertical=True), sky]
    low = {p.name: float(detail_batch(plane(p))[0]) for p in blanks}
    assert max(low.values()) < defaults.MIN_HASH_DETAIL, low


def hash_matches(paths: list[Path]) -> list[str | None]:
    """Each file's hash-rule match among the earlier ones (name, or None), as the owner searches: the real
    worker pipeline, the daemon's HashIndex and the shipped rule; no verification, no descriptor."""
    rule = Thresholds.resolve(MatchSettings(), None).hashes
    pipeline = Pipeline(DecodeSettings(), None, None)
    try:
        feats = pipeline.run([(i, str(p)) for i, p in enumerate(paths)])
    finally:
        pipeline.close()
    index, out = HashIndex(len(WINDOWS)), list[str | None]()
    for f in feats:
        if f.windows is None:  # refused: too little detail for its hash bits to mean anything
            out.append(None)
            continue
        assert f.dihedral is not None and f.dhash is not None
        hit = index.best(f.windows, f.dihedral, f.dhash, f.id, rule)
        out.append(paths[hit.id].name if hit is not None else None)
        index.add(f.id, f.windows, f.dhash)
    return out


def test_near_blank_images_are_not_copies_in_hash_only_mode(tmp_path):
    """A black frame and a one-grey-level ramp hash identically (pHash distance 0, dHash 0): without the
    refusal the ramp is an edited copy of the black frame at score 100 wherever nothing verifies it."""
    files = [solid(tmp_path / "black.jpg", (5, 5, 5)), gradient(tmp_path / "ramp.jpg", 40, 41, vertical=True),
             solid(tmp_path / "white.jpg", (250, 250, 250)), gradient(tmp_path / "ramp2.jpg", 100, 101)]
    assert hash_matches(files) == [None] * 4


def test_an_edited_photo_still_matches_in_hash_only_mode(photos, tmp_path):
    """The refusal is for noise only: a darkened, re-compressed dark photo (the moon) is still a copy."""
    edit = tmp_path / "moon-dark.jpg"
    with Image.open(photos["moon"]) as img:
        Image.eval(img.convert("RGB"), lambda v: int(v * 0.8)).resize((img.width // 2, img.height // 2)).save(
            edit, quality=60)
    records = scan_hash_only(tmp_path / "state", [photos["moon"], edit])
    assert records[1]["verdict"] == "edited-copy", records
    assert records[1]["match"] == str(photos["moon"]), records


def test_star_fields_are_not_copies_in_hash_only_mode(tmp_path):
    """Two different synthetic skies and two halves of the Hubble deep field: all `new` with hashes alone."""
    import skimage.data

    sky = Image.fromarray(skimage.data.hubble_deep_field()).convert("RGB")
    w, h = sky.size
    files = [tmp_path / "hubble-left.jpg", tmp_path / "hubble-right.jpg"]
    sky.crop((0, 0, w // 2, h)).save(files[0], quality=92)
    sky.crop((w // 2, 0, w, h)).save(files[1], quality=92)
    for k in range(4):
        dest = tmp_path / f"sky{k}.jpg"
        negatives.star_field(np.random.default_rng(10 + k), (640, 480)).save(dest, quality=90)
        files.append(dest)
    assert hash_matches(files) == [None] * len(files)
    records = scan_hash_only(tmp_path / "state", files)
    assert [r["verdict"] for r in records] == ["new"] * len(files), records
