"""A team's tracking store on one machine: PostgreSQL and an MLflow server with proxied artifacts.

The README's "beyond one machine" recipe, as code: the tests and the fault benchmark start the
store with exactly these commands (``PostgresServer.commands``, ``MlflowServer.command``), and a
user can bring up the same store to try it::

    python -m xfer.servers --dir /srv/xfer-store --pg-port 5432 --port 5000

PostgreSQL is Debian's ``postgresql`` package (``initdb``/``pg_ctl`` of its newest version); run
as root, its commands run as the ``postgres`` user, which then owns ``dir``. The server process
runs in its own session so stopping it stops its workers too.
"""
from __future__ import annotations

import argparse
import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from .errors import ConfigError

#: the database user and the databases the recipe creates (MLflow's store, an Optuna study's)
USER, PASSWORD, DATABASES = "xfer", "xfer", ("mlflow", "optuna")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pg_bin(tool: str) -> str:
    """A PostgreSQL server tool: on PATH, else Debian's /usr/lib/postgresql/<newest>/bin."""
    found = shutil.which(tool) or next(iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{tool}"), reverse=True)), None)
    if not found:
        raise ConfigError(f"{tool}: PostgreSQL is not installed (Debian: apt-get install postgresql)")
    return found


class PostgresServer:
    """A PostgreSQL cluster in ``directory`` listening on 127.0.0.1:``port``."""

    def __init__(self, directory: str | Path, port: int) -> None:
        self.dir, self.port = Path(directory), port
        self.data, self.log = self.dir / "pgdata", self.dir / "postgres.log"
        self.as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []

    def uri(self, database: str = "mlflow") -> str:
        return f"postgresql://{USER}:{PASSWORD}@127.0.0.1:{self.port}/{database}"

    @property
    def commands(self) -> list[list[str]]:
        """What ``init`` runs (after creating ``dir``), in order."""
        sql = [f"CREATE ROLE {USER} LOGIN PASSWORD '{PASSWORD}'", *(f"CREATE DATABASE {d} OWNER {USER}" for d in DATABASES)]
        return [[*self.as_postgres, pg_bin("initdb"), "-D", str(self.data), "-U", "postgres", "-A", "trust"],
                self._pg_ctl("start"),
                [*self.as_postgres, pg_bin("psql"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres",
                 *(a for s in sql for a in ("-c", s))]]

    def _pg_ctl(self, action: str) -> list[str]:
        opts = ["-o", f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.dir}", "-l", str(self.log)]
        return [*self.as_postgres, pg_bin("pg_ctl"), "-D", str(self.data), "-w", *(["-m", "fast"] if action == "stop"
                                                                                       else opts), action]

    def init(self) -> "PostgresServer":
        self.dir.mkdir(parents=True, exist_ok=True)
        if self.as_postgres:
            shutil.chown(self.dir, "postgres", "postgres")
        for cmd in self.commands:
            _run(cmd)
        return self

    def start(self) -> None:
        _run(self._pg_ctl("start"))

    def stop(self) -> None:
        _run(self._pg_ctl("stop"))


class MlflowServer:
    """``mlflow server`` on 127.0.0.1:``port`` with a database store and proxied artifacts
    (clients upload through the server: ``mlflow-artifacts:/`` URIs, nothing to mount)."""

    def __init__(self, backend_uri: str, artifacts: str | Path, port: int, log: str | Path | None = None) -> None:
        self.backend_uri, self.artifacts, self.port = backend_uri, Path(artifacts), port
        self.log = Path(log) if log else None
        self.proc: subprocess.Popen | None = None

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def command(self) -> list[str]:
        mlflow = str(Path(sys.executable).with_name("mlflow"))
        return [mlflow, "server", "--backend-store-uri", self.backend_uri, "--artifacts-destination",
                str(self.artifacts), "--serve-artifacts", "--host", "127.0.0.1", "--port", str(self.port),
                "--workers", "2"]

    def start(self, timeout: float = 120) -> None:
        out = open(self.log, "ab") if self.log else subprocess.DEVNULL
        self.proc = subprocess.Popen(self.command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.time() + timeout
        while True:
            try:
                with urllib.request.urlopen(f"{self.uri}/health", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            if self.proc.poll() is not None or time.time() > deadline:
                raise RuntimeError(f"mlflow server did not start (exit {self.proc.poll()}); see {self.log}")
            time.sleep(0.3)

    def stop(self) -> None:
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(30)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self.proc = None


def _run(cmd: list[str]) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: exit {proc.returncode}: {(proc.stderr or proc.stdout).strip()[-500:]}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m xfer.servers", description=__doc__.split("\n")[0])
    ap.add_argument("--dir", required=True, help="PostgreSQL's data and the artifacts go here")
    ap.add_argument("--pg-port", type=int, default=5432)
    ap.add_argument("--port", type=int, default=5000)
    args = ap.parse_args(argv)
    pg = PostgresServer(args.dir, args.pg_port)
    (pg.start if pg.data.exists() else pg.init)()
    server = MlflowServer(pg.uri(), Path(args.dir) / "artifacts", args.port)
    server.start()
    print(f"MLFLOW_TRACKING_URI={server.uri}\noptuna storage: {pg.uri('optuna')}\n(Ctrl-C stops both)", flush=True)
    try:
        server.proc.wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
        pg.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
