"""The review page in a real browser: Debian's headless Chromium driven by Playwright, against a real
`dupwatch run` with a token (the page gets it from the URL fragment, as a user would open it)."""

from __future__ import annotations

import json
import re
import sqlite3
from pathlib import Path
from typing import TYPE_CHECKING

import imaging
import numpy as np
import pytest
from PIL import Image
from test_api import start_api

if TYPE_CHECKING:
    from playwright.sync_api import FloatRect

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(),
                                reason="needs Debian's Chromium: apt-get install -y chromium chromium-driver")


def test_review_page_shows_a_known_match_and_marks_it(tmp_path: Path, services: list, photos) -> None:
    from playwright.sync_api import expect, sync_playwright

    token = "review-token"
    running = start_api(tmp_path, ["--hash-only"], token=token)
    services.append(running.service)
    edits = tmp_path / "edits"
    edits.mkdir()
    original = running.land(photos["coffee"], "coffee.jpg")
    copy = running.land(imaging.caption(photos["coffee"], edits / "meme.jpg"), "coffee-meme.jpg")
    running.land(photos["chelsea"], "cat.jpg")  # a `new` verdict: must not be listed
    copy_id, original_id = running.id_of(copy), running.id_of(original)
    screenshot = tmp_path / "review.png"

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS)
        page = browser.new_page(viewport={"width": 1100, "height": 700})
        page.goto(f"{running.url}/#token={token}")
        card = page.locator(f'article.match[data-file="{copy_id}"]')
        expect(card).to_be_visible()
        expect(page.locator("article.match")).to_have_count(1)
        expect(card.locator(".kind")).to_have_text("edited-copy")
        expect(card.locator("figure.new .path")).to_have_text(str(copy))
        expect(card.locator("figure.earlier .path")).to_have_text(str(original))
        assert card.get_attribute("data-match") == str(original_id)
        assert 90 <= int(card.locator(".score").inner_text()) <= 100
        for side in ("new", "earlier"):  # both thumbnails fetched with the token and decoded
            img = card.locator(f"figure.{side} img")
            expect(img).to_have_attribute("src", re.compile(r"^blob:"))
            page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=img.element_handle())
        assert "#token" not in page.url  # the page drops the token from the address bar
        page.screenshot(path=str(screenshot), full_page=True)
        print(f"review page screenshot: {screenshot}")

        page.select_option("#kind", "exact-copy")
        expect(page.locator("article.match")).to_have_count(0)
        expect(page.locator("#status")).to_have_text("No matches.")
        page.select_option("#kind", "edited-copy")
        expect(card).to_be_visible()
        card.locator("button.dismiss").click()
        expect(card.locator("button.dismiss")).to_have_text("Marked: not a duplicate")
        page.click("#refresh")
        expect(page.locator("article.match")).to_have_count(0)
        browser.close()

    with running.client() as c:
        assert c.get(f"/api/v1/files/{copy_id}").json()["not_duplicate_of"] == [original_id]
    assert screenshot.stat().st_size > 10_000
    assert running.service.stop() == 0


def _colour_share(shot: Image.Image, points: list[tuple[float, float]], rgb: tuple[int, int, int]) -> float:
    """Share of screenshot points within a small neighbourhood of which the given colour is drawn."""
    pixels = np.asarray(shot.convert("RGB")).astype(int)
    hits = 0
    for x, y in points:
        x, y = round(x), round(y)
        patch = pixels[max(0, y - 3):y + 4, max(0, x - 3):x + 4]
        hits += bool((np.abs(patch - rgb).sum(axis=2) < 60).any())
    return hits / len(points)


def _outline(box: FloatRect, rect: list[float], n: int = 24) -> list[tuple[float, float]]:
    """Points along the edges of `rect` (normalised 0-1) placed on an element's bounding `box`."""
    x0, y0 = box["x"] + rect[0] * box["width"], box["y"] + rect[1] * box["height"]
    x1, y1 = box["x"] + rect[2] * box["width"], box["y"] + rect[3] * box["height"]
    t = np.linspace(0.1, 0.9, n)
    return ([(x0 + (x1 - x0) * s, y0) for s in t] + [(x0 + (x1 - x0) * s, y1) for s in t]
            + [(x0, y0 + (y1 - y0) * s) for s in t] + [(x1, y0 + (y1 - y0) * s) for s in t])


