"""The picture-in-frame box: found where the picture is."""

from __future__ import annotations

import numpy as np
from PIL import Image

from workers import content


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
