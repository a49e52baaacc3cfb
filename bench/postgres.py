"""A throwaway PostgreSQL cluster for DBOS, as durable as its SQLite peer: fsync on.

The tests' cluster (tests/postgres.py) runs with fsync off, which suits a test that kills processes but
would make a commit cost nothing a power cut could notice; here every commit waits for its WAL flush.
"""

from __future__ import annotations

import glob
import shutil

from tests.postgres import PostgresCluster, _binary

# Settings named in the method; all three are Postgres' defaults, set explicitly so no config file changes them.
SETTINGS = {"fsync": "on", "synchronous_commit": "on", "full_page_writes": "on"}
NOT_INSTALLED = "no PostgreSQL installed"


def installed() -> bool:
    return bool(shutil.which("initdb") or glob.glob("/usr/lib/postgresql/*/bin/initdb"))


class DurableCluster(PostgresCluster):
    def start(self) -> DurableCluster:
        self._run(_binary("initdb"), "-D", str(self.data), "-U", "postgres", "-A", "trust", "-E", "UTF8",
                  "--no-sync")
        settings = " ".join(f"-c {name}={value}" for name, value in SETTINGS.items())
        options = f"-p {self.port} -h 127.0.0.1 -k {self.root} {settings} -c max_connections=200"
        self._run(_binary("pg_ctl"), "-D", str(self.data), "-l", str(self.root / "log"), "-o", options, "-w",
                  "start")
        return self


def version() -> str:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), reverse=True)
    return found[0].split("/")[4] if found else "?"
