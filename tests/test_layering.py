"""The job contract runs one way: `workers` owns it and `daemon` imports it, so a worker host needs nothing of
the daemon. Held by importing every worker module in a process where `daemon` cannot be imported at all."""

from __future__ import annotations

import pkgutil
import subprocess
import sys

import workers
from tests.conftest import REPO_ROOT


def test_every_worker_module_imports_without_the_daemon_package():
    names = [m.name for m in pkgutil.walk_packages(workers.__path__, "workers.")]
    assert {"workers.queue", "workers.features", "workers.settings", "workers.worker", "workers.jobs"} <= set(names)
    code = ("import sys, importlib; sys.modules['daemon'] = None\n"  # any `import daemon...` now raises
            f"for name in {names!r}: importlib.import_module(name)\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300,
                            check=False)
    assert result.returncode == 0, result.stderr[-2000:]


def test_the_wire_record_round_trips_every_feature_field():
    """FEATURE_FIELDS is the one list: the wire form carries each of them, and unknown keys (a newer worker) are
    dropped instead of failing the daemon's read of the whole batch."""
    import numpy as np

    from workers.features import FEATURE_FIELDS, Features

    f = Features(id=7, path="/x/a.jpg", sha256="s", pixel_sha="p", phash=1, dhash=2,
                 windows=np.arange(9, dtype=np.int64), dihedral=np.arange(8, dtype=np.int64), width=3, height=4,
                 format="JPEG", size=5, embedding=np.ones(4, np.float32) / 2, model="m",
                 copy_embedding=np.full(4, 0.5, np.float32), copy_model="c", copy_inner=np.ones(4, np.float32),
                 error=None)
    wire = f.to_json()
    back = Features.from_json({**wire, "from_the_future": 1})
    assert set(back.stored()) == set(FEATURE_FIELDS) - {"error"}
    for k in FEATURE_FIELDS:
        a, b = getattr(f, k), getattr(back, k)
        assert (np.array_equal(a, b) if isinstance(a, np.ndarray) else a == b), k
