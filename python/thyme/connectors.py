"""Connectors and the ``@source`` decorator (``thyme.connectors``).

A connector object names an external system (``Webhook``, ``Kafka``,
``Postgres``, ``S3``, ``Files``, ``Iceberg``); one of its methods picks the
data inside it (``.endpoint("Transaction")``, ``.topic("txns")``,
``.table("users", cursor="updated_at")``, ``.bucket(...)``,
``.directory(...)``). ``@source(that, ...)`` attaches it to a dataset with
the ingestion options of ``docs/commit-payload.md`` (Source)::

    webhook = Webhook(name="main")

    @source(webhook.endpoint("Transaction"), disorder="14d", cdc="append")
    @dataset
    class Transaction: ...

Secrets (passwords, keys) are sent as given; the control plane never
returns them.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Sequence, TypeVar

from ._util import fail, format_timestamp, json_value, names_list, parse_duration

__all__ = [
    "source",
    "ref",
    "Ref",
    "Webhook",
    "Kafka",
    "Postgres",
    "S3",
    "Files",
    "Iceberg",
    "DataConnector",
    "CDC_VALUES",
]

T = TypeVar("T")

CDC_VALUES = ("append", "upsert", "delete", "debezium", "native")
SOURCES_ATTR = "__thyme_sources__"


def _text(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise fail(f"{what} must be a non-empty string, not {value!r}")
    return value


class DataConnector:
    """Data inside a connector, ready for ``@source``: ``kind`` and the
    payload's connector object, plus the cursor of table sources."""

    def __init__(self, kind: str, connector: Dict[str, Any], cursor: Optional[str] = None):
        self.kind = kind
        self._connector = connector
        self.cursor = cursor

    def to_json(self) -> Dict[str, Any]:
        return dict(self._connector)

    def __repr__(self) -> str:
        shown = {k: ("***" if "password" in k or "secret" in k else v) for k, v in self._connector.items()}
        return f"DataConnector({shown})"


class Webhook:
    """HTTP push: rows arrive with ``POST /api/v1/log`` naming this webhook
    and an endpoint (``Client.log("main", "Transaction", df)``).

    ``retention`` is how long the webhook keeps pushed rows."""

    def __init__(self, name: str, retention: Any = None):
        self.name = _text(name, "Webhook name")
        self.retention = None if retention is None else parse_duration(retention, f"Webhook {name} retention")

    def endpoint(self, endpoint: str) -> DataConnector:
        c: Dict[str, Any] = {
            "kind": "webhook",
            "name": self.name,
            "endpoint": _text(endpoint, f"Webhook {self.name} endpoint"),
        }
        if self.retention is not None:
            c["retention"] = self.retention
        return DataConnector("webhook", c)


class Kafka:
    """A Kafka cluster; ``.topic(name)`` reads one topic of JSON messages."""

    def __init__(
        self,
        name: str,
        bootstrap_servers: str,
        security_protocol: Optional[str] = None,
        sasl_mechanism: Optional[str] = None,
        sasl_plain_username: Optional[str] = None,
        sasl_plain_password: Optional[str] = None,
    ):
        self.name = _text(name, "Kafka name")
        self.bootstrap_servers = _text(bootstrap_servers, f"Kafka {name} bootstrap_servers")
        if security_protocol is not None and security_protocol not in ("PLAINTEXT", "SASL_PLAINTEXT", "SASL_SSL", "SSL"):
            raise fail(
                f"Kafka {name}: security_protocol must be PLAINTEXT, SASL_PLAINTEXT, SASL_SSL or SSL, "
                f"not {security_protocol!r}"
            )
        self.security_protocol = security_protocol
        self.sasl_mechanism = sasl_mechanism
        self.sasl_plain_username = sasl_plain_username
        self.sasl_plain_password = sasl_plain_password

    def topic(self, topic: str, format: str = "json") -> DataConnector:  # noqa: A002 - Fennel's name
        if format != "json":
            raise fail(f"Kafka {self.name} topic {topic!r}: format must be \"json\", not {format!r}")
        c: Dict[str, Any] = {
            "kind": "kafka",
            "name": self.name,
            "bootstrap_servers": self.bootstrap_servers,
            "topic": _text(topic, f"Kafka {self.name} topic"),
            "format": format,
        }
        for k in ("security_protocol", "sasl_mechanism", "sasl_plain_username", "sasl_plain_password"):
            v = getattr(self, k)
            if v is not None:
                c[k] = v
        return DataConnector("kafka", c)


