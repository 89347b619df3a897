"""Clear errors and signals: each a real `dupwatch` process, each mistake answered in one line."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from daemon.index.catalog import Catalog
from tests.conftest import Service, base_env, dupwatch_cmd, wait_for

pytestmark = [pytest.mark.system, pytest.mark.timeout(180)]


def dupwatch(*args: str, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([*dupwatch_cmd(), *args], env=env, capture_output=True, text=True, timeout=timeout,
                          check=False)


def caught(pid: int) -> int:
    """The signals a process has handlers for (SigCgt in /proc/PID/status), as a bit mask."""
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("SigCgt:")), 16)


def test_sighup_while_run_starts_is_a_reload_not_an_exit_and_a_deleted_config_is_named(tmp_path, services):
    """Items 12 and 15: HUPs in the first second(s) of `run` are held and applied once it runs; a --config file
    deleted before a HUP is named as such."""
    root, config = tmp_path / "in", tmp_path / "dupwatch.toml"
    root.mkdir()
    config.write_text("log_level = \"INFO\"\n")
    svc = Service(["run", "--hash-only", "--config", str(config), str(root)], base_env(tmp_path / "state"),
                  tmp_path / "run.log")
    services.append(svc)
    wait_for(lambda: caught(svc.proc.pid) & (1 << (signal.SIGINT - 1)), 10, interval=0.01,
             what="the interpreter's own SIGINT handler")  # Python runs: from here on, dupwatch's code
    time.sleep(0.3)
    for _ in range(4):
        svc.proc.send_signal(signal.SIGHUP)
        time.sleep(0.3)
    wait_for(lambda: "ready: model" in svc.stderr() or svc.proc.poll() is not None, 120, what="ready")
    assert svc.proc.poll() is None, (svc.proc.returncode, svc.stderr())
    wait_for(lambda: "configuration reloaded" in svc.stderr(), 10, what="the held reload")
    config.unlink()
    svc.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: "reload failed" in svc.stderr(), 10, what="the failed reload")
    assert f"the configuration file {config}" in svc.stderr() and "DUPWATCH_CONFIG names" not in svc.stderr()
    assert svc.stop() == 0


def test_a_state_dir_too_long_for_the_socket_is_said_at_once(tmp_path):
    """Item 13: no 15-second wait, and the path is blamed, not redis-server."""
    state = tmp_path / ("s" * 120)
    root = tmp_path / "in"
    root.mkdir()
    started = time.monotonic()
    run = dupwatch("run", "--hash-only", str(root), env=base_env(state))
    assert run.returncode != 0 and time.monotonic() - started < 14
    assert "too long" in run.stderr and "redis.url" in run.stderr and "Traceback" not in run.stderr, run.stderr


def test_query_of_a_non_image_is_one_line(tmp_path):
    """Item 14."""
    state = tmp_path / "state"
    state.mkdir()
    Catalog(state / "catalog.sqlite3").close()
    (tmp_path / "notes.jpg").write_text("not an image")
    query = dupwatch("query", "--hash-only", str(tmp_path / "notes.jpg"), env=base_env(state))
    assert query.returncode == 1 and "Traceback" not in query.stderr, query.stderr
    assert "cannot search" in query.stderr.splitlines()[-1] and "not-an-image" in query.stderr.splitlines()[-1]


def test_status_of_a_state_dir_that_does_not_exist_says_so_and_makes_none(tmp_path):
    """Item 16."""
    typo = tmp_path / "sttae"
    status = dupwatch("status", "--state-dir", str(typo), env=base_env(tmp_path / "state"))
    assert status.returncode == 1 and "no state dir" in status.stderr, status.stderr
    assert not typo.exists()


def test_a_skipped_symlink_is_said(tmp_path, photos):
    """Item 18: not followed, no verdict, and a line that says so."""
    root, outside = tmp_path / "in", tmp_path / "outside.jpg"
    root.mkdir()
    outside.write_bytes(photos["astronaut"].read_bytes())
    os.symlink(outside, root / "link.jpg")
    scan = dupwatch("scan", "--hash-only", str(root), env=base_env(tmp_path / "state", DUPWATCH_LOG_LEVEL="INFO"))
    assert scan.returncode == 0, scan.stderr
    assert scan.stdout == ""
    assert f"skipping {root / 'link.jpg'}: a symbolic link" in scan.stderr
