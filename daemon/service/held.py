"""A SIGHUP that arrives while a command starts: held until the daemon can act on it.

Its default action ends the process, and `run` spends its first seconds importing and opening the catalog
before its own handlers are in place (`runner._install_signals`); systemd's reload, or a HUP sent to a
terminal's session, can come in that window.
"""

from __future__ import annotations

import signal
import threading

_held = threading.Event()


def hold_hup() -> None:
    """From now on a SIGHUP is only noted (`hup_held`) until a real handler replaces this one."""
    signal.signal(signal.SIGHUP, lambda _signum, _frame: _held.set())


def hup_held() -> bool:
    """Whether a SIGHUP arrived while it was held: a configuration reload was asked for."""
    return _held.is_set()
