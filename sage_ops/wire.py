"""The daemon's HTTP/1.1 wire with the standard library only: addresses, one keep-alive connection
over a Unix socket or TCP (TLS through `ssl` when asked), the failover policy, and `WireClient`,
which answers plain JSON.

Why not httpx: it takes ~100 ms to import and ~1 ms a request, more than a whole `sage-ops jobs`
should cost. The CLI's common commands, the sync Python client and the benchmarks all speak
through this one module; the async client keeps httpx.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Iterator
from typing import Any, NamedTuple
from urllib.parse import quote, urlencode

from . import exposure, paths
from .errors import DaemonUnavailable, SageOpsError, from_response

MAX_LINE = 65536


class Options:
    """The client's knobs and their defaults (the Python client's ClientConfig validates the same
    names; the CLI passes a few as keywords)."""

    timeout: float = 30.0
    retry_attempts: int = 3
    failover_timeout: float = 20.0  # with several addresses, keep retrying this long
    connection_pool_size: int = 16
    heartbeat_interval: float = 30.0
    ca: str | None = None  # PEM CA bundle that signed the daemon's TLS certificate; TCP then uses TLS
    insecure: bool = False  # send a token over plain HTTP beyond loopback all the same

    def __init__(self, **values: Any) -> None:
        for key, value in values.items():
            if not hasattr(Options, key):
                raise TypeError(f"unknown client option {key!r}")
            setattr(self, key, value)


class Address(NamedTuple):
    kind: str  # "unix" | "tcp"
    target: str  # socket path or host:port
    tls: bool = False

    def __str__(self) -> str:
        if self.kind == "unix":
            return f"unix://{self.target}"
        return f"{'https' if self.tls else 'tcp'}://{self.target}"


def parse_addresses(value: str | None = None) -> list[Address]:
    """`--address`, then $SAGE_OPS_ADDRESS, then the default socket; comma-separated = failover."""
    value = value or os.environ.get("SAGE_OPS_ADDRESS") or f"unix://{paths.default_socket()}"
    out = []
    for part in (p.strip() for p in value.split(",")):
        if not part:
            continue
        if part.startswith("unix://"):
            out.append(Address("unix", part[len("unix://"):]))
        elif part.startswith("/"):
            out.append(Address("unix", part))
        else:
            tls = part.startswith(("https://", "tls://"))
            for prefix in ("tcp://", "http://", "https://", "tls://"):
                part = part.removeprefix(prefix)
            host, _, port = part.rpartition(":")
            if not host or not port.isdigit():
                raise SageOpsError(f"bad address {part!r}: use unix:///path, HOST:PORT, tcp://HOST:PORT or "
                                   "https://HOST:PORT", "bad_address")
            out.append(Address("tcp", part, tls))
    if not out:
        raise SageOpsError("no daemon address given", "bad_address")
    return out


def token_for(addr: Address, explicit: str | None) -> str | None:
    """The token to send to `addr`: one given (argument or $SAGE_OPS_TOKEN) goes where the caller
    points it; the local admin's file goes only to this state dir's own daemon on loopback TCP
    (exposure.local_daemon), never to another address. On the Unix socket the kernel says who we
    are, unless a token is given explicitly (to act as that token)."""
    if explicit or os.environ.get("SAGE_OPS_TOKEN"):
        return explicit or os.environ["SAGE_OPS_TOKEN"]
    if addr.kind != "tcp":
        return None
    try:
        token = paths.token_file().read_text().strip() or None
    except OSError:
        return None
    return token if token and exposure.local_daemon(addr.target, _pid_in(paths.pidfile())) else None


def _pid_in(pidfile: os.PathLike[str]) -> int | None:
    try:
        with open(pidfile) as f:
            return int(f.read(32).strip() or 0) or None
    except (OSError, ValueError):
        return None


def auth_header(addr: Address, explicit: str | None, config: Any) -> dict[str, str]:
    """`Authorization: Bearer` for `addr` (token_for), refused over plain HTTP beyond loopback
    unless `config.insecure` (SageOpsError "insecure", one line)."""
    token = token_for(addr, explicit)
    if not token:
        return {}
    if addr.kind == "tcp":
        tls = addr.tls or bool(config.ca or os.environ.get("SAGE_OPS_CA"))
        why = exposure.plaintext_refusal(addr.target, tls, bool(config.insecure))
        if why:
            raise SageOpsError(why, "insecure")
    return {"Authorization": f"Bearer {token}"}


def query(params: dict[str, Any] | None) -> str:
    """`?a=1&status=X&status=Y`: lists repeat their key, booleans are lower-case, None is left out."""
    if not params:
        return ""
    pairs = []
    for key, value in params.items():
        for v in value if isinstance(value, (list, tuple)) else [value]:
            if v is not None:
                pairs.append((key, str(v).lower() if isinstance(v, bool) else str(v)))
    return "?" + urlencode(pairs) if pairs else ""


def job_path(job_id: str, tail: str = "") -> str:
    """/v1/jobs/ID[/tail], the id quoted (it comes from a command line)."""
    return f"/v1/jobs/{quote(job_id, safe='')}{tail}"


class WireError(Exception):
    """A transport failure; `connect` says the request never left (safe to send elsewhere)."""

    def __init__(self, cause: BaseException, connect: bool) -> None:
        super().__init__(f"{cause.__class__.__name__}: {cause}")
        self.name = cause.__class__.__name__
        self.connect = connect


class Response(NamedTuple):
    status: int
    headers: dict[str, str]
    body: bytes

    def value(self) -> Any:
        """The JSON body as data, or the text of any other body."""
        if self.headers.get("content-type", "").startswith("application/json"):
            return json.loads(self.body)
        return self.body.decode("utf-8", "replace")

    def error_body(self) -> Any:
        try:
            return json.loads(self.body)
        except ValueError:
            return None


def not_leader(status: int, body: Any) -> bool:
    """A standby's answer to a write: try the other addresses (one of them leads)."""
    return (status == 503 and isinstance(body, dict) and isinstance(body.get("error"), dict)
            and body["error"].get("code") == "not_leader")


