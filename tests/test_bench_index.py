"""Smoke test for bench/index_bench.py: the benchmark's pieces run, agree with exact search, and print.

Runs at 5k vectors so it stays in CI's budget; the real numbers come from running the script.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.system

_PATH = Path(__file__).resolve().parents[1] / "bench" / "index_bench.py"
_spec = importlib.util.spec_from_file_location("index_bench", _PATH)
assert _spec and _spec.loader
bench = importlib.util.module_from_spec(_spec)
sys.modules["index_bench"] = bench  # dataclasses resolve annotations through sys.modules
_spec.loader.exec_module(bench)


def test_generator_is_clip_shaped_and_deterministic() -> None:
    gen = bench.EmbeddingGenerator()
    a, b = gen.chunk(3, 500), gen.chunk(3, 500)
    assert np.array_equal(a, b)
    assert np.allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)
    stats = gen.stats(1000)
    assert 0.3 <= stats["pair_cos_mean"] <= 0.5  # shared component, as in CLIP
    assert stats["frac_nn_cos_gt_0.9"] > 0.0  # near-duplicate pairs exist


def test_exact_topk_matches_brute_force() -> None:
    gen = bench.EmbeddingGenerator()
    q, src = gen.queries(3000, 1000, 20)
    data = np.concatenate([x for _, x in gen.chunks(3000, 1000)])
    want = np.argsort(-(q @ data.T), axis=1)[:, : bench.K]
    got = bench.exact_topk(gen, q, 3000, 1000)
    assert bench.recall_at_k(got, want) > 0.99  # ties in f32 may swap the 10th
    copies = src >= 0
    # An edited copy nearly always finds its original first (another near-duplicate may win).
    assert np.mean(got[copies, 0] == src[copies]) >= 0.9


def test_small_run_recall_and_table(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--sizes", "5000", "--dtypes", "f16,i8s", "--chunk", "1000", "--queries", "200",
            "--expansion-search", "64"]
    assert bench.main(argv) == 0
    out = capsys.readouterr().out
    assert "usearch index bench" in out and "cores" in out
    rows = [line.split() for line in out.splitlines() if line.split()[:1] == ["5000"]]
    assert {r[1] for r in rows} == {"f16", "i8s"}
    recall = {r[1]: float(r[10]) for r in rows}
    assert min(recall.values()) > 0.9, recall
    assert "projection from" in out
