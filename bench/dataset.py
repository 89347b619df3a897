"""Build the edited-copy benchmark folder (deterministic for a given seed and photo set).

    python -m bench.dataset --out bench/data/acc                 # skimage + Debian photos (~3 min)
    python -m bench.dataset --out bench/data/small --small       # the test suite's smoke size
    python -m bench.dataset --out /tmp/acc --no-debian --photos ~/Pictures

Layout of the folder:
    originals/oNNN.jpg     one per original that gets copies
    queries/qNNNN.*        edited copies and distractors, numbered in stream order
    manifest.jsonl         one line per file: file, role (original|edit|distractor), split
                           (calibration|test), kind (distractors: which hard negative), source (the
                           original an edit derives from), photo, part (the region of the photo used),
                           scene (files cut from one photo), template, family, ops, save
    stream.txt             every file in the order a watcher sees them: originals first, then edits
                           shuffled together with distractors
    stream-calibration.txt, stream-test.txt
                           the same order restricted to one split: two independent streams (no file of
                           one split is ever a copy of a file of the other), so defaults chosen on the
                           calibration half are measured on the test half
    dataset.json           parameters, counts per role, split and kind, versions, each photo's provenance

Originals are real photographs (bench/photos.py). Photos of 1800 px or more on their long side give two
originals: their left and right halves, which share no pixel (two shots of one scene are not copies);
`scene` links them. Distractors have no copy in the data set; they are the negatives that fooled the hash
rule, by kind:
    photo      a distinct photo seen once, under a random edit family (as copies are)
    template   a DIFFERENT photo pasted into the same page/app/letterbox/watermark frame that copies use
               (bench/templates.py): a match through the frame is a template collision
    samescene  non-overlapping tiles of one photo (same light, same subject, different pixels)
    burst      two frames of one photo, the second panned by 40-45 % of the width and zoomed in a little
    astronomy  tiles of real telescope images (Hubble deep field, the Moon)
    starfield, gradient, wallpaper, texture, document: synthetic (bench/negatives.py)
Copies include a "template" paste of the original into one of those same frames (a true copy).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import PIL
from PIL import Image

from bench import edits, negatives, templates
from bench.photos import Photo, debian_photos, dir_photos, skimage_photos

DEFAULT_DEBIAN_CACHE = Path("/tmp/dupwatch-bench-debs")
VERSION = 2
SPLITS = ("calibration", "test")

# The edit families of one original, in order; per_original N takes the first N (cycling), so a
# small N still covers several families. 20 slots: exact 1, mild 4, geometric 5, overlay 5,
# colour 2, combo 3.
PLAN = ("exact", "mild", "geometric", "overlay", "colour", "combo", "geometric", "overlay", "mild",
        "geometric", "overlay", "combo", "mild", "geometric", "overlay", "colour", "mild",
        "geometric", "overlay", "combo")
EXACT_OPS = ("copy", "reencode")
DISTRACTOR_FAMILIES = ("none", "mild", "geometric", "overlay", "colour", "combo")
# Real telescope images: cut into tiles as astronomy distractors, never used as originals.
ASTRONOMY_PHOTOS = ("skimage:hubble_deep_field", "skimage:moon")
# Photos at least this long on their long side give two originals (left and right half).
HALVES_MIN_SIDE = 1800
# How each distractor photo is used, in turn: whole, cut in tiles, in a template, as a burst.
PHOTO_USES = ("photo", "samescene", "template", "burst")


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
    split: str = "test"
    kind: str | None = None
    part: list[float] | None = None
    scene: str | None = None
    template: str | None = None

    @property
    def group(self) -> str:
        """What a correct match must share: the original it derives from (itself if none)."""
        return self.source or self.file


@dataclass(frozen=True)
class Size:
    """How big a build is: --small for the test suite, the defaults for the benchmark."""

    per_original: int = 12
    distractor_photo_share: float = 0.2
    synthetic_per_kind: int = 24
    astronomy_tiles: int = 12
    max_side: int = 1024
    calibration_share: float = 0.5


SMALL = Size(per_original=4, distractor_photo_share=0.4, synthetic_per_kind=2, astronomy_tiles=2, max_side=256)


@dataclass
class Source:
    """Pixels some files are made from: a photo or a region of it, with its split and scene."""

    photo: Photo
    part: tuple[float, float, float, float] = (0.0, 0.0, 1.0, 1.0)  # left, top, right, bottom as fractions
    split: str = "test"

    def load(self, max_side: int) -> Image.Image:
        image = self.photo.load()
        left, top, right, bottom = self.part
        box = (round(left * image.width), round(top * image.height), round(right * image.width),
               round(bottom * image.height))
        return _fit(image.crop(box) if self.part != (0.0, 0.0, 1.0, 1.0) else image, max_side)


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
    if names & {"screenshot", "template", "reencode"}:
        path = path.with_suffix(".png")
        image.save(path, "PNG")
        return path, {"format": "PNG"}
    quality = int(rng.integers(75, 96))
    path = path.with_suffix(".jpg")
    image.save(path, "JPEG", quality=quality)
    return path, {"format": "JPEG", "quality": quality}


def _template_of(ops: list[dict[str, Any]]) -> str | None:
    return next((str(op["template"]) for op in ops if op["op"] == "template"), None)


# ---- planning: which photo becomes what ---------------------------------------------------------

def _halves(photo: Photo) -> list[tuple[float, float, float, float]]:
    """Two disjoint halves for big photos, the whole photo otherwise."""
    with_size = photo.load()
    if max(with_size.size) >= HALVES_MIN_SIDE:
        return [(0.0, 0.0, 0.5, 1.0), (0.5, 0.0, 1.0, 1.0)] if with_size.width >= with_size.height \
            else [(0.0, 0.0, 1.0, 0.5), (0.0, 0.5, 1.0, 1.0)]
    return [(0.0, 0.0, 1.0, 1.0)]


def plan(photos: list[Photo], seed: int, size: Size) -> tuple[list[Source], list[Photo], list[Photo]]:
    """(original sources, distractor photos, astronomy photos), each assigned to a split by photo,
    so that the two halves of one photo never straddle the splits."""
    astronomy = [p for p in photos if p.id in ASTRONOMY_PHOTOS]
    pool = [p for p in photos if p.id not in ASTRONOMY_PHOTOS]
    order = _rng(seed, 0).permutation(len(pool))
    shuffled = [pool[i] for i in order]
    n_distractors = round(len(shuffled) * size.distractor_photo_share)
    distractor_photos, original_photos = shuffled[:n_distractors], shuffled[n_distractors:]
    n_calibration = int(np.ceil(len(original_photos) * size.calibration_share))
    sources = []
    for i, photo in enumerate(original_photos):
        split = SPLITS[0] if i < n_calibration else SPLITS[1]
        sources += [Source(photo, part, split) for part in _halves(photo)]
    return sources, distractor_photos, astronomy


def _split_of(index: int, total: int, share: float) -> str:
    """Calibration for the first ceil(share * total) items of a kind, test for the rest."""
    return SPLITS[0] if index < int(np.ceil(total * share)) else SPLITS[1]


# ---- writing ------------------------------------------------------------------------------------

def _make_original(source: Source, index: int, out: Path, max_side: int) -> tuple[Entry, Image.Image]:
    """Write one original; return it with its decoded pixels (what a copier starts from)."""
    relative = f"originals/o{index:03d}.jpg"
    source.load(max_side).save(out / relative, "JPEG", quality=92)
    whole = source.part == (0.0, 0.0, 1.0, 1.0)
    entry = Entry(file=relative, role="original", source=relative, photo=source.photo.id,
                  save={"format": "JPEG", "quality": 92}, split=source.split, kind="original",
                  part=None if whole else list(source.part), scene=None if whole else source.photo.id)
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
                             family=family, ops=ops, save=save, split=original.split, kind="edit",
                             part=original.part, scene=original.scene, template=_template_of(ops)))
    return entries


def _distractor(image: Image.Image, target: Path, rng: np.random.Generator, *, photo: str, kind: str,
                split: str, family: str = "none", part: list[float] | None = None, scene: str | None = None,
                template: str | None = None, ops: list[dict[str, Any]] | None = None) -> Entry:
    """Save one distractor, after an edit of `family` (none: as it is)."""
    done = list(ops or [])
    if family != "none":
        image, more = _apply(image, family, rng, int(rng.integers(0, 100)))
        done += more
    path, save = _save(image, target, done, rng)
    return Entry(file=str(path), role="distractor", source=None, photo=photo, family=family, ops=done,
                 save=save, split=split, kind=kind, part=part, scene=scene,
                 template=template or _template_of(done))


def _photo_distractors(photos: list[Photo], seed: int, staging: Path, size: Size) -> list[Entry]:
    """Distractors made from real photos, each photo used one way (PHOTO_USES in turn) so that no
    two distractors share a pixel: whole, tiles, template pastes of tiles, burst pairs."""
    entries: list[Entry] = []
    for i, photo in enumerate(photos):
        use = PHOTO_USES[i % len(PHOTO_USES)]
        split = _split_of(i, len(photos), size.calibration_share)
        rng = _rng(seed, 3, i)
        image = photo.load()
        target = staging / f"d{i:03d}"
        if use == "photo":
            family = str(rng.choice(DISTRACTOR_FAMILIES))
            entries.append(_distractor(_fit(image, size.max_side), target, rng, photo=photo.id, kind="photo",
                                       split=split, family=family))
            continue
        if use == "burst":
            frames = _burst(image, rng)
        else:
            frames = _tiles(image)
        for k, (part, frame) in enumerate(frames):
            frame = _fit(frame, size.max_side)
            kw: dict[str, Any] = {"photo": photo.id, "split": split, "part": part, "scene": photo.id}
            if use == "template":
                # The tiles of one photo share a frame; photos take the frames in turn.
                name = list(templates.BUILDERS)[(i // len(PHOTO_USES)) % len(templates.BUILDERS)]
                frame = templates.paste(frame, name)
                kw.update(kind="template", template=name, ops=[{"op": "template", "template": name}])
            else:
                kw.update(kind=use, family=str(rng.choice(("none", "mild"))))
            entries.append(_distractor(frame, target.with_name(f"{target.name}_{k}"), rng, **kw))
    return entries


def _tiles(image: Image.Image) -> list[tuple[list[float], Image.Image]]:
    """2x2 disjoint tiles of a landscape photo, 2x1 of a small or portrait one."""
    grid = (2, 2) if min(image.size) >= 900 and image.width > image.height else (1, 2) \
        if image.height > image.width else (2, 1)
    out = []
    for gy in range(grid[1]):
        for gx in range(grid[0]):
            part = [gx / grid[0], gy / grid[1], (gx + 1) / grid[0], (gy + 1) / grid[1]]
            box = tuple(round(f * s) for f, s in zip(part, (image.width, image.height) * 2))
            out.append((part, image.crop(box)))  # type: ignore[arg-type]
    return out


def _burst(image: Image.Image, rng: np.random.Generator) -> list[tuple[list[float], Image.Image]]:
    """Two frames 55 % of the photo wide, the second shifted right by 40-45 % of the photo and zoomed
    in by up to 5 %, as a camera panned during a burst: they share under a third of their pixels, a
    different shot, not a copy."""
    width = 0.55
    shift = float(rng.uniform(0.40, 0.45))
    zoom = float(rng.uniform(0.95, 1.0))
    frames = []
    for left, scale in ((0.0, 1.0), (min(shift, 1 - width * zoom), zoom)):
        part = [left, (1 - scale) / 2, left + width * scale, 1 - (1 - scale) / 2]
        box = tuple(round(f * s) for f, s in zip(part, (image.width, image.height) * 2))
        frames.append(([round(v, 3) for v in part], image.crop(box)))  # type: ignore[arg-type]
    return frames


def _astronomy(photos: list[Photo], count: int, seed: int, staging: Path, size: Size) -> list[Entry]:
    """Disjoint tiles of real telescope images: one grid per photo, tiles handed out in turn."""
    if not photos or count <= 0:
        return []
    per_photo = int(np.ceil(count / len(photos)))
    side = int(np.ceil(np.sqrt(per_photo)))
    entries: list[Entry] = []
    for i, photo in enumerate(photos):
        image = photo.load()
        for k in range(per_photo):
            part = [(k % side) / side, (k // side) / side, (k % side + 1) / side, (k // side + 1) / side]
            box = tuple(round(f * s) for f, s in zip(part, (image.width, image.height) * 2))
            tile = _fit(image.crop(box), size.max_side)  # type: ignore[arg-type]
            rng = _rng(seed, 5, i, k)
            index = len(entries)
            entries.append(_distractor(tile, staging / f"a{i}_{k:02d}", rng, photo=photo.id, kind="astronomy",
                                       split=_split_of(index, count, size.calibration_share), part=part,
                                       scene=photo.id, family=str(rng.choice(("none", "mild")))))
    return entries[:count]


def _synthetic(seed: int, staging: Path, size: Size) -> list[Entry]:
    """size.synthetic_per_kind images of each synthetic kind; provenance is the generator and seed."""
    entries = []
    nominal = (size.max_side, size.max_side * 3 // 4)
    for kind_index, (kind, make) in enumerate(negatives.SYNTHETIC.items()):
        for k in range(size.synthetic_per_kind):
            rng = _rng(seed, 6, kind_index, k)
            image = make(rng, nominal)
            entries.append(_distractor(image, staging / f"s{kind}_{k:02d}", rng, photo=f"synthetic:{kind}:{k}",
                                       kind=kind, split=_split_of(k, size.synthetic_per_kind,
                                                                  size.calibration_share)))
    return entries


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


def build(out: Path, photos: list[Photo], seed: int = 0, size: Size = Size()) -> list[Entry]:
    """Write the benchmark folder and return its manifest, stream order first."""
    sources, distractor_photos, astronomy = plan(photos, seed, size)
    if not sources:
        raise ValueError("no photos left for originals")
    if out.exists():
        shutil.rmtree(out)
    for sub in ("originals", "queries", "staging"):
        (out / sub).mkdir(parents=True)
    staging = out / "staging"
    original_entries, queries = [], []
    for index, source in enumerate(sources):
        entry, pixels = _make_original(source, index, out, size.max_side)
        original_entries.append(entry)
        queries += _make_edits(entry, pixels, index, size.per_original, seed, staging, out)
    queries += _photo_distractors(distractor_photos, seed, staging, size)
    queries += _astronomy(astronomy, size.astronomy_tiles, seed, staging, size)
    queries += _synthetic(seed, staging, size)
    manifest = original_entries + _number_queries(queries, seed, out)
    staging.rmdir()
    _write(out, manifest, photos, seed=seed, version=VERSION, **asdict(size))
    return manifest


def counts(manifest: list[Entry]) -> dict[str, Any]:
    """Files per role, per split and role, and distractors per kind: what dataset.json and the
    reports print, so a reader sees how hard the negatives are."""
    return {
        **{role: sum(e.role == role for e in manifest) for role in ("original", "edit", "distractor")},
        "by_split": {split: dict(Counter(e.role for e in manifest if e.split == split)) for split in SPLITS},
        "distractor_kinds": dict(sorted(Counter(str(e.kind) for e in manifest if e.role == "distractor").items())),
        "source_photos": len({e.photo for e in manifest if not e.photo.startswith("synthetic:")}),
    }


def _write(out: Path, manifest: list[Entry], photos: list[Photo], **params: Any) -> None:
    """manifest.jsonl, the stream files and dataset.json."""
    with open(out / "manifest.jsonl", "w") as f:
        f.writelines(json.dumps(asdict(entry), sort_keys=True) + "\n" for entry in manifest)
    (out / "stream.txt").write_text("".join(entry.file + "\n" for entry in manifest))
    for split in SPLITS:
        (out / f"stream-{split}.txt").write_text("".join(e.file + "\n" for e in manifest if e.split == split))
    used = {entry.photo for entry in manifest}
    info = {**params, "counts": counts(manifest), "pillow": PIL.__version__, "numpy": np.__version__,
            "photos": {p.id: p.provenance for p in photos if p.id in used}}
    (out / "dataset.json").write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")


def load_manifest(data: Path, split: str | None = None) -> list[Entry]:
    """The manifest in stream order (the stream file is the authority on order); one split's
    stream when `split` is given, every file otherwise."""
    by_file = {}
    with open(data / "manifest.jsonl") as f:
        for line in f:
            entry = Entry(**json.loads(line))
            by_file[entry.file] = entry
    stream = data / ("stream.txt" if split is None else f"stream-{split}.txt")
    return [by_file[name] for name in stream.read_text().split("\n") if name]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--small", action="store_true",
                        help="scikit-image photos only, 256 px, few edits: the smoke test's size (seconds)")
    parser.add_argument("--per-original", type=int, help="edited copies per original")
    parser.add_argument("--max-side", type=int, help="long side of originals, pixels")
    parser.add_argument("--photos", type=Path, action="append", default=[], help="extra photo folder")
    parser.add_argument("--no-skimage", action="store_true")
    parser.add_argument("--no-debian", action="store_true", help="skip the Debian photos")
    parser.add_argument("--debian-cache", type=Path, default=DEFAULT_DEBIAN_CACHE,
                        help="where .deb files are downloaded and unpacked (outside the repo)")
    args = parser.parse_args(argv)
    size = SMALL if args.small else Size()
    overrides = {k: v for k, v in (("per_original", args.per_original), ("max_side", args.max_side)) if v}
    size = Size(**{**asdict(size), **overrides})
    debian = None if args.no_debian or args.small else args.debian_cache
    photos = collect_photos(not args.no_skimage, debian, args.photos)
    manifest = build(args.out, photos, args.seed, size)
    print(f"wrote {args.out}: {json.dumps(counts(manifest))} from {len(photos)} photos", file=sys.stderr)


if __name__ == "__main__":
    main()
