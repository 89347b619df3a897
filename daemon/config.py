"""Settings: one name per setting in three forms (docs/configuration.md).

TOML key `section.key`, environment `DUPWATCH_SECTION__KEY`, CLI flag `--section-key`. Precedence,
highest first: flags, environment, TOML file, defaults (daemon.defaults). Webhooks are `[[webhooks]]`
tables in TOML or a JSON list in `DUPWATCH_WEBHOOKS`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from daemon import defaults
from daemon.events import MATCH_KINDS, Kind
from daemon.webhooks import secret_key
from workers.settings import Section, WorkerSettings


class RedisSettings(Section):
    url: str | None = Field(None, description="Redis URL. Unset: `run` starts a private Redis in the state dir.")


class MatchSettings(Section):
    phash_max_distance: int = Field(defaults.PHASH_MAX_DISTANCE, ge=-1, le=64,
                                    description="pHash bits for an edited copy (full frame, flips, rotations).")
    window_max_distance: int = Field(defaults.WINDOW_MAX_DISTANCE, ge=-1, le=64,
                                     description="pHash bits for an edited copy via a crop or pad window.")
    dhash_max_distance: int = Field(defaults.DHASH_MAX_DISTANCE, ge=-1, le=64)
    confirm_phash_distance: int = Field(defaults.CONFIRM_PHASH_DISTANCE, ge=-1, le=64)
    confirm_dhash_distance: int = Field(defaults.CONFIRM_DHASH_DISTANCE, ge=-1, le=64)
    copy_score: float | None = Field(defaults.COPY_SCORE, description="Copy-descriptor score (0-100) for "
                                     "edited-copy on its own; unset: the copy model's calibrated value.")
    verify_score: float | None = Field(defaults.VERIFY_SCORE, description="Borderline copy-descriptor score "
                                       "that geometric verification can confirm; unset: calibrated.")
    veto_score: float | None = Field(defaults.VETO_SCORE, description="A hash match the copy descriptor scores "
                                     "under this is not a copy; unset: calibrated.")
    verify: bool = Field(defaults.VERIFY, description="Geometrically verify the candidates whose scores are not "
                         "conclusive (needs OpenCV); off: they are decided on the scores alone.")
    min_inliers: int = Field(defaults.MIN_INLIERS, ge=1, description="RANSAC inliers a verification needs.")
    min_overlap: float = Field(defaults.MIN_OVERLAP, ge=0, le=1, description="Frame overlap a verification needs: "
                               "the larger of the copy's share the original fills and the original's share shown.")
    similar_score: float | None = Field(defaults.SIMILAR_SCORE, description="Semantic score (0-100) for similar.")
    top_k: int = Field(defaults.TOP_K, ge=1)
    keep_deleted: bool = Field(False, description="Deleted files still match new ones.")
    explain_edits: bool = Field(defaults.EXPLAIN_EDITS, description="Align every edited copy with its match "
                                "to say what was edited (crop, flip, altered regions), not only uncertain ones.")


class WatchSettings(Section):
    roots: list[Path] = Field(default_factory=list, description="Folders the daemon watches (`run` takes them as arguments).")
    include: list[str] = Field(default_factory=lambda: ["*.jpg", "*.jpeg", "*.png", "*.gif", "*.webp", "*.bmp",
                                                        "*.tif", "*.tiff", "*.heic", "*.heif", "*.avif"])
    exclude: list[str] = Field(default_factory=list, description="Globs of files or folders never read.")
    poll: bool = Field(False, description="Poll instead of inotify (network mounts).")
    poll_interval_s: float = Field(defaults.WATCH_POLL_INTERVAL_S, gt=0)
    follow_symlinks: bool = False
    settle_ms: int = Field(defaults.WATCH_SETTLE_MS, ge=0)


class QueueSettings(Section):
    batch_size: int = Field(defaults.QUEUE_BATCH_SIZE, ge=1)
    batch_ms: int = Field(defaults.QUEUE_BATCH_MS, ge=0)
    job_timeout_s: int = Field(defaults.JOB_TIMEOUT_S, ge=1)
    pending_retry_s: float = Field(defaults.PENDING_RETRY_S, gt=0)
    max_attempts: int = Field(defaults.MAX_ATTEMPTS, ge=1)


class IndexSettings(Section):
    dtype: Literal["f32", "f16", "i8"] = defaults.INDEX_DTYPE


class ApiSettings(Section):
    enabled: bool = True
    host: str = defaults.API_HOST
    port: int = Field(defaults.API_PORT, ge=1, le=65535)
    token: SecretStr | None = Field(None, description="Bearer token required by the API when set.")
    allow_no_token: bool = Field(False, description="Serve the API on an address other than loopback without "
                                 "api.token: anyone who can reach it reads the catalog and its thumbnails.")
    max_upload_bytes: int = Field(defaults.API_MAX_UPLOAD_BYTES, ge=1, description="Largest search upload.")


class Subscription(Section):
    """Which verdicts a sink wants: these kinds, and (for matches) a best score of at least min_score."""

    kinds: list[Kind] = Field(default_factory=lambda: list(MATCH_KINDS))
    min_score: float = 0.0


class WebhookSettings(Subscription):
    url: str
    secret: SecretStr | None = Field(None, description="whsec_<base64> signing secret (Standard Webhooks).")
    timeout_s: float = Field(defaults.WEBHOOK_TIMEOUT_S, gt=0,
                             description="Bound on one whole attempt: connect, send, and the response body.")

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        """Only http(s): a `file://` URL would turn the sender into a file reader."""
        import httpx

        try:
            url = httpx.URL(value)
        except httpx.InvalidURL as exc:
            raise ValueError(f"not a URL ({exc})") from None
        if url.scheme not in ("http", "https") or not url.host:
            raise ValueError("must be an http:// or https:// URL with a host")
        return value

    @field_validator("secret")
    @classmethod
    def _signing_secret(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            secret_key(value.get_secret_value())  # ValueError saying what is wrong with it
        return value


class CommandSettings(Subscription):
    """A program run once per verdict with the event JSON on stdin: alerts without an HTTP receiver."""

    argv: list[str] = Field(min_length=1, description="Program and arguments (no shell).")
    timeout_s: float = Field(defaults.COMMAND_TIMEOUT_S, gt=0)


class Settings(BaseSettings, WorkerSettings):
    """All of dupwatch's configuration: the worker's settings (workers.settings) and the daemon's own."""

    model_config = SettingsConfigDict(env_prefix="DUPWATCH_", env_nested_delimiter="__", extra="forbid")

    state_dir: Path = Field(defaults.STATE_DIR)
    log_format: Literal["human", "json"] = "human"
    workers: int = Field(defaults.RUN_WORKERS, ge=0, description="Worker processes `run` starts beside the daemon.")
    redis: RedisSettings = Field(default_factory=RedisSettings)
    match: MatchSettings = Field(default_factory=MatchSettings)
    watch: WatchSettings = Field(default_factory=WatchSettings)
    queue: QueueSettings = Field(default_factory=QueueSettings)
    index: IndexSettings = Field(default_factory=IndexSettings)
    api: ApiSettings = Field(default_factory=ApiSettings)
    webhooks: list[WebhookSettings] = Field(default_factory=list)
    commands: list[CommandSettings] = Field(default_factory=list)

    @field_validator("state_dir")
    @classmethod
    def _expand(cls, value: Path) -> Path:
        """Absolute once, here: the private Redis runs in the state dir and would resolve a relative
        path against it again (`relstate/relstate/redis.log`)."""
        return Path(os.path.abspath(value.expanduser()))

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml = TomlConfigSettingsSource(settings_cls, toml_file=config_files())
        return (init_settings, env_settings, toml)