def request_bytes(method: str, target: str, host: str, headers: dict[str, str], body: bytes | None) -> bytes:
    """One HTTP/1.1 request, as sent (keep-alive is HTTP/1.1's default)."""
    head = [f"{method} {target} HTTP/1.1", f"Host: {host}", *(f"{k}: {v}" for k, v in headers.items())]
    if body is not None and not any(k.lower() == "content-type" for k in headers):
        head.append("Content-Type: application/json")
    if body is not None or method in ("POST", "PUT", "PATCH"):
        head.append(f"Content-Length: {len(body or b'')}")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + (body or b"")


def parse_head(block: bytes) -> tuple[int, dict[str, str]]:
    """The status and the (lower-cased) headers of a response head."""
    first, *rest = block.decode("latin-1").split("\r\n")
    try:
        status = int(first.split(None, 2)[1])
    except (IndexError, ValueError):
        raise ConnectionResetError(f"not an HTTP answer: {first[:40]!r}") from None
    headers = {}
    for line in rest:
        key, sep, value = line.partition(":")
        if sep:
            headers[key.strip().lower()] = value.strip()
    return status, headers


def chunk_size(line: bytes) -> int:
    """The size in a chunked body's size line (b"1a;ext=1" -> 26)."""
    try:
        return int(line.split(b";", 1)[0].strip(), 16)
    except ValueError:
        raise ConnectionResetError("the daemon closed the connection mid-body") from None


