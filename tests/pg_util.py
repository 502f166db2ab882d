"""A throwaway Postgres 15 cluster on 127.0.0.1 for tests and benchmarks:
`initdb` as the `postgres` user (it refuses root) in a temp dir, a free
port, removed afterwards."""
import os
import shutil
import socket
import subprocess
import tempfile

import psycopg

PGBIN = "/usr/lib/postgresql/15/bin"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Cluster:
    """A throwaway Postgres 15 cluster on 127.0.0.1 (``logical``: with
    ``wal_level=logical``, for replication sources)."""

    def __init__(self, logical=False):
        self.logical = logical
        self.dir = tempfile.mkdtemp(prefix="thyme-pg-")
        self.port = free_port()
        shutil.chown(self.dir, "postgres")
        os.chmod(self.dir, 0o755)
        self.data = os.path.join(self.dir, "data")
        self._pg("initdb", "-D", self.data, "-U", "postgres", "-A", "trust")
        self.start()

    def _pg(self, *args):
        cmd = ["runuser", "-u", "postgres", "--", os.path.join(PGBIN, args[0]), *args[1:]]
        subprocess.run(cmd, check=True, capture_output=True, timeout=120)

    def start(self):
        self._pg("pg_ctl", "-D", self.data, "-w", "-l", os.path.join(self.dir, "log"), "-o",
                 f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1"
                 + (" -c wal_level=logical -c max_replication_slots=20" if self.logical else ""), "start")

    def stop(self):
        self._pg("pg_ctl", "-D", self.data, "-m", "fast", "-w", "stop")

    def conn(self):
        return psycopg.connect(f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres", autocommit=True)

    def remove(self):
        try:
            self._pg("pg_ctl", "-D", self.data, "-m", "immediate", "-w", "stop")
        except subprocess.CalledProcessError:
            pass
        shutil.rmtree(self.dir, ignore_errors=True)
