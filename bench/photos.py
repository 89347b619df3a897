"""Real photos that can be had offline, each with its provenance.

The edited-copy benchmark must be built from real photographs: synthetic patterns make
perceptual hashes look better or worse than they are on what users drop in a folder. Three sources:

- scikit-image's bundled sample photos (always there once scikit-image is installed);
- a curated list of photographs from Debian wallpaper packages, fetched with `apt-get download` and
  unpacked with `dpkg -x` into a cache folder outside the repository (never committed);
- any folder of the user's own photos (`--photos DIR`).

Non-photos (text pages, logos, checkerboards, rendered abstract wallpapers, the right half of the
stereo pair whose left half we use) are left out on purpose: they are either not what the service
sees, or near-duplicates of another entry that would silently corrupt the ground truth.
"""

from __future__ import annotations

import fnmatch
import io
import re
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff"}

# skimage.data function -> licence, as stated in that function's docstring (scikit-image 0.26).
SKIMAGE_PHOTOS: dict[str, str] = {
    "astronaut": "public domain (NASA)",
    "camera": "CC0-1.0 (Lav Varshney)",
    "cat": "CC0-1.0 (Stefan van der Walt)",
    "coffee": "CC0-1.0 (Rachel Michetti)",
    "coins": "no known copyright restrictions",
    "hubble_deep_field": "public domain (NASA)",
    "immunohistochemistry": "no known copyright restrictions",
    "moon": "see skimage.data.moon docstring",
    "stereo_motorcycle": "Middlebury stereo dataset; see skimage.data.stereo_motorcycle docstring",
    "retina": "CC0-1.0 (Mikael Häggström)",
    "rocket": "public domain (SpaceX)",
    "brick": "CC0-1.0 (CC0Textures)",
    "grass": "CC0-1.0 (CC0Textures)",
    "gravel": "CC0-1.0 (CC0Textures)",
}

# Debian package -> photographs in it (paths inside the package). Rendered/abstract wallpapers of the
# same packages are excluded by hand after looking at every file.
DEBIAN_PHOTOS: dict[str, list[str]] = {
    "lomiri-wallpapers-16.04": [
        f"usr/share/backgrounds/{name}.jpg"
        for name in (
            "Bridge_by_Sander_Klootwijk", "Dragonfly_by_Bolly", "Picture_0B_by_freespace",
            "Picture_1A_by_freespace", "Wine_by_Jakkub_Mede", "aitzgorri_by_Aitzol_Berasategi",
            "analogpattern_by_Peter_Nerlich", "free_by_Peter_Nerlich", "friends_by_Aitzol_Berasategi",
            "greentock_by_Peter_Nerlich", "life_by_Aitzol_Berasategi",
            "picosdeeuropa_by_Aitzol_Berasategi", "seeding_by_Clements_Engelhardt",
            "sunset_by_Aitzol_Berasategi",
        )
    ],
    "lomiri-wallpapers-20.04": [
        "usr/share/backgrounds/Infinite-Sea_by_Aury88.jpg",
        "usr/share/backgrounds/Kleiber_by_Lukas_Baubkus.jpg",
    ],
    "mate-backgrounds": [
        f"usr/share/backgrounds/mate/nature/{name}.jpg"
        for name in (
            "Aqua", "Blinds", "Dune", "FreshFlower", "Garden", "GreenMeadow", "LadyBird",
            "RainDrops", "Storm", "TwoWings", "Wood", "YellowFlower",
        )
    ],
    "plasma-workspace-wallpapers": [
        f"usr/share/wallpapers/{name}/contents/images/2560x1600.jpg"
        for name in (
            "BytheWater", "ColdRipple", "ColorfulCups", "DarkestHour", "EveningGlow", "FallenLeaf",
            "Grey", "Kite", "OneStandsOut", "Path", "summer_1am",
        )
    ],
}

# gcompris-qt keeps its activity images inside Qt resource bundles (.rcc) as WebP; these activities
# hold photographs (animals, monuments, landscapes, musicians, everyday objects). Left out on purpose:
# `details` (paintings), `babyshapes` (drawings), `photo_hunter` (pairs of nearly identical pictures,
# which would be unlabelled near-duplicates), and any image with transparency (cut-outs).
GCOMPRIS_PACKAGE = "gcompris-qt-data"
GCOMPRIS_BUNDLES = ("categorization", "clickgame", "erase", "explore_farm_animals", "explore_monuments",
                    "explore_world_animals", "explore_world_music")
