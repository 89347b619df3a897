"""DISC21-style edits, in Pillow and NumPy only.

AugLy is the reference implementation of these edits but does not install on current Pillow/NumPy
without patches; the edits below follow its families and parameter ranges closely enough for a
copy-detection benchmark, and they are deterministic given the generator passed in.

Every op takes (image, rng) and returns (new image, parameters); the parameters go into the manifest
so that a failure can be looked at and reproduced.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter, ImageFont

from bench import templates

Params = dict[str, Any]
Op = Callable[[Image.Image, np.random.Generator], tuple[Image.Image, Params]]

WORDS = ("when", "you", "finally", "monday", "nobody", "me", "cat", "lol", "weekend", "mood",
         "actually", "breaking", "news", "sale", "free", "best", "ever", "summer", "vibes", "trip")


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """Pillow's bundled scalable font: the same glyphs on every machine, so files are reproducible."""
    return ImageFont.load_default(size=max(8, size))


def _colour(rng: np.random.Generator) -> tuple[int, int, int]:
    return tuple(int(c) for c in rng.integers(0, 256, 3))  # type: ignore[return-value]


def _caption(rng: np.random.Generator, low: int = 1, high: int = 4) -> str:
    return " ".join(rng.choice(WORDS, int(rng.integers(low, high + 1))))


def _signed(rng: np.random.Generator, low: float, high: float) -> float:
    """A magnitude in [low, high] with a random sign (rotations, hue shifts)."""
    return float(rng.uniform(low, high) * rng.choice((-1, 1)))


# ---- identity / exact --------------------------------------------------------------------------

def reencode(image: Image.Image, rng: np.random.Generator) -> tuple[Image.Image, Params]:
    """Same pixels, saved again (the file bytes differ): the cheapest real-world copy."""
    return image.copy(), {}


# ---- mild -------------------------------------------------------------------------------------

def jpeg(image: Image.Image, rng: np.random.Generator, quality: int = 30) -> tuple[Image.Image, Params]:
    """Heavy JPEG compression, decoded again so later ops see the artefacts."""
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    buffer.seek(0)
    return Image.open(buffer).convert("RGB"), {"quality": quality}


