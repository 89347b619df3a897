"""systemd's notify protocol (sd_notify(3)) in plain Python: no libsystemd, no native wheel.

The unit (systemd/dupwatch-daemon.service) is Type=notify with NotifyAccess=main and WatchdogSec=30, so:
- only the main process's messages count: call these from the daemon's own process, not a child;
- READY=1 tells systemd the start finished (`systemctl start` returns, dependants start);
- WATCHDOG=1 must arrive at least every WatchdogSec or systemd kills and restarts the daemon.
Outside systemd (NOTIFY_SOCKET unset) every call is a no-op, so `dupwatch run` and tests need no switch.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable

log = logging.getLogger(__name__)


def _address() -> str | None:
    """NOTIFY_SOCKET as a socket address: a path, or an abstract name ('@' becomes the leading NUL)."""
    name = os.environ.get("NOTIFY_SOCKET")
    if not name:
        return None
    if name.startswith("@"):
        return "\0" + name[1:]
    if name.startswith("/"):
        return name
    # vsock:CID:PORT (VMs) and anything newer: not used by the units we ship.
    log.warning("NOTIFY_SOCKET=%r is not a unix socket path; systemd notifications disabled", name)
    return None


def notify(**fields: object) -> bool:
    """Send KEY=value lines, e.g. notify(READY=1, STATUS="indexing"). True when a datagram was sent.

    A failed send is logged, not raised: losing a STATUS line must not take the daemon down (a lost
    WATCHDOG ping is systemd's to judge).
    """
    address = _address()
    if address is None or not fields:
        return False
    message = "\n".join(f"{key}={value}" for key, value in fields.items()).encode()
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.sendto(message, address)
    except OSError as exc:
        log.warning("sd_notify to %s failed: %s", os.environ.get("NOTIFY_SOCKET"), exc)
        return False
    return True


def ready(status_text: str | None = None) -> bool:
    """Startup finished: send once the daemon can take work (catalog open, Redis reachable, API up)."""
    return notify(READY=1, **({"STATUS": status_text} if status_text else {}))


def reloading() -> bool:
    """Re-reading configuration (SIGHUP from ExecReload); send ready() when done.

    MONOTONIC_USEC lets systemd >= 253 (Type=notify-reload) match the reload to this message.
    """
    return notify(RELOADING=1, MONOTONIC_USEC=time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000)


def stopping(status_text: str | None = None) -> bool:
    """Shutdown began (SIGTERM received): systemd shows 'deactivating' instead of a hung service."""
    return notify(STOPPING=1, **({"STATUS": status_text} if status_text else {}))


def watchdog() -> bool:
    """Keep-alive ping; see Heartbeat for how often."""
    return notify(WATCHDOG=1)


def status(text: str) -> bool:
    """One line shown by `systemctl status` (e.g. 'watching 3 roots, 12 pending, 2 workers')."""
    return notify(STATUS=text)


def watchdog_interval() -> float | None:
    """WatchdogSec in seconds when systemd watches this process, else None (ping at half of it).

    WATCHDOG_PID, when set, names the process meant: a child that inherited the environment is not it.
    """
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec:
        return None
    try:
        if pid and int(pid) != os.getpid():
            return None
        value = int(usec)
    except ValueError:
        log.warning("ignoring malformed WATCHDOG_USEC=%r / WATCHDOG_PID=%r", usec, pid)
        return None
    return value / 1_000_000 if value > 0 else None


class Heartbeat:
    """What the daemon's main loop calls once per iteration: beat(status_text).

    Sends WATCHDOG=1 at most every half WatchdogSec (systemd's recommendation: a ping late by up to
    half the interval still lands in time) and STATUS= only when the text changed, so a loop spinning
    every few milliseconds costs a clock read, not a syscall. The loop itself must come round at least
    every half WatchdogSec (15 s for the shipped unit): block on nothing longer than that.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        interval = watchdog_interval()
        self.period = interval / 2 if interval else None
        self._clock = clock
        self._last_ping: float | None = None
        self._last_status: str | None = None

    def beat(self, status_text: str | None = None) -> None:
        fields: dict[str, object] = {}
        now = self._clock()
        if self.period is not None and (self._last_ping is None or now - self._last_ping >= self.period):
            fields["WATCHDOG"] = 1
            self._last_ping = now
        if status_text is not None and status_text != self._last_status:
            fields["STATUS"] = status_text
            self._last_status = status_text
        if fields:
            notify(**fields)
