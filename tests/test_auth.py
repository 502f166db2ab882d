"""Authentication and privileges with real clients: SCRAM-SHA-256 through
psql, psycopg 3 and psycopg2; TLS with verify-full against a test CA
(made here with openssl); wrong passwords (28P01); privileges (42501) over
SQL and HTTP; API tokens; the refusal to listen beyond loopback with no
authentication."""

import base64
import json
import os
import ssl
import subprocess
import urllib.error
import urllib.request

import psycopg
import psycopg2
import pytest

from conftest import ThymeServer, free_port, server_env, thyme_bin

ADMIN_PW = "adm1n-pass"


def make_ca(d: str) -> dict:
    """A CA and a server certificate for localhost / 127.0.0.1."""

    def run(*args):
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=d)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt",
        "-days", "2", "-subj", "/CN=Thyme test CA")
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr",
        "-subj", "/CN=localhost")
    with open(os.path.join(d, "ext.cnf"), "w") as f:
        f.write("subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n"
                "extendedKeyUsage=serverAuth\n")
    run("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
        "-out", "server.crt", "-days", "2", "-extfile", "ext.cnf")
    return {k: os.path.join(d, f) for k, f in [("ca", "ca.crt"), ("cert", "server.crt"), ("key", "server.key")]}


@pytest.fixture
def secured(tmp_path):
    certs = make_ca(str(tmp_path))
    server = ThymeServer(
        str(tmp_path / "data"),
        env={"THYME_SUPERUSER_PASSWORD": ADMIN_PW},
        args=["--superuser", "admin", "--tls-cert", certs["cert"], "--tls-key", certs["key"]],
    )
    server.certs = certs
    yield server
    server.stop()


def dsn(server, user, password, **extra):
    parts = {"host": "127.0.0.1", "port": server.pg_port, "dbname": "thyme", "user": user,
             "password": password, **extra}
    return " ".join(f"{k}={v}" for k, v in parts.items())


