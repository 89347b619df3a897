"""Logging: human lines on a terminal, or one JSON object per line (`log_format = "json"`)."""

from __future__ import annotations

import logging
import sys
import time

from daemon.text import dumps, shown


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {"ts": round(record.created, 3), "level": record.levelname.lower(), "logger": record.name,
               "msg": record.getMessage()}
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return dumps(out)


class LineFormatter(logging.Formatter):
    """Human log lines whose message cannot break the line: a file name holding a newline would
    otherwise forge a log line (tracebacks, appended after the message, keep their own lines)."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = shown(record.message)
        return super().formatMessage(record)


def level_number(level: str) -> int:
    """The logging level a setting names; ValueError for an unknown name (checked before a reload swaps)."""
    number = logging.getLevelNamesMapping().get(level.upper())
    if number is None:
        raise ValueError(f"log_level {level!r} is not one of DEBUG, INFO, WARNING, ERROR, CRITICAL")
    return number


def configure(level: str, fmt: str) -> None:
    """Logs go to stderr: stdout belongs to verdict lines (`run`) and JSON records (`scan`)."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        formatter = LineFormatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%H:%M:%S")
        formatter.converter = time.localtime
        handler.setFormatter(formatter)
    root = logging.getLogger()
    number = level_number(level)
    root.handlers[:] = [handler]
    root.setLevel(number)
    for noisy in ("rq.worker", "httpx", "urllib3"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
