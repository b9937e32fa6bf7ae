"""The YAML config as documented pydantic settings; SAGE_OPS_SECTION__KEY env vars override."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from . import paths
from .errors import Invalid


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class JobManagerConfig(_Section):
    host: str | None = Field(None, description="TCP listen address; TCP is off while this is unset")
    port: int = Field(19001, ge=0, le=65535)
    socket: Path = Field(default_factory=paths.default_socket)
    max_jobs: int = Field(1000, ge=1, description="active (non-terminal) jobs; more are REJECTED")
    job_timeout: float = Field(3600, gt=0, description="default per-attempt timeout in seconds")
    heartbeat_interval: float = Field(30, gt=0)
    kill_grace: float = Field(5, ge=0, description="seconds between SIGTERM and SIGKILL on cancel")
    prefetch: int = Field(4, ge=0, le=1000, description="short jobs queued in Ray beyond free CPUs (lease reuse)")


class RayConfig(_Section):
    address: str = Field("auto", description="'auto', 'local' (always start our own head) or HOST:PORT")
    namespace: str = "sage-ops"
    include_dashboard: bool = True
    dashboard_host: str = "127.0.0.1"
    dashboard_port: int = 8265
    num_cpus: int | None = Field(None, description="CPUs of a head the daemon starts (default: all)")


class StorageConfig(_Section):
    type: Literal["local"] = "local"
    path: Path = Field(default_factory=lambda: paths.state_dir() / "storage")


class DatabaseConfig(_Section):
    url: str = Field(default_factory=lambda: f"sqlite:///{paths.state_dir() / 'sage-ops.db'}")
    synchronous: Literal["FULL", "NORMAL"] = Field(
        "FULL", description="SQLite fsync policy; commits are grouped, so FULL costs little"
    )


class SecurityConfig(_Section):
    socket_mode: str = Field("0600", pattern=r"^0?[0-7]{3}$",
                             description="Unix socket mode; 0660 lets a group in, each uid mapped to a tenant")
    tls_cert: Path | None = Field(None, description="PEM certificate for the TCP listener (with tls_key)")
    tls_key: Path | None = None
    secret_key_file: Path = Field(default_factory=lambda: paths.config_dir() / "secret.key",
                                  description="seals --secret-env values at rest; HA daemons share it")
    max_body_bytes: int = Field(32 * 1024 * 1024, ge=1024, description="larger requests get 413")
    rate_limit: float = Field(1000, ge=0, description="requests/s per token or uid (0: unlimited)")
    rate_burst: int = Field(2000, ge=1)
    audit_retention_days: float = Field(90, gt=0)

    @model_validator(mode="after")
    def _tls(self) -> SecurityConfig:
        if bool(self.tls_cert) != bool(self.tls_key):
            raise ValueError("give both tls_cert and tls_key (or neither)")
        for f in (self.tls_cert, self.tls_key):
            if f is not None and not Path(f).is_file():
                raise ValueError(f"no such file: {f}")
        return self


class LoggingConfig(_Section):
    level: str = "INFO"
    file: Path = Field(default_factory=lambda: paths.state_dir() / "jobmanager.log")


class MetricsConfig(_Section):
    interval: float = Field(5, ge=1, le=3600, description="seconds between samples of the series")
    retention_days: float = Field(30, gt=0, description="how long the coarsest (10-minute) roll-ups are kept")


class NodesConfig(_Section):
    head_address: str | None = Field(None, description="HOST:PORT of the Ray head as new nodes reach it "
                                     "(default: the head's address; loopback becomes this host's name)")
    known_hosts: Path | None = Field(None, description="SSH known_hosts of the daemon (default ~/.ssh/known_hosts)")
    venv: str = Field("~/.sage-ops/venv", description="where on a node ray and sage-ops are installed")
    install_timeout: float = Field(900, gt=0, description="seconds for the install step (pip)")
    join_timeout: float = Field(120, gt=0, description="seconds for `ray start` and for Ray to list the node")


class Config(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SAGE_OPS_", env_nested_delimiter="__", extra="forbid")

    jobmanager: JobManagerConfig = Field(default_factory=JobManagerConfig)
    ray: RayConfig = Field(default_factory=RayConfig)
    storage: StorageConfig = Field(default_factory=StorageConfig)
    database: DatabaseConfig = Field(default_factory=DatabaseConfig)
    logging: LoggingConfig = Field(default_factory=LoggingConfig)
    security: SecurityConfig = Field(default_factory=SecurityConfig)
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)
    nodes: NodesConfig = Field(default_factory=NodesConfig)

    @classmethod
    def settings_customise_sources(
        cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource, dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # env beats the file (passed as init kwargs by load_config)
        return (env_settings, init_settings)


def load_config(path: str | os.PathLike[str] | None = None, **overrides: Any) -> Config:
    """Read `path` (or $SAGE_OPS_CONFIG, or the XDG config file if present) and apply overrides."""
    explicit = path or os.environ.get("SAGE_OPS_CONFIG")
    file = Path(explicit) if explicit else paths.config_file()
    data: dict[str, Any] = {}
    if file.exists():
        try:
            data = yaml.safe_load(file.read_text()) or {}
        except yaml.YAMLError as exc:
            raise Invalid(f"config {file}: not valid YAML ({exc.__class__.__name__})") from None
        if not isinstance(data, dict):
            raise Invalid(f"config {file}: expected a mapping at the top level")
    elif explicit:
        raise Invalid(f"config {file}: no such file")
    for dotted, value in overrides.items():
        if value is None:
            continue
        section, key = dotted.split(".", 1)
        data.setdefault(section, {})[key] = value
    try:
        return Config(**data)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        raise Invalid(f"config {file}: {where}: {err['msg']}") from None
