"""The JSON-lines event log rotates by size and keeps a fixed number of backups, losing no line in between."""

from __future__ import annotations

import json
from pathlib import Path

from daemon.events import FileInfo, VerdictEvent
from daemon.notify.sinks import EventLog


def event(file_id: int) -> VerdictEvent:
    return VerdictEvent(kind="new", file=FileInfo(id=file_id, path=f"/in/{file_id:04d}.jpg", size=1000),
                        detected_at=1000.0 + file_id, decided_at=2000.0 + file_id)


def ids(path: Path) -> list[int]:
    return [json.loads(line)["file"]["id"] for line in path.read_text().splitlines()]


def test_event_log_rotates_by_size_and_keeps_its_backups(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    line_bytes = len(json.dumps(event(10).to_dict(), ensure_ascii=False)) + 1  # ids 10-44: lines of one length
    log = EventLog(path, max_bytes=10 * line_bytes, backups=2)
    for i in range(10, 45):  # 35 lines, 10 per file: three rotations
        log(event(i))
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["events.jsonl", "events.jsonl.1", "events.jsonl.2"]  # the oldest backup fell off
    assert ids(tmp_path / "events.jsonl.2") == list(range(20, 30))
    assert ids(tmp_path / "events.jsonl.1") == list(range(30, 40))
    assert ids(path) == list(range(40, 45))
    for p in tmp_path.iterdir():
        assert p.stat().st_size <= 10 * line_bytes


def test_a_reopened_event_log_appends_and_rotates_the_file_it_finds(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    line_bytes = len(json.dumps(event(10).to_dict(), ensure_ascii=False)) + 1
    EventLog(path, max_bytes=4 * line_bytes, backups=3)(event(10))
    log = EventLog(path, max_bytes=4 * line_bytes, backups=3)  # the daemon restarted
    for i in range(11, 15):
        log(event(i))
    assert ids(tmp_path / "events.jsonl.1") == [10, 11, 12, 13] and ids(path) == [14]