class Postgres:
    """A Postgres database; ``.table(name, cursor=col)`` polls one table for
    rows whose ``cursor`` column grew since the last poll."""

    def __init__(
        self,
        name: str,
        host: str,
        db_name: str,
        username: str,
        password: Optional[str] = None,
        port: int = 5432,
    ):
        self.name = _text(name, "Postgres name")
        self.host = _text(host, f"Postgres {name} host")
        self.db_name = _text(db_name, f"Postgres {name} db_name")
        self.username = _text(username, f"Postgres {name} username")
        if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
            raise fail(f"Postgres {name}: port must be an integer from 1 to 65535, not {port!r}")
        self.password = password
        self.port = port

    def table(self, table_name: str, cursor: Optional[str] = None) -> DataConnector:
        c = {
            "kind": "postgres",
            "name": self.name,
            "host": self.host,
            "port": self.port,
            "db_name": self.db_name,
            "username": self.username,
            "password": self.password,
            "table": _text(table_name, f"Postgres {self.name} table"),
        }
        if cursor is not None:
            _text(cursor, f"Postgres {self.name} table {table_name} cursor")
        return DataConnector("postgres", c, cursor=cursor)


_FORMATS = ("csv", "parquet", "json")


def _format(fmt: str, what: str) -> str:
    if fmt not in _FORMATS:
        raise fail(f"{what}: format must be one of {names_list(_FORMATS)} (json = JSON lines), not {fmt!r}")
    return fmt


class S3:
    """Files in S3 (or an S3-compatible store at ``endpoint``);
    ``.bucket(name, prefix=..., format=...)`` reads the files under a prefix."""

    def __init__(
        self,
        name: str,
        aws_access_key_id: Optional[str] = None,
        aws_secret_access_key: Optional[str] = None,
        endpoint: Optional[str] = None,
    ):
        self.name = _text(name, "S3 name")
        if (aws_access_key_id is None) != (aws_secret_access_key is None):
            raise fail(f"S3 {name}: give both aws_access_key_id and aws_secret_access_key, or neither")
        self.aws_access_key_id = aws_access_key_id
        self.aws_secret_access_key = aws_secret_access_key
        self.endpoint = endpoint

    def bucket(self, bucket_name: str, prefix: Optional[str] = None, format: str = "csv") -> DataConnector:  # noqa: A002
        bucket_name = _text(bucket_name, f"S3 {self.name} bucket")
        if bucket_name.startswith("s3://"):
            bucket_name = bucket_name[len("s3://"):]
        c: Dict[str, Any] = {
            "kind": "files",
            "name": self.name,
            "path": f"s3://{bucket_name.rstrip('/')}",
            "format": _format(format, f"S3 {self.name} bucket {bucket_name}"),
        }
        if prefix:
            c["prefix"] = prefix
        for k in ("aws_access_key_id", "aws_secret_access_key", "endpoint"):
            v = getattr(self, k)
            if v is not None:
                c[k] = v
        return DataConnector("files", c)


class Files:
    """Files in a local directory; ``.directory(path, format=...)`` reads the
    CSV, Parquet or JSON-lines files in it (optionally only those whose name
    starts with ``prefix``)."""

    def __init__(self, name: str):
        self.name = _text(name, "Files name")

    def directory(self, path: str, format: str = "csv", prefix: Optional[str] = None) -> DataConnector:  # noqa: A002
        c: Dict[str, Any] = {
            "kind": "files",
            "name": self.name,
            "path": _text(str(path) if path is not None else path, f"Files {self.name} path"),
            "format": _format(format, f"Files {self.name} directory {path}"),
        }
        if prefix:
            c["prefix"] = prefix
        return DataConnector("files", c)


