"""Fixtures for end-to-end tests: a real `thyme` server on free loopback ports."""

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def import_text(name: str, text: str):
    """Import `text` as module `name` from a fresh temporary directory
    (definitions whose source the server gets only through the commit)."""
    import importlib
    import sys
    import tempfile

    d = tempfile.mkdtemp()
    with open(os.path.join(d, f"{name}.py"), "w") as f:
        f.write(text)
    sys.path.insert(0, d)
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(d)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_env() -> dict:
    """The server's environment: quiet logs, and this virtualenv's packages
    (pandas, the SDK) for the Python functions it runs."""
    env = {**os.environ, "THYME_LOG": "warn"}
    if sys.prefix != sys.base_prefix:
        env["VIRTUAL_ENV"] = sys.prefix
    return env


def thyme_bin() -> str:
    path = os.environ.get("THYME_BIN")
    if not path:
        target = os.environ.get("CARGO_TARGET_DIR", os.path.join(REPO, "target"))
        path = os.path.join(target, "debug", "thyme")
    if not os.path.exists(path):
        pytest.fail(f"thyme binary not found at {path}; build it or set THYME_BIN")
    return path


def _json_request(url: str, method: str, body=None, raw: bytes | None = None):
    """(status, parsed JSON body) of an HTTP request with a JSON body."""
    import json
    import urllib.error
    import urllib.request

    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


class ThymeServer:
    def __init__(self, data_dir: str, env: dict | None = None, args: tuple[str, ...] = ()):
        self.data_dir = data_dir
        self.extra_env = dict(env or {})
        self.extra_args = list(args)
        self.pg_port = free_port()
        self.control_port = free_port()
        self.query_port = free_port()
        self.start()

    def start(self):
        self.proc = subprocess.Popen(
            [
                thyme_bin(),
                "serve",
                "--data",
                self.data_dir,
                "--pg-addr",
                f"127.0.0.1:{self.pg_port}",
                "--control-addr",
                f"127.0.0.1:{self.control_port}",
                "--query-addr",
                f"127.0.0.1:{self.query_port}",
                *self.extra_args,
            ],
            env={**server_env(), **self.extra_env},
        )
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                # Every listener, not only the first one bound.
                for port in (self.pg_port, self.control_port, self.query_port):
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return
            except OSError:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"thyme exited with {self.proc.returncode}")
                time.sleep(0.05)
        raise RuntimeError("thyme did not start")

    def restart(self):
        """Stop (SIGTERM) and start again on the same data and ports."""
        self.stop()
        self.start()

    @property
    def control_url(self) -> str:
        return f"http://127.0.0.1:{self.control_port}"

    def http(self, method: str, path: str, body=None, raw: bytes | None = None):
        """(status, parsed JSON body) of a control-plane request."""
        return _json_request(self.control_url + path, method, body, raw)

    @property
    def query_url(self) -> str:
        return f"http://127.0.0.1:{self.query_port}"

    def query_http(self, method: str, path: str, body=None):
        """(status, parsed JSON body) of a query-server request."""
        return _json_request(self.query_url + path, method, body)

    @property
    def dsn(self) -> str:
        return f"host=127.0.0.1 port={self.pg_port} user=thyme dbname=thyme"

    @property
    def url(self) -> str:
        return f"postgresql://thyme@127.0.0.1:{self.pg_port}/thyme"

    def psql(self, *args: str, input: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
        cmd = ["psql", "-X", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-p", str(self.pg_port), "-U", "thyme", "-d", "thyme", *args]
        return subprocess.run(cmd, input=input, capture_output=True, text=True, check=check, timeout=120)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def thyme():
    tmp = tempfile.mkdtemp(prefix="thyme-test-")
    server = ThymeServer(os.path.join(tmp, "data"))
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(tmp, ignore_errors=True)
