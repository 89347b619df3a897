"""The shipped units pass `systemd-analyze verify` and stay within a security exposure budget.

verify loads each unit as systemd would (syntax, unknown keys, specifiers, dependencies) and checks
that ExecStart= binaries exist, so the units are copied to tmp with the two install-time paths
(/opt/dupwatch/venv/bin/dupwatch, /usr/bin/redis-server) pointed at stub executables. It needs no
running systemd and no `dupwatch` user. The Makefile's test setup installs systemd-analyze
(apt-get install -y systemd); the tests skip only when the binary is absent.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

SYSTEMD = Path(__file__).resolve().parent.parent / "systemd"
ANALYZE = shutil.which("systemd-analyze")
pytestmark = pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze not installed (apt-get install -y systemd)")

INSTALLED = {"/opt/dupwatch/venv/bin/dupwatch": "dupwatch", "/usr/bin/redis-server": "redis-server"}
# What each unit is verified as: templates need an instance. ':' in an argument is verify's
# "file:alias" syntax, which is also how an instance name containing ':' gets through.
CHECKED = {
    "dupwatch-daemon.service": "dupwatch-daemon.service",
    "dupwatch-redis.service": "dupwatch-redis.service",
    "dupwatch.target": "dupwatch.target",
    "worker cuda:0": "dupwatch-worker@.service:dupwatch-worker@cuda:0.service",
    "worker cpu": "dupwatch-worker@.service:dupwatch-worker@cpu.service",
}
# Exposure (0 safe .. 10 exposed) per `systemd-analyze security --offline=yes`; docs/operations.md records the values.
EXPOSURE_BUDGET = {"dupwatch-daemon.service": 1.5, "dupwatch-redis.service": 1.0, "worker cuda:0": 2.0}


@pytest.fixture(scope="module")
def unit_dir(tmp_path_factory) -> Path:
    """The units in a temp dir with stubs for the installed binaries and the roots drop-in applied."""
    root = tmp_path_factory.mktemp("units")
    stubs = root / "bin"
    stubs.mkdir()
    for unit in SYSTEMD.iterdir():
        if unit.suffix not in (".service", ".target"):
            continue
        text = unit.read_text()
        for installed, stub in INSTALLED.items():
            text = text.replace(f"={installed} ", f"={stubs / stub} ")
        (root / unit.name).write_text(text)
    for stub in INSTALLED.values():
        (stubs / stub).write_text("#!/bin/sh\n")
        (stubs / stub).chmod(0o755)
    # The documented drop-in, with its commented /home example switched on too.
    dropin = (SYSTEMD / "dupwatch-roots.conf.example").read_text().replace("#BindReadOnlyPaths=", "BindReadOnlyPaths=")
    for name in ("dupwatch-daemon.service", "dupwatch-worker@.service"):
        (root / f"{name}.d").mkdir()
        (root / f"{name}.d" / "roots.conf").write_text(dropin)
    return root


def analyze(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    # cwd on the unit search path (trailing ':' keeps the system's): verify finds a unit's drop-ins
    # beside its file, but a template verified under an instance alias only through the search path.
    env = {**os.environ, "SYSTEMD_UNIT_PATH": f"{cwd}:"}
    assert ANALYZE is not None  # the module skips without it
    return subprocess.run([ANALYZE, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=60, check=False)


def test_units_reference_the_installed_paths():
    """The stubs stand in for these paths; a renamed path must be renamed here too."""
    texts = {unit.name: unit.read_text() for unit in SYSTEMD.glob("*.service")}
    assert "ExecStart=/opt/dupwatch/venv/bin/dupwatch daemon\n" in texts["dupwatch-daemon.service"]
    assert "ExecStart=/opt/dupwatch/venv/bin/dupwatch worker --model-device %I\n" in texts["dupwatch-worker@.service"]
    assert "ExecStart=/usr/bin/redis-server " in texts["dupwatch-redis.service"]


@pytest.mark.parametrize("name", CHECKED)
def test_verify(unit_dir, name):
    result = analyze("verify", "--man=no", str(unit_dir / CHECKED[name]), cwd=unit_dir)
    # Unknown keys and bad values are only warnings (exit 0): any output at all is a failure.
    assert result.returncode == 0 and not result.stderr.strip() and not result.stdout.strip(), result.stderr


def test_verify_catches_a_missing_binary(unit_dir, tmp_path):
    """Guards the test itself: verify does check ExecStart, so the stubs above matter."""
    broken = (SYSTEMD / "dupwatch-daemon.service").read_text()
    (tmp_path / "dupwatch-daemon.service").write_text(broken.replace("/opt/dupwatch", str(tmp_path / "absent")))
    result = analyze("verify", "--man=no", str(tmp_path / "dupwatch-daemon.service"), cwd=tmp_path)
    assert result.returncode != 0 and "is not executable" in result.stderr


@pytest.mark.parametrize("name", EXPOSURE_BUDGET)
def test_security_exposure(unit_dir, name):
    if "--offline" not in analyze("security", "--help", cwd=unit_dir).stdout:
        pytest.skip("this systemd-analyze has no `security --offline` (systemd < 250)")
    result = analyze("security", "--offline=yes", "--man=no", "--no-pager", str(unit_dir / CHECKED[name]), cwd=unit_dir)
    found = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout)
    assert found, result.stdout + result.stderr
    assert float(found.group(1)) <= EXPOSURE_BUDGET[name], result.stdout
