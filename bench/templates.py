"""Fixed frames that photos get pasted into: a web page, a phone app screen, a letterbox and a stock
watermark frame.

Each template is drawn from its own name alone, so every paste into "page" shares the same frame pixel
for pixel. That is the trap the benchmark measures: two DIFFERENT photos in the same frame match through
the frame (182 false pairs), while ONE photo pasted into a frame is a true copy of that photo. The
benchmark uses the same templates for both, so a method cannot pass by matching frames.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFont


@dataclass(frozen=True)
class Template:
    """A frame and the box (left, top, right, bottom) where the photo goes."""

    name: str
    frame: Image.Image
    slot: tuple[int, int, int, int]


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """Pillow's bundled scalable font: the same glyphs on every machine."""
    return ImageFont.load_default(size=max(8, size))


def _lines(draw: ImageDraw.ImageDraw, rng: np.random.Generator, box: tuple[int, int, int, int],
           height: int, fill: tuple[int, int, int]) -> None:
    """Grey bars standing for lines of text, of random lengths, filling a box."""
    left, top, right, bottom = box
    for y in range(top, bottom - height, height * 2):
        draw.rectangle((left, y, left + int((right - left) * rng.uniform(0.4, 1.0)), y + height), fill=fill)


def _page(rng: np.random.Generator) -> Template:
    """A news/blog page at 1280x960: header bar, nav, sidebar, article text, photo slot."""
    frame = Image.new("RGB", (1280, 960), (250, 250, 250))
    draw = ImageDraw.Draw(frame)
    draw.rectangle((0, 0, 1280, 70), fill=(24, 60, 120))
    draw.text((30, 18), "The Daily Pixel", font=_font(32), fill=(255, 255, 255))
    for i, word in enumerate(("World", "Tech", "Science", "Culture", "Sport")):
        draw.text((520 + i * 140, 26), word, font=_font(20), fill=(220, 230, 255))
    draw.rectangle((940, 100, 1250, 930), fill=(236, 238, 242))
    _lines(draw, rng, (960, 120, 1230, 920), 10, (170, 175, 185))
    draw.text((40, 95), "Local photographer wins award", font=_font(30), fill=(20, 20, 20))
    _lines(draw, rng, (40, 700, 900, 940), 10, (120, 120, 130))
    return Template("page", frame, (40, 150, 900, 680))


def _app(rng: np.random.Generator) -> Template:
    """A phone feed post at 720x1280: status bar, account row, square photo, action row, caption."""
    frame = Image.new("RGB", (720, 1280), (255, 255, 255))
    draw = ImageDraw.Draw(frame)
    draw.rectangle((0, 0, 720, 48), fill=(0, 0, 0))
    draw.text((20, 10), "09:41", font=_font(24), fill=(255, 255, 255))
    draw.rectangle((600, 16, 690, 34), outline=(255, 255, 255), width=2)
    draw.ellipse((20, 70, 90, 140), fill=(200, 80, 140))
    draw.text((110, 88), "travel.snaps", font=_font(28), fill=(10, 10, 10))
    for i in range(3):
        x = 30 + i * 90
        draw.ellipse((x, 900, x + 54, 954), outline=(30, 30, 30), width=4)
    draw.text((30, 980), "1,284 likes", font=_font(26), fill=(10, 10, 10))
    _lines(draw, rng, (30, 1030, 690, 1250), 12, (140, 140, 140))
    return Template("app", frame, (0, 160, 720, 880))


def _letterbox(rng: np.random.Generator) -> Template:
    """A 16:9 video frame at 1280x720 with black bars either side and a channel logo."""
    frame = Image.new("RGB", (1280, 720), (0, 0, 0))
    draw = ImageDraw.Draw(frame)
    draw.rounded_rectangle((1100, 640, 1260, 700), radius=12, fill=(200, 20, 20))
    draw.text((1118, 652), "TV 24", font=_font(32), fill=(255, 255, 255))
    return Template("letterbox", frame, (220, 0, 1060, 630))


def _watermark_frame(rng: np.random.Generator) -> Template:
    """A stock-photo preview at 1200x900: wide coloured border, site name and ID strip."""
    frame = Image.new("RGB", (1200, 900), (46, 52, 64))
    draw = ImageDraw.Draw(frame)
    draw.text((40, 20), "stockpix  PREVIEW", font=_font(36), fill=(235, 203, 139))
    draw.rectangle((0, 830, 1200, 900), fill=(30, 34, 42))
    draw.text((40, 845), "Image ID 0000000  -  licence required", font=_font(28), fill=(200, 200, 200))
    return Template("watermark_frame", frame, (80, 80, 1120, 810))


BUILDERS: dict[str, Callable[[np.random.Generator], Template]] = {
    "page": _page, "app": _app, "letterbox": _letterbox, "watermark_frame": _watermark_frame}


def template(name: str) -> Template:
    """The template called `name`, the same on every call (seeded by its name)."""
    return BUILDERS[name](np.random.default_rng(zlib.crc32(name.encode())))


def paste(image: Image.Image, name: str) -> Image.Image:
    """The photo scaled to cover the slot (centre crop, as feeds and players do) inside the frame."""
    chosen = template(name)
    left, top, right, bottom = chosen.slot
    w, h = right - left, bottom - top
    scale = max(w / image.width, h / image.height)
    resized = image.resize((max(w, round(image.width * scale)), max(h, round(image.height * scale))),
                           Image.Resampling.LANCZOS)
    x, y = (resized.width - w) // 2, (resized.height - h) // 2
    out = chosen.frame.copy()
    out.paste(resized.crop((x, y, x + w, y + h)), (left, top))
    return out