GCOMPRIS_MIN_SIDE = 300
# palapeli-data's puzzle collection: five photographs (its `backgrounds` are textures, not photos).
PALAPELI_PACKAGE = "palapeli-data"
PALAPELI_PHOTOS = tuple(f"usr/share/palapeli/collection/{name}.jpg" for name in (
    "castle-maintenon", "cincinnati-bridge", "citrus-fruits", "european-honey-bee", "panther-chameleon-female"))
DEBIAN_PHOTOS[PALAPELI_PACKAGE] = list(PALAPELI_PHOTOS)


@dataclass(frozen=True)
class Photo:
    """One source photograph: a stable id, how to load it, and where it came from."""

    id: str
    loader: Callable[[], Image.Image] = field(compare=False, repr=False)
    provenance: dict[str, str] = field(compare=False)

    def load(self) -> Image.Image:
        """Decode the photo as RGB; every edit works on RGB so that modes never differ by source."""
        return _to_rgb(self.loader())


def _to_rgb(image: Image.Image) -> Image.Image:
    """Flatten alpha onto white and convert to RGB."""
    if image.mode in ("RGBA", "LA") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, "white")
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def _skimage_loader(name: str) -> Callable[[], Image.Image]:
    """Load a skimage sample lazily; the stereo pair is reduced to its left image."""

    def load() -> Image.Image:
        import skimage.data

        pixels = getattr(skimage.data, name)()
        if name == "stereo_motorcycle":
            pixels = pixels[0]
        return Image.fromarray(np.asarray(pixels))

    return load


def skimage_photos() -> list[Photo]:
    """The bundled scikit-image photographs (no download needed)."""
    import skimage

    return [
        Photo(
            id=f"skimage:{name}",
            loader=_skimage_loader(name),
            provenance={
                "source": "scikit-image",
                "version": skimage.__version__,  # type: ignore[attr-defined]  # its lazy-loader stub omits it
                "file": f"skimage.data.{name}()",
                "licence": licence,
            },
        )
        for name, licence in SKIMAGE_PHOTOS.items()
    ]


def _file_loader(path: Path) -> Callable[[], Image.Image]:
    """Open a photo file lazily; `draft` makes big wallpapers (up to 6000 px) cheap to decode."""

    def load() -> Image.Image:
        with Image.open(path) as image:
            image.draft("RGB", (2048, 2048))
            image.load()
            return image

    return load


def fetch_debian(cache: Path) -> dict[str, Path]:
    """Download (if not cached) and unpack each package; return package -> its .deb file.

    `apt-get download` needs no root and installs nothing; `dpkg -x` only unpacks files.
    """
    cache.mkdir(parents=True, exist_ok=True)
    debs: dict[str, Path] = {}
    for package in (*DEBIAN_PHOTOS, GCOMPRIS_PACKAGE):
        found = sorted(cache.glob(f"{package}_*.deb"))
        if not found:
            subprocess.run(["apt-get", "download", package], cwd=cache, check=True,
                           stdout=subprocess.DEVNULL)
            found = sorted(cache.glob(f"{package}_*.deb"))
        debs[package] = found[-1]
        _unpack(found[-1], cache / "root" / package)
    return debs


