"""Read and decode one image file, safely.

Every failure becomes a `DecodeError` with a short, stable reason code (shown in status, the API and
metrics) and a human detail. The bytes are read once: sha256 is taken from the same buffer Pillow decodes,
so a file that changes between hashing and decoding cannot produce a mismatched record.
"""

from __future__ import annotations

import errno
import hashlib
import io
import os
import stat
import warnings
from dataclasses import dataclass

from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from workers import defaults

try:  # HEIC/HEIF and AVIF; optional at import so a broken wheel does not take decoding down
    import pillow_heif

    pillow_heif.register_heif_opener()
    pillow_heif.register_avif_opener() if hasattr(pillow_heif, "register_avif_opener") else None
except ImportError:  # pragma: no cover - the dependency is declared; this only guards odd installs
    pass  # HEIC/AVIF files then fail to decode, each with its recorded reason

ImageFile.LOAD_TRUNCATED_IMAGES = False  # a truncated file is an error, not a grey half-picture
Image.MAX_IMAGE_PIXELS = None  # dupwatch enforces its own limit before decoding (DecodeError 'too-large')


class DecodeError(Exception):
    """A file that cannot become a verdict other than `error`. `reason` is a stable code."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass
class Decoded:
    """A decoded image, reduced for the model and hashes, with facts about the original file."""

    image: Image.Image  # RGB, upright (EXIF applied), short side >= the requested size when possible
    sha256: str
    pixel_sha: str  # digest of the decoded pixels: equal for a lossless re-save of the same picture
    width: int  # of the original, upright
    height: int
    format: str
    size: int


def read_file(path: str, max_bytes: int, *, follow_symlinks: bool = False) -> bytes:
    """Read a regular file without following a FIFO or device into a blocking read, nor (unless
    `follow_symlinks`) a symbolic link anywhere in `path`: a link renamed over a landed file, or over
    one of its folders, must never make dupwatch read a file outside the watched roots (docs/guarantees.md).
    O_NOFOLLOW refuses a link as the last component; the path the kernel actually opened, compared with
    the one asked for, catches a link among the folders (paths below a root are real: daemon.ingest.walk)."""
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags if follow_symlinks else flags | os.O_NOFOLLOW)
    except FileNotFoundError as exc:
        raise DecodeError("vanished", f"file disappeared before it was read ({exc.strerror})") from exc
    except PermissionError as exc:
        raise DecodeError("unreadable", f"permission denied ({exc.strerror})") from exc
    except IsADirectoryError as exc:
        raise DecodeError("not-a-file", "is a directory") from exc
    except OSError as exc:
        if exc.errno == errno.ELOOP and not follow_symlinks:
            raise DecodeError("symlink", "a symbolic link; not followed (follow_symlinks is off)") from exc
        raise DecodeError("unreadable", exc.strerror or str(exc)) from exc
    try:
        if not follow_symlinks:
            _check_opened(fd, path)
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            kind = "directory" if stat.S_ISDIR(st.st_mode) else "FIFO, socket or device"
            raise DecodeError("not-a-file", f"not a regular file ({kind})")
        if st.st_size == 0:
            raise DecodeError("empty", "zero-byte file")
        if st.st_size > max_bytes:
            raise DecodeError("too-large", f"{st.st_size} bytes > limit {max_bytes}")
        with os.fdopen(fd, "rb", closefd=True) as fh:
            fd = -1
            data = fh.read(max_bytes + 1)
    finally:
        if fd >= 0:
            os.close(fd)
    if not data:
        raise DecodeError("empty", "zero-byte file")
    return data


def _check_opened(fd: int, path: str) -> None:
    """Raise unless the open file is `path` itself, not a file reached through a linked folder."""
    try:
        opened = os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return  # no /proc (not Linux): O_NOFOLLOW alone guards the last component
    if opened == os.path.abspath(path):
        return
    if opened.endswith(" (deleted)"):
        raise DecodeError("vanished", "file disappeared while it was being read")
    raise DecodeError("symlink", "reached through a symbolic link to a folder; not followed "
                                 "(follow_symlinks is off)")


REDUCED_DECODE_FORMATS = frozenset({"JPEG"})
"""Formats Pillow can decode at a reduced size (JPEG's draft mode: 1/2 to 1/8 scale). Every other format
is decoded at full size first, 3-4 bytes a pixel, whatever size it is then reduced to."""


def check_pixels(fmt: str, w: int, h: int, *, max_pixels: int, max_full_pixels: int) -> None:
    """The size rule, applied from the header before any pixel is decoded, to files and uploads alike:
    over `max_pixels` is a decompression bomb in any format; over `max_full_pixels` is refused for a
    format decoded at full size, where a 12 KB PNG of 10,000 x 10,000 would take 300 MB."""
    if w * h > max_pixels:
        raise DecodeError("too-large", f"{w}x{h} pixels > limit {max_pixels} (decompression bomb?)")
    if fmt not in REDUCED_DECODE_FORMATS and w * h > max_full_pixels:
        raise DecodeError("too-large", f"{w}x{h} pixels > limit {max_full_pixels} for {fmt}, which is decoded "
                                       "at full size (decode.max_full_pixels)")


def check_header(data: bytes, *, max_pixels: int, max_full_pixels: int) -> None:
    """`check_pixels` on an image's header alone (uploads, before they queue for the decoder). Data that
    is not a recognised image passes: the decode that follows records why."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            fmt, (w, h) = img.format or "unknown", img.size
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError):
        return
    check_pixels(fmt, w, h, max_pixels=max_pixels, max_full_pixels=max_full_pixels)


