"""The control plane over real HTTP: commits (versioning, refusals,
atomicity), webhook ingestion (routing, cdc, preproc, bad input), what SQL
sees afterwards, and a restart."""

import copy
from datetime import datetime, timezone

import psycopg

WEBHOOK = {"kind": "webhook", "name": "main", "endpoint": "Transaction"}


def transaction(**over):
    d = {
        "name": "Transaction",
        "version": 1,
        "fields": [
            {"name": "uid", "type": "int"},
            {"name": "amount", "type": "float"},
            {"name": "merchant", "type": {"optional": "str"}},
            {"name": "ts", "type": "datetime", "timestamp": True},
        ],
        "sources": [{"connector": WEBHOOK, "disorder": "14d", "cdc": "append"}],
    }
    d.update(over)
    return d


def user_info(**over):
    d = {
        "name": "UserInfo",
        "version": 1,
        "index": True,
        "fields": [
            {"name": "uid", "type": "int", "key": True},
            {"name": "country", "type": {"oneof": {"type": "str", "options": ["US", "DE", "IN"]}}},
            {"name": "age", "type": {"optional": {"between": {"type": "int", "min": 0, "max": 150}}}},
            {"name": "ts", "type": "datetime", "timestamp": True},
        ],
        "sources": [
            {"connector": {"kind": "webhook", "name": "main", "endpoint": "UserInfo"}, "cdc": "upsert"},
            {"connector": {"kind": "webhook", "name": "main", "endpoint": "UserDeleted"}, "cdc": "delete"},
        ],
    }
    d.update(over)
    return d


def payload(*datasets, featuresets=()):
    return {"schema_version": 1, "message": "test", "datasets": list(datasets), "featuresets": list(featuresets)}


def sql(thyme, query, *params):
    with psycopg.connect(thyme.dsn, autocommit=True) as conn:
        cur = conn.execute(query, params or None)
        return cur.fetchall() if cur.description else None


def names(lines):
    return sorted(x["name"] for x in lines)


def test_commit_versioning(thyme):
    status, body = thyme.http("POST", "/api/v1/commit", payload(transaction(), user_info()))
    assert status == 200, body
    assert names(body["created"]) == ["Transaction", "UserInfo"]

    # Unchanged: a no-op.
    status, body = thyme.http("POST", "/api/v1/commit", payload(transaction(), user_info()))
    assert status == 200, body
    assert body["created"] == [] and body["updated"] == []
    assert names(body["unchanged"]) == ["Transaction", "UserInfo"]

    # Rows, to see what a bump does to them.
    status, body = thyme.http("POST", "/api/v1/log", {"webhook": "main", "endpoint": "Transaction", "data": {"uid": [1], "amount": [2.5], "ts": ["2024-01-01T00:00:00Z"]}})
    assert status == 200, body

    # An incompatible change without a bump is refused, naming dataset and field.
    changed = transaction()
    changed["fields"][1]["type"] = "int"
    status, body = thyme.http("POST", "/api/v1/commit", payload(changed))
    assert status == 400
    msg = body["error"]["message"]
    assert "dataset Transaction changed without a version bump" in msg and "field amount changed type from float to int" in msg

    # A source change (disorder) needs no bump.
    relaxed = transaction()
    relaxed["sources"][0]["disorder"] = "1d"
    status, body = thyme.http("POST", "/api/v1/commit", payload(relaxed))
    assert status == 200 and names(body["updated"]) == ["Transaction"], body
    assert sql(thyme, "SELECT count(*) FROM transaction") == [(1,)]
    # A commit of one dataset leaves the others alone.
    status, body = thyme.http("GET", "/api/v1/datasets")
    assert names(body["datasets"]) == ["Transaction", "UserInfo"]

    # The bump is accepted and recreates the dataset.
    changed["version"] = 2
    status, body = thyme.http("POST", "/api/v1/commit", payload(changed))
    assert status == 200, body
    assert body["updated"][0]["from_version"] == 1 and body["updated"][0]["version"] == 2
    assert sql(thyme, "SELECT count(*) FROM transaction") == [(0,)]
    status, body = thyme.http("GET", "/api/v1/datasets/Transaction")
    assert body["version"] == 2 and body["fields"][1]["type"] == "int"

    # Going back a version is refused.
    status, body = thyme.http("POST", "/api/v1/commit", payload(transaction()))
    assert status == 400 and "older than the committed version 2" in body["error"]["message"]

    status, body = thyme.http("GET", "/api/v1/commits")
    assert [c["commit"] for c in body["commits"]] == [0, 1, 2, 3]