def _unpack(deb: Path, root: Path) -> None:
    """`dpkg -x` into a temporary folder renamed at the end, so an interrupted run never leaves a
    half-unpacked tree that a later run would take as complete."""
    if root.exists():
        return
    partial = root.with_name(root.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    subprocess.run(["dpkg", "-x", str(deb), str(partial)], check=True)
    partial.rename(root)


def _deb_field(deb: Path, name: str) -> str:
    """One control field of a .deb (Package, Version)."""
    result = subprocess.run(["dpkg-deb", "-f", str(deb), name], check=True,
                            capture_output=True, text=True)
    return result.stdout.strip()


def _copyright_stanzas(text: str) -> list[dict[str, str]]:
    """Parse a DEP-5 copyright file into stanzas of the fields we record."""
    stanzas: list[dict[str, str]] = []
    for block in re.split(r"\n\s*\n", text):
        fields: dict[str, str] = {}
        for key in ("Files", "Copyright", "License"):
            # A field runs on over continuation lines that start with white space.
            match = re.search(rf"^{key}:(.*(?:\n[ \t].*)*)", block, re.MULTILINE)
            if match:
                fields[key] = " ".join(match.group(1).split())
        if "Files" in fields:
            stanzas.append(fields)
    return stanzas


def _pattern_matches(path: str, pattern: str) -> bool:
    """Match a DEP-5 `Files:` pattern by file name: packages keep their images under a different
    folder than their copyright file names (`16.04/x.jpg` installs as `usr/share/backgrounds/x.jpg`).
    """
    if pattern == "*":
        return True
    name_pattern = pattern.rsplit("/", 1)[-1]
    return name_pattern != "*" and fnmatch.fnmatch(Path(path).name, name_pattern)


def licence_of(copyright_text: str, path: str) -> tuple[str, str]:
    """(licence, copyright holder) of `path`; as in DEP-5, the last matching stanza wins."""
    licence, holder = "unknown", "unknown"
    for stanza in _copyright_stanzas(copyright_text):
        if any(_pattern_matches(path, pattern) for pattern in stanza["Files"].split()):
            licence = stanza.get("License", licence)
            holder = stanza.get("Copyright", holder)
    return licence, holder


def _webp_loader(bundle: Path, offset: int, length: int) -> Callable[[], Image.Image]:
    """Decode one WebP stored at `offset` inside a Qt resource bundle."""

    def load() -> Image.Image:
        with open(bundle, "rb") as f:
            f.seek(offset)
            data = f.read(length)
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            return image

    return load


def _bundle_photos(bundle: Path) -> list[tuple[int, int]]:
    """(offset, length) of every opaque WebP of at least GCOMPRIS_MIN_SIDE pixels in a .rcc file.

    The bundle format is not needed: a WebP is a RIFF chunk whose header gives its length, so the
    images are found by their signature and decoded from exactly their bytes.
    """
    data = bundle.read_bytes()
    found = []
    for match in re.finditer(rb"RIFF(....)WEBP", data, re.DOTALL):
        length = int.from_bytes(match.group(1), "little") + 8
        try:
            with Image.open(io.BytesIO(data[match.start():match.start() + length])) as image:
                opaque = image.mode == "RGB"
                big = min(image.size) >= GCOMPRIS_MIN_SIDE
        except (OSError, ValueError):
            continue
        if opaque and big:
            found.append((match.start(), length))
    return found


def gcompris_photos(root: Path, version: str, copyright_text: str) -> list[Photo]:
    """The photographs of the listed gcompris activities, each image once (activities share some)."""
    photos: list[Photo] = []
    seen: set[bytes] = set()
    for name in GCOMPRIS_BUNDLES:
        relative = f"usr/share/gcompris-qt/rcc/{name}.rcc"
        licence, holder = licence_of(copyright_text, relative)
        for offset, length in _bundle_photos(root / relative):
            loader = _webp_loader(root / relative, offset, length)
            fingerprint = loader().convert("RGB").resize((16, 16)).tobytes()
            if fingerprint in seen:
                continue
            seen.add(fingerprint)
            photos.append(Photo(
                id=f"debian:{GCOMPRIS_PACKAGE}:{relative}@{offset}", loader=loader,
                provenance={"source": "debian", "package": GCOMPRIS_PACKAGE, "version": version,
                            "file": f"/{relative} (WebP at byte {offset})", "licence": licence,
                            "copyright": holder}))
    return photos


def debian_photos(cache: Path) -> list[Photo]:
    """The curated Debian photographs, fetched into `cache` when missing."""
    photos: list[Photo] = []
    for package, deb in fetch_debian(cache).items():
        root = cache / "root" / package
        version = _deb_field(deb, "Version")
        copyright_file = root / "usr/share/doc" / package / "copyright"
        copyright_text = copyright_file.read_text(errors="replace") if copyright_file.exists() else ""
        if package == GCOMPRIS_PACKAGE:
            photos += gcompris_photos(root, version, copyright_text)
            continue
        for relative in DEBIAN_PHOTOS[package]:
            licence, holder = licence_of(copyright_text, relative)
            photos.append(Photo(
                id=f"debian:{package}:{relative}",
                loader=_file_loader(root / relative),
                provenance={"source": "debian", "package": package, "version": version,
                            "file": "/" + relative, "licence": licence, "copyright": holder},
            ))
    return photos


def dir_photos(folder: Path) -> list[Photo]:
    """Every image file under a user folder, sorted so the benchmark stays deterministic."""
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    return [
        Photo(id=f"dir:{folder.name}/{p.relative_to(folder).as_posix()}", loader=_file_loader(p),
              provenance={"source": "directory", "file": str(p), "licence": "unknown (user supplied)"})
        for p in files
    ]
