"""The documentation stays true: every setting is in docs/configuration.md's table, every command in the
README's command table, and every relative link in the README and docs/ names a file that exists."""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import BaseModel

from daemon.cli.main import cli
from daemon.config import Settings

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
CONFIGURATION = (ROOT / "docs" / "configuration.md").read_text()


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
    documented = set(re.findall(r"^\| `([a-z_.]+)` \|", CONFIGURATION, flags=re.MULTILINE))
    assert set(setting_names(Settings)) <= documented, set(setting_names(Settings)) - documented


def test_every_command_is_documented():
    for name in cli.commands:
        assert f"| `dupwatch {name}" in README, name


def test_every_relative_link_names_a_file_that_exists():
    broken = []
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", page.read_text()):
            if "://" not in target and not (page.parent / target).exists():
                broken.append(f"{page.relative_to(ROOT)}: {target}")
    assert not broken, broken