def resize_half(image: Image.Image, rng: np.random.Generator) -> tuple[Image.Image, Params]:
    size = (max(1, image.width // 2), max(1, image.height // 2))
    return image.resize(size, Image.Resampling.BICUBIC), {"scale": 0.5}


def brightness(image: Image.Image, rng: np.random.Generator) -> tuple[Image.Image, Params]:
    factor = float(rng.choice((rng.uniform(0.45, 0.75), rng.uniform(1.3, 1.7))))
    return ImageEnhance.Brightness(image).enhance(factor), {"factor": round(factor, 3)}


def blur(image: Image.Image, rng: np.random.Generator) -> tuple[Image.Image, Params]:
    radius = float(rng.uniform(1.5, 4.0)) * max(image.size) / 1024
    return image.filter(ImageFilter.GaussianBlur(radius)), {"radius": round(radius, 2)}


# ---- geometric --------------------------------------------------------------------------------

def crop(image: Image.Image, rng: np.random.Generator) -> tuple[Image.Image, Params]:
    """Keep 50-80 % of the area, aspect ratio jittered, at a random position."""
    area = float(rng.uniform(0.5, 0.8))
    aspect = float(np.exp(rng.uniform(np.log(0.8), np.log(1.25))))
    w = min(image.width, round(image.width * np.sqrt(area * aspect)))
    h = min(image.height, round(image.height * area * image.width / w))
    left = int(rng.integers(0, image.width - w + 1))
    top = int(rng.integers(0, image.height - h + 1))
    box = (left, top, left + w, top + h)
    return image.crop(box), {"box": list(box), "area": round(w * h / (image.width * image.height), 3)}


def rotate(image: Image.Image, rng: np.random.Generator) -> tuple[Image.Image, Params]:
    angle = _signed(rng, 5, 30)
    rotated = image.rotate(angle, resample=Image.Resampling.BICUBIC, expand=True, fillcolor=(0, 0, 0))
    return rotated, {"degrees": round(angle, 2)}


def hflip(image: Image.Image, rng: np.random.Generator) -> tuple[Image.Image, Params]:
    return image.transpose(Image.Transpose.FLIP_LEFT_RIGHT), {}


def pad(image: Image.Image, rng: np.random.Generator) -> tuple[Image.Image, Params]:
    """Borders of 5-25 % per side in one solid colour."""
    fractions = rng.uniform(0.05, 0.25, 4)
    left, top, right, bottom = (int(f * s) for f, s in zip(fractions, (image.width, image.height) * 2))
    colour = _colour(rng)
    canvas = Image.new("RGB", (image.width + left + right, image.height + top + bottom), colour)
    canvas.paste(image, (left, top))
    return canvas, {"ltrb": [left, top, right, bottom], "colour": list(colour)}


def _perspective_coefficients(src: np.ndarray, dst: np.ndarray) -> list[float]:
    """Coefficients for Image.transform(PERSPECTIVE), which maps output points `dst` to input `src`."""
    rows = []
    for (x, y), (u, v) in zip(dst, src):
        rows.append([x, y, 1, 0, 0, 0, -u * x, -u * y])
        rows.append([0, 0, 0, x, y, 1, -v * x, -v * y])
    return np.linalg.solve(np.array(rows, float), src.reshape(8)).tolist()


def perspective(image: Image.Image, rng: np.random.Generator) -> tuple[Image.Image, Params]:
    """Move each corner inwards by up to 15 % of the side, as a photo of a screen or print."""
    w, h = image.size
    corners = np.array([[0, 0], [w, 0], [w, h], [0, h]], float)
    inward = np.array([[1, 1], [-1, 1], [-1, -1], [1, -1]], float)
    moved = corners + inward * rng.uniform(0, 0.15, (4, 2)) * (w, h)
    coefficients = _perspective_coefficients(corners, moved)
    warped = image.transform(image.size, Image.Transform.PERSPECTIVE, coefficients,
                             Image.Resampling.BICUBIC, fillcolor=(0, 0, 0))
    return warped, {"corners": np.round(moved).astype(int).tolist()}


# ---- overlay ----------------------------------------------------------------------------------

def text(image: Image.Image, rng: np.random.Generator) -> tuple[Image.Image, Params]:
    """A few words somewhere on the image, sometimes outlined."""
    out = image.copy()
    draw = ImageDraw.Draw(out)
    size = int(image.height * rng.uniform(0.06, 0.14))
    words = _caption(rng)
    xy = (int(rng.uniform(0, 0.5) * image.width), int(rng.uniform(0, 0.85) * image.height))
    stroke = int(rng.integers(0, 2)) * max(1, size // 15)
    font = _font(size)
    draw.text(xy, words, font=font, fill=_colour(rng), stroke_width=stroke, stroke_fill=(0, 0, 0))
    box = draw.textbbox(xy, words, font=font, stroke_width=stroke)  # where it landed: the bench's truth
    return out, {"text": words, "size": size, "xy": list(xy), "box": _clip_box(box, out.size)}


def _clip_box(box: tuple[float, ...], size: tuple[int, int]) -> list[int]:
    """A pixel box clipped to the image: what of an overlay is actually visible."""
    x0, y0, x1, y1 = (round(v) for v in box)
    return [max(0, x0), max(0, y0), min(size[0], x1), min(size[1], y1)]


def _draw_face(draw: ImageDraw.ImageDraw, box: tuple[int, int, int, int]) -> None:
    x0, y0, x1, y1 = box
    s = x1 - x0
    draw.ellipse(box, fill=(255, 204, 40), outline=(120, 80, 0), width=max(1, s // 30))
    for ex in (x0 + s * 0.3, x0 + s * 0.62):
        draw.ellipse((ex, y0 + s * 0.3, ex + s * 0.1, y0 + s * 0.45), fill=(60, 40, 0))
    draw.arc((x0 + s * 0.25, y0 + s * 0.35, x1 - s * 0.25, y1 - s * 0.2), 20, 160,
             fill=(60, 40, 0), width=max(1, s // 20))


def _draw_heart(draw: ImageDraw.ImageDraw, box: tuple[int, int, int, int]) -> None:
    x0, y0, x1, y1 = box
    s = x1 - x0
    draw.ellipse((x0, y0, x0 + s * 0.55, y0 + s * 0.55), fill=(230, 30, 60))
    draw.ellipse((x0 + s * 0.45, y0, x1, y0 + s * 0.55), fill=(230, 30, 60))
    draw.polygon([(x0 + s * 0.03, y0 + s * 0.4), (x1 - s * 0.03, y0 + s * 0.4), (x0 + s * 0.5, y1)],
                 fill=(230, 30, 60))


def _draw_star(draw: ImageDraw.ImageDraw, box: tuple[int, int, int, int]) -> None:
    x0, y0, x1, _ = box
    r = (x1 - x0) / 2
    cx, cy = x0 + r, y0 + r
    angles = np.pi / 2 + np.arange(10) * np.pi / 5
    radii = np.where(np.arange(10) % 2 == 0, r, r * 0.45)
    points = [(cx + q * np.cos(a), cy - q * np.sin(a)) for a, q in zip(angles, radii)]
    draw.polygon(points, fill=(255, 215, 0), outline=(150, 100, 0))


_SHAPES = {"face": _draw_face, "heart": _draw_heart, "star": _draw_star}


def emoji(image: Image.Image, rng: np.random.Generator) -> tuple[Image.Image, Params]:
    """One to four emoji-like stickers, 10-25 % of the short side each."""
    out = image.copy()
    draw = ImageDraw.Draw(out)
    placed = []
    for _ in range(int(rng.integers(1, 5))):
        kind = str(rng.choice(list(_SHAPES)))
        s = int(min(image.size) * rng.uniform(0.10, 0.25))
        x, y = int(rng.integers(0, image.width - s + 1)), int(rng.integers(0, image.height - s + 1))
        _SHAPES[kind](draw, (x, y, x + s, y + s))
        placed.append({"shape": kind, "box": [x, y, x + s, y + s]})
    return out, {"stickers": placed}


def _centered_text(draw: ImageDraw.ImageDraw, box: tuple[int, int, int, int], words: str,
                   font: ImageFont.FreeTypeFont | ImageFont.ImageFont, fill: tuple[int, int, int]) -> None:
    left, top, right, bottom = draw.textbbox((0, 0), words, font=font)
    x = box[0] + (box[2] - box[0] - (right - left)) // 2
    y = box[1] + (box[3] - box[1] - (bottom - top)) // 2 - top
    draw.text((x, y), words, font=font, fill=fill)


def meme(image: Image.Image, rng: np.random.Generator) -> tuple[Image.Image, Params]:
    """A white caption band added on top, bottom or both, as meme generators do."""
    where = str(rng.choice(("top", "bottom", "both")))
    band = int(image.height * rng.uniform(0.15, 0.25))
    top, bottom = (band if where in ("top", "both") else 0), (band if where in ("bottom", "both") else 0)
    canvas = Image.new("RGB", (image.width, image.height + top + bottom), "white")
    canvas.paste(image, (0, top))
    draw = ImageDraw.Draw(canvas)
    font = _font(int(band * 0.45))
    captions = []
    for y0, height in ((0, top), (top + image.height, bottom)):
        if height:
            words = _caption(rng, 2, 4)
            _centered_text(draw, (0, y0, image.width, y0 + height), words, font, (0, 0, 0))
            captions.append(words)
    bands = [[0, y0, image.width, y0 + height] for y0, height in ((0, top), (top + image.height, bottom)) if height]
    return canvas, {"where": where, "band": band, "captions": captions, "bands": bands}


def watermark(image: Image.Image, rng: np.random.Generator) -> tuple[Image.Image, Params]:
    """Semi-transparent text tiled diagonally over the whole image, as stock sites do."""
    words = str(rng.choice(("SAMPLE", "PREVIEW", "© stock", "dupwatch", "COPYRIGHT")))
    alpha = int(rng.uniform(0.25, 0.5) * 255)
    size = int(min(image.size) * rng.uniform(0.06, 0.12))
    layer = Image.new("RGBA", (image.width * 2, image.height * 2), (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    step = size * 4
    for y in range(0, layer.height, step):
        for x in range((y // step % 2) * step // 2, layer.width, step * 2):
            draw.text((x, y), words, font=_font(size), fill=(255, 255, 255, alpha))
    layer = layer.rotate(30, resample=Image.Resampling.BICUBIC)
    layer = layer.crop((image.width // 2, image.height // 2, image.width * 3 // 2, image.height * 3 // 2))
    out = Image.alpha_composite(image.convert("RGBA"), layer).convert("RGB")
    return out, {"text": words, "alpha": alpha, "size": size}


def screenshot(image: Image.Image, rng: np.random.Generator) -> tuple[Image.Image, Params]:
    """The photo pasted at 35-70 % of the width of a larger 'app window' with bars and text lines."""
    canvas_w = int(image.width / rng.uniform(0.35, 0.7))
    scale = image.width / canvas_w
    canvas_h = int(max(image.height / rng.uniform(0.5, 0.85), canvas_w * 0.6))
    background = tuple(int(v) for v in rng.integers(225, 256, 3))
    canvas = Image.new("RGB", (canvas_w, canvas_h), background)
    draw = ImageDraw.Draw(canvas)
    bar = int(canvas_h * 0.06)
    draw.rectangle((0, 0, canvas_w, bar), fill=_colour(rng))
    left = int(rng.integers(int(canvas_w * 0.02), canvas_w - image.width + 1))
    top = int(rng.integers(bar, canvas_h - image.height + 1))
    line_h = max(4, bar // 3)
    for y in range(bar + line_h, canvas_h - line_h, line_h * 2):
        length = int(canvas_w * rng.uniform(0.3, 0.95))
        draw.rectangle((int(canvas_w * 0.02), y, length, y + line_h // 2), fill=(120, 120, 130))
    canvas.paste(image, (left, top))
    return canvas, {"canvas": [canvas_w, canvas_h], "photo_scale": round(scale, 3), "at": [left, top]}


def template_paste(image: Image.Image, rng: np.random.Generator) -> tuple[Image.Image, Params]:
    """The photo pasted into one of the fixed frames of bench/templates.py: a true copy, in the very
    frames the distractors use for DIFFERENT photos (so matching the frame scores nothing)."""
    name = str(rng.choice(list(templates.BUILDERS)))
    return templates.paste(image, name), {"template": name}


# ---- colour -----------------------------------------------------------------------------------

def grayscale(image: Image.Image, rng: np.random.Generator) -> tuple[Image.Image, Params]:
    return image.convert("L").convert("RGB"), {}


def hue(image: Image.Image, rng: np.random.Generator) -> tuple[Image.Image, Params]:
    """Rotate hue by 30-180 degrees in HSV."""
    shift = _signed(rng, 30, 180)
    h, s, v = image.convert("HSV").split()
    offset = round(shift / 360 * 256)
    h = h.point(lambda value: (value + offset) % 256)
    return Image.merge("HSV", (h, s, v)).convert("RGB"), {"degrees": round(shift, 1)}


def saturation(image: Image.Image, rng: np.random.Generator) -> tuple[Image.Image, Params]:
    factor = float(rng.choice((rng.uniform(0.1, 0.5), rng.uniform(1.6, 2.5))))
    return ImageEnhance.Color(image).enhance(factor), {"factor": round(factor, 3)}


FAMILIES: dict[str, dict[str, Op]] = {
    "exact": {"reencode": reencode},
    "mild": {"jpeg30": jpeg, "resize0.5": resize_half, "brightness": brightness, "blur": blur},
    "geometric": {"crop": crop, "rotate": rotate, "hflip": hflip, "pad": pad, "perspective": perspective},
    "overlay": {"text": text, "emoji": emoji, "meme": meme, "watermark": watermark,
                "screenshot": screenshot, "template": template_paste},
    "colour": {"grayscale": grayscale, "hue": hue, "saturation": saturation},
}
# Families a combo draws from: an exact re-save adds nothing to a combo.
COMBO_FAMILIES = ("mild", "geometric", "overlay", "colour")


FAMILIES_BY_OP: dict[str, Op] = {name: op for ops in FAMILIES.values() for name, op in ops.items()}