class Iceberg:
    """An Iceberg REST catalog; ``.table("namespace.table")`` reads a table."""

    def __init__(self, name: str, catalog_uri: str, warehouse: Optional[str] = None):
        self.name = _text(name, "Iceberg name")
        self.catalog_uri = _text(catalog_uri, f"Iceberg {name} catalog_uri")
        self.warehouse = warehouse

    def table(self, table: str) -> DataConnector:
        c: Dict[str, Any] = {
            "kind": "iceberg",
            "name": self.name,
            "catalog_uri": self.catalog_uri,
            "table": _text(table, f"Iceberg {self.name} table"),
        }
        if self.warehouse is not None:
            c["warehouse"] = self.warehouse
        return DataConnector("iceberg", c)


class Ref:
    """``ref("col")`` in ``preproc``: fill a field from another column of the
    incoming data."""

    def __init__(self, name: str):
        self.name = _text(name, "ref()")

    def __repr__(self) -> str:
        return f"ref({self.name!r})"


def ref(name: str) -> Ref:
    """A column of the incoming data, for ``preproc``."""
    return Ref(name)


class Source:
    """A connector plus ingestion options, waiting to be attached to a dataset."""

    def __init__(
        self,
        conn: DataConnector,
        disorder: Any,
        cdc: Optional[str],
        every: Any,
        since: Any,
        until: Any,
        cursor: Optional[str],
        preproc: Optional[Dict[str, Any]],
        env: Any,
        bounded: Optional[bool],
        idleness: Any,
    ):
        what = f"@source({conn.kind})"
        if cdc is not None and cdc not in CDC_VALUES:
            raise fail(f"{what}: cdc must be one of {names_list(CDC_VALUES)}, not {cdc!r}")
        self.conn = conn
        self.disorder = parse_duration(disorder, f"{what} disorder")
        self.cdc = cdc
        self.every = None if every is None else parse_duration(every, f"{what} every")
        if self.every == "forever":
            raise fail(f'{what}: every cannot be "forever"')
        self.since = None if since is None else format_timestamp(since, f"{what} since")
        self.until = None if until is None else format_timestamp(until, f"{what} until")
        if since is not None and until is not None and self.since >= self.until:  # RFC 3339 UTC sorts as text
            raise fail(f"{what}: since ({self.since}) must be before until ({self.until})")
        if cursor is not None and conn.cursor is not None and cursor != conn.cursor:
            raise fail(f"{what}: the cursor is given twice ({conn.cursor!r} and {cursor!r})")
        self.cursor = cursor if cursor is not None else conn.cursor
        if self.cursor is not None and conn.kind != "postgres":
            raise fail(f"{what}: cursor is only for table sources (Postgres), not {conn.kind}")
        if conn.kind == "postgres" and self.cursor is None and cdc != "native":
            raise fail(f'{what}: a Postgres table source needs a cursor column: .table("t", cursor="updated_at"), '
                       'or cdc="native" (logical replication)')
        if conn.kind == "postgres" and self.cursor is not None and cdc == "native":
            raise fail(f'{what}: cdc="native" reads the change stream; it takes no cursor')
        if preproc is not None and not isinstance(preproc, dict):
            raise fail(f"{what}: preproc must be a dict of field -> constant or ref(\"col\"), not {preproc!r}")
        self.preproc = dict(preproc or {})
        self.env = env
        if bounded is not None and not isinstance(bounded, bool):
            raise fail(f"{what}: bounded must be True or False, not {bounded!r}")
        self.bounded = bounded
        self.idleness = None if idleness is None else parse_duration(idleness, f"{what} idleness")

    def bind(self, dataset: str, fields: Sequence[str], keyed: bool) -> Dict[str, Any]:
        """Check the source against its dataset and return the payload's Source."""
        what = f"dataset {dataset}: @source({self.conn.kind})"
        cdc = self.cdc if self.cdc is not None else ("upsert" if keyed else "append")
        if cdc in ("upsert", "delete", "debezium", "native") and not keyed:
            raise fail(
                f'{what}: cdc="{cdc}" needs key fields; dataset {dataset} is keyless '
                '(use cdc="append", or mark the key with field(key=True))'
            )
        if cdc == "append" and keyed:
            raise fail(f'{what}: cdc="append" is for keyless datasets; dataset {dataset} has keys, use cdc="upsert"')
        if cdc == "debezium" and self.conn.kind != "kafka":
            raise fail(f'{what}: cdc="debezium" needs a Kafka source')
        if cdc == "native" and self.conn.kind != "postgres":
            raise fail(f'{what}: cdc="native" needs a Postgres table source')
        preproc: Dict[str, Any] = {}
        for name, value in self.preproc.items():
            if name not in fields:
                raise fail(f"{what}: preproc names {name!r}, which is not a field of dataset {dataset} "
                           f"(fields: {names_list(fields)})")
            if isinstance(value, Ref):
                preproc[name] = {"ref": value.name}
            else:
                preproc[name] = {"const": json_value(value, f"{what} preproc {name}")}
        out: Dict[str, Any] = {
            "connector": self.conn.to_json(),
            "disorder": self.disorder,
            "cdc": cdc,
            "every": self.every,
            "since": self.since,
            "until": self.until,
            "cursor": self.cursor,
            "preproc": preproc,
        }
        if self.env is not None:
            out["env"] = json_value(self.env, f"{what} env")
        if self.bounded is not None:
            out["bounded"] = self.bounded
        if self.idleness is not None:
            out["idleness"] = self.idleness
        return out


