"""The job spec: everything a submit may say, and the limits that refuse a bad one (422) before
the daemon stores it. Shared by the server, the client and the CLI's --json (no heavy imports
here). What the API answers lives in views.py; the bodies of the other requests, in bodies.py."""

from __future__ import annotations

import math
import re
from enum import Enum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from .errors import Invalid
from .pipeline.shapes import PipelineSpec
from .units import MAX_MEMORY as MAX_MEMORY  # re-exported: the API's limits and size rule live in units
from .units import parse_duration, parse_moment, parse_signal
from .units import parse_memory as parse_memory

MAX_SCRIPT_BYTES = 4 * 1024 * 1024  # script content, in UTF-8 bytes
# Hard limits on one job spec, so a hostile or broken request is refused (422) instead of being
# stored and then failing at exec time, or costing the daemon memory and disk. Sizes are UTF-8 bytes.
MAX_ARGS = 4096  # items in `command`, and in `args`
MAX_ARG_BYTES = 128 * 1024  # one argument or environment value (Linux MAX_ARG_STRLEN)
MAX_ENV_VARS = 1024  # variables in `env`, and in `secret_env`
MAX_ENV_NAME = 256  # characters in one variable name
MAX_EXEC_BYTES = 1024 * 1024  # env + secret_env (names and values) + command + args together (ARG_MAX)
MAX_PATH_CHARS = 4096  # `working_dir` (PATH_MAX)
MAX_DEPENDENCIES = 10_000
Condition = Literal["ok", "notok", "any"]  # what a dependency must end as: completed, not completed, either
MAX_DEPENDENCY_CHARS = 128  # a job id, or in a batch the name of another job (names: up to 128)
SEALED_PREFIX = "sealed:v1:"  # a secret_env value as stored (server/storage/sealing.py: AES-SIV, urlsafe base64)


def _utf8_len(text: str) -> int:
    """Size in UTF-8 bytes: what the limits protect (memory, disk, the kernel's argv) is counted in bytes."""
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))


def _secret_len(value: str) -> int:
    """A secret_env value's size once opened: the stored spec holds it sealed (a third larger, plus
    a 16-byte tag), and must still validate when the daemon reads it back."""
    if not value.startswith(SEALED_PREFIX):
        return _utf8_len(value)
    b64 = value[len(SEALED_PREFIX) :]
    return max(0, len(b64) * 3 // 4 - (len(b64) - len(b64.rstrip("="))) - 16)


_IMAGE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/:@+-]{0,511}$")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:@+=-]{0,127}$")


class Strict(BaseModel):
    # no unknown fields; no inf/NaN (they would be stored as null and never load again)
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class Resources(Strict):
    cpu: float = Field(1.0, ge=0, le=100_000, description="CPUs (Ray num_cpus)")
    memory: int | None = Field(None, description="bytes; text: '8GB', '512MiB', or a bare number of MiB ('512')")
    gpu: float = Field(0.0, ge=0, le=10_000)
    custom_resources: dict[str, float] = Field(default_factory=dict)

    @field_validator("memory", mode="before")
    @classmethod
    def _memory(cls, v: Any) -> int | None:
        return None if v is None else parse_memory(v)

    @field_validator("custom_resources")
    @classmethod
    def _custom(cls, v: dict[str, float]) -> dict[str, float]:
        for name, amount in v.items():
            if not name or name in {"CPU", "GPU", "memory"} or not _NAME_RE.match(name):
                raise ValueError(f"bad custom resource name {name!r}")
            if not math.isfinite(amount) or amount <= 0:
                raise ValueError(f"custom resource {name} must be a positive number")
        return v

    def as_ray(self) -> dict[str, float]:
        """One flat mapping, in Ray's names, to compare with node resources."""
        need = {"CPU": self.cpu, "GPU": self.gpu, **self.custom_resources}
        if self.memory:
            need["memory"] = float(self.memory)
        return {k: v for k, v in need.items() if v}