def config_files() -> list[Path]:
    """The TOML files to read: $DUPWATCH_CONFIG alone when set, else the standard places that exist."""
    named = os.environ.get("DUPWATCH_CONFIG")
    if named:
        path = Path(named).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"the configuration file {path} (--config, or DUPWATCH_CONFIG) is not a file: "
                                    "deleted or moved?")
        return [path]
    return [p for p in defaults.CONFIG_PATHS if p.is_file()]


def describe(exc: Exception) -> str:
    """One line for a bad configuration: each wrong setting by its dotted name and what is wrong
    (pydantic's own text spans several lines and ends in a link)."""
    if not isinstance(exc, ValidationError):
        return str(exc)
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "settings"
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown setting"
        parts.append(f"{where}: {msg}")
    return "; ".join(parts)


def load(overrides: dict[str, Any] | None = None) -> Settings:
    """Settings from all sources; `overrides` are nested dicts from CLI flags (highest precedence)."""
    return Settings(**(overrides or {}))


def flag_overrides(pairs: dict[str, Any]) -> dict[str, Any]:
    """Turn {'model.name': 'x', 'hash_only': True} (None values dropped) into nested init kwargs."""
    out: dict[str, Any] = {}
    for dotted, value in pairs.items():
        if value is None:
            continue
        node = out
        *parents, leaf = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return out
