"""Edited copies of real photos, made the way people edit them (Pillow only)."""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageDraw, ImageFont


def crop(src: Path, dest: Path, keep_area: float = 0.8) -> Path:
    """Centred crop keeping `keep_area` of the pixels (a 20 % crop keeps 0.8)."""
    img = Image.open(src)
    side = keep_area ** 0.5
    w, h = img.size
    dx, dy = w * (1 - side) / 2, h * (1 - side) / 2
    img.crop((round(dx), round(dy), round(w - dx), round(h - dy))).save(dest, quality=90)
    return dest


def caption(src: Path, dest: Path, text: str = "WHEN YOU SEE IT") -> Path:
    """A meme caption: a white band across the top with black text."""
    img = Image.open(src).convert("RGB")
    w, h = img.size
    draw = ImageDraw.Draw(img)
    draw.rectangle((0, 0, w, int(h * 0.12)), fill="white")
    draw.text((w * 0.05, h * 0.02), text, fill="black", font=ImageFont.load_default(size=max(12, h // 14)))
    img.save(dest, quality=90)
    return dest


def reencode(src: Path, dest: Path, quality: int = 40) -> Path:
    Image.open(src).convert("RGB").save(dest, quality=quality)
    return dest


def resize(src: Path, dest: Path, factor: float = 0.5) -> Path:
    img = Image.open(src)
    img.resize((round(img.width * factor), round(img.height * factor)), Image.Resampling.LANCZOS).save(dest, quality=90)
    return dest


def mirror(src: Path, dest: Path) -> Path:
    Image.open(src).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(dest, quality=90)
    return dest


def rotate90(src: Path, dest: Path) -> Path:
    Image.open(src).transpose(Image.Transpose.ROTATE_90).save(dest, quality=90)
    return dest