class RetryPolicy(Strict):
    max_retries: int = Field(0, ge=0, le=1000)
    retry_delay: float = Field(0.0, ge=0, le=7 * 86400)
    retry_exponential_base: float = Field(1.0, ge=1, le=100)
    max_delay: float = Field(3600.0, ge=0, le=7 * 86400, description="cap on one backoff delay, seconds")

    @field_validator("retry_delay", "max_delay", mode="before")
    @classmethod
    def _seconds(cls, v: Any) -> Any:
        return parse_duration(v, zero=True) if isinstance(v, str) else v

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number `attempt` (1-based) before the next one."""
        try:
            raw = self.retry_delay * self.retry_exponential_base ** max(0, attempt - 1)
        except OverflowError:
            raw = self.max_delay
        return min(raw, self.max_delay)


class JobKind(str, Enum):
    SCRIPT = "script"
    COMMAND = "command"
    PIPELINE = "pipeline"


class ScriptFile(Strict):
    """The script travels with the job (content, not path), so it runs on any node."""

    filename: str = Field(min_length=1, max_length=255)
    content: str = Field(description=f"at most {MAX_SCRIPT_BYTES} bytes of UTF-8")

    @field_validator("filename")
    @classmethod
    def _plain(cls, v: str) -> str:
        if "/" in v or v in {".", ".."} or "\0" in v:
            raise ValueError("script filename must be a plain file name")
        return v

    @field_validator("content")
    @classmethod
    def _content(cls, v: str) -> str:
        # Bytes, not characters: 4 Mi characters of emoji would be 16 MiB in the database.
        if _utf8_len(v) > MAX_SCRIPT_BYTES:
            raise ValueError(f"at most {MAX_SCRIPT_BYTES} bytes (4 MiB) of UTF-8")
        return v


class ArraySpec(Strict):
    """One job of many tasks (Slurm's --array): each runs the job's command with its index."""

    indices: str = Field(description="0-999, 0-999:2, 1,3,5-7: ranges with an optional step, in that order")
    throttle: int | None = Field(None, ge=1, le=1_000_000, description="at most this many tasks at once "
                                 "(%N); changeable while it runs (update --throttle)")

    @model_validator(mode="before")
    @classmethod
    def _typed(cls, v: Any) -> Any:
        """`0-999%20` as --array takes it, in a batch file or the client, is the same as the object."""
        if isinstance(v, str):
            indices, _, throttle = v.partition("%")
            return {"indices": indices, "throttle": int(throttle) if throttle.isdigit() else throttle or None}
        return v

    @field_validator("indices")
    @classmethod
    def _indices(cls, v: str) -> str:
        from .arrays import Indices  # the index rules live there, shared with the CLI

        return Indices.parse(v).text()


class ArrayTask(Strict):
    """Which array a task belongs to, and its index: set by the daemon when it makes the task."""

    array_id: str = Field(max_length=20)
    index: int = Field(ge=0)


class Package(Strict):
    """A shipped working directory (sage_ops/workdir.py packed it; `PUT /v1/packages/SHA` stored
    it): unpacked as the job's working directory on the node that runs it."""

    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    size: int = Field(ge=0, description="bytes, packed")


class JobSpec(Strict):
    kind: JobKind = JobKind.COMMAND
    name: str | None = Field(None, max_length=128)
    command: list[str] = Field(default_factory=list, description="argv of a command job")
    script: ScriptFile | None = None
    pipeline: PipelineSpec | None = Field(None, description="a pipeline job: its plan, options and pickled code")
    args: list[str] = Field(default_factory=list, description="arguments after the script")
    env: dict[str, str] = Field(default_factory=dict)
    secret_env: dict[str, str] = Field(
        default_factory=dict, description="like env, but sealed at rest, shown as *** and masked in logs")
    working_dir: str | None = Field(None, description="a directory of the node to run in (shipped files: `package`)")
    package: Package | None = Field(None, description="a working directory shipped with the job (by its content "
                                    "hash): the job runs in its unpacked copy, on any node")
    pip: list[str] = Field(default_factory=list, max_length=1000, description="pip requirements it runs with "
                           "(Ray's runtime_env pip: a virtualenv built and cached on each node)")
    venv: str | None = Field(None, max_length=MAX_PATH_CHARS,
                             description="a virtualenv on the node (absolute path) to run in")
    image: str | None = Field(None, max_length=512,
                              description="a container image to run the command in, with podman on the node")
    resources: Resources = Field(default_factory=Resources)
    dependencies: list[str] = Field(default_factory=list, description="start after each of these completed "
                                    "(Slurm's afterok); if one fails or is cancelled, this job is cancelled")
    after_notok: list[str] = Field(default_factory=list, description="start after each of these ended without "
                                   "completing (failed, cancelled, rejected: afternotok); cancelled if one completes")
    after_any: list[str] = Field(default_factory=list, description="start after each of these ended, however "
                                 "(afterany)")
    priority: int = Field(0, ge=-1_000_000, le=1_000_000)
    retry_policy: RetryPolicy = Field(default_factory=RetryPolicy)
    timeout: float | None = Field(None, gt=0, le=365 * 86400, description="seconds, or '90s', '15m', '1h', '2d'")
    hold: bool = Field(False, description="submitted held: it waits until released (Slurm's --hold)")
    array: ArraySpec | None = Field(None, description="run as an array of tasks, each with its index in "
                                    "SAGE_OPS_ARRAY_INDEX and for {index} in its argv")
    array_task: ArrayTask | None = Field(None, description="set by the daemon on an array's tasks (what a request "
                                         "says is refused)")
    after_corr: list[str] = Field(default_factory=list, description="arrays: task N starts after task N of each "
                                  "of these arrays completed (Slurm's aftercorr)")
    preemptible: bool = Field(False, description="a waiting job of higher priority may stop it to start: it gets "
                              "its `signal`, then is requeued (not a failed attempt; SAGE_OPS_RESTART_COUNT says so)")
    signal: str | None = Field(None, description="SIG@SECONDS (Slurm's --signal, e.g. USR1@60): sent SECONDS "
                               "before its time limit and on preemption, SECONDS before it is stopped")
    kill_on_invalid_dep: bool = Field(True, description="cancel this job when a dependency's condition can never "
                                      "be met (Slurm's --kill-on-invalid-dep); false: it stays PENDING "
                                      "(DependencyNeverSatisfied) until its dependencies are updated, that "
                                      "dependency is retried, or it is cancelled")
    begin_at: float | None = Field(None, ge=0, description="do not start before this moment (Slurm's --begin): "
                                   "epoch seconds, or 'now+1h', '14:30', 'tomorrow 02:00', '2026-12-06T02:00'")
    tenant: str | None = Field(None, max_length=64)
    run_as: str | None = Field(None, max_length=33, description="the Unix user it runs as, set by the daemon from "
                               "who submitted it (what a request says is replaced); null: the daemon's own user")

    @field_validator("timeout", mode="before")
    @classmethod
    def _timeout(cls, v: Any) -> Any:
        return parse_duration(v) if isinstance(v, str) else v

    @field_validator("begin_at", mode="before")
    @classmethod
    def _begin_at(cls, v: Any) -> Any:
        return parse_moment(v) if isinstance(v, str) else v

    @field_validator("command", "args")
    @classmethod
    def _argv(cls, v: list[str]) -> list[str]:
        # The kernel refuses (E2BIG) what is longer; a NUL would silently cut the argument.
        if len(v) > MAX_ARGS:
            raise ValueError(f"at most {MAX_ARGS} arguments")
        for n, arg in enumerate(v):
            if _utf8_len(arg) > MAX_ARG_BYTES:
                raise ValueError(f"argument {n}: at most {MAX_ARG_BYTES} bytes (128 KiB)")
            if "\0" in arg:
                raise ValueError(f"argument {n}: must not contain a NUL character")
        return v

    @field_validator("env", "secret_env")
    @classmethod
    def _env(cls, v: dict[str, str], info: ValidationInfo) -> dict[str, str]:
        size = _secret_len if info.field_name == "secret_env" else _utf8_len
        if len(v) > MAX_ENV_VARS:
            raise ValueError(f"at most {MAX_ENV_VARS} variables")
        for key, value in v.items():
            if len(key) > MAX_ENV_NAME:  # checked first: the message below quotes the name
                raise ValueError(f"variable names: at most {MAX_ENV_NAME} characters")
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):  # fullmatch: `$` would let "A\n" in
                raise ValueError(f"bad environment variable name {key!r}")
            if size(value) > MAX_ARG_BYTES:
                raise ValueError(f"value of {key}: at most {MAX_ARG_BYTES} bytes (128 KiB)")
            if "\0" in value:
                raise ValueError(f"value of {key}: must not contain a NUL character")
        return v

    @field_validator("working_dir")
    @classmethod
    def _working_dir(cls, v: str | None) -> str | None:
        if v is not None and len(v) > MAX_PATH_CHARS:
            raise ValueError(f"at most {MAX_PATH_CHARS} characters")
        if v is not None and "\0" in v:
            raise ValueError("must not contain a NUL character")
        return v

    @field_validator("venv")
    @classmethod
    def _venv(cls, v: str | None) -> str | None:
        if v is not None and (not v.startswith("/") or "\0" in v):
            raise ValueError("an absolute path of the node (a virtualenv there)")
        return v

    @field_validator("image")
    @classmethod
    def _image(cls, v: str | None) -> str | None:
        if v is not None and not _IMAGE_RE.match(v):
            raise ValueError(f"not an image name: {v[:100]!r} (registry/name:tag or name@sha256:...)")
        return v

    @field_validator("pip")
    @classmethod
    def _pip(cls, v: list[str]) -> list[str]:
        for n, req in enumerate(v):
            if not req.strip() or "\0" in req or "\n" in req or len(req) > MAX_PATH_CHARS:
                raise ValueError(f"requirement {n}: one pip requirement per item, no NUL or newline")
        return v

    @field_validator("dependencies", "after_notok", "after_any")
    @classmethod
    def _dependencies(cls, v: list[str]) -> list[str]:
        if len(v) > MAX_DEPENDENCIES:
            raise ValueError(f"at most {MAX_DEPENDENCIES} dependencies")
        for n, dep in enumerate(v):
            if len(dep) > MAX_DEPENDENCY_CHARS:
                raise ValueError(f"dependency {n}: at most {MAX_DEPENDENCY_CHARS} characters (a job id or name)")
        return v

    @field_validator("signal")
    @classmethod
    def _signal(cls, v: str | None) -> str | None:
        if v is None:
            return None
        name, seconds = parse_signal(v)
        return f"{name}@{seconds:g}"

    def stored(self) -> str:
        """The JSON the daemon keeps, in its database and for a queued job: only the fields that were
        given (a `true` job is 32 bytes, not 600). `model_validate_json` reads it back. Given, not
        "different from the default": comparing every field with its default was half the cost
        (0.24 against 0.12 s per 50,000 jobs), and clients send only what differs anyway.

        A string that is not UTF-8 (a lone surrogate, which Python's JSON parser lets through as
        `\\ud800`) cannot be kept: Invalid (422), where the spec first meets the daemon."""
        try:
            return self.model_dump_json(exclude_unset=True)
        except ValueError:  # pydantic's PydanticSerializationError: the only way this dump fails
            raise Invalid("a string in the job is not valid UTF-8 (a lone surrogate escape such as \\ud800)") \
                from None

    def warning(self) -> tuple[str, float] | None:
        """The signal that warns it, and how many seconds ahead (None: no --signal)."""
        return parse_signal(self.signal) if self.signal else None

    @field_validator("name")
    @classmethod
    def _name(cls, v: str | None) -> str | None:
        if v is not None and not _NAME_RE.fullmatch(v):  # fullmatch: `$` would let a trailing newline in
            raise ValueError("name: letters, digits and _.:@+=- only, up to 128 characters")
        return v

    @model_validator(mode="after")
    def _shape(self) -> JobSpec:
        if self.kind is JobKind.SCRIPT and self.script is None:
            raise ValueError("a script job needs `script` {filename, content}")
        if self.kind is JobKind.COMMAND and not self.command:
            raise ValueError("a command job needs a non-empty `command` argv")
        if self.kind is JobKind.PIPELINE and self.pipeline is None:
            raise ValueError("a pipeline job needs `pipeline` (submit it with sage_ops.RemoteEnvironment)")
        if self.kind is not JobKind.PIPELINE and self.pipeline is not None:
            raise ValueError(f"a {self.kind.value} job takes no `pipeline`")
        if self.array is not None and self.kind is JobKind.PIPELINE:
            raise ValueError("a pipeline job cannot be an array")
        if self.after_corr and self.array is None:
            raise ValueError("after_corr (index by index) is for an array job: give it `array` too")
        return self

    @model_validator(mode="after")
    def _conditions(self) -> JobSpec:
        if self.after_notok or self.after_any:
            lists = (self.dependencies, self.after_notok, self.after_any)
            if sum(len(set(x)) for x in lists) != len(self.waits_for()):
                raise ValueError("a dependency is listed under two conditions (dependencies, after_notok, after_any)")
            if len(self.waits_for()) > MAX_DEPENDENCIES:
                raise ValueError(f"at most {MAX_DEPENDENCIES} dependencies")
        return self

    def waits_for(self) -> list[str]:
        """Every job this one waits for, whatever the condition, each once."""
        if not (self.after_notok or self.after_any):
            return self.dependencies
        return list(dict.fromkeys([*self.dependencies, *self.after_notok, *self.after_any]))

    def condition(self, dependency: str) -> Condition:
        """What `dependency` must end as for this job to start."""
        if self.after_notok and dependency in self.after_notok:
            return "notok"
        if self.after_any and dependency in self.after_any:
            return "any"
        return "ok"

    def conditions(self) -> dict[str, Condition]:
        """The dependencies whose condition is not "ok" (completed), with it."""
        if not (self.after_notok or self.after_any):
            return {}
        return {**{d: "notok" for d in self.after_notok}, **{d: "any" for d in self.after_any}}

    def with_dependencies(self, ids: dict[str, str]) -> JobSpec:
        """The same spec with each dependency as `ids` maps it (a batch's names to job ids)."""
        def each(deps: list[str]) -> list[str]:
            return list(dict.fromkeys(ids.get(d, d) for d in deps))

        return self.model_copy(update={"dependencies": each(self.dependencies),
                                       "after_notok": each(self.after_notok), "after_any": each(self.after_any)})

    @model_validator(mode="after")
    def _exec_size(self) -> JobSpec:
        # Each part may be within its own limit and the sum still too big for one exec.
        total = sum(_utf8_len(a) for a in (*self.command, *self.args))
        total += sum(_utf8_len(k) + _utf8_len(v) for k, v in self.env.items())
        total += sum(_utf8_len(k) + _secret_len(v) for k, v in self.secret_env.items())
        if total > MAX_EXEC_BYTES:
            raise ValueError(f"env, secret_env, command and args: at most {MAX_EXEC_BYTES} bytes (1 MiB) together")
        return self

    def display_name(self) -> str:
        if self.name:
            return self.name
        if self.script is not None:
            return self.script.filename
        if self.pipeline is not None:
            return "pipeline"
        return " ".join(self.command)[:60]