def source(
    conn: DataConnector,
    disorder: Any = "14d",
    cdc: Optional[str] = None,
    every: Any = None,
    since: Any = None,
    until: Any = None,
    cursor: Optional[str] = None,
    preproc: Optional[Dict[str, Any]] = None,
    env: Any = None,
    tier: Any = None,
    bounded: Optional[bool] = None,
    idleness: Any = None,
) -> Callable[[T], T]:
    """Feed a dataset from a connector.

    - ``disorder``: how late events may arrive (default ``"14d"``);
    - ``cdc``: ``"append"`` (keyless datasets; the default for them),
      ``"upsert"`` (keyed datasets; their default), ``"delete"``,
      ``"debezium"`` (Kafka), ``"native"`` (Postgres);
    - ``every``: poll period of table and file sources;
    - ``since`` / ``until``: only rows with timestamps in this range;
    - ``cursor``: the cursor column of a table source (or give it to
      ``Postgres(...).table(..., cursor=...)``);
    - ``preproc``: ``{field: constant or ref("column")}`` filled before the
      schema check;
    - ``env`` / ``tier``: Fennel's deployment selectors, sent as given (Thyme
      has one deployment, so every source is active); ``bounded`` and
      ``idleness``: Fennel's bounded-source options, sent as given.
    """
    if not isinstance(conn, DataConnector):
        raise fail(
            f"@source needs a connector's data, e.g. Webhook(name=\"main\").endpoint(\"Transaction\"), "
            f"not {conn!r}"
        )
    if env is not None and tier is not None:
        raise fail("@source: give env or tier, not both")
    src = Source(conn, disorder, cdc, every, since, until, cursor, preproc,
                 env if env is not None else tier, bounded, idleness)

    def decorate(target: T) -> T:
        add = getattr(target, "_add_source", None)
        if callable(add) and not isinstance(target, type):
            add(src, front=True)  # above @dataset: the dataset exists
        elif isinstance(target, type):
            pending: List[Source] = list(target.__dict__.get(SOURCES_ATTR, []))
            pending.insert(0, src)
            setattr(target, SOURCES_ATTR, pending)
        else:
            raise fail(f"@source decorates a dataset class, not {target!r}")
        return target

    return decorate
