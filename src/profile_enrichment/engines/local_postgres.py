"""A throwaway PostgreSQL server: initdb + pg_ctl in a temporary folder.

Used by the engine tests and by `profile-enrichment bench --engines postgres`, so neither needs
a server of its own.

It listens on 127.0.0.1 on a free port, trusts local connections (nothing else can reach it)
and is stopped (``pg_ctl stop -m immediate``) when the tests are done. Durability is switched
off (fsync, synchronous_commit, full_page_writes): the data is thrown away anyway.

PostgreSQL refuses to run as root, and CI runs as root: then the server runs as the
``postgres`` system user (Debian's package creates it) through ``runuser``.

Binaries: ``PE_PG_BINDIR``, else the newest ``/usr/lib/postgresql/<major>/bin`` (Debian's
``postgresql`` package, which ``make postgres`` installs when missing), else ``PATH``.
Only the system temp folder and the server's port are touched.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path


def pg_bindir() -> Path | None:
    """The folder with initdb and pg_ctl, or None when PostgreSQL is not installed."""
    if os.environ.get("PE_PG_BINDIR"):
        return Path(os.environ["PE_PG_BINDIR"])
    versions = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: int(Path(p).parent.parent.name),
    )
    if versions:
        return Path(versions[-1]).parent
    found = shutil.which("initdb")
    return Path(found).parent if found else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class LocalPostgres:
    """One server; ``env()`` gives the PE_PG_* variables that profiles.yml reads."""

    # its own folder directly under the system temp dir: the ``postgres`` user must be able to
    # reach it, and pytest's tmp folders are private to the user running the tests
    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="pe-postgres-")))
    port: int = 0
    user: str = "pe"
    dbname: str = "profile_enrichment"

    def _run(self, *args: str | os.PathLike[str]) -> None:
        command = [str(a) for a in args]
        if os.geteuid() == 0:  # initdb and postgres refuse root
            command = ["runuser", "-u", "postgres", "--", *command]
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} failed:\n{result.stdout}\n{result.stderr}")

    def start(self) -> LocalPostgres:
        bindir = pg_bindir()
        if bindir is None:
            raise RuntimeError("PostgreSQL is not installed: run `make postgres`")
        self.root.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres")
        data, sockets = self.root / "data", self.root / "sockets"
        self._run("mkdir", "-p", sockets)
        self.port = self.port or _free_port()
        self._run(
            bindir / "initdb", "-D", data, "-U", self.user, "--auth=trust",
            "--encoding=UTF8", "--locale=C", "--no-sync",
        )  # fmt: skip
        options = (
            f"-p {self.port} -k {sockets} -c listen_addresses=127.0.0.1 -c fsync=off"
            " -c synchronous_commit=off -c full_page_writes=off -c max_connections=20"
            " -c TimeZone=UTC"
        )
        self._run(bindir / "pg_ctl", "-D", data, "-o", options, "-l", self.root / "server.log",
                  "-w", "-t", "60", "start")  # fmt: skip
        self._run(bindir / "createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", self.user,
                  self.dbname)  # fmt: skip
        return self

    def stop(self) -> None:
        bindir = pg_bindir()
        if bindir is not None and (self.root / "data" / "postmaster.pid").exists():
            self._run(bindir / "pg_ctl", "-D", self.root / "data", "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.root, ignore_errors=True)

    def env(self) -> dict[str, str]:
        return {
            "PE_PG_HOST": "127.0.0.1",
            "PE_PG_PORT": str(self.port),
            "PE_PG_USER": self.user,
            "PE_PG_PASSWORD": "",
            "PE_PG_DBNAME": self.dbname,
        }
