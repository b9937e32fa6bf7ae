"""Hostile input to the spec parser, without a daemon or Ray: whatever JSON-like data arrives,
`JobSpec.model_validate` returns a spec or raises ValidationError (which the API maps to a 422),
never another exception; a valid spec survives the JSON round trip it takes through the database;
each hard limit refuses one over and accepts exactly at; and the runner cuts over-long log lines."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from sage_ops.schemas import (
    MAX_ARG_BYTES,
    MAX_ARGS,
    MAX_DEPENDENCIES,
    MAX_DEPENDENCY_CHARS,
    MAX_ENV_NAME,
    MAX_ENV_VARS,
    MAX_EXEC_BYTES,
    MAX_MEMORY,
    MAX_PATH_CHARS,
    MAX_SCRIPT_BYTES,
    SEALED_PREFIX,
    JobSpec,
    parse_memory,
)
from sage_ops.server.backend.attempt import MAX_LOG_LINE, cut_line, split_lines

FAST = settings(
    max_examples=250,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# --- strategies -------------------------------------------------------------------------------

_clean = st.characters(codec="utf-8", exclude_characters="\0")  # what a valid spec may hold
_text = st.text(_clean, max_size=30)
_numbers = st.integers() | st.floats() | st.sampled_from([2**63, -(2**63) - 1, 10**400, 1e308, -0.0])
_scalars = st.none() | st.booleans() | _numbers | st.text(max_size=30)
_sizes = [0, 1, 255, 256, 4096, 4097, 64 * 1024, MAX_ARG_BYTES, MAX_ARG_BYTES + 1, MAX_EXEC_BYTES + 1]
# Huge strings are cheap to build by repetition; multi-byte characters test bytes-not-characters.
_huge = st.builds(
    lambda ch, n: ch * n, st.sampled_from(["a", "é", "😀", "\0", "x\n", "\ufeff"]), st.sampled_from(_sizes)
)


def _nest(depth: int, as_dict: bool) -> Any:
    """Deep nesting, built without recursion: a parser that recursed on it would blow the stack."""
    value: Any = "leaf"
    for _ in range(depth):
        value = {"command": value} if as_dict else [value]
    return value


_deep = st.builds(_nest, st.integers(1, 200), st.booleans())  # deeper: see the plain test (readable failures)
_json_like = (
    st.recursive(
        _scalars | _huge,
        lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=10), kids, max_size=4),
        max_leaves=20,
    )
    | _deep
)
_many = st.builds(
    lambda n, item: [item] * n,
    st.sampled_from([MAX_ARGS, MAX_ARGS + 1, MAX_DEPENDENCIES + 1]),
    st.sampled_from(["x", "", "a" * 65]),
)
_many_vars = st.builds(lambda n: {f"V{i}": "x" for i in range(n)}, st.sampled_from([MAX_ENV_VARS, MAX_ENV_VARS + 1]))
_strings = st.text(max_size=30) | _huge
_env_names = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,12}", fullmatch=True) | st.text(max_size=8) | _huge
_env = st.dictionaries(_env_names, _strings | _json_like, max_size=4) | _many_vars
_memory = _numbers | st.from_regex(r"\s*[0-9]{1,400}(\.[0-9]{1,5})?\s*(|B|KB|MiB|GiB|TiB|XB|k)\s*", fullmatch=True)
_resources = st.fixed_dictionaries(
    {},
    optional={
        "cpu": _numbers,
        "gpu": _numbers,
        "memory": _memory,
        "custom_resources": st.dictionaries(_strings, _numbers),
        "bogus": _json_like,
    },
)
_field_values: dict[str, st.SearchStrategy[Any]] = {
    "kind": st.sampled_from(["command", "script", "pipeline", "COMMAND", ""]),
    "name": st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.:@+=-]{0,130}\n?", fullmatch=True) | _strings,
    "command": st.lists(_strings, max_size=5) | _many,
    "args": st.lists(_strings, max_size=5) | _many,
    "script": st.fixed_dictionaries({"filename": _strings, "content": _strings}, optional={"extra": _json_like}),
    "env": _env,
    "secret_env": _env,
    "working_dir": st.none() | _strings,
    "resources": _resources,
    "dependencies": st.lists(st.text(max_size=130), max_size=4) | _many,
    "priority": _numbers,
    "retry_policy": st.fixed_dictionaries(
        {}, optional={k: _numbers for k in ("max_retries", "retry_delay", "retry_exponential_base", "max_delay")}
    ),
    "timeout": st.none() | _numbers,
    "tenant": st.none() | _strings,
}
_valid_specs = st.builds(
    lambda shape, rest: {**rest, **shape},
    st.fixed_dictionaries({"kind": st.just("command"), "command": st.lists(_text, min_size=1, max_size=5)})
    | st.fixed_dictionaries(
        {
            "kind": st.just("script"),
            "script": st.fixed_dictionaries(
                {"filename": st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,30}", fullmatch=True), "content": _text}
            ),
        }
    ),
    st.fixed_dictionaries(
        {},
        optional={
            "name": st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.:@+=-]{0,127}", fullmatch=True),
            "args": st.lists(_text, max_size=5),
            "env": st.dictionaries(st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,20}", fullmatch=True), _text, max_size=4),
            "secret_env": st.dictionaries(st.from_regex(r"[A-Z_][A-Z0-9_]{0,20}", fullmatch=True), _text, max_size=4),
            "working_dir": st.none() | _text,
            "resources": st.fixed_dictionaries(
                {},
                optional={
                    "cpu": st.floats(0, 100_000),
                    "gpu": st.floats(0, 10_000),
                    "memory": st.none()
                    | st.integers(0, MAX_MEMORY)
                    | st.sampled_from(["512MiB", "8GB", "1.5G", " 3 kb "]),
                    "custom_resources": st.dictionaries(
                        st.from_regex(r"[A-Za-z][A-Za-z0-9_.:@+=-]{2,20}", fullmatch=True).filter(
                            lambda n: n not in {"CPU", "GPU", "memory"}
                        ),
                        st.floats(1e-9, 1e9),
                        max_size=3,
                    ),
                },
            ),
            "dependencies": st.lists(st.text(_clean, max_size=MAX_DEPENDENCY_CHARS), max_size=4),
            "priority": st.integers(-1_000_000, 1_000_000),
            "retry_policy": st.fixed_dictionaries(
                {},
                optional={
                    "max_retries": st.integers(0, 1000),
                    "retry_delay": st.floats(0, 7 * 86400),
                    "retry_exponential_base": st.floats(1, 100),
                    "max_delay": st.floats(0, 7 * 86400),
                },
            ),
            "timeout": st.none() | st.floats(1e-6, 365 * 86400),
            "tenant": st.none() | st.text(_clean, max_size=64),
        },
    ),
)
# A valid spec with up to two fields replaced by a plausible value (huge, unicode, at or past a limit)
# or by junk, sometimes an unknown key; or anything JSON-like at all.
_changes = st.lists(st.sampled_from(sorted(_field_values)), max_size=2, unique=True).flatmap(
    lambda keys: st.fixed_dictionaries({k: _field_values[k] | _json_like for k in keys})
)
_spec_like = (
    st.builds(
        lambda base, changes, extra: {**base, **changes, **extra},
        _valid_specs,
        _changes,
        st.just({}) | st.dictionaries(st.text(max_size=12), _json_like, max_size=1),
    )
    | _json_like
)

# --- the parser as a whole ------------------------------------------------------------------------


@FAST
@given(data=_spec_like)
@example(data={"command": ["x"], "resources": {"memory": "9" * 400}})
def test_any_input_gives_a_spec_or_a_validation_error(data: Any) -> None:
    try:
        spec = JobSpec.model_validate(data)
    except ValidationError as exc:
        assert exc.errors(), "a ValidationError with no error in it"
        event(f"refused: {exc.errors()[0]['type']}")  # see --hypothesis-show-statistics
        return
    assert isinstance(spec, JobSpec)
    event("accepted")
    assert JobSpec.model_validate_json(spec.model_dump_json()) == spec


@FAST
@given(data=_valid_specs)
def test_a_valid_spec_round_trips_through_json(data: dict[str, Any]) -> None:
    spec = JobSpec.model_validate(data)
    assert JobSpec.model_validate_json(spec.model_dump_json()) == spec


@pytest.mark.parametrize(
    "data",
    [
        _nest(100_000, as_dict=False),
        _nest(100_000, as_dict=True),
        {"command": ["x"], "env": _nest(100_000, as_dict=True)},
    ],
)
def test_deep_nesting_is_a_validation_error(data: Any) -> None:
    with pytest.raises(ValidationError):
        JobSpec.model_validate(data)


@pytest.mark.parametrize(
    "body",
    [
        "[" * 100_000 + "]" * 100_000,
        '{"command": ' + "[" * 5000 + "]" * 5000 + "}",
        '{"command": ["\\ud800"]}',
        '{"command": ["x"], "timeout": 1e999}',
        "\xff",
        "",
    ],
)
def test_hostile_json_text_is_a_validation_error(body: str) -> None:
    with pytest.raises(ValidationError):
        JobSpec.model_validate_json(body)


# --- each limit: one over is refused with a message naming the limit, exactly at is accepted -------


def _refused(data: dict[str, Any]) -> str:
    """The one-line text the API would show: location, then the message."""
    with pytest.raises(ValidationError) as info:
        JobSpec.model_validate(data)
    err = info.value.errors()[0]
    loc = ".".join(str(p) for p in err["loc"])
    msg = err["msg"].removeprefix("Value error, ")
    return f"{loc}: {msg}" if loc else msg


def _cmd(**extra: Any) -> dict[str, Any]:
    return {"command": ["run"], **extra}


def _utf8_bytes(n: int, ch: str = "é") -> str:
    """`n` UTF-8 bytes of two-byte characters (plus one 'a' when n is odd)."""
    return ch * (n // 2) + "a" * (n % 2)


def test_script_content_is_measured_in_utf8_bytes() -> None:
    at = {"kind": "script", "script": {"filename": "a.py", "content": _utf8_bytes(MAX_SCRIPT_BYTES)}}
    assert len(JobSpec.model_validate(at).script.content.encode()) == MAX_SCRIPT_BYTES  # type: ignore[union-attr]
    over = {"kind": "script", "script": {"filename": "a.py", "content": "😀" * (MAX_SCRIPT_BYTES // 4 + 1)}}
    assert _refused(over) == "script.content: at most 4194304 bytes (4 MiB) of UTF-8"  # 1 Mi characters only


@pytest.mark.parametrize("field", ["command", "args"])
def test_argument_count(field: str) -> None:
    JobSpec.model_validate(_cmd(**{field: ["x"] * MAX_ARGS}))
    assert _refused(_cmd(**{field: ["x"] * (MAX_ARGS + 1)})) == f"{field}: at most 4096 arguments"


@pytest.mark.parametrize("field", ["command", "args"])
def test_argument_size_and_nul(field: str) -> None:
    JobSpec.model_validate(_cmd(**{field: ["x", _utf8_bytes(MAX_ARG_BYTES)]}))
    assert (
        _refused(_cmd(**{field: ["x", _utf8_bytes(MAX_ARG_BYTES + 1)]}))
        == f"{field}: argument 1: at most 131072 bytes (128 KiB)"
    )
    assert _refused(_cmd(**{field: ["a\0b"]})) == f"{field}: argument 0: must not contain a NUL character"


@pytest.mark.parametrize("field", ["env", "secret_env"])
def test_environment_limits(field: str) -> None:
    JobSpec.model_validate(_cmd(**{field: {f"V{i}": "x" for i in range(MAX_ENV_VARS)}}))
    JobSpec.model_validate(_cmd(**{field: {"N" * MAX_ENV_NAME: _utf8_bytes(MAX_ARG_BYTES)}}))
    assert (
        _refused(_cmd(**{field: {f"V{i}": "x" for i in range(MAX_ENV_VARS + 1)}})) == f"{field}: at most 1024 variables"
    )
    assert (
        _refused(_cmd(**{field: {"N" * (MAX_ENV_NAME + 1): "x"}})) == f"{field}: variable names: at most 256 characters"
    )
    assert (
        _refused(_cmd(**{field: {"BIG": _utf8_bytes(MAX_ARG_BYTES + 1)}}))
        == f"{field}: value of BIG: at most 131072 bytes (128 KiB)"
    )
    assert _refused(_cmd(**{field: {"NUL": "a\0"}})) == f"{field}: value of NUL: must not contain a NUL character"
    assert _refused(_cmd(**{field: {"A\n": "x"}})) == f"{field}: bad environment variable name 'A\\n'"


def test_total_exec_size_counts_env_secret_env_command_and_args_together() -> None:
    # 4 values of 128 KiB in env, 3 in secret_env, and the rest in argv: exactly 1 MiB in all.
    env = {f"E{i}": "v" * (MAX_ARG_BYTES - 2) for i in range(4)}  # each name + value: 128 KiB
    secret = {f"S{i}": "v" * (MAX_ARG_BYTES - 2) for i in range(3)}
    rest = MAX_EXEC_BYTES - 7 * MAX_ARG_BYTES
    at = {"command": ["a" * (rest - 10)], "args": ["é" * 5], "env": env, "secret_env": secret}
    JobSpec.model_validate(at)
    assert (
        _refused({**at, "args": ["é" * 5, "x"]})
        == "env, secret_env, command and args: at most 1048576 bytes (1 MiB) together"
    )


def test_a_sealed_secret_is_measured_as_the_value_it_opens_to(tmp_path: Path) -> None:
    # The daemon stores secret_env sealed (a third larger) and validates the stored spec on every
    # read: a secret at the limit must still load, or one job could break reads and recovery.
    from sage_ops.server.storage.sealing import (  # lazily: a half-edited sealing module fails this test only
        PREFIX,
        Sealer,
    )

    assert PREFIX == SEALED_PREFIX
    sealer = Sealer(tmp_path / "key")
    secrets = {"A": _utf8_bytes(MAX_ARG_BYTES), "B": "b" * (MAX_ARG_BYTES - 1), "C": "c" * (MAX_ARG_BYTES - 2), "D": ""}
    env = {f"E{i}": "e" * (MAX_ARG_BYTES - 2) for i in range(4)}
    used = len("run") + sum(len(k) + len(v.encode()) for k, v in secrets.items()) + 4 * MAX_ARG_BYTES
    env["E4"] = "e" * (MAX_EXEC_BYTES - used - 2)  # exactly 1 MiB in all
    at = JobSpec.model_validate(_cmd(secret_env=secrets, env=env))
    stored = sealer.seal(at)
    assert len(stored.secret_env["A"]) > MAX_ARG_BYTES
    assert JobSpec.model_validate_json(stored.model_dump_json()) == stored
    assert sealer.unseal(JobSpec.model_validate_json(stored.model_dump_json())) == secrets
    over = sealer.seal(at.model_copy(update={"secret_env": {"A": "a" * (MAX_ARG_BYTES + 1)}}))
    assert _refused(over.model_dump()) == "secret_env: value of A: at most 131072 bytes (128 KiB)"
    too_much = sealer.seal(at.model_copy(update={"secret_env": {**secrets, "F": "f"}}))
    assert _refused(too_much.model_dump()).startswith("env, secret_env, command and args: at most 1048576 bytes")


def test_a_secret_that_looks_sealed_is_refused_when_sent(tmp_path: Path) -> None:
    from sage_ops.errors import Invalid
    from sage_ops.server.storage.sealing import Sealer

    try:
        spec = JobSpec.model_validate(_cmd(secret_env={"X": SEALED_PREFIX + "A" * 174_700}))
    except ValidationError:
        return  # refused by the parser: fine too
    with pytest.raises(Invalid, match="may not start with"):
        Sealer(tmp_path / "key").seal(spec)


def test_working_dir() -> None:
    JobSpec.model_validate(_cmd(working_dir="/" + "d" * (MAX_PATH_CHARS - 1)))
    assert _refused(_cmd(working_dir="/" + "d" * MAX_PATH_CHARS)) == "working_dir: at most 4096 characters"
    assert _refused(_cmd(working_dir="/tmp\0x")) == "working_dir: must not contain a NUL character"


def test_dependencies() -> None:
    JobSpec.model_validate(_cmd(dependencies=[f"{i:012x}" for i in range(MAX_DEPENDENCIES)]))
    JobSpec.model_validate(_cmd(dependencies=["n" * MAX_DEPENDENCY_CHARS]))  # a batch may name a job: 128
    assert _refused(_cmd(dependencies=["x"] * (MAX_DEPENDENCIES + 1))) == "dependencies: at most 10000 dependencies"
    assert (
        _refused(_cmd(dependencies=["ok", "n" * (MAX_DEPENDENCY_CHARS + 1)]))
        == "dependencies: dependency 1: at most 128 characters (a job id or name)"
    )


def test_name_may_not_end_in_a_newline() -> None:
    JobSpec.model_validate(_cmd(name="n" * 128))
    assert _refused(_cmd(name="train\n")).startswith("name: ")


def test_existing_fields_keep_their_meaning() -> None:
    spec = JobSpec.model_validate(
        {
            "command": ["echo", "hi"],
            "env": {"A": "1"},
            "secret_env": {"TOKEN": "s"},
            "dependencies": ["abc123abc123"],
            "working_dir": "/tmp",
        }
    )
    assert spec.secret_env == {"TOKEN": "s"} and spec.env == {"A": "1"} and spec.display_name() == "echo hi"


# --- through the API's error mapping ---------------------------------------------------------------


def _api_message(data: Any) -> tuple[int, str, str]:
    """What the API answers: FastAPI prefixes the body's errors with "body" (imported here, lazily,
    so a half-edited api module fails this test only)."""
    from fastapi.exceptions import RequestValidationError

    from sage_ops.server.http.api import _validation_message

    with pytest.raises(ValidationError) as info:
        JobSpec.model_validate(data)
    errors = [{**e, "loc": ("body", *e["loc"])} for e in info.value.errors()]
    return _validation_message(RequestValidationError(errors))


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (_cmd(args=["x"] * (MAX_ARGS + 1)), "args: at most 4096 arguments"),
        (_cmd(env={"V": "a\0"}), "env: value of V: must not contain a NUL character"),
        (_cmd(command=["x"] * 5000, dependencies=["d"] * 20_000), "command: at most 4096 arguments (and 1 more)"),
        (
            {"command": ["x"], "env": {"E": "v" * MAX_ARG_BYTES}, "args": ["a" * MAX_ARG_BYTES] * 8},
            "env, secret_env, command and args: at most 1048576 bytes (1 MiB) together",
        ),
    ],
)
def test_limits_reach_the_api_as_a_one_line_422(data: dict[str, Any], message: str) -> None:
    assert _api_message(data) == (422, "invalid", message)


def test_a_hostile_key_still_gives_a_one_line_message() -> None:
    status, _, message = _api_message({"command": ["x"], "env": {"A\nB": 1}})
    assert status == 422 and "\n" not in message


# --- parse_memory ------------------------------------------------------------------------------------


@FAST
@given(value=_memory | _scalars | st.text())
@example(value="1.5GiB")
@example(value=float("nan"))
def test_parse_memory_raises_only_value_error(value: Any) -> None:
    try:
        out = parse_memory(value)
    except ValueError:
        return
    assert isinstance(out, int) and out >= 0


@pytest.mark.parametrize("value", [float("inf"), "9" * 400], ids=["inf", "400-digits"])
def test_parse_memory_overflow_is_a_value_error(value: Any) -> None:
    with pytest.raises(ValueError):
        parse_memory(value)


def test_an_infinite_custom_resource_is_refused() -> None:
    with pytest.raises(ValidationError):
        JobSpec.model_validate(_cmd(resources={"custom_resources": {"TPU": float("inf")}}))


# --- the runner's log lines --------------------------------------------------------------------------


def test_runner_imports_without_ray_running() -> None:
    # In a fresh interpreter: in a whole test session another test may have started Ray already.
    code = "import ray, sage_ops.server.backend.attempt as r; assert not ray.is_initialized(); print(r.MAX_LOG_LINE)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == str(MAX_LOG_LINE) == str(64 * 1024)


def test_cut_line() -> None:
    assert cut_line(b"x" * MAX_LOG_LINE) == "x" * MAX_LOG_LINE
    assert cut_line(b"x" * (MAX_LOG_LINE + 1)) == "x" * MAX_LOG_LINE + " … [line truncated: 65537 bytes]"
    assert cut_line(b"abc", size=10**9) == "abc … [line truncated: 1000000000 bytes]"
    assert cut_line("é".encode() * 4, limit=5) == "éé … [line truncated: 8 bytes]"  # not half a character
    assert cut_line(b"\xff\xfe") == "\ufffd\ufffd"


@FAST
@given(raw=st.binary(max_size=60) | st.text(max_size=30).map(str.encode), limit=st.integers(1, 40))
def test_cut_line_keeps_at_most_limit_bytes_and_whole_characters(raw: bytes, limit: int) -> None:
    got = cut_line(raw, limit=limit)
    if len(raw) <= limit:
        assert got == raw.decode("utf-8", "replace")
        return
    suffix = f" … [line truncated: {len(raw)} bytes]"
    assert got.endswith(suffix)
    kept = {raw[:end].decode("utf-8", "replace") for end in range(max(0, limit - 3), limit + 1)}
    assert got.removesuffix(suffix) in kept  # up to 3 bytes fewer: a character is never split


@FAST
@given(
    chunks=st.lists(st.binary(max_size=40) | st.sampled_from([b"\n", b"\xc3\xa9" * 9, b"a" * 33]), max_size=30),
    limit=st.integers(1, 24),
)
def test_split_lines_keeps_short_lines_cuts_long_ones_and_holds_little(chunks: list[bytes], limit: int) -> None:
    held, dropped, lines = b"", 0, []
    for chunk in chunks:
        out, held, dropped = split_lines(held, dropped, chunk, limit)
        lines += out
        assert len(held) <= limit + 1  # bounded memory whatever the output
    lines.append(cut_line(held, len(held) + dropped, limit))
    expected = b"".join(chunks).split(b"\n")
    assert len(lines) == len(expected)
    # Streamed in pieces, each line comes out as if it had been cut whole.
    assert lines == [cut_line(raw, limit=limit) for raw in expected]


def test_an_endless_line_is_cut_at_the_limit() -> None:
    held, dropped = b"", 0
    for _ in range(100):  # 6.4 MB without a newline
        out, held, dropped = split_lines(held, dropped, b"y" * 65536)
        assert out == [] and len(held) <= MAX_LOG_LINE + 1
    out, held, dropped = split_lines(held, dropped, b"\nnext")
    assert out == ["y" * MAX_LOG_LINE + f" … [line truncated: {100 * 65536} bytes]"]
    assert (held, dropped) == (b"next", 0)