def test_commit_is_atomic_and_validated(thyme):
    bad = user_info()
    bad["fields"][0]["type"] = {"optional": "int"}
    status, body = thyme.http("POST", "/api/v1/commit", payload(transaction(), bad))
    assert status == 400
    assert "dataset UserInfo: key field uid cannot be optional" in body["error"]["message"]
    status, body = thyme.http("GET", "/api/v1/datasets")
    assert body["datasets"] == []  # Transaction was not stored either

    for raw, code in [(b"{not json", "malformed_json"), (b'{"schema_version": 1, "datasetz": []}', "invalid_request")]:
        status, body = thyme.http("POST", "/api/v1/commit", raw=raw)
        assert status == 400 and body["error"]["code"] == code, body
    status, body = thyme.http("POST", "/api/v1/commit", {"schema_version": 7})
    assert status == 400 and "schema_version 7" in body["error"]["message"]

    # A table made with SQL is not silently taken over by a commit.
    sql(thyme, "CREATE TABLE transaction (uid BIGINT, ts TIMESTAMPTZ)")
    status, body = thyme.http("POST", "/api/v1/commit", payload(transaction()))
    assert status == 400 and "already exists" in body["error"]["message"]


def test_log_routes_rows_to_sql(thyme):
    both = copy.deepcopy(transaction())
    both["name"] = "TransactionCopy"
    both["sources"][0]["preproc"] = {"merchant": {"const": "acme"}}
    assert thyme.http("POST", "/api/v1/commit", payload(transaction(), both, user_info()))[0] == 200

    data = {
        "uid": [1, 2, 1],
        "amount": [10.5, 3, 7.25],
        "merchant": ["m1", None, "m2"],
        "ts": ["2024-01-01T00:00:00Z", 1704153600, "2024-01-03T00:00:00+00:00"],
    }
    status, body = thyme.http("POST", "/api/v1/log", {"webhook": "main", "endpoint": "Transaction", "data": data})
    assert status == 200, body
    assert sorted((d["dataset"], d["rows"]) for d in body["datasets"]) == [("Transaction", 3), ("TransactionCopy", 3)]
    rows = sql(thyme, "SELECT uid, amount, merchant, ts FROM transaction ORDER BY ts")
    day = lambda d: datetime(2024, 1, d, tzinfo=timezone.utc)  # noqa: E731
    assert rows == [(1, 10.5, "m1", day(1)), (2, 3.0, None, day(2)), (1, 7.25, "m2", day(3))]
    assert sql(thyme, "SELECT DISTINCT merchant FROM transaction_copy") == [("acme",)]

    # Keyed: upserts, then a delete through the delete endpoint.
    ui = {"uid": [1, 2, 1], "country": ["US", "DE", "IN"], "age": [30, None, 31],
          "ts": ["2024-01-01T00:00:00Z", "2024-01-01T00:00:00Z", "2024-01-05T00:00:00Z"]}
    assert thyme.http("POST", "/api/v1/log", {"webhook": "main", "endpoint": "UserInfo", "data": ui})[0] == 200
    assert sql(thyme, "SELECT uid, country, age FROM user_info ORDER BY uid") == [(1, "IN", 31), (2, "DE", None)]
    assert sql(thyme, "SELECT country FROM user_info WHERE uid = 1 AS OF '2024-01-02T00:00:00Z'") == [("US",)]
    status, body = thyme.http("POST", "/api/v1/log", {"webhook": "main", "endpoint": "UserDeleted",
                                                      "data": {"uid": [2], "country": ["DE"], "ts": ["2024-01-10T00:00:00Z"]}})
    assert status == 200, body
    assert sql(thyme, "SELECT uid FROM user_info ORDER BY uid") == [(1,)]
    assert sql(thyme, "SELECT uid FROM user_info ORDER BY uid AS OF '2024-01-09T00:00:00Z'") == [(1,), (2,)]

    status, body = thyme.http("GET", "/api/v1/lineage")
    edges = {(e["from"], e["to"]) for e in body["edges"]}
    assert ("webhook:main", "Transaction") in edges and ("webhook:main", "UserInfo") in edges


