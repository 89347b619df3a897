"""What machine a benchmark ran on: every printed table carries it, since timings mean nothing without."""

from __future__ import annotations

import os
import platform
import sys
import time
from pathlib import Path


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo, else what platform reports."""
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or "unknown CPU"


def header(script: str) -> str:
    """The first line of a table: the script, when, the machine and its load."""
    return (f"# {script}, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {cpu_model()}, {os.cpu_count()} cores, "
            f"load avg {os.getloadavg()[0]:.1f} at start\n# $ python {script} {' '.join(sys.argv[1:])}")


def finish(lines: list[str], out: Path | None) -> None:
    """Close a table with the load at its end; print it whole and write it to `out`."""
    lines.append(f"# load avg at end {os.getloadavg()[0]:.1f}")
    print(lines[-1])
    if out:
        out.write_text("\n".join(lines) + "\n")
