"""deploy/: the example config and env file match daemon.config, and install.sh plans without acting."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
from pydantic import BaseModel

from daemon.config import CommandSettings, Settings, WebhookSettings

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
INSTALL = DEPLOY / "install.sh"


def setting_paths(model: type[BaseModel], prefix: str = "") -> list[str]:
    """Dotted names of every leaf setting ('model.device', 'webhooks.url', ...)."""
    out = []
    for name, field in model.model_fields.items():
        if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
            out += setting_paths(field.annotation, f"{prefix}{name}.")
        else:
            out.append(prefix + name)
    return out


def documented_keys(text: str) -> set[str]:
    """'section.key' for every '#key =' (default) and '# key =' (example) line, under its [section]."""
    keys, section = set(), ""
    for line in text.splitlines():
        if header := re.fullmatch(r"#? ?\[\[?(\w+)\]\]?", line):
            section = header.group(1) + "."
        elif key := re.match(r"# ?(\w+) = ", line):
            keys.add(section + key.group(1))
    return keys


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    """No DUPWATCH_* from the caller's environment, and an empty config file."""
    for name in list(os.environ):
        if name.startswith("DUPWATCH_"):
            monkeypatch.delenv(name)
    empty = tmp_path / "empty.toml"
    empty.write_text("")
    monkeypatch.setenv("DUPWATCH_CONFIG", str(empty))
    return monkeypatch


def test_config_example_lists_every_setting():
    text = (DEPLOY / "config.example.toml").read_text()
    expected = set(setting_paths(Settings)) - {"webhooks", "commands"}
    expected |= {f"webhooks.{name}" for name in WebhookSettings.model_fields}
    expected |= {f"commands.{name}" for name in CommandSettings.model_fields}
    assert expected - documented_keys(text) == set()


def test_config_example_defaults_are_the_real_defaults(clean_env, tmp_path):
    """Uncommenting every '#key = value' line must give exactly the built-in defaults."""
    text = (DEPLOY / "config.example.toml").read_text()
    assert tomllib.loads(text) == {s: {} for s in ("redis", "model", "copy_model", "match", "watch", "queue", "decode",
                                                    "index", "api")}
    active = tmp_path / "config.toml"
    active.write_text(re.sub(r"(?m)^#(?=\w)", "", text))
    defaults = Settings().model_dump()
    clean_env.setenv("DUPWATCH_CONFIG", str(active))
    example = Settings().model_dump()
    # state_dir's default follows $XDG_STATE_HOME / $HOME; the example shows the usual value.
    assert example.pop("state_dir") == Path("~/.local/state/dupwatch").expanduser()
    defaults.pop("state_dir")
    assert example == defaults


def test_env_example_names_real_settings(clean_env):
    """Every DUPWATCH_* line in dupwatch.env.example names a setting, and together they load."""
    known = {p.replace(".", "__").upper() for p in setting_paths(Settings)}
    lines = re.findall(r"(?m)^#(DUPWATCH_\w+)=(.*)$", (DEPLOY / "dupwatch.env.example").read_text())
    assert lines
    for name, value in lines:
        assert name.removeprefix("DUPWATCH_") in known | {"WEBHOOKS"}, name
        clean_env.setenv(name, value)
    settings = Settings()
    assert settings.watch.roots == [Path("/srv/images"), Path("/home/alice/Pictures")]
    assert settings.webhooks[0].url == "https://hooks.example.org/dupwatch"


def test_install_script_parses():
    subprocess.run(["bash", "-n", str(INSTALL)], check=True)


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck not installed (apt-get install -y shellcheck)")
def test_shipped_shell_scripts_are_shellcheck_clean():
    scripts = [INSTALL, DEPLOY / "fleet" / "make-tls.sh"]
    result = subprocess.run(["shellcheck", *map(str, scripts)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout


@pytest.mark.parametrize(
    ("flags", "enabled"),
    [
        ([], "dupwatch.target dupwatch-redis.service dupwatch-daemon.service dupwatch-worker@cpu.service"),
        (["--workers", "2", "--gpu"], "dupwatch-daemon.service dupwatch-worker@cuda:0.service dupwatch-worker@cuda:1.service"),
        (["--workers", "3"], "dupwatch-worker@cpu:0.service dupwatch-worker@cpu:1.service dupwatch-worker@cpu:2.service"),
        (["--no-daemon", "--workers", "1", "--gpu"], "systemctl enable dupwatch.target dupwatch-worker@cuda:0.service\n"),
    ],
)
def test_install_dry_run_plans_and_changes_nothing(tmp_path, flags, enabled):
    prefix = tmp_path / "root"
    prefix.mkdir()
    watched = [Path(p) for p in ("/opt/dupwatch", "/etc/dupwatch", "/etc/systemd/system/dupwatch-daemon.service")]
    before = [p.exists() for p in watched]
    result = subprocess.run(
        ["bash", str(INSTALL), "--dry-run", "--prefix", str(prefix), *flags], capture_output=True, text=True,
        timeout=60, check=False,
    )
    assert result.returncode == 0, result.stderr
    plan = result.stdout
    assert f"python3 -m venv {prefix}/opt/dupwatch/venv" in plan or f"{prefix}/opt/dupwatch/venv/bin/pip" in plan
    assert re.search(r"pip install .*-c \S+/constraints.txt", plan)
    assert f"{prefix}/etc/systemd/system/dupwatch-worker@.service" in plan
    assert enabled in plan
    assert "dry run: nothing was changed" in plan
    assert list(prefix.iterdir()) == []
    assert [p.exists() for p in watched] == before


def test_install_rejects_bad_flags():
    result = subprocess.run(["bash", str(INSTALL), "--dry-run", "--workers", "many"], capture_output=True, text=True,
                            check=False)
    assert result.returncode == 2
