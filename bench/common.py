"""Helpers shared by the benchmark drivers: free ports, a Thyme server
started on them, waiting for ports and for pipelines, peak memory."""
import json
import os
import socket
import subprocess
import time
import urllib.request


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, proc=None, timeout=120):
    """Wait until 127.0.0.1:`port` accepts connections (failing early if
    `proc` exits)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if proc is not None and proc.poll() is not None:
                raise RuntimeError(f"process exited with {proc.returncode}")
            time.sleep(0.1)
    raise RuntimeError(f"port {port} did not open")


def start_thyme(binary, data_dir, log="warn", args=()):
    """`thyme serve` on free ports; returns (process, {"pg", "control",
    "query"} ports) once the pgwire port answers."""
    ports = {k: free_port() for k in ("pg", "control", "query")}
    proc = subprocess.Popen([binary, "serve", "--data", data_dir,
                             "--pg-addr", f"127.0.0.1:{ports['pg']}",
                             "--control-addr", f"127.0.0.1:{ports['control']}",
                             "--query-addr", f"127.0.0.1:{ports['query']}", *args],
                            env={**os.environ, "THYME_LOG": log})
    wait_port(ports["pg"], proc)
    return proc, ports


def vm_hwm_mb(pid):
    """Peak resident memory of a process (VmHWM), MiB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def cpu_seconds(pid):
    """CPU time (user + system) a process has used so far, seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_caught_up(control_url, timeout=1800):
    """Wait until every pipeline runs with no lag, twice in a row."""
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        with urllib.request.urlopen(f"{control_url}/api/v1/pipelines") as r:
            ps = json.loads(r.read())["pipelines"]
        state = [(p["dataset"], p["status"], p["lag"], p["rows_written"]) for p in ps]
        if ps and all(p["status"] == "running" and p["lag"] == 0 for p in ps) and state == last:
            return ps
        last = state
        time.sleep(1.0)
    raise RuntimeError(f"pipelines did not catch up: {last}")
