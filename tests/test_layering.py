"""The job contract runs one way: `workers` owns it and `daemon` imports it, so a worker host needs nothing of
the daemon. Held by importing every worker module in a process where `daemon` cannot be imported at all."""

from __future__ import annotations

import ast
import functools
import pkgutil
import subprocess
import sys
from pathlib import Path

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


LAYERS: list[tuple[str, ...]] = [
    # workers: the job contract and the image work, nothing of the daemon
    ("workers.settings", "workers.defaults", "workers.torch_guard", "workers.queue", "workers.features",
     "workers.image", "workers"),
    ("workers.models",),
    ("workers.pipeline", "workers.jobs", "workers.worker"),
    # daemon: the shared records at its root, then the rooms in the order a verdict passes through them
    ("daemon.config", "daemon.defaults", "daemon.events", "daemon.health", "daemon.logs", "daemon.state",
     "daemon.text", "daemon.webhooks", "daemon"),
    ("daemon.index",),
    ("daemon.ingest",),
    ("daemon.notify",),
    ("daemon.views",),
    ("daemon.api",),
    ("daemon.service",),
    ("daemon.cli",),
]
"""Each module belongs to the first group one of whose names is it or a package above it. A module imports
only from its own group or from groups above it in this list: the tree shows the architecture, and a change
that needs an arrow upwards has to move a module or this list, where a reviewer sees it."""


def layer_of(module: str) -> int:
    """The group of the longest name that is the module or a package above it."""
    ranked = [(len(n), rank) for rank, group in enumerate(LAYERS) for n in group
              if module == n or module.startswith(n + ".")]
    assert ranked, f"{module} is in no layer: place it in LAYERS"
    return max(ranked)[1]


def imports_of(path: Path) -> set[str]:
    """Every project module a file imports, at any depth of the file (lazy imports are arrows too)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found |= {f"{node.module}.{a.name}" for a in node.names} | {node.module}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
    return found & set(project_modules())


@functools.cache
def project_modules() -> dict[str, Path]:
    modules = {}
    for package in ("daemon", "workers"):
        for path in (REPO_ROOT / package).rglob("*.py"):
            name = ".".join(path.relative_to(REPO_ROOT).with_suffix("").parts)
            modules[name.removesuffix(".__init__")] = path
    return modules


def test_no_module_imports_from_a_layer_above_its_own():
    upward = []
    for name, path in project_modules().items():
        for target in imports_of(path):
            if layer_of(target) > layer_of(name):
                upward.append(f"{name} -> {target}")
    assert not upward, upward


def test_no_import_circle_between_modules():
    graph = {name: imports_of(path) for name, path in project_modules().items()}
    done: set[str] = set()

    def visit(node: str, trail: list[str]) -> None:
        if node in trail:
            raise AssertionError("import circle: " + " -> ".join(trail[trail.index(node):] + [node]))
        if node in done:
            return
        for nxt in graph.get(node, ()):
            if nxt.rsplit(".", 1)[0] != node:  # a package importing its own module is not a circle
                visit(nxt, [*trail, node])
        done.add(node)

    for name in graph:
        visit(name, [])