class Connection:
    """One HTTP/1.1 connection, kept alive between requests."""

    def __init__(self, addr: Address, timeout: float | None, ca: str | None) -> None:
        self.host = "sage-ops" if addr.kind == "unix" else addr.target
        try:
            if addr.kind == "unix":
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                sock.settimeout(timeout)
                try:
                    sock.connect(addr.target)
                except OSError:
                    sock.close()
                    raise
            else:
                host, _, port = addr.target.rpartition(":")
                sock = socket.create_connection((host.strip("[]"), int(port)), timeout)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                if addr.tls or ca:
                    import ssl

                    context = ssl.create_default_context(cafile=ca)
                    sock = context.wrap_socket(sock, server_hostname=host.strip("[]"))
        except OSError as exc:  # refused, no socket file, timeout, TLS handshake (ssl errors are OSErrors)
            raise WireError(exc, connect=True) from None
        self.sock = sock
        self.reader = sock.makefile("rb")
        self.open = True

    def send(self, method: str, target: str, body: bytes | None, headers: dict[str, str]) -> None:
        self.sock.sendall(request_bytes(method, target, self.host, headers, body))

    def head(self) -> tuple[int, dict[str, str]]:
        block = []
        while True:
            line = self.reader.readline(MAX_LINE)
            if not line and not block:
                raise ConnectionResetError("the daemon closed the connection")
            block.append(line)
            if line in (b"\r\n", b"\n", b""):
                break
        status, headers = parse_head(b"".join(block))
        if headers.get("connection", "").lower() == "close":
            self.open = False
        return status, headers

    def chunks(self, headers: dict[str, str]) -> Iterator[bytes]:
        """The body as it arrives: chunk by chunk (chunked), else all of it at once."""
        if headers.get("transfer-encoding", "").lower() == "chunked":
            while True:
                size = chunk_size(self.reader.readline(MAX_LINE))
                if size == 0:
                    while self.reader.readline(MAX_LINE) not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return
                data = self.reader.read(size + 2)
                if len(data) < size + 2:
                    raise ConnectionResetError("the daemon closed the connection mid-body")
                yield data[:-2]
        elif "content-length" in headers:
            size = int(headers["content-length"])
            data = self.reader.read(size) if size else b""
            if len(data) < size:
                raise ConnectionResetError("the daemon closed the connection mid-body")
            yield data
        else:
            self.open = False
            yield self.reader.read()

    def request(self, method: str, target: str, body: bytes | None, headers: dict[str, str]) -> Response:
        self.send(method, target, body, headers)
        status, head = self.head()
        return Response(status, head, b"".join(self.chunks(head)))

    def close(self) -> None:
        self.open = False
        try:
            self.reader.close()
            self.sock.close()
        except OSError:
            pass


def lines(chunks: Iterator[bytes]) -> Iterator[bytes]:
    """Non-empty lines of a streamed (NDJSON) body, whatever the chunk boundaries."""
    rest = b""
    for chunk in chunks:
        rest += chunk
        *done, rest = rest.split(b"\n")
        yield from (line for line in done if line.strip())
    if rest.strip():
        yield rest


class Failover:
    """The retry/failover policy of both clients: rounds over the address list, and the one-line
    error when every address failed. Needs `addresses`, `config` (timeout, retry_attempts,
    failover_timeout), `_current` and `_redirected`."""

    addresses: list[Address]
    config: Any
    _current: int = 0
    _redirected: bool = False

    def _order(self) -> list[int]:
        n = len(self.addresses)
        return [(self._current + i) % n for i in range(n)]

    def _rounds(self) -> Iterator[int]:
        """`retry_attempts` rounds; with several addresses (or a standby that names another
        leader) keep going for up to `failover_timeout` seconds, so a failover between daemons
        is ridden out without the caller seeing it."""
        start, attempt = time.monotonic(), 0
        while True:
            yield attempt
            attempt += 1
            several = len(self.addresses) > 1 or self._redirected
            if attempt >= self.config.retry_attempts and (
                    not several or time.monotonic() - start > self.config.failover_timeout):
                return

    def _backoff(self, attempt: int) -> float:
        return min(0.2 * 2**attempt, 1.0)

    def _transport_failed(self, exc: Exception, connect: bool, idempotent: bool) -> Exception:
        """Remember a transport error to try the next address, or raise when retrying is unsafe
        (a request that may have been applied and carries no idempotency key)."""
        if not connect and not idempotent:
            raise self._unavailable(exc) from None
        return exc

    def _standby_answer(self, status: int, body: Any) -> Exception:
        self._redirected = True
        return from_response(status, body)

    def _gave_up(self, last: Exception | None) -> Exception:
        return last if isinstance(last, SageOpsError) else self._unavailable(last)

    def _unavailable(self, last: Exception | None) -> DaemonUnavailable:
        where = ", ".join(str(a) for a in self.addresses)
        if last is not None and "CERTIFICATE_VERIFY_FAILED" in str(last):
            return DaemonUnavailable(f"the TLS certificate of {where} is not trusted: give the CA that signed it "
                                     "with --ca or $SAGE_OPS_CA")
        why = f" ({getattr(last, 'name', last.__class__.__name__)})" if last else ""
        hint = " — is it running? try: sage-ops daemon start" if len(self.addresses) == 1 else ""
        return DaemonUnavailable(f"cannot reach the sage-ops daemon at {where}{why}{hint}")


