"""Hard negatives for the edited-copy benchmark: images that are NOT copies of each other but look
alike to a perceptual hash (or to a learned descriptor).

A benchmark of varied photos only is easy: the hash rule once scored 0.99 precision on 13 such
distractors and 0.91 once star fields, synthetic wallpapers and screenshot templates were added.
Each generator below draws a fresh image of one such kind from its generator, so two
calls give two different images of the same kind (two star fields, two gradients...), which is what
trips a hash. The photo-based kinds (templates, same-scene tiles, bursts) live in bench/dataset.py,
since they need the real photos.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from bench.edits import _font

Generator = Callable[[np.random.Generator, tuple[int, int]], Image.Image]

LOREM = ("the", "of", "and", "to", "in", "is", "that", "for", "it", "as", "was", "with", "be", "by", "on",
         "not", "he", "this", "are", "or", "his", "from", "at", "which", "but", "have", "an", "they",
         "you", "were", "her", "she", "there", "been", "one", "all", "we", "their", "has", "would", "when",
         "if", "so", "no", "will", "more", "report", "figure", "table", "section", "results", "method",
         "data", "value", "system", "model", "process", "time", "level")


def _size(rng: np.random.Generator, size: tuple[int, int]) -> tuple[int, int]:
    """Jitter the nominal size by up to 20 % per side, so kinds are not told apart by shape alone."""
    return tuple(int(s * rng.uniform(0.8, 1.2)) for s in size)  # type: ignore[return-value]


def star_field(rng: np.random.Generator, size: tuple[int, int]) -> Image.Image:
    """Black sky, a few hundred stars with a power-law brightness, blurred as a seeing disc; sometimes
    a faint nebula glow. Different fields share almost all of their low frequencies (black)."""
    w, h = _size(rng, size)
    sky = rng.normal(6, 2, (h, w)).clip(0, None)
    n = int(rng.integers(150, 1200))
    ys, xs = rng.integers(0, h, n), rng.integers(0, w, n)
    sky[ys, xs] += 40 * rng.pareto(1.5, n).clip(0, 8) + 30
    if rng.random() < 0.5:
        cy, cx, r = rng.uniform(0.2, 0.8) * h, rng.uniform(0.2, 0.8) * w, rng.uniform(0.1, 0.35) * min(w, h)
        yy, xx = np.mgrid[0:h, 0:w]
        sky += 35 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r))
    tint = rng.uniform(0.8, 1.1, 3)
    rgb = np.clip(sky[..., None] * tint, 0, 255).astype(np.uint8)
    return Image.fromarray(rgb).filter(ImageFilter.GaussianBlur(float(rng.uniform(0.5, 1.3))))


def gradient(rng: np.random.Generator, size: tuple[int, int]) -> Image.Image:
    """A linear or radial blend of two or three colours, as default desktop wallpapers are."""
    w, h = _size(rng, size)
    yy, xx = np.mgrid[0:h, 0:w] / max(w, h)
    if rng.random() < 0.5:
        angle = rng.uniform(0, 2 * np.pi)
        t = xx * np.cos(angle) + yy * np.sin(angle)
    else:
        t = np.hypot(xx - rng.uniform(0, w / max(w, h)), yy - rng.uniform(0, h / max(w, h)))
    t = (t - t.min()) / max(1e-6, float(np.ptp(t)))
    stops = rng.integers(0, 256, (int(rng.integers(2, 4)), 3)).astype(float)
    positions = np.linspace(0, 1, len(stops))
    rgb = np.stack([np.interp(t, positions, stops[:, c]) for c in range(3)], axis=-1)
    return Image.fromarray(rgb.astype(np.uint8))


def wallpaper(rng: np.random.Generator, size: tuple[int, int]) -> Image.Image:
    """A gradient with soft bokeh discs or smooth waves over it: abstract, low-detail, alike."""
    base = gradient(rng, size)
    w, h = base.size
    layer = Image.new("RGBA", base.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    if rng.random() < 0.5:
        for _ in range(int(rng.integers(8, 40))):
            r = int(rng.uniform(0.02, 0.12) * max(w, h))
            x, y = int(rng.integers(0, w)), int(rng.integers(0, h))
            colour = tuple(int(c) for c in rng.integers(150, 256, 3)) + (int(rng.integers(30, 110)),)
            draw.ellipse((x - r, y - r, x + r, y + r), fill=colour)
        layer = layer.filter(ImageFilter.GaussianBlur(max(w, h) / 150))
    else:
        for k in range(int(rng.integers(3, 8))):
            phase, amp = rng.uniform(0, 2 * np.pi), rng.uniform(0.03, 0.12) * h
            base_y = (k + 1) * h / 9 + rng.uniform(-0.05, 0.05) * h
            xs = np.linspace(0, w, 64)
            ys = base_y + amp * np.sin(xs / w * 2 * np.pi * rng.uniform(0.5, 2) + phase)
            colour = tuple(int(c) for c in rng.integers(0, 256, 3)) + (int(rng.integers(40, 120)),)
            draw.polygon([*zip(xs, ys), (w, h), (0, h)], fill=colour)
    return Image.alpha_composite(base.convert("RGBA"), layer).convert("RGB")


def texture(rng: np.random.Generator, size: tuple[int, int]) -> Image.Image:
    """Fractal noise (sum of upsampled random octaves), optionally stretched into grain or
    stripes: fabric, sand, wood, concrete. Every draw is a different texture of similar statistics."""
    w, h = _size(rng, size)
    field = np.zeros((h, w))
    for octave in range(int(rng.integers(3, 7))):
        cells = 2 ** (octave + 2)
        stretch = rng.choice((1, 1, 4))
        small = rng.normal(0, 1, (max(1, cells // stretch), cells))
        up = Image.fromarray(small.astype(np.float32), mode="F").resize((w, h), Image.Resampling.BICUBIC)
        field += np.asarray(up) / (1.6 ** octave)
    field = (field - field.min()) / max(1e-6, float(np.ptp(field)))
    dark, light = rng.integers(0, 128, 3), rng.integers(128, 256, 3)
    rgb = dark + field[..., None] * (light - dark)
    return Image.fromarray(rgb.astype(np.uint8))


def document(rng: np.random.Generator, size: tuple[int, int]) -> Image.Image:
    """A text page: title, paragraphs of random words, sometimes a table rule. Pages share their
    layout (white, grey lines) and differ only in the words, which a hash barely sees."""
    w, h = _size(rng, (int(size[1] * 0.75), size[1]))
    page = Image.new("RGB", (w, h), tuple(int(v) for v in rng.integers(240, 256, 3)))
    draw = ImageDraw.Draw(page)
    margin, line = int(w * 0.08), max(10, int(h * rng.uniform(0.018, 0.028)))
    title = " ".join(rng.choice(LOREM, int(rng.integers(2, 6)))).title()
    draw.text((margin, margin), title, font=_font(int(line * 1.8)), fill=(20, 20, 20))
    y, font = margin + int(line * 3.5), _font(line)
    while y < h - margin - line:
        if rng.random() < 0.08:
            y += line
            continue
        words, x = [], margin
        text = ""
        while True:
            word = str(rng.choice(LOREM))
            candidate = (text + " " + word).strip()
            if draw.textlength(candidate, font=font) > w - 2 * margin - x + margin:
                break
            text = candidate
            words.append(word)
        draw.text((margin, y), text, font=font, fill=(40, 40, 40))
        y += int(line * 1.5)
    return page


SYNTHETIC: dict[str, Generator] = {
    "starfield": star_field,
    "gradient": gradient,
    "wallpaper": wallpaper,
    "texture": texture,
    "document": document,
}
