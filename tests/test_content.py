"""The picture-in-frame box: found where the picture is, and computed as the Pillow version did."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageFilter

from workers import content


def test_opening_equals_pillows_rank_filters():
    """The numpy opening must give Pillow's MinFilter/MaxFilter result exactly, edges included: boxes (and
    so the stored inner vectors) may not move when the implementation changes."""
    rng = np.random.default_rng(7)
    for trial in range(200):
        h, w = (int(v) for v in rng.integers(16, 129, size=2))
        mask = rng.random((h, w)) < rng.uniform(0.05, 0.95)
        if trial % 2:  # a solid block touching an edge, with strokes around it
            mask[:] = rng.random((h, w)) < 0.03
            mask[: h // 2, int(rng.integers(0, w // 2)):] = True
        pillow = Image.fromarray(mask.astype(np.uint8) * 255)
        pillow = pillow.filter(ImageFilter.MinFilter(content.OPENING)).filter(ImageFilter.MaxFilter(content.OPENING))
        ours = content._rank(content._rank(mask, np.logical_and), np.logical_or)
        assert np.array_equal(np.asarray(pillow) > 0, ours), trial


def test_a_photo_in_a_screenshot_frame_is_boxed(photos):
    photo = Image.open(photos["astronaut"]).convert("RGB").resize((300, 300))
    frame = Image.new("RGB", (480, 640), (245, 245, 245))
    frame.paste(Image.new("RGB", (480, 60), (30, 90, 200)), (0, 0))  # an app bar
    frame.paste(photo, (90, 150))
    box = content.picture_box(frame)
    assert box is not None
    expected = (90 / 480, 150 / 640, 390 / 480, 450 / 640)
    assert np.allclose(box, expected, atol=0.03), (box, expected)
    assert content.picture_box(photo) is None  # a photo alone has no frame
