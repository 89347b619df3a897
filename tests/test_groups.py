"""`dupwatch groups` and the "not a duplicate" marks of `dupwatch matches`, on a real hash-only scan of
real photos; the HTML contact sheet opened in headless Chromium."""

from __future__ import annotations

import json
import sqlite3
import subprocess
from pathlib import Path

import imaging
import pytest
from conftest import base_env, dupwatch_cmd
from test_scan import scan

CHROMIUM = Path("/usr/bin/chromium")


@pytest.fixture(scope="module")
def scanned(photos: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Two photos with copies (exact, resized, mirrored, caption), one without, scanned in this order."""
    src = tmp_path_factory.mktemp("in")
    files = {
        "coffee": src / "coffee.jpg", "astronaut": src / "astronaut.jpg", "cat": src / "cat.jpg",
        "coffee-copy": src / "coffee-copy.jpg",
        "coffee-small": imaging.resize(photos["coffee"], src / "coffee-small.jpg"),
        "astronaut-mirror": imaging.mirror(photos["astronaut"], src / "astronaut-mirror.jpg"),
        "astronaut-meme": imaging.caption(photos["astronaut"], src / "astronaut-meme.jpg"),
    }
    for name, photo in (("coffee", "coffee"), ("astronaut", "astronaut"), ("cat", "chelsea"),
                        ("coffee-copy", "coffee")):
        files[name].write_bytes(photos[photo].read_bytes())
    state = src.parent / "state"
    records = scan(state, list(files.values()), {"DUPWATCH_HASH_ONLY": "true"})
    verdicts = {name: r["verdict"] for name, r in zip(files, records, strict=True)}
    return {"files": files, "state": state, "verdicts": verdicts}


def cli(state: Path, *args: str) -> subprocess.CompletedProcess:
    """`dupwatch ARGS` against a state dir; it must succeed."""
    proc = subprocess.run(dupwatch_cmd() + list(args), env=base_env(state), capture_output=True, text=True,
                          timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    return proc


def test_groups_lead_with_the_earliest_file(scanned: dict) -> None:
    files, verdicts = scanned["files"], scanned["verdicts"]
    copies = {n for n, v in verdicts.items() if v in ("exact-copy", "edited-copy")}
    assert {"coffee-copy", "coffee-small", "astronaut-mirror"} <= copies, verdicts
    found = json.loads(cli(scanned["state"], "groups", "--json").stdout)["groups"]
    by_original = {g["original"]["path"]: g for g in found}
    assert set(by_original) == {str(files["coffee"]), str(files["astronaut"])}, "the cat has no copy: no group"
    coffee = by_original[str(files["coffee"])]
    assert [c["path"] for c in coffee["copies"]] == [
        str(files[n]) for n in ("coffee-copy", "coffee-small") if n in copies]
    exact = next(c for c in coffee["copies"] if c["path"] == str(files["coffee-copy"]))
    assert exact["verdict"] == "exact-copy" and exact["summary"] == "identical pixels"
    astronaut = by_original[str(files["astronaut"])]
    assert {c["path"] for c in astronaut["copies"]} == {
        str(files[n]) for n in ("astronaut-mirror", "astronaut-meme") if n in copies}


def test_not_a_duplicate_splits_a_group_and_shows_in_matches(scanned: dict, tmp_path: Path) -> None:
    files, state = scanned["files"], scanned["state"]
    work = tmp_path / "state"
    subprocess.run(["cp", "-a", str(state), str(work)], check=True)  # keep the module's scan intact
    conn = sqlite3.connect(work / "catalog.sqlite3")
    ids = {Path(p).name: i for i, p in conn.execute("SELECT id, path FROM files")}
    conn.execute("INSERT INTO not_duplicates (a, b, marked_at) VALUES (?, ?, 0)",
                 (ids["coffee-small.jpg"], ids["coffee.jpg"]))
    conn.commit()
    conn.close()
    found = json.loads(cli(work, "groups", "--json").stdout)["groups"]
    coffee = next(g for g in found if g["original"]["path"] == str(files["coffee"]))
    assert str(files["coffee-small"]) not in [c["path"] for c in coffee["copies"]]
    proc = cli(work, "matches")
    marked = [line for line in proc.stdout.splitlines() if "not a duplicate" in line]
    assert len(marked) == 1 and str(files["coffee-small"]) in marked[0], proc.stdout
    rows = [json.loads(line) for line in cli(work, "matches", "--json").stdout.splitlines()]
    assert [r["path"] for r in rows if r["not_duplicate"]] == [str(files["coffee-small"])]


@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's Chromium: apt-get install -y chromium")
def test_html_contact_sheet_opens_offline_and_shows_every_group(scanned: dict, tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright
    from test_review_page import CHROMIUM_FLAGS

    report = tmp_path / "groups.html"
    cli(scanned["state"], "groups", "--html", str(report))
    expected = json.loads(cli(scanned["state"], "groups", "--json").stdout)["groups"]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS)
        page = browser.new_page()
        page.route("**/*", lambda route: route.abort() if not route.request.url.startswith(("file:", "data:"))
                   else route.continue_())  # offline: nothing but the file itself and its data URIs
        page.goto(report.as_uri())
        sections = page.locator("section.group")
        assert sections.count() == len(expected) == 2
        for group, section in zip(expected, sections.all(), strict=True):
            assert section.get_attribute("data-original") == str(group["original"]["id"])
            images = section.locator("img")
            assert images.count() == len(group["copies"]) + 1
            for i in range(images.count()):
                assert images.nth(i).evaluate("img => img.complete && img.naturalWidth > 0")
        page.screenshot(path=str(tmp_path / "groups.png"), full_page=True)
        browser.close()
    print(f"groups report screenshot: {tmp_path / 'groups.png'}")
