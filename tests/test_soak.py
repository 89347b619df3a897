"""The soak (bench/soak.py) for 3 minutes: the mixed stream while a worker, Redis and the daemon are
SIGKILLed at random moments; every check in its table must hold. The seed is printed: rerun a failure
with `python bench/soak.py --minutes 3 --seed N`.

And the soak's own judgement of "settled", at the two moments where a landed version has no catalog row yet."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys

import numpy as np
import pytest

from bench import soak
from tests.conftest import REPO_ROOT, wait_for

pytestmark = pytest.mark.system


def test_three_minute_soak_loses_nothing_repeats_nothing_and_reads_nothing_outside(tmp_path):
    done = subprocess.run([sys.executable, str(REPO_ROOT / "bench" / "soak.py"), "--minutes", "3",
                           "--workdir", str(tmp_path)], capture_output=True, text=True, timeout=1500, check=False)
    print(done.stdout)
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    assert " NO" not in done.stdout


@pytest.mark.parametrize("arrival", ["renamed-in", "landed-while-down"])
def test_soak_settles_only_once_every_landed_version_has_its_verdict(tmp_path, arrival):
    """The stream's last file has no catalog row yet when the stream stops: renamed in from outside the root
    (the watcher sees only `created` and lands it after `watch.settle_ms`), or written while the daemon was
    SIGKILLed and found by the catch-up scan of its next start. Every row already catalogued is decided, so a
    settle that counts rows reads "nothing left" at once, and the final stop cuts that file's verdict off."""
    root, state = tmp_path / "root", tmp_path / "state"
    root.mkdir()
    rng = np.random.default_rng(7)
    ledger = soak.Ledger()
    run = soak.Run(root, state, soak.run_env(state, None), tmp_path / "run.log")
    try:
        first = root / "first.jpg"
        first.write_bytes(soak.jpeg(rng))
        ledger.landed(first)  # decided: the watcher is up, and the catalog holds only decided rows
        wait_for(lambda: settled(state, ledger), timeout=120, interval=0.2, what="the first verdict")
        last = root / "last.jpg"
        if arrival == "renamed-in":
            part = tmp_path / "last.part"
            part.write_bytes(soak.jpeg(rng))
            os.rename(part, last)
        else:
            run.kill_all()
            last.write_bytes(soak.jpeg(rng))
            run.start()
        ledger.landed(last)
        soak.settle(state, ledger, stall_s=60)
        assert run.stop() == 0
    finally:
        if run.proc.poll() is None:
            run.kill_all()
    assert soak.unsettled(state, ledger) == ([], 0, 0), (tmp_path / "run.log").read_text()[-3000:]
    # the report on a version with no verdict names it with its path's rows
    report = soak.held(state, [(str(last), 1, 1)], tmp_path / "run.log", redis_too=False)
    assert f"{last} (size 1, mtime_ns 1)" in report and " decided current 1 job ingest-" in report, report


def settled(state, ledger: soak.Ledger) -> bool:
    """Every landed version decided; False while the first start has not made the catalog's tables yet."""
    try:
        return soak.unsettled(state, ledger) == ([], 0, 0)
    except sqlite3.Error:
        return False
