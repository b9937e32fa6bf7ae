"""The YAML config as documented pydantic settings; SAGE_OPS_SECTION__KEY env vars override."""

from __future__ import annotations

import ipaddress
import os
import re
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from . import paths
from .configfile import config_path, read_file  # noqa: F401 - config_path is public here too
from .errors import Invalid
from .nodes.base import HOST_PATTERN, USER_PATTERN
from .units import parse_duration


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
    executors: bool = Field(True, description="while recent jobs ran short, a plain job runs on its node's "
                            "long-lived executor (many jobs per Ray worker), not as a Ray task of its own")
    backfill: bool = Field(True, description="while the head of the queue waits for resources, start a job "
                           "behind it whose --timeout ends before the head's reserved start (EASY backfill)")
    backfill_depth: int = Field(100, ge=1, description="jobs behind the reservation tried per dispatch pass")
    preempt_per_minute: int = Field(10, ge=0, description="preemptions at most per minute (0: never preempt): "
                                    "a burst of high-priority jobs cannot make the cluster thrash")
    array_window: int = Field(256, ge=1, le=100_000, description="an array's tasks made and unfinished at once "
                              "when it has no throttle (%N): the rest are made as these end")
    max_connections: int = Field(512, ge=1, description="open TCP connections at most (also at most half the "
                                 "daemon's open-file limit); more get 503 and are closed")
    max_connections_per_ip: int = Field(64, ge=1, description="open TCP connections from one address at most")
    header_timeout: float = Field(10, gt=0, description="seconds a connection (TCP or socket) has to send a "
                                  "whole request head, from when it opens or its last answer; then it is closed")
    idle_timeout: float = Field(5, gt=0, description="seconds an idle keep-alive connection is kept open")
    retention: float | None = Field(None, gt=0, description="finished jobs older than this (seconds, or 30d, "
                                    "12h) are deleted with their logs and results, in the background (`sage-ops "
                                    "gc`); unset: kept forever")
    retention_batch: int = Field(1000, ge=1, le=100_000, description="jobs deleted per transaction by retention")

    @field_validator("retention", mode="before")
    @classmethod
    def _duration(cls, v: Any) -> Any:
        return parse_duration(v) if isinstance(v, str) else v


class RayConfig(_Section):
    address: str = Field("auto", description="'auto' or 'local': this daemon's own head (started when none "
                         "runs; $RAY_ADDRESS and /tmp/ray are never followed); HOST:PORT joins that cluster, with "
                         "its token (RAY_AUTH_TOKEN_PATH) and only the one expected (ray.cluster_id, else pinned)")
    node_ip: str = Field("127.0.0.1", description="the address of a head the daemon "
                                   "starts: loopback keeps Ray off the network; nodes on other machines (`nodes add`, "
                                   "pools) need this machine's address on their network (Ray token auth guards it; "
                                   "ray.tls encrypts it)")
    namespace: str = "sage-ops"
    include_dashboard: bool = True
    dashboard_host: str = "127.0.0.1"
    dashboard_port: int = 8265
    num_cpus: int | None = Field(None, description="CPUs of a head the daemon starts (default: all)")
    client_server_port: int | None = Field(None, ge=1024, le=65535, description="Ray client server (ray://) "
                                           "of a head the daemon starts, on 127.0.0.1: off unless a port is set")
    metrics_export_port: int | None = Field(None, ge=0, le=65535, description="Prometheus metrics of a head the "
                                            "daemon starts (no auth; 0: any free port): off unless set")
    cluster_id: str | None = Field(None, pattern=r"^[0-9a-f]{16,64}$", description="with address HOST:PORT: the "
                                   "id of the cluster expected there (else the first join pins it in the state dir)")
    temp_root: Path = Field(Path("/tmp"), description="where a head the daemon starts gets its private 0700 temp "
                            "dir (a new random name each start); at most 16 bytes, for Ray's socket paths. The "
                            "systemd unit uses /run/sage-ops, which outlives the service's private /tmp on a restart")
    tls: bool = Field(False, description="mutual TLS on every Ray channel of a head the daemon starts: a cluster "
                      "CA in the state dir signs the head's certificate and each `nodes add` node's (changing it "
                      "restarts the head)")

    @field_validator("node_ip")
    @classmethod
    def _an_address(cls, v: str) -> str:
        try:
            return str(ipaddress.ip_address(v))
        except ValueError:
            raise ValueError("an IP address of this machine (a host name is not: Ray wants the address)") from None

    @field_validator("temp_root")
    @classmethod
    def _short_root(cls, v: Path) -> Path:
        if not v.is_absolute() or len(str(v).encode()) > 16:
            raise ValueError("an absolute path of at most 16 bytes (Ray's Unix socket paths under it must fit "
                             "in 107 bytes)")
        return v