def test_bad_log_requests_store_nothing(thyme):
    copy_ds = copy.deepcopy(transaction())
    copy_ds["name"] = "Strict"
    copy_ds["fields"][2]["type"] = {"regex": "m[0-9]+"}  # merchant required and shaped
    assert thyme.http("POST", "/api/v1/commit", payload(transaction(), copy_ds, user_info()))[0] == 200
    good = {"uid": [1, 2], "amount": [1.0, 2.0], "merchant": ["m1", "m2"], "ts": ["2024-01-01T00:00:00Z"] * 2}

    def log(endpoint, data, webhook="main"):
        return thyme.http("POST", "/api/v1/log", {"webhook": webhook, "endpoint": endpoint, "data": data})

    cases = [
        (log("Transaction", {**good, "amount": [1.0, "lots"]}), 400, "invalid_row", ("row 1", "field amount", '"lots"')),
        (log("Transaction", {**good, "uid": [1, 2.5]}), 400, "invalid_row", ("row 1", "field uid", "2.5")),
        (log("Transaction", {k: v for k, v in good.items() if k != "ts"}), 400, "invalid_row", ("timestamp field ts",)),
        (log("Transaction", {**good, "ts": ["2024-01-01T00:00:00Z", "tomorrow"]}), 400, "invalid_row", ("row 1", "field ts", "tomorrow")),
        (log("Transaction", {**good, "uid": [1]}), 400, "invalid_row", ("different lengths",)),
        (log("Transaction", {**good, "uid": 5}), 400, "invalid_row", ("data.uid must be a list",)),
        # The first dataset accepts the rows, the second refuses one: nothing is stored.
        (log("Transaction", {**good, "merchant": ["m1", "x"]}), 400, "invalid_row", ("dataset Strict", "row 1", "field merchant")),
        (log("Nope", good), 404, "unknown_endpoint", ("no endpoint",)),
        (log("Transaction", good, webhook="other"), 404, "unknown_endpoint", ("webhook \"other\"",)),
        (log("UserInfo", {"uid": [1], "country": ["FR"], "ts": ["2024-01-01T00:00:00Z"]}), 400, "invalid_row", ("field country", "not one of")),
        (log("UserInfo", {"uid": [1], "country": ["US"], "age": [200], "ts": ["2024-01-01T00:00:00Z"]}), 400, "invalid_row", ("field age", "outside")),
        (log("UserInfo", {"uid": [None], "country": ["US"], "ts": ["2024-01-01T00:00:00Z"]}), 400, "invalid_row", ("field uid", "null")),
        (thyme.http("POST", "/api/v1/log", raw=b'{"webhook": "main", "endpoint": '), 400, "malformed_json", ("EOF",)),
        (thyme.http("POST", "/api/v1/log", {"webhook": "main", "data": good}), 400, "invalid_request", ("endpoint",)),
    ]
    for (status, body), want_status, code, phrases in cases:
        assert status == want_status, body
        assert body["error"]["code"] == code, body
        for p in phrases:
            assert p in body["error"]["message"], (p, body)
    status, body = log("Transaction", {**good, "amount": [1.0, "lots"]})
    assert body["error"]["row"] == 1 and body["error"]["field"] == "amount" and body["error"]["value"] == "lots"

    assert sql(thyme, "SELECT count(*) FROM transaction") == [(0,)]
    assert sql(thyme, "SELECT count(*) FROM strict") == [(0,)]
    assert sql(thyme, "SELECT count(*) FROM user_info") == [(0,)]
    assert log("Transaction", good)[0] == 200
    assert sql(thyme, "SELECT count(*) FROM strict") == [(2,)]


