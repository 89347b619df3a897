"""Smoke tests of the speed benchmarks: tiny inputs, real subprocesses, the table prints and its numbers
are positive. The benchmarks themselves are run by hand (their numbers need a quiet machine), not by CI."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `bench` is a plain folder, not a package

from bench import latency, scan_growth, throughput

pytestmark = pytest.mark.system


def test_throughput_bench_prints_positive_numbers(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "tp.json"
    throughput.main(["--n", "4", "--sizes", "0.3,1", "--small-n", "5", "--repeat", "1", "--methods", "ac",
                     "--no-debian", "--work", str(tmp_path / "work"), "--json", str(out), "--out", str(tmp_path / "tp.md")])
    text = capsys.readouterr().out
    assert "a. imagehash.phash loop" in text and "c. dupwatch scan --hash-only" in text and "FAILED" not in text
    assert "## camera folder: 4 JPEGs" in text and "## small folder: 5 JPEGs" in text
    folders = json.loads(out.read_text())["folders"]
    assert [f["files"]["folder"] for f in folders] == ["camera", "small"]
    for folder in folders:
        rows = folder["results"]
        assert [r["key"] for r in rows] == ["a", "c"]
        for r in rows:
            assert r["images_per_s"] > 0 and r["cpu_s_per_image"] > 0 and r["peak_rss_mib"] > 0
    files = sorted((tmp_path / "work" / "data" / "files").glob("*.jpg"))
    assert len(files) == 4 and (tmp_path / "tp.md").read_text().startswith("# dupwatch throughput")
    small = sorted((tmp_path / "work" / "small" / "files").glob("*.jpg"))
    assert len(small) == 5 and all(max(Image.open(f).size) <= throughput.SMALL_LONG_SIDE[1] for f in small)


def test_latency_bench_prints_positive_numbers(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "lat.json"
    latency.main(["--rates", "10", "--duration", "1", "--grace", "30", "--n", "3", "--sizes", "0.3",
                  "--no-debian", "--work", str(tmp_path / "work"), "--json", str(out)])
    text = capsys.readouterr().out
    assert "file closed -> webhook received" in text and "highest rate sustained" in text
    (row,) = json.loads(out.read_text())["rows"]
    assert row["delivered"] == row["files"] == 10
    assert 0 < row["p50"] <= row["p95"] <= row["p99"] <= row["max"]


def test_scan_growth_bench_decides_every_file_and_cleans_up(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    work, out = tmp_path / "work", tmp_path / "growth.txt"
    scan_growth.main(["--n", "40", "--no-debian", "--jobs", "1", "--workdir", str(work), "--out", str(out)])
    text = capsys.readouterr().out
    assert "# scan: 40 JSON lines for 40 files, 40 decided rows" in text and "NOT ALL DECIDED" not in text
    assert "not `new`: 0" in text  # the collages are distinct: no file is a copy of another
    assert "| 1-40 |" in text and "last/first = 1.00" in text
    assert "CPU-ms a verdict: first window" in text  # sampled from the scan's launch to its exit
    assert out.read_text().startswith("# bench/scan_growth.py") and not work.exists()


def test_scan_growth_crops_are_distinct_for_the_hash_rule() -> None:
    """A box is refused when it is an earlier box, one of its pHash crop windows, or has one as a window."""
    earlier = np.array([[100.0, 100.0, 900.0, 700.0]])
    windows = scan_growth._sub_boxes(earlier)[0]
    assert scan_growth.too_close(earlier[0], earlier)
    assert all(scan_growth.too_close(w, earlier) for w in windows)  # a crop the rule anticipates of the earlier box
    bigger = np.array([0.0, 0.0, 1000.0, 800.0])
    assert scan_growth.too_close(bigger, scan_growth._sub_boxes(bigger[None, :])[0][2:3])  # the earlier box is a window of this one
    shifted = earlier[0] + np.array([100.0, 0.0, 100.0, 0.0])  # same size, moved by 1/8 of its width
    assert not scan_growth.too_close(shifted, earlier)
    assert not scan_growth.too_close(earlier[0], np.zeros((0, 4)))
