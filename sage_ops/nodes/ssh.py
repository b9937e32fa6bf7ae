"""SSHBackend: make a machine reachable by SSH a Ray node (paramiko: no `ssh` binary, no shell
quoting by hand beyond shlex). Every remote path is absolute (the node's $HOME is read once),
the Ray token only travels over SFTP, and the node's processes are found again by the exact
`SAGE_OPS_NODE=<name>` entry of their environment, never by `ray stop`. Its credentials (token,
transit key, TLS certificate): credentials.py."""

from __future__ import annotations

import base64
import getpass
import hashlib
import json
import os
import re
import shlex
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import paramiko

from . import credentials
from .base import (
    NAME_PATTERN,
    NODE_ENV,
    JoinPlan,
    JoinResult,
    Listed,
    NodeBackend,
    NodeTarget,
    Progress,
    StepFailed,
    StepTimeouts,
    node_resource,
)
from .remote_scripts import CHECK_PY as _CHECK_PY
from .remote_scripts import NEW_TEMP as _NEW_TEMP
from .remote_scripts import PROCS as _PROCS

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_RAISED = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception): ")
# Runs on the node with its python (script on stdin): count, or stop, the processes of our uid
# whose environment holds exactly SAGE_OPS_NODE=<name>; the raylet first (it takes its workers).
class _Timeout(Exception):
    pass


def fingerprint(key: paramiko.PKey) -> str:
    """`ed25519 SHA256:...`, as `ssh-keygen -l` shows it (what a person compares)."""
    kind = key.get_name().removeprefix("ssh-").split("-")[0]
    digest = base64.b64encode(hashlib.sha256(key.asbytes()).digest()).decode().rstrip("=")
    return f"{kind} SHA256:{digest}"


class _HostKeyPolicy(paramiko.MissingHostKeyPolicy):
    """Unknown key: refuse, or (when asked) accept and append it to the known_hosts file the way
    OpenSSH does (append, never rewrite: the file may hold lines paramiko cannot parse)."""

    def __init__(self, accept: bool, path: Path, label: str) -> None:
        self.accept, self.path, self.label = accept, path, label

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
        if not self.accept:
            raise StepFailed("connect", f"host key of {self.label} is not known ({fingerprint(key)}); "
                                        "check it and pass --accept-new-host-key")
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        old = self.path.read_bytes() if self.path.exists() else b""
        lead = "\n" if old and not old.endswith(b"\n") else ""
        with os.fdopen(os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600), "a") as f:
            f.write(f"{lead}{hostname} {key.get_name()} {key.get_base64()}\n")
        client.get_host_keys().add(hostname, key.get_name(), key)


def _connect(target: NodeTarget, timeout: float) -> paramiko.SSHClient:
    """An authenticated client, or StepFailed("connect", one line)."""
    host, port = target.host, target.port
    label, user = f"{host}:{port}", target.user or getpass.getuser()
    known = Path(target.known_hosts or "~/.ssh/known_hosts").expanduser()
    pkey, how = None, "the SSH agent and ~/.ssh/id_*"
    if target.key_file:
        kpath = Path(target.key_file).expanduser()
        how = f"key {kpath}"
        try:
            pkey = paramiko.PKey.from_path(kpath)
        except FileNotFoundError:
            raise StepFailed("connect", f"key file {kpath} does not exist") from None
        except OSError as e:
            raise StepFailed("connect", f"cannot read key file {kpath}: {e.strerror}") from None
        except TypeError:
            raise StepFailed("connect", f"key file {kpath} is passphrase-protected: load it into ssh-agent "
                                        "and leave the key option out") from None
        except (ValueError, paramiko.SSHException) as e:
            raise StepFailed("connect", f"{kpath} is not a private key that can be read ({e})") from None
    client = paramiko.SSHClient()
    try:
        if known.exists():
            client.load_host_keys(str(known))
    except (OSError, paramiko.SSHException) as e:
        raise StepFailed("connect", f"cannot read {known}: {e}") from None
    client.set_missing_host_key_policy(_HostKeyPolicy(target.accept_new_host_key, known, label))
    deadline = time.monotonic() + timeout
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except socket.gaierror as e:
        raise StepFailed("connect", f"cannot resolve {host} ({e.strerror})") from None
    except ConnectionRefusedError:
        raise StepFailed("connect", f"{label} refused the connection (is sshd running there?)") from None
    except TimeoutError:
        raise StepFailed("connect", f"no answer from {label} within {timeout:g} s") from None
    except OSError as e:
        raise StepFailed("connect", f"cannot reach {label}: {e.strerror or e}") from None
    left = max(1.0, deadline - time.monotonic())
    try:
        client.connect(host, port, username=user, pkey=pkey, allow_agent=pkey is None, look_for_keys=pkey is None,
                       sock=sock, timeout=left, banner_timeout=left, auth_timeout=left, channel_timeout=left)
        return client
    except StepFailed:
        client.close()
        raise
    except paramiko.BadHostKeyException as e:
        client.close()
        raise StepFailed("connect", f"host key of {label} has CHANGED (it offers {fingerprint(e.key)}, {known} "
                                    f"has {fingerprint(e.expected_key)}): refused, this can be an attack; remove "
                                    f"the old line from {known} if the change is expected") from None
    except (paramiko.AuthenticationException, paramiko.SSHException) as e:
        client.close()
        if isinstance(e, paramiko.AuthenticationException) or "authentication methods" in str(e):
            why = f"{fingerprint(pkey)} refused" if pkey else "no key was accepted"
            raise StepFailed("connect", f"authentication failed for {user}@{label} with {how} ({why}; is its "
                                        f"public key in ~/.ssh/authorized_keys of {user}?)") from None
        raise StepFailed("connect", f"SSH handshake with {label} failed ({e})") from None
    except (OSError, EOFError) as e:
        client.close()
        if time.monotonic() >= deadline or isinstance(e, TimeoutError):
            raise StepFailed("connect", f"timed out after {timeout:g} s") from None
        raise StepFailed("connect", f"connection to {label} lost ({e or type(e).__name__})") from None