def test_restart_keeps_definitions_and_data(thyme):
    assert thyme.http("POST", "/api/v1/commit", payload(transaction(), user_info()))[0] == 200
    data = {"uid": [7], "amount": [1.5], "ts": ["2024-02-01T00:00:00Z"]}
    assert thyme.http("POST", "/api/v1/log", {"webhook": "main", "endpoint": "Transaction", "data": data})[0] == 200
    thyme.restart()
    status, body = thyme.http("GET", "/api/v1/datasets")
    assert names(body["datasets"]) == ["Transaction", "UserInfo"]
    assert sql(thyme, "SELECT uid, amount FROM transaction") == [(7, 1.5)]
    status, body = thyme.http("POST", "/api/v1/commit", payload(transaction(), user_info()))
    assert status == 200 and names(body["unchanged"]) == ["Transaction", "UserInfo"]
    # Routing survives the restart too.
    assert thyme.http("POST", "/api/v1/log", {"webhook": "main", "endpoint": "Transaction", "data": data})[0] == 200
    assert sql(thyme, "SELECT count(*) FROM transaction") == [(2,)]
    status, body = thyme.http("GET", "/api/v1/commits")
    assert [c["commit"] for c in body["commits"]] == [0, 1]


def test_rich_types_round_trip(thyme):
    ds = {
        "name": "Profile",
        "index": True,
        "fields": [
            {"name": "uid", "type": "str", "key": True},
            {"name": "balance", "type": {"decimal": 2}},
            {"name": "tags", "type": {"list": "str"}},
            {"name": "scores", "type": {"optional": {"list": {"optional": "int"}}}},
            {"name": "embedding", "type": {"embedding": 3}},
            {"name": "attrs", "type": {"map": "int"}},
            {"name": "address", "type": {"struct": {"name": "Address", "fields": [
                {"name": "city", "type": "str"}, {"name": "zip", "type": {"optional": "str"}}]}}},
            {"name": "born", "type": "date"},
            {"name": "ts", "type": "datetime", "timestamp": True},
        ],
        "sources": [{"connector": {"kind": "webhook", "name": "main", "endpoint": "Profile"}, "cdc": "upsert"}],
    }
    status, body = thyme.http("POST", "/api/v1/commit", payload(ds))
    assert status == 200, body
    data = {
        "uid": ["a", "b"],
        "balance": ["12.5", 3],
        "tags": [["x", "y"], []],
        "scores": [[1, None, 3], None],
        "embedding": [[0.5, 1, -2.25], [0, 0, 0]],
        "attrs": [{"k": 1}, {}],
        "address": [{"city": "Berlin"}, {"city": "Pune", "zip": "411001"}],
        "born": ["1990-05-17", "2001-01-01"],
        "ts": ["2024-01-01T00:00:00Z", "2024-01-01T00:00:00Z"],
    }
    status, body = thyme.http("POST", "/api/v1/log", {"webhook": "main", "endpoint": "Profile", "data": data})
    assert status == 200, body
    import json
    from datetime import date
    from decimal import Decimal

    rows = sql(thyme, "SELECT uid, balance, tags, scores, embedding, attrs, address, born FROM profile ORDER BY uid")
    a, b = rows
    assert a[:5] == ("a", Decimal("12.50"), ["x", "y"], [1, None, 3], [0.5, 1.0, -2.25])
    assert json.loads(a[5]) == {"k": 1} and json.loads(a[6]) == {"city": "Berlin"} and a[7] == date(1990, 5, 17)
    assert b[:5] == ("b", Decimal("3.00"), [], None, [0.0, 0.0, 0.0])
    assert sql(thyme, "SELECT uid FROM profile WHERE array_length(tags, 1) = 2") == [("a",)]

    for bad, phrase in [
        ({**data, "embedding": [[1, 2], [0, 0, 0]]}, "Embedding[3] needs 3 numbers"),
        ({**data, "balance": ["1.234", 1]}, "more than 2 digits"),
        ({**data, "tags": [["x", 1], []]}, "element 1"),
        ({**data, "address": [{"town": "x"}, {"city": "y"}]}, "struct Address has no field town"),
    ]:
        status, body = thyme.http("POST", "/api/v1/log", {"webhook": "main", "endpoint": "Profile", "data": bad})
        assert status == 400 and phrase in body["error"]["message"], body
