"""Build the edited-copy benchmark folder (deterministic for a given seed and photo set).

    python -m bench.dataset --out bench/data/acc                 # skimage + Debian photos
    python -m bench.dataset --out /tmp/acc --no-debian --photos ~/Pictures

Layout of the folder:
    originals/oNNN.jpg     one per source photo that gets copies
    queries/qNNNN.*        edited copies and distractors, numbered in stream order
    manifest.jsonl         one line per file: file, role (original|edit|distractor), source (the
                           original an edit derives from), photo, family, ops, save
    stream.txt             files in the order a watcher would see them: every original first, then
                           edits shuffled together with distractors
    dataset.json           parameters, counts, library versions and each photo's provenance

Distractors are distinct photos that appear exactly once. They get the same kinds of edits as the
copies (captions, screenshot canvases...), so a method cannot score by matching the edit template
(two different photos under the same meme band) instead of the photo.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import PIL
from PIL import Image

from bench import edits
from bench.photos import Photo, debian_photos, dir_photos, skimage_photos

DEFAULT_DEBIAN_CACHE = Path("/tmp/dupwatch-bench-debs")

# The edit families of one original, in order; per_original N takes the first N (cycling), so a
# small N still covers several families. 20 slots: exact 1, mild 4, geometric 5, overlay 5,
# colour 2, combo 3.
PLAN = ("exact", "mild", "geometric", "overlay", "colour", "combo", "geometric", "overlay", "mild",
        "geometric", "overlay", "combo", "mild", "geometric", "overlay", "colour", "mild",
        "geometric", "overlay", "combo")
EXACT_OPS = ("copy", "reencode")
DISTRACTOR_FAMILIES = ("none", "mild", "geometric", "overlay", "colour", "combo")


@dataclass
class Entry:
    """One manifest line."""

    file: str
    role: str
    source: str | None
    photo: str
    family: str | None = None
    ops: list[dict[str, Any]] = field(default_factory=list)
    save: dict[str, Any] = field(default_factory=dict)

    @property
    def group(self) -> str:
        """What a correct match must share: the original it derives from (itself if none)."""
        return self.source or self.file


def _rng(seed: int, *keys: int) -> np.random.Generator:
    """An independent generator per item, so one item's edits never shift another's."""
    return np.random.default_rng([seed, *keys])


def _fit(image: Image.Image, max_side: int) -> Image.Image:
    """Downscale so the long side is at most max_side (keeps the benchmark fast on 2 cores)."""
    scale = max_side / max(image.size)
    if scale >= 1:
        return image
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    return image.resize(size, Image.Resampling.LANCZOS)


def _apply(image: Image.Image, family: str, rng: np.random.Generator,
           op_index: int) -> tuple[Image.Image, list[dict[str, Any]]]:
    """Apply one family's edit (op chosen by rotating index) or, for combos, 2-3 ops of distinct
    families in random order."""
    if family == "none":
        return image, []
    if family == "combo":
        chosen = rng.choice(edits.COMBO_FAMILIES, int(rng.integers(2, 4)), replace=False)
        steps = [str(rng.choice(list(edits.FAMILIES[str(f)]))) for f in chosen]
    else:
        names = list(edits.FAMILIES[family])
        steps = [names[op_index % len(names)]]
    done = []
    for name in steps:
        image, params = edits.FAMILIES_BY_OP[name](image, rng)
        done.append({"op": name, **params})
    return image, done


def _save(image: Image.Image, path: Path, ops: list[dict[str, Any]],
          rng: np.random.Generator) -> tuple[Path, dict[str, Any]]:
    """Save as users would: screenshots and lossless re-saves as PNG, everything else JPEG."""
    names = {op["op"] for op in ops}
    if names & {"screenshot", "reencode"}:
        path = path.with_suffix(".png")
        image.save(path, "PNG")
        return path, {"format": "PNG"}
    quality = int(rng.integers(75, 96))
    path = path.with_suffix(".jpg")
    image.save(path, "JPEG", quality=quality)
    return path, {"format": "JPEG", "quality": quality}


def _split(photos: list[Photo], seed: int, distractor_fraction: float) -> tuple[list[Photo], list[Photo]]:
    """Shuffle photos deterministically and split them into originals and distractors."""
    order = _rng(seed, 0).permutation(len(photos))
    shuffled = [photos[i] for i in order]
    n_distractors = round(len(photos) * distractor_fraction)
    return shuffled[n_distractors:], shuffled[:n_distractors]


def _make_original(photo: Photo, index: int, out: Path, max_side: int) -> tuple[Entry, Image.Image]:
    """Write one original; return it with its decoded pixels (what a copier starts from)."""
    relative = f"originals/o{index:03d}.jpg"
    _fit(photo.load(), max_side).save(out / relative, "JPEG", quality=92)
    entry = Entry(file=relative, role="original", source=relative, photo=photo.id,
                  save={"format": "JPEG", "quality": 92})
    with Image.open(out / relative) as saved:
        return entry, saved.convert("RGB")


def _make_edits(original: Entry, pixels: Image.Image, index: int, per_original: int, seed: int,
                staging: Path, out: Path) -> list[Entry]:
    """The per_original edited copies of one original, written to the staging folder."""
    rng = _rng(seed, 1, index)
    offsets = {family: int(rng.integers(0, 100)) for family in (*edits.FAMILIES, "combo")}
    used: dict[str, int] = {}
    entries = []
    for k in range(per_original):
        family = PLAN[k % len(PLAN)]
        op_index = offsets[family] + used.get(family, 0)
        used[family] = used.get(family, 0) + 1
        item_rng = _rng(seed, 2, index, k)
        target = staging / f"o{index:03d}_{k:02d}"
        if family == "exact" and EXACT_OPS[op_index % len(EXACT_OPS)] == "copy":
            path = target.with_suffix(".jpg")
            shutil.copyfile(out / original.file, path)
            ops, save = [{"op": "copy"}], {"format": "bytes of the original"}
        else:
            image, ops = _apply(pixels, family, item_rng, op_index)
            path, save = _save(image, target, ops, item_rng)
        entries.append(Entry(file=str(path), role="edit", source=original.file, photo=original.photo,
                             family=family, ops=ops, save=save))
    return entries


def _make_distractor(photo: Photo, index: int, seed: int, staging: Path, max_side: int) -> Entry:
    """A distinct photo seen once, with an edit of a random family (or none)."""
    rng = _rng(seed, 3, index)
    family = str(rng.choice(DISTRACTOR_FAMILIES))
    image, ops = _apply(_fit(photo.load(), max_side), family, rng, int(rng.integers(0, 100)))
    path, save = _save(image, staging / f"d{index:03d}", ops, rng)
    return Entry(file=str(path), role="distractor", source=None, photo=photo.id, family=family,
                 ops=ops, save=save)


def _number_queries(queries: list[Entry], seed: int, out: Path) -> list[Entry]:
    """Shuffle edits with distractors and rename them qNNNN in stream order, so that names say
    nothing about what a file is."""
    order = _rng(seed, 4).permutation(len(queries))
    numbered = []
    for position, i in enumerate(order):
        entry = queries[i]
        staged = Path(entry.file)
        relative = f"queries/q{position:04d}{staged.suffix}"
        staged.rename(out / relative)
        numbered.append(Entry(**{**asdict(entry), "file": relative}))
    return numbered


def collect_photos(use_skimage: bool, debian_cache: Path | None, dirs: list[Path]) -> list[Photo]:
    """All source photos, sorted by id so the split does not depend on discovery order."""
    photos: list[Photo] = skimage_photos() if use_skimage else []
    if debian_cache is not None:
        photos += debian_photos(debian_cache)
    for folder in dirs:
        photos += dir_photos(folder)
    unique = {photo.id: photo for photo in photos}
    return [unique[key] for key in sorted(unique)]


def build(out: Path, photos: list[Photo], seed: int = 0, per_original: int = 20,
          distractor_fraction: float = 0.25, max_side: int = 1024) -> list[Entry]:
    """Write the benchmark folder and return its manifest, stream order first."""
    originals, distractors = _split(photos, seed, distractor_fraction)
    if not originals:
        raise ValueError("no photos left for originals")
    if out.exists():
        shutil.rmtree(out)
    for sub in ("originals", "queries", "staging"):
        (out / sub).mkdir(parents=True)
    staging = out / "staging"
    original_entries, queries = [], []
    for index, photo in enumerate(originals):
        entry, pixels = _make_original(photo, index, out, max_side)
        original_entries.append(entry)
        queries += _make_edits(entry, pixels, index, per_original, seed, staging, out)
    queries += [_make_distractor(photo, i, seed, staging, max_side) for i, photo in enumerate(distractors)]
    manifest = original_entries + _number_queries(queries, seed, out)
    staging.rmdir()
    _write(out, manifest, photos, seed=seed, per_original=per_original,
           distractor_fraction=distractor_fraction, max_side=max_side)
    return manifest


def _write(out: Path, manifest: list[Entry], photos: list[Photo], **params: Any) -> None:
    """manifest.jsonl, stream.txt and dataset.json."""
    with open(out / "manifest.jsonl", "w") as f:
        for entry in manifest:
            f.write(json.dumps(asdict(entry), sort_keys=True) + "\n")
    (out / "stream.txt").write_text("".join(entry.file + "\n" for entry in manifest))
    used = {entry.photo for entry in manifest}
    counts = {role: sum(e.role == role for e in manifest) for role in ("original", "edit", "distractor")}
    info = {**params, "counts": counts, "pillow": PIL.__version__, "numpy": np.__version__,
            "photos": {p.id: p.provenance for p in photos if p.id in used}}
    (out / "dataset.json").write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")


def load_manifest(data: Path) -> list[Entry]:
    """The manifest in stream order (stream.txt is the authority on order)."""
    by_file = {}
    with open(data / "manifest.jsonl") as f:
        for line in f:
            entry = Entry(**json.loads(line))
            by_file[entry.file] = entry
    return [by_file[name] for name in (data / "stream.txt").read_text().split("\n") if name]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--per-original", type=int, default=20, help="edited copies per original")
    parser.add_argument("--distractor-fraction", type=float, default=0.25,
                        help="share of the photos used once, as distractors")
    parser.add_argument("--max-side", type=int, default=1024, help="long side of originals, pixels")
    parser.add_argument("--photos", type=Path, action="append", default=[], help="extra photo folder")
    parser.add_argument("--no-skimage", action="store_true")
    parser.add_argument("--no-debian", action="store_true", help="skip the Debian wallpaper photos")
    parser.add_argument("--debian-cache", type=Path, default=DEFAULT_DEBIAN_CACHE,
                        help="where .deb files are downloaded and unpacked (outside the repo)")
    args = parser.parse_args(argv)
    photos = collect_photos(not args.no_skimage, None if args.no_debian else args.debian_cache, args.photos)
    manifest = build(args.out, photos, args.seed, args.per_original, args.distractor_fraction, args.max_side)
    counts = {role: sum(e.role == role for e in manifest) for role in ("original", "edit", "distractor")}
    print(f"wrote {args.out}: {counts} from {len(photos)} photos", file=sys.stderr)


if __name__ == "__main__":
    main()
