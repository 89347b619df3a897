"""The soak (bench/soak.py) for 3 minutes: the mixed stream while a worker, Redis and the daemon are
SIGKILLed at random moments; every check in its table must hold. The seed is printed: rerun a failure
with `python bench/soak.py --minutes 3 --seed N`."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.system


def test_three_minute_soak_loses_nothing_repeats_nothing_and_reads_nothing_outside(tmp_path):
    done = subprocess.run([sys.executable, str(REPO_ROOT / "bench" / "soak.py"), "--minutes", "3",
                           "--workdir", str(tmp_path)], capture_output=True, text=True, timeout=1500, check=False)
    print(done.stdout)
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    assert " NO" not in done.stdout