class _Remote:
    """Commands and files on one connected node; secrets are masked out of everything it returns."""

    def __init__(self, client: paramiko.SSHClient, secrets: list[str]) -> None:
        self.client, self.secrets = client, [s for s in secrets if s]
        self._sftp: paramiko.SFTPClient | None = None
        try:
            self.home = self.run('printf %s "$HOME"', 20)[1].strip() or self.sftp().normalize(".")
        except BaseException:
            self.close()
            raise

    def mask(self, text: str) -> str:
        for s in self.secrets:
            text = text.replace(s, "***")
        return text

    def path(self, p: str) -> str:
        """An absolute path on the node: `~` is the node's $HOME, relative paths are under it."""
        if p == "~" or p.startswith("~/"):
            return self.home + p[1:]
        return p if p.startswith("/") else f"{self.home}/{p}"

    def python(self, py: str) -> str:
        """The interpreter as a shell word: a bare name is looked up on the node's PATH."""
        return shlex.quote(self.path(py) if "/" in py else py)

    def sftp(self) -> paramiko.SFTPClient:
        if self._sftp is None:
            self._sftp = self.client.open_sftp()
        return self._sftp

    def run(self, cmd: str, timeout: float, stdin: str | None = None) -> tuple[int, str, str]:
        """(exit code, stdout, stderr); _Timeout when the command outlives `timeout`."""
        deadline = time.monotonic() + timeout
        chan = self.client.get_transport().open_session(timeout=timeout)  # type: ignore[union-attr]
        try:
            chan.exec_command(cmd)
            if stdin is not None:
                chan.sendall(stdin.encode())
                chan.shutdown_write()
            out, err = bytearray(), bytearray()
            while True:
                busy = False
                if chan.recv_ready():
                    out += chan.recv(65536)
                    busy = True
                if chan.recv_stderr_ready():
                    err += chan.recv_stderr(65536)
                    busy = True
                if not busy:
                    if chan.exit_status_ready() and (chan.eof_received or chan.closed):
                        break
                    if time.monotonic() > deadline:
                        raise _Timeout()
                    time.sleep(0.02)
            return chan.recv_exit_status(), self.mask(out.decode(errors="replace")), self.mask(
                err.decode(errors="replace"))
        finally:
            chan.close()

    def procs(self, python: str, name: str, action: str, timeout: float, files: tuple[str, ...] = (),
              step: str = "stop") -> int:
        """Count (action "count") or stop (action "stop") the processes of node `name`; after a
        stop, remove `files` (its credentials)."""
        cmd = f"{python} - {shlex.quote(name)} {action} {timeout:g} {shlex.join(files)}"
        rc, out, err = self.run(cmd, timeout + 20, stdin=_PROCS)
        if rc != 0 or not out.strip().isdigit():
            raise StepFailed(step, f"could not list the processes of {name}: {_last_lines(err or out, 1)}")
        return int(out.strip())

    def close(self) -> None:
        if self._sftp is not None:
            self._sftp.close()
        self.client.close()


def _left(deadline: float) -> float:
    """Seconds left until `deadline`; _Timeout when there is (next to) none."""
    left = deadline - time.monotonic()
    if left <= 1:
        raise _Timeout()
    return left


