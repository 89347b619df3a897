"""Settings: one name in three forms (TOML section.key, DUPWATCH_SECTION__KEY, --section-key)."""

from __future__ import annotations

import json
import subprocess

import pytest

from daemon import config
from tests.conftest import base_env, dupwatch_cmd


def test_precedence_flags_over_env_over_toml(tmp_path, monkeypatch):
    toml = tmp_path / "config.toml"
    toml.write_text('state_dir = "/tmp/from-toml"\n[model]\nname = "RN50"\nbatch_size = 8\n'
                    '[[webhooks]]\nurl = "http://127.0.0.1:9/a"\nkinds = ["error"]\nmin_score = 50\n')
    monkeypatch.setenv("DUPWATCH_CONFIG", str(toml))
    monkeypatch.setenv("DUPWATCH_MODEL__BATCH_SIZE", "4")
    monkeypatch.setenv("DUPWATCH_MATCH__COPY_SCORE", "91.5")
    s = config.load(config.flag_overrides({"model.device": "cpu", "state_dir": str(tmp_path), "hash_only": None}))
    assert s.state_dir == tmp_path  # flag beats TOML
    assert (s.model.name, s.model.batch_size, s.model.device) == ("RN50", 4, "cpu")  # TOML, env, flag
    assert s.match.copy_score == 91.5 and s.hash_only is False
    assert [(w.url, w.kinds, w.min_score) for w in s.webhooks] == [("http://127.0.0.1:9/a", ["error"], 50)]


def test_webhooks_from_env_json(monkeypatch):
    monkeypatch.delenv("DUPWATCH_CONFIG", raising=False)
    monkeypatch.setenv("DUPWATCH_WEBHOOKS", json.dumps([{"url": "http://127.0.0.1:1/x", "secret": "whsec_AAAA"}]))
    hooks = config.load().webhooks
    assert hooks[0].url == "http://127.0.0.1:1/x" and hooks[0].kinds == ["exact-copy", "edited-copy", "similar"]


def test_a_named_config_file_must_exist(monkeypatch):
    monkeypatch.setenv("DUPWATCH_CONFIG", "/nonexistent/config.toml")
    with pytest.raises(FileNotFoundError):
        config.load()


def test_cli_reports_a_bad_config_file_clearly(tmp_path):
    toml = tmp_path / "bad.toml"
    toml.write_text("[model]\nbatch_size = 0\n")
    proc = subprocess.run(dupwatch_cmd() + ["status", "--config", str(toml)], env=base_env(tmp_path / "s"),
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode != 0 and "bad configuration" in proc.stderr and "batch_size" in proc.stderr