def decode_bytes(data: bytes, *, size: int, max_pixels: int,
                 max_full_pixels: int = defaults.MAX_FULL_PIXELS) -> Decoded:
    """Decode `data` to an upright RGB image whose short side is about `size` (JPEG draft mode)."""
    sha = hashlib.sha256(data).hexdigest()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            fmt = img.format or "unknown"
            w, h = img.size
            check_pixels(fmt, w, h, max_pixels=max_pixels, max_full_pixels=max_full_pixels)
            if fmt in REDUCED_DECODE_FORMATS:
                img.draft("RGB", (size, size))  # decode at 1/2, 1/4 or 1/8 scale: far less work
            img.load()
            upright = ImageOps.exif_transpose(img) or img
    except DecodeError:
        raise
    except UnidentifiedImageError as exc:
        raise DecodeError("not-an-image", "not a recognised image format") from exc
    except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as exc:
        msg = str(exc)
        reason = "truncated" if "truncated" in msg or "end of file" in msg.lower() else "corrupt"
        raise DecodeError(reason, msg or type(exc).__name__) from exc
    rgb = to_rgb(upright)
    if min(rgb.size) > size * 2:  # draft mode only reduces by powers of two, and only JPEG
        scale = size / min(rgb.size)
        rgb = rgb.resize((max(1, round(rgb.width * scale)), max(1, round(rgb.height * scale))),
                         Image.Resampling.BILINEAR, reducing_gap=2.0)
    w, h = _upright_size(img, w, h)
    pixel_sha = hashlib.sha256(f"{rgb.size}".encode() + rgb.tobytes()).hexdigest()
    return Decoded(image=rgb, sha256=sha, pixel_sha=pixel_sha, width=w, height=h, format=fmt, size=len(data))


def decode_file(path: str, *, size: int, max_pixels: int, max_bytes: int, follow_symlinks: bool = False,
                max_full_pixels: int = defaults.MAX_FULL_PIXELS) -> Decoded:
    """read_file + decode_bytes: the one entry point workers use."""
    return decode_bytes(read_file(path, max_bytes, follow_symlinks=follow_symlinks), size=size,
                        max_pixels=max_pixels, max_full_pixels=max_full_pixels)


def to_rgb(img: Image.Image) -> Image.Image:
    """Any mode to RGB. Transparency is composited on white, so a logo on alpha looks like it does in a
    browser; 16-bit and float images are scaled down to 8 bits instead of clipped."""
    if img.mode == "RGB":
        return img
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        import numpy as np

        arr = np.asarray(img, dtype=np.float64)
        hi = float(arr.max()) or 1.0
        img = Image.fromarray((arr * (255.0 / max(hi, 255.0) if hi > 255 else 1.0)).clip(0, 255).astype("uint8"))
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


def _upright_size(img: Image.Image, w: int, h: int) -> tuple[int, int]:
    """The original (pre-draft) size, swapped when EXIF orientation rotates by 90 or 270 degrees."""
    orientation = img.getexif().get(0x0112, 1)
    return (h, w) if orientation in (5, 6, 7, 8) else (w, h)