def _last_lines(text: str, n: int) -> str:
    """The last `n` meaningful lines of a tool's output as one line: an exception with its
    message (Ray), else pip's ERROR lines, else the last lines."""
    lines = [ln.strip() for ln in _ANSI.sub("", text).splitlines() if ln.strip()]
    raised = [i for i, ln in enumerate(lines) if _RAISED.match(ln)]
    if raised:
        return " ".join(lines[raised[-1]:raised[-1] + 8])
    errors = [ln for ln in lines if ln.startswith("ERROR:")]
    return " | ".join((errors or lines)[-n:]) or "no output"


class SSHBackend(NodeBackend):
    """Nodes reached over SSH. `workdir` (on the node) holds the wheelhouse and token files."""

    kind = "ssh"

    def __init__(self, workdir: str = "~/.sage-ops") -> None:
        self.workdir = workdir

    def join(self, target: NodeTarget, plan: JoinPlan, progress: Progress, listed: Listed) -> JoinResult:
        if not re.match(NAME_PATTERN, plan.name):
            raise StepFailed("connect", f"invalid node name {plan.name!r}")
        bad = [k for k in plan.env if not _ENV_NAME.match(k)]
        if bad:
            raise StepFailed("join ray", f"invalid environment variable name {bad[0]!r}")
        result = JoinResult(plan.name, None, "", installed=False, already_joined=False)
        made: dict[str, str] = {}  # what this call created, undone on failure: venv, token, procs
        remote: _Remote | None = None

        @contextmanager
        def step(name: str) -> Iterator[float]:
            limit = plan.timeouts.of(name)
            progress(name, "start", "")
            start = time.monotonic()
            try:
                try:
                    yield limit
                except StepFailed:
                    raise
                except (_Timeout, TimeoutError):
                    raise StepFailed(name, f"timed out after {limit:g} s") from None
                except (paramiko.SSHException, OSError, EOFError) as e:
                    msg = remote.mask(str(e)) if remote else str(e)
                    raise StepFailed(name, f"connection to {target.label()} failed ({msg or type(e).__name__})"
                                     ) from None
                except Exception as e:  # e.g. from `listed`: still one line that names the step
                    msg = remote.mask(str(e)) if remote else str(e)
                    raise StepFailed(name, f"{type(e).__name__}: {msg}") from e
            except BaseException as e:
                result.seconds[name] = time.monotonic() - start
                progress(name, "fail", e.message if isinstance(e, StepFailed) else f"{type(e).__name__}: {e}")
                if remote is not None:
                    self._undo(remote, plan, made)
                raise
            result.seconds[name] = time.monotonic() - start

        try:
            with step("connect") as limit:
                remote = _Remote(_connect(target, limit), [plan.ray_token or "", plan.transit_key or ""])
                progress("connect", "done", target.label())
            with step("check python") as limit:
                result.python = self._check_python(remote, target, plan, limit)
                progress("check python", "done", f"Python {result.python}")
            with step("install") as limit:
                result.installed = self._install(remote, plan, limit, made, progress)
            with step("join ray") as limit:
                result.ray_node_id = self._join(remote, plan, limit, made, listed, progress)
                result.already_joined = result.ray_node_id is not None
            with step("verify") as limit:
                if result.already_joined:
                    progress("verify", "skip", f"listed as {result.ray_node_id}")
                else:
                    result.ray_node_id = listed(plan.name, limit)
                    if not result.ray_node_id:
                        raise StepFailed("verify", f"Ray does not list node {plan.name} after {limit:g} s")
                    progress("verify", "done", f"Ray node {result.ray_node_id}")
            return result
        finally:
            if remote is not None:
                remote.close()

    def _check_python(self, remote: _Remote, target: NodeTarget, plan: JoinPlan, limit: float) -> str:
        py, venv = plan.python_bin, remote.path(plan.venv)
        rc, out, err = remote.run(f"{remote.python(py)} -c "
                                  f"{shlex.quote(_CHECK_PY)} {shlex.quote(venv)}", limit)
        want = ".".join(map(str, plan.python))
        if rc == 127 or (rc != 0 and not out):
            raise StepFailed("check python", f"{py} not found on {target.host} (install Python {want} or pass "
                                             "--python)")
        version, has_venv, venv_ok = (out.splitlines() + ["", "", ""])[:3]
        if ".".join(version.split(".")[:2]) != want:
            raise StepFailed("check python", f"{py} on {target.host} is Python {version}, the head runs {want}: Ray "
                                             "needs the same minor version everywhere (pass --python)")
        if venv_ok != "ok" and has_venv != "True":
            raise StepFailed("check python", f"{py} on {target.host} cannot make a venv ({venv_ok}; on Debian/"
                                             f"Ubuntu install python{want}-venv)")
        return version

    def _install(self, remote: _Remote, plan: JoinPlan, limit: float, made: dict[str, str],
                 progress: Progress) -> bool:
        deadline = time.monotonic() + limit
        venv = remote.path(plan.venv)
        qv = shlex.quote(venv)
        check = 'import ray, sage_ops, importlib.metadata as m; print(ray.__version__, m.version("sage-ops"))'
        rc, out, _ = remote.run(f"test -x {qv}/bin/python && {qv}/bin/python -I -c {shlex.quote(check)}", limit)
        if rc == 0 and out.split() == [plan.ray_version, plan.sage_ops_version]:
            progress("install", "skip", f"already installed in {venv}")
            return False
        if rc != 0:  # no usable venv there: make one (and own it only if the path was free)
            if remote.run(f"test -e {qv}", limit)[0] != 0:
                made["venv"] = venv
            rc, out, err = remote.run(f"{remote.python(plan.python_bin)} -m venv {qv}", limit)
            if rc != 0:
                raise StepFailed("install", f"could not create {venv}: {_last_lines(err or out, 1)}")
        # sage-ops from the daemon's own wheel (it is on no index); Ray and the rest from the node's
        # package index (pip's own config there), or from --wheel-dir when the node has none
        sage_ops, shipped = shlex.quote(f"sage-ops=={plan.sage_ops_version}"), ""
        pip = f"{qv}/bin/python -m pip install --disable-pip-version-check --progress-bar off"
        if plan.wheel_dir:
            wheels = remote.path(f"{self.workdir}/wheels")
            if not (local := sorted(Path(plan.wheel_dir).glob("*.whl"))):
                raise StepFailed("install", f"no wheels in {plan.wheel_dir} (`sage-ops nodes wheels DIR` makes them)")
            shipped = f" ({self._upload(remote, local, wheels, deadline)} wheels copied)"
            pip += f" --no-index --find-links {shlex.quote(wheels)}"
        if plan.sage_ops_wheel:
            dist = remote.path(f"{self.workdir}/dist")
            self._upload(remote, [Path(plan.sage_ops_wheel)], dist, deadline, only=True)
            sage_ops = shlex.quote(f"{dist}/{Path(plan.sage_ops_wheel).name}")
            shipped = shipped or " (sage-ops shipped, the rest from the node's package index)"
        reqs = f"{shlex.quote(f'ray[default]=={plan.ray_version}')} {sage_ops}"
        left = _left(deadline)
        rc, out, err = remote.run(f"timeout -k 5 {left:.0f} {pip} {reqs}", left + 10)
        if rc == 124:
            raise _Timeout()
        if rc != 0:
            raise StepFailed("install", _last_lines(err or out, 1))
        progress("install", "done", f"ray {plan.ray_version}, sage-ops {plan.sage_ops_version} in {venv}{shipped}")
        return True

    def _upload(self, remote: _Remote, files: list[Path], dest: str, deadline: float, only: bool = False) -> int:
        """SFTP the files that are not in `dest` with the same size yet; returns how many were sent.
        `only`: also remove the other wheels there (older builds of the one wheel it holds)."""
        rc, _, err = remote.run(f"umask 077 && mkdir -p {shlex.quote(dest)}", 20)
        if rc != 0:
            raise StepFailed("install", f"cannot create {dest}: {_last_lines(err, 1)}")
        sftp = remote.sftp()
        there = {a.filename: a.st_size for a in sftp.listdir_attr(dest)}
        sent = 0
        for w in files:
            if there.get(w.name) == w.stat().st_size:
                continue
            sftp.get_channel().settimeout(_left(deadline))  # type: ignore[union-attr]
            sftp.put(str(w), f"{dest}/.{w.name}.part")
            sftp.posix_rename(f"{dest}/.{w.name}.part", f"{dest}/{w.name}")
            sent += 1
        for name in [n for n in there.keys() - {w.name for w in files} if n.endswith(".whl")] if only else []:
            sftp.remove(f"{dest}/{name}")
        return sent

    def _join(self, remote: _Remote, plan: JoinPlan, limit: float, made: dict[str, str], listed: Listed,
              progress: Progress) -> str | None:
        """Start the node's raylet; returns its Ray id when it was up and listed already."""
        deadline = time.monotonic() + limit
        py = remote.python(plan.python_bin)
        running = remote.procs(py, plan.name, "count", 10, step="join ray")
        if running:
            node_id = listed(plan.name, min(5.0, limit / 4))
            if node_id:
                progress("join ray", "skip", f"already running ({running} processes)")
                return node_id
            progress("join ray", "start", f"stopping {running} stale processes of {plan.name}")
        # what an earlier Ray of this node left (killed, nothing running now): its temp dir too
        record = credentials.node_files(remote, self.workdir, plan.name)["ray_temp"]
        remote.procs(py, plan.name, "stop", min(30.0, limit / 4), (record,), step="join ray")
        env = {NODE_ENV: plan.name, "RAY_DEFAULT_PYTHON_VERSION_MATCH_LEVEL": "minor",
               "RAY_USAGE_STATS_ENABLED": "0"}
        env.update(credentials.provision(remote, plan, self.workdir, made, _left(deadline)))
        env.update({k: v for k, v in plan.env.items() if k != NODE_ENV})
        resources = {**plan.resources, node_resource(plan.name): 1}
        rc, out, err = remote.run(f"{py} -I -", 20, stdin=_NEW_TEMP)
        if rc != 0 or not out.strip().startswith("/"):
            raise StepFailed("join ray", f"could not make a private temp dir: {_last_lines(err or out, 1)}")
        temp = out.strip().splitlines()[-1]
        credentials.put_secret(remote, credentials.node_files(remote, self.workdir, plan.name)["ray_temp"], temp)
        args = [f"{remote.path(plan.venv)}/bin/ray", "start", f"--address={plan.head_address}",
                f"--resources={json.dumps(resources)}", f"--temp-dir={temp}"]
        args += [f"--num-cpus={plan.num_cpus}"] if plan.num_cpus is not None else []
        args += [f"--num-gpus={plan.num_gpus}"] if plan.num_gpus is not None else []
        args += [f"--node-ip-address={plan.node_ip}"] if plan.node_ip else []
        args.append("--disable-usage-stats")
        made["procs"] = py
        for attempt in (1, 2):
            left = _left(deadline)
            cmd = shlex.join(["timeout", "-k", "5", f"{left:.0f}", "env", *(f"{k}={v}" for k, v in env.items()),
                              *args])
            rc, out, err = remote.run(cmd, left + 10)
            if rc == 124:
                raise _Timeout()
            if rc == 0:
                break
            # A busy machine's raylet can miss the fixed 30 s Ray gives it to register: once more
            if attempt == 1 and "timed out during startup" in out + err and _left(deadline) > 45:
                remote.procs(py, plan.name, "stop", 20, step="join ray")
                progress("join ray", "start", "retrying: the raylet missed Ray's 30 s registration window")
                continue
            raise StepFailed("join ray", f"ray start failed: {_last_lines(err if err.strip() else out, 3)}")
        progress("join ray", "done", f"ray start --address={plan.head_address}")
        return None

    def _undo(self, remote: _Remote, plan: JoinPlan, made: dict[str, str]) -> None:
        """Best effort: stop what was started, remove the credentials and a venv this call made."""
        try:
            if "procs" in made:
                record = credentials.node_files(remote, self.workdir, plan.name)["ray_temp"]
                remote.procs(made["procs"], plan.name, "stop", 20, (record,))
            if files := [made[k] for k in ("token", "transit", "tls") if k in made]:
                remote.run(f"rm -rf {shlex.join(files)}", 20)
            if "venv" in made:
                remote.run(f"rm -rf {shlex.quote(made['venv'])}", 60)
        except (StepFailed, _Timeout, paramiko.SSHException, OSError, EOFError):
            pass

    def stop(self, target: NodeTarget, name: str, timeout: float = 60) -> int:
        if not re.match(NAME_PATTERN, name):
            raise StepFailed("stop", f"invalid node name {name!r}")
        remote = None
        try:
            remote = _Remote(_connect(target, StepTimeouts().connect), [])
            work = shlex.quote(remote.path(self.workdir))
            py = f"$(for p in python3 python {work}/venv/bin/python; do command -v $p && break; done | head -n 1)"
            return remote.procs(py, name, "stop", timeout, tuple(credentials.node_files(remote, self.workdir,
                                                                                         name).values()))
        except StepFailed as e:
            raise StepFailed("stop", e.message if e.step == "stop" else str(e)) from None
        except (_Timeout, TimeoutError):
            raise StepFailed("stop", f"timed out after {timeout + 20:g} s") from None
        except (paramiko.SSHException, OSError, EOFError) as e:
            raise StepFailed("stop", f"connection to {target.label()} failed ({e or type(e).__name__})") from None
        finally:
            if remote is not None:
                remote.close()
