"""The README stays true: every setting is in its configuration table, every command in its list."""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import BaseModel

from daemon.cli.main import cli
from daemon.config import Settings

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def setting_names(model: type[BaseModel], prefix: str = "") -> list[str]:
    names = []
    for name, field in model.model_fields.items():
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            names += setting_names(ann, f"{prefix}{name}.")
        else:
            names.append(prefix + name)
    return names


def test_every_setting_is_documented():
    documented = set(re.findall(r"^\| `([a-z_.]+)` \|", README, flags=re.MULTILINE))
    assert set(setting_names(Settings)) <= documented, set(setting_names(Settings)) - documented


def test_every_command_is_documented():
    for name in cli.commands:
        assert f"`dupwatch {name}" in README, name
