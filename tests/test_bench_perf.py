"""Smoke tests of the speed benchmarks: tiny inputs, real subprocesses, the table prints and its numbers
are positive. The benchmarks themselves are run by hand (their numbers need a quiet machine), not by CI."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `bench` is a plain folder, not a package

from bench import latency, throughput


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