SECRET_OPTIONS = ("key", "secret", "password", "token", "credential")


class StorageConfig(_Section):
    type: Literal["local", "s3", "hdfs", "fsspec"] = Field("local", description="what storage.url is (local: "
                                                          "no url, this machine's disk only)")
    url: str | None = Field(None, description="where logs, results' files and shipped working directories live, "
                            "shared by every daemon of the database (file://, s3://BUCKET/PREFIX, hdfs://, any "
                            "fsspec URL); storage.path is then a cache. Unset: storage.path alone")
    options: dict[str, Any] = Field(default_factory=dict, description="passed to the fsspec backend (S3: "
                                    "endpoint_url, client_kwargs: {region_name}); credentials come from the "
                                    "backend's own chain (AWS_* variables, ~/.aws/credentials), never from here")
    flush_interval: float = Field(1.0, gt=0, le=60, description="seconds between uploads of new log lines to "
                                  "storage.url: what a killed leader can lose at most")
    path: Path = Field(default_factory=lambda: paths.state_dir() / "storage")
    max_log_bytes: int = Field(100 * 2**20, ge=64 * 1024, description="a job's log quota: past it the capture "
                               "ends with a marker line and further output is discarded (the job runs on)")
    max_result_bytes: int = Field(4 * 2**20, ge=1024, le=64 * 2**20, description="a larger result file is "
                                  "ignored, with the reason in the job's log")
    inline_result_bytes: int = Field(64 * 1024, ge=0, le=64 * 2**20, description="a larger result is kept in "
                                     "the store (storage.url, else storage.path), its job's row pointing there")

    @field_validator("url")
    @classmethod
    def _url(cls, v: str | None) -> str | None:
        from .storage_url import check_url  # fsspec is imported only when storage.url is set

        return None if v is None else check_url(v)

    @field_validator("options")
    @classmethod
    def _no_secrets(cls, v: dict[str, Any]) -> dict[str, Any]:
        for name in v:
            if any(word in name.lower() for word in SECRET_OPTIONS):
                raise ValueError(f"{name}: no credentials in the config file (they would be kept in clear): "
                                 "use the backend's own chain (AWS_* variables, ~/.aws/credentials)")
        return v

    @model_validator(mode="after")
    def _typed(self) -> StorageConfig:
        if self.type != "local" and self.url is None:
            raise ValueError(f"storage.type {self.type} needs storage.url ({self.type}://BUCKET/PREFIX)")
        return self

    def blobs_url(self) -> str:
        """The store's URL: storage.url, else a folder of storage.path."""
        return self.url or f"file://{Path(self.path).resolve() / 'blobs'}"


class DatabaseConfig(_Section):
    url: str = Field(default_factory=lambda: f"sqlite:///{paths.state_dir() / 'sage-ops.db'}")
    synchronous: Literal["FULL", "NORMAL"] = Field(
        "FULL", description="SQLite fsync policy; commits are grouped, so FULL costs little"
    )


def redact_url(url: str) -> str:
    """A database URL without its password (health output, logs, doctor)."""
    if "@" not in url or "://" not in url:
        return url
    scheme, rest = url.split("://", 1)
    creds, host = rest.rsplit("@", 1)
    return f"{scheme}://{creds.split(':', 1)[0]}:***@{host}"


class SecurityConfig(_Section):
    socket_mode: str = Field("0600", pattern=r"^0?[0-7]{3}$",
                             description="Unix socket mode; 0660 lets a group in, each uid mapped to a tenant")
    tls_cert: Path | None = Field(None, description="PEM certificate for the TCP listener (with tls_key)")
    tls_key: Path | None = None
    insecure_plaintext: bool = Field(False, description="serve TCP on a host that is not loopback without TLS "
                                     "(bearer tokens then cross the network in clear); off: such a host is refused "
                                     "by `daemon start`, narrowed to loopback by JobManagerServer")
    switch_users: Literal["auto", "on", "off"] = Field(
        "auto", description="multi-user: run each job as its owner's Unix user (auto: when the daemon is root "
        "and setpriv exists); off: every job runs as the daemon's own user, tenants kept apart by the API only")
    sandbox: Literal["auto", "off"] = Field(
        "auto", description="single-user: run the daemon's jobs under bubblewrap (where it works) so they do "
        "not see its state dir, keys, tokens, logs or Ray temp dir")
    secret_key_file: Path = Field(default_factory=lambda: paths.config_dir() / "secret.key",
                                  description="seals --secret-env values at rest; HA daemons share it")
    max_body_bytes: int = Field(32 * 1024 * 1024, ge=1024, description="larger requests get 413")
    rate_limit: float = Field(1000, ge=0, description="requests/s per token or uid (0: unlimited)")
    rate_burst: int = Field(2000, ge=1)
    audit_retention_days: float = Field(90, gt=0)
    denial_audit_interval: float = Field(60, gt=0, description="requests without a valid identity are audited "
                                         "as one row per peer per interval, then one row with the count")

    @model_validator(mode="after")
    def _tls(self) -> SecurityConfig:
        if bool(self.tls_cert) != bool(self.tls_key):
            raise ValueError("give both tls_cert and tls_key (or neither)")
        for f in (self.tls_cert, self.tls_key):
            if f is not None and not Path(f).is_file():
                raise ValueError(f"no such file: {f}")
        return self