def test_review_page_draws_the_crop_box_and_the_altered_outline(tmp_path: Path, services: list, photos) -> None:
    """A crop-and-caption copy: the crop box on the original, the caption outlined on the copy, both
    where the alignment (workers.image.align, on the real files) puts them, checked on the screenshot."""
    from playwright.sync_api import expect, sync_playwright

    from daemon.state import StateDir
    from workers.image.align import align_files

    token = "review-token"
    running = start_api(tmp_path, ["--model-name", "none"], token=token)  # SSCD: hashes alone miss crop+caption
    services.append(running.service)
    edits = tmp_path / "edits"
    edits.mkdir()
    original = running.land(photos["coffee"], "coffee.jpg")
    cropped = imaging.crop(photos["coffee"], edits / "crop.jpg", keep_area=0.9)
    copy = running.land(imaging.caption(cropped, edits / "crop-meme.jpg"), "coffee-crop-meme.jpg")
    copy_id = running.id_of(copy)
    alignment = align_files(str(copy), str(original))
    assert alignment is not None and alignment.edit["crop"] and alignment.edit["altered"]
    edit = alignment.edit
    # What the index owner stores for a copy it aligned (the detection step supplies it there).
    with sqlite3.connect(StateDir(running.state).catalog) as conn:
        conn.execute("UPDATE files SET edit = ? WHERE id = ?", (json.dumps(edit), copy_id))
    screenshot = tmp_path / "review-edit.png"

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS)
        page = browser.new_page(viewport={"width": 1100, "height": 700})
        page.goto(f"{running.url}/#token={token}")
        card = page.locator(f'article.match[data-file="{copy_id}"]')
        expect(card).to_be_visible()
        expect(card.locator(".edit-summary")).to_have_text(edit["summary"])
        expect(card.locator("figure.earlier .box.crop")).to_have_count(1)
        expect(card.locator("figure.new .box.altered")).to_have_count(len(edit["altered"]))
        for side in ("new", "earlier"):
            img = card.locator(f"figure.{side} img")
            page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=img.element_handle())
        page.screenshot(path=str(screenshot))
        earlier = card.locator("figure.earlier img").bounding_box()
        new = card.locator("figure.new img").bounding_box()
        assert earlier is not None and new is not None  # both visible: waited for above
        page.select_option("#kind", "groups")  # the groups view: the original leads, the copy has its summary
        group = page.locator("section.group")
        expect(group).to_have_count(1)
        expect(group.locator("figure")).to_have_count(2)
        expect(group.locator(".edit-summary")).to_have_text(edit["summary"])
        expect(group.locator("figure img").first).to_have_attribute("alt", str(original))
        browser.close()
    print(f"review page screenshot: {screenshot}")

    shot = Image.open(screenshot)
    assert _colour_share(shot, _outline(earlier, edit["crop"]), CROP_RGB) >= 0.9
    assert _colour_share(shot, _outline(new, edit["altered"][0]), ALTERED_RGB) >= 0.9
    # ... and not somewhere else: the middle of the original's crop box is photo, not outline
    centre = [((edit["crop"][0] + edit["crop"][2]) / 2, (edit["crop"][1] + edit["crop"][3]) / 2)]
    middle = [(earlier["x"] + x * earlier["width"], earlier["y"] + y * earlier["height"]) for x, y in centre]
    assert _colour_share(shot, middle, CROP_RGB) == 0
    # the caption band is the top of the copy: the altered box starts there
    assert edit["altered"][0][1] <= 0.02 and edit["altered"][0][3] <= 0.2
    assert running.service.stop() == 0


CROP_RGB = (0x16, 0xA3, 0x4A)  # .box.crop in review.html
ALTERED_RGB = (0xDB, 0x27, 0x77)  # .box.altered
