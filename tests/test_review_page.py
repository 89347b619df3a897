"""The review page in a real browser: Debian's headless Chromium driven by Playwright, against a real
`dupwatch run` with a token (the page gets it from the URL fragment, as a user would open it)."""

from __future__ import annotations

import re
from pathlib import Path

import imaging
import pytest
from test_api import start_api

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