class LoggingConfig(_Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    file: Path = Field(default_factory=lambda: paths.state_dir() / "jobmanager.log")
    format: Literal["text", "json"] = Field("text", description="text: time level logger: message; json: one "
                                            "object per line (time, level, logger, message)")
    max_bytes: int = Field(10 * 2**20, ge=0, description="rotate the file at this size (0: never)")
    backups: int = Field(5, ge=0, description="rotated files kept (jobmanager.log.1 ...)")
    stderr: bool = Field(False, description="also log to stderr (systemd's journal; on with --foreground)")

    @model_validator(mode="before")
    @classmethod
    def _upper(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("level"), str):
            data = {**data, "level": data["level"].upper()}
        return data


class MetricsConfig(_Section):
    interval: float = Field(5, ge=1, le=3600, description="seconds between samples of the series")
    retention_days: float = Field(30, gt=0, description="how long the coarsest (10-minute) roll-ups are kept")


class PoolHost(BaseModel):
    """One machine a pool may make a node of: `alice@10.0.0.7:22` as written in the config."""

    model_config = ConfigDict(frozen=True)
    host: str
    user: str | None = None
    port: int = 22

    @classmethod
    def parse(cls, text: str) -> PoolHost:
        user, _, rest = text.strip().rpartition("@")
        host, port = rest, 22
        if rest.count(":") == 1 or rest.startswith("[") and "]:" in rest:  # host:port, [v6]:port
            head, _, tail = rest.rpartition(":")
            if tail.isdigit() and head:
                host, port = head, int(tail)
        host = host.strip("[]")  # a bare v6 address has no port
        if not re.match(HOST_PATTERN, host) or (user and not re.match(USER_PATTERN, user)) or not 0 < port < 65536:
            raise ValueError(f"bad pool host {text!r}: use [user@]host[:port]")
        return cls(host=host, user=user or None, port=port)

    def text(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.user + '@' if self.user else ''}{host}" + (f":{self.port}" if self.port != 22 else "")


class PoolConfig(_Section):
    """A pool of machines the daemon makes Ray nodes of when jobs need them, and lets go when idle."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,31}$")
    hosts: list[str] = Field(default_factory=list, description="[user@]host[:port] of each machine it may use")
    hosts_file: Path | None = Field(None, description="a file of hosts, one per line (# comments)")
    min: int = Field(0, ge=0, description="nodes kept up even when idle")
    max: int | None = Field(None, ge=0, description="nodes at most (default: every host)")
    idle_timeout: float = Field(600, gt=0, description="seconds without a running job before a node is let go")
    backoff: float = Field(30, gt=0, description="seconds a host whose bootstrap failed, or whose node was lost, "
                           "is set aside; doubled per failure in a row, at most an hour")
    resources: dict[str, float] = Field(default_factory=dict, description="what each node offers (CPU, GPU, "
                                        "custom): jobs asking for more are not its demand; given to `ray start`")
    key: Path | None = Field(None, description="SSH private key (default: the agent, then ~/.ssh/id_*)")
    wheel_dir: Path | None = Field(None, description="hosts without a package index install from these wheels "
                                   "(`sage-ops nodes wheels DIR`), as `nodes add --wheel-dir`")

    @field_validator("idle_timeout", "backoff", mode="before")
    @classmethod
    def _duration(cls, v: Any) -> Any:
        return parse_duration(v) if isinstance(v, str) else v

    @field_validator("hosts")
    @classmethod
    def _hosts(cls, v: list[str]) -> list[str]:
        return [PoolHost.parse(h).text() for h in v]

    @model_validator(mode="after")
    def _bounds(self) -> PoolConfig:
        if not self.hosts and self.hosts_file is None:
            raise ValueError(f"pool {self.name}: give its hosts (or a hosts_file)")
        if self.max is not None and self.min > self.max:
            raise ValueError(f"pool {self.name}: min {self.min} is above max {self.max}")
        if self.hosts and self.hosts_file is None and self.min > len(self.hosts):
            raise ValueError(f"pool {self.name}: min {self.min} but only {len(self.hosts)} hosts")
        return self

    def host_list(self) -> list[PoolHost]:
        """Its machines: `hosts`, then the file's (read now: it may be edited while the daemon runs)."""
        lines = list(self.hosts)
        if self.hosts_file is not None:
            lines += [ln.split("#", 1)[0].strip() for ln in self.hosts_file.read_text().splitlines()]
        return list(dict.fromkeys(PoolHost.parse(h) for h in lines if h))

    def ceiling(self) -> int:
        """Nodes at most: `max`, and never more than it has hosts."""
        hosts = len(self.host_list())
        return hosts if self.max is None else min(self.max, hosts)


class NodesConfig(_Section):
    head_address: str | None = Field(None, description="HOST:PORT of the Ray head as new nodes reach it "
                                     "(default: the head's address; loopback becomes this host's name)")
    known_hosts: Path | None = Field(None, description="SSH known_hosts of the daemon (default ~/.ssh/known_hosts)")
    venv: str = Field("~/.sage-ops/venv", description="where on a node ray and sage-ops are installed")
    install_timeout: float = Field(900, gt=0, description="seconds for the install step (pip)")
    join_timeout: float = Field(120, gt=0, description="seconds for `ray start` and for Ray to list the node")
    pools: list[PoolConfig] = Field(default_factory=list, description="machines made nodes on demand and let go "
                                    "when idle (elastic pools)")

    @field_validator("pools")
    @classmethod
    def _unique(cls, v: list[PoolConfig]) -> list[PoolConfig]:
        names = [p.name for p in v]
        if len(set(names)) != len(names):
            raise ValueError("two pools have the same name")
        return v


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
        # flags (init kwargs) > env > the file (a source below env) > defaults
        return (init_settings, env_settings, _FileSource(settings_cls))


_FILE: ContextVar[dict[str, Any] | None] = ContextVar("sage_ops_config_file", default=None)


class _FileSource(PydanticBaseSettingsSource):
    """The YAML file's data, as the lowest source above the defaults (set by load_config)."""

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return (_FILE.get() or {}).get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(_FILE.get() or {})


def load_config(path: str | os.PathLike[str] | None = None, **overrides: Any) -> Config:
    """Flags (`overrides`, as "section.key"; None means not given) > SAGE_OPS_SECTION__KEY env >
    the YAML file (`path`, $SAGE_OPS_CONFIG or the XDG file) > defaults."""
    file, data = read_file(path)
    flags: dict[str, Any] = {}
    for dotted, value in overrides.items():
        if value is not None:
            section, key = dotted.split(".", 1)
            flags.setdefault(section, {})[key] = value
    token = _FILE.set(data)
    try:
        return Config(**flags)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        what = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
        env = "SAGE_OPS_" + "__".join(str(p).upper() for p in err["loc"])
        origin = f"${env}" if env in os.environ else f"config {file}"
        raise Invalid(f"{origin}: {where}: {what}") from None
    finally:
        _FILE.reset(token)


def sources(path: str | os.PathLike[str] | None = None, **overrides: Any) -> dict[str, str]:
    """Where each effective value comes from ("section.key" -> "flag", "env NAME", "file PATH" or
    "default"): what `config show --sources` prints."""
    file, data = read_file(path)
    out: dict[str, str] = {}
    for section, info in Config.model_fields.items():
        model = info.annotation
        for key in getattr(model, "model_fields", {}):
            env = f"SAGE_OPS_{section.upper()}__{key.upper()}"
            if overrides.get(f"{section}.{key}") is not None:
                out[f"{section}.{key}"] = "flag"
            elif env in os.environ:
                out[f"{section}.{key}"] = f"env {env}"
            elif isinstance(data.get(section), dict) and key in data[section]:
                out[f"{section}.{key}"] = f"file {file}"
            else:
                out[f"{section}.{key}"] = "default"
    return out


def template() -> str:
    """A commented config.yaml: every key with its description and default, commented out, so the
    file documents the schema without pinning defaults a later version may improve."""
    lines = ["# sage-ops configuration. Precedence: command-line flags > SAGE_OPS_SECTION__KEY environment",
             "# variables > this file > defaults. Uncomment a key to change it.", ""]
    for section, info in Config.model_fields.items():
        model: Any = info.annotation
        lines.append(f"{section}:")
        values = model().model_dump(mode="json")
        for key, field in model.model_fields.items():
            if field.description:
                lines.append(f"  # {field.description}")
            dumped = yaml.safe_dump({key: values[key]}, default_flow_style=True).strip().strip("{}")
            lines.append(f"  # {dumped}")
        lines.append("")
    return "\n".join(lines)
