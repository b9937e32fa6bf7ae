"""Pieces the benchmarks and the tests share: a throwaway PostgreSQL server."""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from itertools import count
from pathlib import Path


class TempPostgres:
    """A real PostgreSQL of its own: initdb + pg_ctl as the `postgres` user (initdb refuses root),
    loopback only, a free port, a temporary directory; `new_database()` -> an SQLAlchemy URL."""

    def __init__(self) -> None:
        self.bindir = self.bin_dir()
        self.root = Path(tempfile.mkdtemp(prefix="sgo-pg-", dir="/tmp"))
        pg = pwd.getpwnam("postgres")
        os.chown(self.root, pg.pw_uid, pg.pw_gid)
        self.data = self.root / "data"
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "-E", "UTF8")
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.root / "log"), "-w", "start", "-o",
                  f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c max_connections=200")
        self._names = count()

    @staticmethod
    def bin_dir() -> Path:
        found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
        if not found:
            raise FileNotFoundError("PostgreSQL server binaries are not installed (apt-get install postgresql)")
        return found[-1].parent

    @classmethod
    def available(cls) -> bool:
        try:
            cls.bin_dir()
            pwd.getpwnam("postgres")
            return True
        except (FileNotFoundError, KeyError):
            return False

    def _run(self, tool: str, *args: str) -> None:
        subprocess.run(["runuser", "-u", "postgres", "--", str(self.bindir / tool), *args], check=True,
                       capture_output=True)

    def new_database(self) -> str:
        import psycopg

        name = f"sageops{next(self._names)}"
        with psycopg.connect(f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres", autocommit=True) as c:
            c.execute(f"CREATE DATABASE {name}")
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{name}"

    def stop(self) -> None:
        subprocess.run(["runuser", "-u", "postgres", "--", str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m",
                        "fast", "-w", "stop"], capture_output=True)
        shutil.rmtree(self.root, ignore_errors=True)
