"""`[[commands]]`: a program run per verdict with the event on stdin, for people without an HTTP receiver."""

from __future__ import annotations

import json
import sys
import time

from daemon.config import CommandSettings
from daemon.events import FileInfo, Match, VerdictEvent
from daemon.notify.sinks import CommandSink
from tests.conftest import Service, base_env, copy_into, wait_for


def event(file_id: int, kind: str = "edited-copy", score: float = 90.0) -> VerdictEvent:
    match = () if kind == "new" else (Match(FileInfo(1, "/a.jpg"), kind, score, 4, "phash"),)
    return VerdictEvent(kind, FileInfo(file_id, f"/f{file_id}.jpg"), 1.0, 2.0, match)


def appender(out) -> list[str]:
    """A real program that appends its stdin, as one line, to `out`."""
    code = f"import sys; open({str(out)!r}, 'a').write(sys.stdin.read().strip() + '\\n')"
    return [sys.executable, "-c", code]


def test_events_reach_the_program_in_order_filtered_and_slow_ones_are_killed(tmp_path):
    out = tmp_path / "events.jsonl"
    slow = CommandSettings(argv=[sys.executable, "-c", "import time; time.sleep(30)"], timeout_s=0.5)
    failing = CommandSettings(argv=[sys.executable, "-c", "raise SystemExit(3)"])
    wanted = CommandSettings(argv=appender(out), kinds=["edited-copy"], min_score=80)
    sink = CommandSink([slow, failing, wanted])
    started = time.monotonic()
    for e in (event(2), event(3, score=50), event(4, "new"), event(5)):
        sink(e)
    assert time.monotonic() - started < 0.5  # never blocks the caller (the verdict loop)
    sink.close()
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(x["file"]["id"], x["kind"]) for x in lines] == [(2, "edited-copy"), (5, "edited-copy")]
    assert time.monotonic() - started < 5  # the sleeper was killed at its timeout, twice


def test_run_calls_the_command_for_each_verdict(tmp_path, photos, services):
    out = tmp_path / "got.jsonl"
    root = tmp_path / "in"
    root.mkdir()
    commands = json.dumps([{"argv": appender(out), "kinds": ["new", "exact-copy"]}])
    svc = Service(["run", str(root)], base_env(tmp_path / "state", DUPWATCH_HASH_ONLY="true",
                                                DUPWATCH_COMMANDS=commands), tmp_path / "run.log")
    services.append(svc)
    wait_for(lambda: "ready" in svc.stderr(), 120, what="worker ready")
    copy_into(photos["rocket"], root / "a.jpg")
    copy_into(photos["rocket"], root / "b.jpg")
    got = wait_for(lambda: out.exists() and len(out.read_text().splitlines()) == 2 and out.read_text(), 60,
                   what="two command runs")
    kinds = [json.loads(line)["kind"] for line in got.splitlines()]
    assert kinds == ["new", "exact-copy"]