def https(server, method, path, body=None, auth=None, port=None):
    ctx = ssl.create_default_context(cafile=server.certs["ca"])
    url = f"https://127.0.0.1:{port or server.control_port}{path}"
    data = None if body is None else json.dumps(body).encode()
    headers = {"Content-Type": "application/json"}
    if auth:
        headers["Authorization"] = auth
    req = urllib.request.Request(url, data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(req, context=ctx, timeout=30) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


def basic(user, pw):
    return "Basic " + base64.b64encode(f"{user}:{pw}".encode()).decode()


def test_scram_tls_roles_and_privileges(secured):
    s = secured
    ca = s.certs["ca"]
    # psycopg 3, SCRAM over TLS with full verification (IP and DNS names).
    with psycopg.connect(dsn(s, "admin", ADMIN_PW, sslmode="verify-full", sslrootcert=ca),
                         autocommit=True) as c:
        assert c.info.pgconn.ssl_in_use
        assert c.execute("SELECT current_user").fetchone() == ("admin",)
        c.execute("CREATE TABLE t (k BIGINT PRIMARY KEY, ts TIMESTAMPTZ, v TEXT)")
        c.execute("INSERT INTO t VALUES (1, '2024-01-01T00:00:00Z', 'a')")
        c.execute("CREATE ROLE reader LOGIN PASSWORD 'r-pass'")
        c.execute("CREATE ROLE writer LOGIN PASSWORD 'w-pass'")
        c.execute("CREATE ROLE definer LOGIN PASSWORD 'd-pass'")
        c.execute("CREATE ROLE nologin PASSWORD 'n-pass'")
        c.execute("GRANT SELECT ON t TO reader")
        c.execute("GRANT INSERT ON ALL TABLES IN SCHEMA public TO writer")
        c.execute("GRANT CREATE ON DATABASE thyme TO definer")
        c.execute("GRANT USAGE ON SCHEMA public TO reader")  # accepted, nothing to restrict
        with pytest.raises(psycopg.errors.DuplicateObject):
            c.execute("CREATE ROLE reader")
        with pytest.raises(psycopg.errors.UndefinedTable):
            c.execute("GRANT SELECT ON nope TO reader")
        with pytest.raises(psycopg.errors.UndefinedObject):
            c.execute("GRANT SELECT ON t TO ghost")
    with psycopg.connect(dsn(s, "admin", ADMIN_PW, host="localhost", sslmode="verify-full",
                             sslrootcert=ca)) as c:
        assert c.info.pgconn.ssl_in_use

    # Wrong password, unknown role, role without LOGIN: the same 28P01.
    for user, pw in [("admin", "wrong"), ("ghost", "x"), ("nologin", "n-pass")]:
        with pytest.raises(psycopg.OperationalError) as e:
            psycopg.connect(dsn(s, user, pw, sslmode="require"))
        assert "password authentication failed" in str(e.value), str(e.value)
    # (libpq does not expose the SQLSTATE of a failed login; the Rust test
    # scram_login_sqlstates checks it is 28P01 through tokio-postgres.)
    # psql with SCRAM and TLS.
    r = subprocess.run(["psql", "-X", "-At", dsn(s, "reader", "r-pass", sslmode="verify-full", sslrootcert=ca),
                        "-c", "SELECT current_user", "-c", "SHOW ssl"], capture_output=True, text=True, timeout=60)
    assert r.stdout.splitlines()[0] == "reader", r.stdout + r.stderr

    # psycopg2 (libpq, simple protocol) as reader: reads, no writes (42501).
    conn2 = psycopg2.connect(dsn(s, "reader", "r-pass", sslmode="require"))
    cur = conn2.cursor()
    cur.execute("SELECT v FROM t")
    assert cur.fetchall() == [("a",)]
    with pytest.raises(psycopg2.errors.InsufficientPrivilege):
        cur.execute("INSERT INTO t VALUES (2, '2024-01-01T00:00:00Z', 'b')")
    conn2.rollback()
    with pytest.raises(psycopg2.errors.InsufficientPrivilege):
        cur.execute("CREATE TABLE u (k BIGINT PRIMARY KEY, ts TIMESTAMPTZ)")
    conn2.rollback()
    with pytest.raises(psycopg2.errors.InsufficientPrivilege):
        cur.execute("CREATE ROLE sneaky LOGIN PASSWORD 'x'")
    conn2.rollback()
    conn2.close()

    # writer: INSERT and COPY, but not SELECT; definer: DDL.
    with psycopg.connect(dsn(s, "writer", "w-pass", sslmode="require"), autocommit=True) as c:
        c.execute("INSERT INTO t VALUES (2, '2024-01-01T00:00:00Z', 'b')")
        with c.cursor().copy("COPY t (k, ts, v) FROM STDIN") as cp:
            cp.write_row((3, "2024-01-01T00:00:00Z", "c"))
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            c.execute("SELECT * FROM t")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            c.execute("DELETE FROM t WHERE k = 1")
    with psycopg.connect(dsn(s, "definer", "d-pass", sslmode="require"), autocommit=True) as c:
        c.execute("CREATE TABLE u (k BIGINT PRIMARY KEY, ts TIMESTAMPTZ)")
        c.execute("ALTER ROLE definer PASSWORD 'd-pass-2'")  # its own password
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            c.execute("ALTER ROLE reader PASSWORD 'x'")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            c.execute("SELECT * FROM t")
    psycopg.connect(dsn(s, "definer", "d-pass-2", sslmode="require")).close()

    # REVOKE takes effect on the next statement of an open session.
    with psycopg.connect(dsn(s, "reader", "r-pass", sslmode="require"), autocommit=True) as rc, \
            psycopg.connect(dsn(s, "admin", ADMIN_PW, sslmode="require"), autocommit=True) as ac:
        assert rc.execute("SELECT count(*) FROM t").fetchone() == (3,)
        ac.execute("REVOKE SELECT ON t FROM reader")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            rc.execute("SELECT count(*) FROM t")
        ac.execute("GRANT SELECT ON t TO reader")

    # HTTP: 401 without credentials, tokens bound to roles, 403 without the
    # privilege; HTTPS only.
    status, body = https(s, "GET", "/api/v1/datasets")
    assert status == 401 and body["error"]["code"] == "unauthorized", body
    assert https(s, "GET", "/health")[0] == 200
    status, body = https(s, "GET", "/api/v1/datasets", auth=basic("reader", "nope"))
    assert status == 401, body
    status, tok = https(s, "POST", "/api/v1/tokens", {"name": "ci"}, auth=basic("reader", "r-pass"))
    assert status == 200 and tok["token"].startswith("thyme_") and tok["role"] == "reader", tok
    bearer = "Bearer " + tok["token"]
    assert https(s, "GET", "/api/v1/datasets", auth=bearer)[0] == 200
    status, body = https(s, "POST", "/api/v1/commit", {"datasets": [], "featuresets": []}, auth=bearer)
    assert status == 403 and body["error"]["code"] == "forbidden", body
    status, body = https(s, "POST", "/api/v1/tokens", {"role": "admin"}, auth=bearer)
    assert status == 403, body
    # A reader's token cannot make tokens for others; an admin's can.
    status, wtok = https(s, "POST", "/api/v1/tokens", {"role": "writer"}, auth=basic("admin", ADMIN_PW))
    assert status == 200, wtok
    status, listed = https(s, "GET", "/api/v1/tokens", auth=bearer)
    assert [t["role"] for t in listed["tokens"]] == ["reader"], listed
    status, body = https(s, "DELETE", f"/api/v1/tokens/{tok['id']}", auth=bearer)
    assert status == 200, body
    assert https(s, "GET", "/api/v1/datasets", auth=bearer)[0] == 401
    # Query server too.
    status, body = https(s, "POST", "/api/v1/lookup", {"dataset": "t", "keys": {"k": [1]}},
                         auth="Bearer " + wtok["token"], port=s.query_port)
    assert status == 403, body

    # Roles and tokens survive a restart.
    s.restart()
    with psycopg.connect(dsn(s, "reader", "r-pass", sslmode="require")) as c:
        assert c.execute("SELECT count(*) FROM t").fetchone() == (3,)
    assert https(s, "GET", "/api/v1/datasets", auth="Bearer " + wtok["token"])[0] == 200

    # DROP ROLE ends its tokens.
    with psycopg.connect(dsn(s, "admin", ADMIN_PW, sslmode="require"), autocommit=True) as c:
        c.execute("DROP ROLE writer")
        with pytest.raises(psycopg.errors.UndefinedObject):
            c.execute("DROP ROLE writer")
        c.execute("DROP ROLE IF EXISTS writer")
    assert https(s, "GET", "/api/v1/datasets", auth="Bearer " + wtok["token"])[0] == 401


def test_require_tls_refuses_plain_connections(tmp_path):
    certs = make_ca(str(tmp_path))
    server = ThymeServer(
        str(tmp_path / "data"),
        env={"THYME_SUPERUSER_PASSWORD": ADMIN_PW},
        args=["--superuser", "admin", "--tls-cert", certs["cert"], "--tls-key", certs["key"], "--require-tls"],
    )
    try:
        with pytest.raises(psycopg.OperationalError) as e:
            psycopg.connect(dsn(server, "admin", ADMIN_PW, sslmode="disable"))
        assert "requires TLS" in str(e.value), str(e.value)
        psycopg.connect(dsn(server, "admin", ADMIN_PW, sslmode="require")).close()
    finally:
        server.stop()


def test_trust_on_loopback_and_refusal_beyond_it(tmp_path):
    # No role with a password: trusted (the quickstart), current_user is the login.
    server = ThymeServer(str(tmp_path / "a"))
    try:
        with psycopg.connect(f"host=127.0.0.1 port={server.pg_port} user=alice dbname=thyme") as c:
            assert c.execute("SELECT current_user").fetchone() == ("alice",)
        status, _ = server.http("GET", "/api/v1/datasets")
        assert status == 200
    finally:
        server.stop()
    # Beyond loopback with no authentication: refused at start.
    cmd = [thyme_bin(), "serve", "--data", str(tmp_path / "b"), "--pg-addr", f"0.0.0.0:{free_port()}",
           "--control-addr", f"127.0.0.1:{free_port()}", "--query-addr", f"127.0.0.1:{free_port()}"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=server_env())
    assert r.returncode != 0 and "without authentication" in r.stderr, r.stderr
    assert "--allow-unauthenticated" in r.stderr
