"""Run one whole command and account for it the way the kernel does: wall time, CPU time, peak RSS.

Every speed and memory figure of bench/accuracy.py and bench/throughput.py comes from here, so a
method's images/s and memory mean the same thing in both tables (start-up and imports included).
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

TIME = Path("/usr/bin/time")


@dataclass
class Measured:
    """One finished process: its figures and what it printed."""

    wall_s: float
    cpu_s: float
    max_rss_mib: float
    rc: int
    stdout: str
    stderr_tail: str


def run(argv: list[str], env: dict[str, str] | None = None, cwd: Path | None = None) -> Measured:
    """Run argv to the end, capturing stdout (stderr's last lines are kept for error messages).

    CPU time comes from wait4 (the process and every child it waited for, so worker pools count).
    Peak RSS comes from /usr/bin/time when it is there: a child's own wait4 figure starts from the RSS
    of the process that forked it, which for a benchmark holding decoded images would hide the
    method's real peak; otherwise from wait4, which can only overstate it.
    """
    with tempfile.TemporaryDirectory(prefix="dupwatch-measure-") as tmp:
        rss_path, out_path, err_path = Path(tmp) / "maxrss", Path(tmp) / "stdout", Path(tmp) / "stderr"
        prefix = ["/usr/bin/time", "-f", "%M", "-o", str(rss_path)] if TIME.exists() else []
        with open(out_path, "wb") as out, open(err_path, "wb") as err:
            start = time.perf_counter()
            proc = subprocess.Popen(prefix + argv, env=env, cwd=cwd, stdout=out, stderr=err)
            _pid, status, usage = os.wait4(proc.pid, 0)
            wall = time.perf_counter() - start
            proc.returncode = os.waitstatus_to_exitcode(status)
        rss_kib = _rss_kib(rss_path) or usage.ru_maxrss
        lines = [ln for ln in err_path.read_text(errors="replace").splitlines() if ln.strip()]
        return Measured(wall, usage.ru_utime + usage.ru_stime, rss_kib / 1024, proc.returncode,
                        out_path.read_text(errors="replace"), "\n".join(lines[-5:]))


def _rss_kib(path: Path) -> int:
    """The figure /usr/bin/time wrote; 0 when it wrote none (it notes a signal on a line before)."""
    try:
        return int(path.read_text().split()[-1])
    except (OSError, ValueError, IndexError):
        return 0
