"""Five frames that pictures are shown in, drawn in code: a social-app post, a chat screenshot with a
phone status bar, a browser window, meme caption bands and a 2 x 2 collage.

Each is drawn from its name alone (seeded by it), so every picture placed in "chat" shares the same
frame pixel for pixel: two different pictures in one frame agree on everything but the pictures, which
is the trap the frames benchmark (bench/frames.py) measures. The frames cover most of each file (over
80 % for the phone ones), as real screenshots do.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFont

Box = tuple[int, int, int, int]


@dataclass(frozen=True)
class Frame:
    """A frame and the boxes (left, top, right, bottom, pixels) its pictures go into."""

    name: str
    image: Image.Image
    slots: tuple[Box, ...]


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=max(8, size))


def _text_lines(draw: ImageDraw.ImageDraw, rng: np.random.Generator, box: Box, height: int,
                fill: tuple[int, int, int]) -> None:
    """Rows of short words (drawn glyphs, not bars) filling a box, as a page of text looks."""
    words = ("the", "photo", "from", "our", "trip", "last", "week", "so", "good", "look", "at", "this", "view",
             "and", "then", "we", "went", "to", "see", "it", "again", "wow", "love", "news", "today")
    left, top, right, bottom = box
    font = _font(height)
    for y in range(top, bottom - height, int(height * 1.6)):
        line = " ".join(rng.choice(words, int(rng.integers(4, 12))))
        while draw.textlength(line, font=font) > right - left and " " in line:
            line = line.rsplit(" ", 1)[0]
        draw.text((left, y), line, font=font, fill=fill)


def _status_bar(draw: ImageDraw.ImageDraw, width: int, dark: bool) -> None:
    """A phone status bar: clock, signal bars, battery."""
    ink = (255, 255, 255) if dark else (20, 20, 20)
    draw.rectangle((0, 0, width, 44), fill=(0, 0, 0) if dark else (246, 246, 246))
    draw.text((24, 10), "9:41", font=_font(22), fill=ink)
    for i in range(4):
        draw.rectangle((width - 150 + i * 9, 28 - i * 5, width - 144 + i * 9, 32), fill=ink)
    draw.rounded_rectangle((width - 90, 14, width - 44, 32), radius=4, outline=ink, width=2)
    draw.rectangle((width - 87, 17, width - 60, 29), fill=ink)


def _social(rng: np.random.Generator) -> Frame:
    """A social-app post on a phone, 720 x 1280: status bar, app bar, account row, the picture, action row,
    likes and a caption; the picture is under a fifth of the file."""
    frame = Image.new("RGB", (720, 1280), (255, 255, 255))
    draw = ImageDraw.Draw(frame)
    _status_bar(draw, 720, dark=False)
    draw.rectangle((0, 44, 720, 110), fill=(250, 250, 250))
    draw.text((24, 58), "Pictogram", font=_font(34), fill=(20, 20, 20))
    draw.line((0, 110, 720, 110), fill=(219, 219, 219), width=2)
    draw.ellipse((24, 130, 88, 194), fill=(225, 48, 108))
    draw.text((104, 146), "wander.lens", font=_font(26), fill=(20, 20, 20))
    draw.text((640, 140), "...", font=_font(34), fill=(20, 20, 20))
    for i in range(3):
        draw.ellipse((30 + i * 80, 760, 80 + i * 80, 810), outline=(30, 30, 30), width=4)
    draw.text((30, 830), "2,318 likes", font=_font(26), fill=(20, 20, 20))
    _text_lines(draw, rng, (30, 880, 690, 1180), 22, (60, 60, 60))
    draw.rectangle((0, 1196, 720, 1280), fill=(250, 250, 250))
    for i in range(5):
        draw.rectangle((60 + i * 140, 1224, 100 + i * 140, 1256), outline=(30, 30, 30), width=3)
    return Frame("social", frame, ((60, 214, 660, 740),))


def _chat(rng: np.random.Generator) -> Frame:
    """A messenger screenshot, 720 x 1280: dark status bar, chat header, text bubbles on both sides, one
    picture sent as a bubble, the input bar."""
    frame = Image.new("RGB", (720, 1280), (229, 221, 213))
    draw = ImageDraw.Draw(frame)
    _status_bar(draw, 720, dark=True)
    draw.rectangle((0, 44, 720, 130), fill=(7, 94, 84))
    draw.ellipse((70, 58, 126, 114), fill=(180, 200, 210))
    draw.text((144, 62), "Sam", font=_font(30), fill=(255, 255, 255))
    draw.text((144, 96), "online", font=_font(18), fill=(200, 230, 225))
    bubbles = [(20, 160, 420, 230, (255, 255, 255)), (300, 250, 700, 320, (220, 248, 198)),
               (20, 340, 500, 410, (255, 255, 255)), (240, 1000, 700, 1070, (220, 248, 198)),
               (20, 1090, 380, 1160, (255, 255, 255))]
    for x0, y0, x1, y1, fill in bubbles:
        draw.rounded_rectangle((x0, y0, x1, y1), radius=14, fill=fill)
        _text_lines(draw, rng, (x0 + 16, y0 + 14, x1 - 16, y1), 20, (40, 40, 40))
    draw.rounded_rectangle((250, 430, 700, 980), radius=14, fill=(220, 248, 198))
    draw.text((600, 948), "10:02", font=_font(18), fill=(100, 120, 100))
    draw.rectangle((0, 1180, 720, 1280), fill=(240, 240, 240))
    draw.rounded_rectangle((16, 1196, 600, 1262), radius=30, fill=(255, 255, 255))
    draw.text((50, 1214), "Message", font=_font(24), fill=(150, 150, 150))
    draw.ellipse((616, 1196, 682, 1262), fill=(0, 168, 132))
    return Frame("chat", frame, ((262, 442, 688, 940),))


def _browser(rng: np.random.Generator) -> Frame:
    """A desktop browser window, 1280 x 900: tab strip, address bar, bookmarks, a site header, an article
    column with the picture and a sidebar of links."""
    frame = Image.new("RGB", (1280, 900), (255, 255, 255))
    draw = ImageDraw.Draw(frame)
    draw.rectangle((0, 0, 1280, 40), fill=(222, 225, 230))
    for i in range(3):
        draw.rounded_rectangle((12 + i * 230, 6, 232 + i * 230, 40), radius=8,
                               fill=(255, 255, 255) if i == 0 else (205, 208, 214))
        draw.text((30 + i * 230, 14), ("Photo of the day", "Mail", "Maps")[i], font=_font(16), fill=(40, 40, 40))
    draw.rectangle((0, 40, 1280, 86), fill=(255, 255, 255))
    draw.rounded_rectangle((120, 48, 1160, 80), radius=16, fill=(241, 243, 244))
    draw.text((140, 55), "https://www.example-gallery.org/photo-of-the-day", font=_font(18), fill=(60, 60, 60))
    for i, x in enumerate((20, 50, 80)):
        draw.ellipse((x, 56, x + 16, 72), outline=(90, 90, 90), width=2)
    draw.rectangle((0, 86, 1280, 116), fill=(248, 249, 250))
    for i in range(6):
        draw.text((20 + i * 150, 92), f"Bookmark {i + 1}", font=_font(15), fill=(80, 80, 80))
    draw.rectangle((0, 116, 1280, 180), fill=(33, 37, 41))
    draw.text((40, 130), "EXAMPLE GALLERY", font=_font(30), fill=(255, 255, 255))
    draw.text((60, 196), "Photo of the day", font=_font(30), fill=(20, 20, 20))
    _text_lines(draw, rng, (60, 720, 860, 890), 18, (70, 70, 70))
    draw.rectangle((900, 196, 1250, 880), fill=(245, 246, 248))
    _text_lines(draw, rng, (920, 220, 1230, 860), 18, (26, 115, 232))
    return Frame("browser", frame, ((60, 250, 860, 700),))


def _meme(rng: np.random.Generator) -> Frame:
    """Meme caption bands, 800 x 900: a white band above and below the picture, each with the template's
    caption in bold capitals."""
    frame = Image.new("RGB", (800, 900), (255, 255, 255))
    draw = ImageDraw.Draw(frame)
    for y, words in ((20, "WHEN THE WEEKEND FINALLY"), (790, "ARRIVES AND IT RAINS")):
        font = _font(54)
        width = draw.textlength(words, font=font)
        draw.text(((800 - width) / 2, y), words, font=font, fill=(0, 0, 0), stroke_width=1, stroke_fill=(0, 0, 0))
    return Frame("meme", frame, ((0, 110, 800, 770),))


def _collage(rng: np.random.Generator) -> Frame:
    """A 2 x 2 collage, 1000 x 1000, pictures on a white card with 16 px gutters and a title strip."""
    frame = Image.new("RGB", (1000, 1060), (255, 255, 255))
    draw = ImageDraw.Draw(frame)
    draw.text((24, 1010), "summer 2026 - best of", font=_font(28), fill=(60, 60, 60))
    g, side = 16, (1000 - 3 * 16) // 2
    slots = tuple((g + i * (side + g), g + j * (side + g), g + i * (side + g) + side, g + j * (side + g) + side)
                  for j in range(2) for i in range(2))
    return Frame("collage", frame, slots)


BUILDERS: dict[str, Callable[[np.random.Generator], Frame]] = {
    "social": _social, "chat": _chat, "browser": _browser, "meme": _meme, "collage": _collage}


def frame(name: str) -> Frame:
    """The frame called `name`, the same on every call."""
    return BUILDERS[name](np.random.default_rng(zlib.crc32(name.encode())))


def cover(picture: Image.Image, box: Box) -> Image.Image:
    """The picture scaled to cover the box and centre-cropped to it, as feeds and players show pictures."""
    w, h = box[2] - box[0], box[3] - box[1]
    scale = max(w / picture.width, h / picture.height)
    resized = picture.resize((max(w, round(picture.width * scale)), max(h, round(picture.height * scale))),
                             Image.Resampling.LANCZOS)
    x, y = (resized.width - w) // 2, (resized.height - h) // 2
    return resized.crop((x, y, x + w, y + h))


def place(name: str, pictures: list[Image.Image]) -> Image.Image:
    """The frame with one picture per slot (a collage takes four)."""
    chosen = frame(name)
    if len(pictures) != len(chosen.slots):
        raise ValueError(f"{name} takes {len(chosen.slots)} pictures, got {len(pictures)}")
    out = chosen.image.copy()
    for picture, box in zip(pictures, chosen.slots, strict=True):
        out.paste(cover(picture, box), box[:2])
    return out
