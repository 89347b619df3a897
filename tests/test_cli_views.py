"""`dupwatch matches` and `dupwatch status` read a catalog that `dupwatch scan` wrote: real photos, real files."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests import imaging
from tests.conftest import base_env, dupwatch_cmd


def dupwatch(state: Path, *args: str) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(dupwatch_cmd() + list(args), env=base_env(state, DUPWATCH_HASH_ONLY="true"),
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr
    return proc


@pytest.fixture
def scanned(photos: dict[str, Path], tmp_path: Path) -> tuple[Path, dict[str, Path]]:
    """A state dir whose catalog holds an original, an exact copy, a crop, an unrelated photo and a broken file."""
    src = tmp_path / "in"
    src.mkdir()
    files = {"original": src / "a.jpg"}
    files["original"].write_bytes(photos["astronaut"].read_bytes())
    files["exact"] = src / "b-copy.jpg"
    files["exact"].write_bytes(photos["astronaut"].read_bytes())
    files["crop"] = imaging.crop(files["original"], src / "c-crop.jpg")
    files["unrelated"] = src / "d-cat.jpg"
    files["unrelated"].write_bytes(photos["chelsea"].read_bytes())
    files["broken"] = src / "e-broken.jpg"
    files["broken"].write_bytes(photos["astronaut"].read_bytes()[:3000])
    listing = tmp_path / "files.txt"
    listing.write_text("".join(f"{p}\n" for p in files.values()))
    state = tmp_path / "state"
    dupwatch(state, "scan", "--files-from", str(listing))
    return state, files


def test_matches_lists_copies_newest_first_with_what_they_copy(scanned) -> None:
    state, files = scanned
    rows = [json.loads(line) for line in dupwatch(state, "matches", "--json").stdout.splitlines()]
    assert [(r["path"], r["kind"], r["match"]) for r in rows] == [
        (str(files["crop"]), "edited-copy", str(files["original"])),
        (str(files["exact"]), "exact-copy", str(files["original"])),
    ]
    assert rows[1]["score"] == 100 and rows[1]["signal"] == "sha256"


def test_matches_by_kind_and_limit(scanned) -> None:
    state, files = scanned
    errors = [json.loads(line) for line in dupwatch(state, "matches", "--json", "--kind", "error").stdout.splitlines()]
    assert [r["path"] for r in errors] == [str(files["broken"])]
    assert errors[0]["reason"].startswith("truncated") and errors[0]["match"] is None
    new = [json.loads(line)["path"] for line in dupwatch(state, "matches", "--json", "--kind", "new").stdout.splitlines()]
    assert new == [str(files["unrelated"]), str(files["original"])]
    one = dupwatch(state, "matches", "--limit", "1").stdout.splitlines()
    assert len(one) == 1 and one[0].split()[:2] == ["edited-copy", str(files["crop"])]


def test_status_counts_each_kind(scanned) -> None:
    state, _files = scanned
    text = dupwatch(state, "status").stdout
    assert "verdicts   edited-copy 1, error 1, exact-copy 1, new 2\n" in text


def test_status_of_an_empty_catalog_says_no_verdicts(tmp_path: Path) -> None:
    """A state dir where nothing has been decided yet says so with a dash (operator precedence once made this
    line "verdicts   " with nothing after it). A state dir that does not exist is an error instead: see
    test_clear_errors."""
    (tmp_path / "state").mkdir()
    text = dupwatch(tmp_path / "state", "status").stdout
    assert "\nverdicts   -\n" in text, text
