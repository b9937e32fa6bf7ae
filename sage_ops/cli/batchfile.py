"""A batch file (`sage-ops submit-batch FILE`), read into job specs. Every mistake in it is one
line that names the file, the line and the job (`jobs.yaml:7: jobs[2] (train): unknown key
'retires' (did you mean 'retry_policy'?)`), and all of them are usage errors (exit 2): the file is
the command's input, as an option's value is. What the daemon refuses as it stands (queue full, a
quota) is exit 1, as for `submit`.

The file: `jobs:` (a list) and optional `defaults:` merged into each job. `after:` is an alias of
`dependencies:` (names of jobs in the file, or job ids; `after_notok:` and `after_any:` wait for a
job to fail, or to end however it ends); `script:` a file path relative to the
file (its content is shipped); `command:` a list or a string; `workdir:` a directory shipped with
the job (and `working_dir:` too when it is a directory here; `chdir:` is always the node's),
`requirements:` a requirements file for `pip:` (cli/shipping.py). Sizes and durations follow the
CLI's rule (units.py): `memory: 512` is MiB, `timeout: 1h`."""

from __future__ import annotations

import difflib
import re
import shlex
from pathlib import Path
from typing import Any, NoReturn

import click
import yaml
from pydantic import ValidationError

from .. import paths
from ..client import script_spec
from ..errors import SageOpsError
from ..schemas import JobSpec
from . import shipping

KEYS = frozenset(JobSpec.model_fields) | {"after", "workdir", "chdir", "requirements"}  # shipping.batch_keys
_JOB_AT = re.compile(r"^jobs\[(\d+)\]")


class BatchFileError(click.UsageError):
    """A mistake in the batch file: one line, exit 2."""


def _word(x: Any) -> Any:
    if isinstance(x, bool):
        return "true" if x else "false"
    return str(x) if isinstance(x, (int, float)) else x


def _syntax(path: Path, exc: yaml.YAMLError) -> NoReturn:
    """PyYAML's error is several lines about `<unicode string>`: one line about the file."""
    mark = getattr(exc, "problem_mark", None)
    where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    raise BatchFileError(f"{where}: not valid YAML: {problem}")


def line_of(text: str, index: int, key: str | None = None) -> int | None:
    """The line (1-based) of jobs[index] in the file, or of its `key`; None if it cannot tell.
    Asked only when there is an error: the file is read again, with positions."""
    try:
        root = yaml.compose(text)
    except yaml.YAMLError:
        return None
    if isinstance(root, yaml.MappingNode):
        root = next((v for k, v in root.value if k.value == "jobs"), None)
    if not isinstance(root, yaml.SequenceNode) or index >= len(root.value):
        return None
    item = root.value[index]
    if key and isinstance(item, yaml.MappingNode):
        item = next((k for k, _ in item.value if k.value == key), item)
    return item.start_mark.line + 1


def job_error(path: Path, text: str, index: int, name: Any, message: str, key: str | None = None) -> BatchFileError:
    """`FILE:LINE: jobs[i] (name): message`."""
    line = line_of(text, index, key)
    label = f"jobs[{index}]" + (f" ({name})" if isinstance(name, str) and name else "")
    return BatchFileError(f"{path}{'' if line is None else f':{line}'}: {label}: {message}")


def refused(path: Path, message: str) -> BatchFileError:
    """The daemon's refusal of what the file says, with the file and (if it names one) the job's line."""
    found = _JOB_AT.match(message)
    line = line_of(path.read_text(encoding="utf-8"), int(found.group(1))) if found else None
    return BatchFileError(f"{path}{'' if line is None else f':{line}'}: {message}")


# the submit options a file's author may write as keys, and where they go in a job
HINTS = {"retries": "retry_policy: {max_retries: N}", "retry_delay": "retry_policy: {retry_delay: 90s}",
         "retry_backoff": "retry_policy: {retry_exponential_base: B}",
         "cpu": "resources: {cpu: N}", "gpu": "resources: {gpu: N}", "memory": "resources: {memory: 512MiB}",
         "resource": "resources: {custom_resources: {NAME: N}}", "secret_env_file": "secret_env: {NAME: VALUE}"}


