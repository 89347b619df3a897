"""Options every `dupwatch` command shares, and how flags become settings (`--section-key` = `section.key`).

Separate from daemon.cli.main so command groups in other modules (daemon.cli.webhook) use the same options.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import click

from daemon import config

COMMON = [
    click.option("--config", "config_file", type=click.Path(dir_okay=False), help="TOML config file."),
    click.option("--state-dir", type=click.Path(file_okay=False), help="Catalog, index and logs live here."),
    click.option("--redis-url", help="Use this Redis instead of a private one."),
    click.option("--hash-only", is_flag=True, default=None, help="No embedding model; hashes only."),
    click.option("--require-model", is_flag=True, default=None, help="Fail instead of falling back to hashes."),
    click.option("--model-name", help="open_clip architecture, e.g. ViT-B-32."),
    click.option("--model-pretrained", help="open_clip pretrained tag or local checkpoint path."),
    click.option("--model-device", help="auto, cpu, cuda, cuda:1 ..."),
    click.option("--model-batch-size", type=int),
    click.option("--log-level"),
    click.option("--log-format", type=click.Choice(["human", "json"])),
]

FLAG_TO_SETTING = {
    "state_dir": "state_dir", "redis_url": "redis.url", "hash_only": "hash_only",
    "require_model": "require_model", "model_name": "model.name", "model_pretrained": "model.pretrained",
    "model_device": "model.device", "model_batch_size": "model.batch_size", "log_level": "log_level",
    "log_format": "log_format", "workers": "workers", "watch_poll": "watch.poll",
    "api_host": "api.host", "api_port": "api.port",
}


def common(fn):
    for option in reversed(COMMON):
        fn = option(fn)
    return fn


def settings_from(params: dict[str, Any], *, logs: bool = True) -> config.Settings:
    """Settings from flags (highest), env, TOML. Consumes the flag entries of `params`. `logs=False` for a
    SIGHUP reload: the daemon applies the log settings only once the whole new configuration is valid."""
    config_file = params.pop("config_file", None)
    if config_file:
        os.environ["DUPWATCH_CONFIG"] = str(Path(config_file).resolve())
    flags = {FLAG_TO_SETTING[k]: params.pop(k) for k in list(params) if k in FLAG_TO_SETTING}
    try:
        settings = config.load(config.flag_overrides(flags))
    except Exception as exc:
        raise click.ClickException(f"bad configuration: {config.describe(exc)}") from exc
    if logs:
        setup_logging(settings)
    return settings


def setup_logging(settings: config.Settings) -> None:
    from daemon.logs import configure

    configure(settings.log_level, settings.log_format)