class WireClient(Failover):
    """Requests to the daemon as plain data: `call("GET", "/v1/jobs")` -> the JSON answer. Keeps
    its connections alive; raises the daemon's error (SageOpsError) or DaemonUnavailable."""

    def __init__(self, address: str | list[Address] | None = None, config: Any = None,
                 token: str | None = None, auth: dict[Address, dict[str, str]] | None = None) -> None:
        self.addresses = address if isinstance(address, list) else parse_addresses(address)
        self.config = config if config is not None else Options()
        self.token = token
        auth = auth or {a: auth_header(a, token, self.config) for a in self.addresses}
        self._current, self._redirected = 0, False
        self._idle: dict[int, list[Connection]] = {}
        self._headers = {i: auth[a] for i, a in enumerate(self.addresses)}

    def _connect(self, i: int, timeout: float | None) -> Connection:
        ca = self.config.ca or os.environ.get("SAGE_OPS_CA")
        addr = self.addresses[i]
        return Connection(addr, timeout, ca if addr.kind == "tcp" else None)

    def _send(self, i: int, method: str, target: str, body: bytes | None, headers: dict[str, str],
              timeout: float) -> Response:
        """One request on an idle connection of address `i` (or a new one). A kept-alive connection
        the daemon closed meanwhile fails before any answer: that one is retried once, fresh."""
        pool = self._idle.setdefault(i, [])
        conn = pool.pop() if pool else None
        for fresh in (conn is None, True):
            if fresh:
                conn = self._connect(i, timeout)
            assert conn is not None
            try:
                conn.sock.settimeout(timeout)
                resp = conn.request(method, target, body, headers)
            except (ConnectionResetError, BrokenPipeError) as exc:
                conn.close()
                if fresh:
                    raise WireError(exc, connect=False) from None
                continue
            except OSError as exc:
                conn.close()
                raise WireError(exc, connect=False) from None
            if conn.open and len(pool) < self.config.connection_pool_size:
                pool.append(conn)
            else:
                conn.close()
            return resp
        raise AssertionError("unreachable")  # pragma: no cover

    def call(self, method: str, path: str, params: dict[str, Any] | None = None, json_body: Any = None,
             headers: dict[str, str] | None = None, timeout: float | None = None, idempotent: bool = True,
             content: bytes | None = None) -> Any:
        """The daemon's answer to one request, with retries and failover as configured; `content`:
        a body of raw bytes (an upload) instead of `json_body`."""
        body = content if content is not None else None if json_body is None else json.dumps(json_body).encode()
        target = path + query(params)
        last: Exception | None = None
        for attempt in self._rounds():
            for i in self._order():
                try:
                    resp = self._send(i, method, target, body, {**self._headers[i], **(headers or {})},
                                      timeout or self.config.timeout)
                except WireError as exc:
                    last = self._transport_failed(exc, exc.connect, idempotent)
                    continue
                if resp.status >= 400:
                    error = resp.error_body()
                    if not_leader(resp.status, error):
                        last = self._standby_answer(resp.status, error)
                        continue
                    self._current = i
                    raise self._why_denied(i, from_response(resp.status, error))
                self._current = i
                return resp.value()
            time.sleep(self._backoff(attempt))
        raise self._gave_up(last)

    def _why_denied(self, i: int, exc: SageOpsError) -> SageOpsError:
        """A 401 from a TCP address we sent no token to: say why none went (token_for)."""
        if exc.status == 401 and self.addresses[i].kind == "tcp" and not self._headers[i]:
            exc.message += ("; no token was sent: the local admin token goes only to this user's own daemon on "
                            "loopback (give --token-file FILE, $SAGE_OPS_TOKEN or token=)")
        return exc

    def stream(self, path: str, params: dict[str, Any] | None = None) -> Iterator[bytes]:
        """The lines of a streamed GET (NDJSON) as they come, on a connection of its own with no
        read timeout (a followed log can be quiet for hours)."""
        last: Exception | None = None
        for i in self._order():
            try:
                conn = self._connect(i, self.config.timeout)
            except WireError as exc:
                last = exc
                continue
            try:
                try:
                    conn.send("GET", path + query(params), None, self._headers[i])
                    status, head = conn.head()
                    if status >= 400:
                        raise from_response(status, Response(status, head, b"".join(conn.chunks(head))).error_body())
                    conn.sock.settimeout(None)
                    yield from lines(conn.chunks(head))
                except OSError as exc:
                    raise self._unavailable(WireError(exc, connect=False)) from None
            finally:
                conn.close()
            return
        raise self._unavailable(last)

    def close(self) -> None:
        for pool in self._idle.values():
            while pool:
                pool.pop().close()