def _unknown(key: str) -> str:
    near = HINTS.get(key.replace("-", "_")) or next(iter(difflib.get_close_matches(key, KEYS, n=1)), None)
    return f"unknown key '{key}'" + (f" (did you mean '{near}'?)" if near else "")


def _validation(exc: ValidationError) -> tuple[str, str | None]:
    """The first problem of a job: its message, and the top-level key it is about."""
    err = exc.errors()[0]
    loc = [str(p) for p in err["loc"]]
    if err["type"] == "extra_forbidden":
        message = _unknown(loc[-1]) + (f" in {'.'.join(loc[:-1])}" if len(loc) > 1 else "")
    else:
        message = (f"{'.'.join(loc)}: " if loc else "") + str(err["msg"]).removeprefix("Value error, ")
    return message, (loc[0] if loc else None)


def _item(raw: dict[str, Any], defaults: dict[str, Any]) -> dict[str, Any]:
    item = {**defaults, **raw}
    if "after" in item:
        item["dependencies"] = item.pop("after")
    for key in ("dependencies", "after_notok", "after_any"):  # one job may be named without a list
        if isinstance(item.get(key), str):
            item[key] = [item[key]]
    if isinstance(item.get("command"), str):
        item["command"] = shlex.split(item["command"])
    for key in ("command", "args"):  # YAML reads `[true, 3]` as a bool and an int: argv is text
        if isinstance(item.get(key), list):
            item[key] = [_word(x) for x in item[key]]
    res = item.get("resources")
    if isinstance(res, dict) and isinstance(res.get("memory"), (int, float)) and not isinstance(res["memory"], bool):
        item["resources"] = {**res, "memory": str(res["memory"])}  # a bare number is MiB, as on the command line
    item.setdefault("working_dir", paths.working_dir())
    return item


def load_batch(path: Path) -> list[JobSpec | dict[str, Any]]:
    """The jobs of a batch file, or a BatchFileError naming the file, line and job. A job that
    ships a working directory is a dict: the spec's JSON and its `workdir` (packed at submit)."""
    try:
        text = path.read_text(encoding="utf-8")
        doc = yaml.safe_load(text)
    except (OSError, UnicodeDecodeError) as exc:
        raise BatchFileError(f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}") from None
    except yaml.YAMLError as exc:
        _syntax(path, exc)
    if isinstance(doc, list):
        doc = {"jobs": doc}
    if not isinstance(doc, dict) or not isinstance(doc.get("jobs"), list) or not doc["jobs"]:
        raise BatchFileError(f"{path}: expected a non-empty `jobs:` list")
    if extra := sorted(set(doc) - {"jobs", "defaults"}):
        raise BatchFileError(f"{path}: unknown top-level key '{extra[0]}' (a batch file has `jobs:` and `defaults:`)")
    defaults = doc.get("defaults") or {}
    if not isinstance(defaults, dict):
        raise BatchFileError(f"{path}: `defaults:` is not a mapping")
    specs: list[JobSpec | dict[str, Any]] = []
    named: dict[str, int] = {}
    for i, raw in enumerate(doc["jobs"]):
        if not isinstance(raw, dict):
            raise job_error(path, text, i, None, "not a mapping (a job is `- {name: ..., command: ...}`)")
        name = raw.get("name", defaults.get("name"))
        if isinstance(name, str) and name in named:
            raise job_error(path, text, i, name, f"the name is also jobs[{named[name]}]'s: names in one batch must "
                            "be unique (`after:` refers to them)", "name")
        if isinstance(name, str):
            named[name] = i
        try:
            item = _item(shipping.batch_keys(raw, path.parent), shipping.batch_keys(defaults, path.parent))
            workdir = item.pop("workdir", None)
            if isinstance(item.get("script"), str):
                script = (path.parent / item.pop("script")).resolve()
                spec = script_spec(script, item.pop("args", []), **item)
            else:
                spec = JobSpec.model_validate(item)
            specs.append({**spec.model_dump(mode="json", exclude_defaults=True), "workdir": workdir} if workdir
                         else spec)
        except ValidationError as exc:
            message, key = _validation(exc)
            raise job_error(path, text, i, name, message, key) from None
        except (OSError, SageOpsError, ValueError, TypeError) as exc:
            raise job_error(path, text, i, name, getattr(exc, "message", None) or str(exc), "script") from None
    return specs
