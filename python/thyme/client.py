"""HTTP client of a Thyme deployment (``thyme.client``).

:class:`Client` talks to the control plane (``url``, default
``http://127.0.0.1:8080``: commits, ingestion, catalog) and to the query
server (``query_url``, default ``http://127.0.0.1:8081``: feature queries and
lookups). It uses only the standard library (``urllib``); pandas is used
when installed, for DataFrame inputs and results.

Data travels column-oriented: ``{"column": [values, ...]}``. Timestamps
are sent as RFC 3339 strings (naive datetimes are taken as UTC), NaN /
NaT / None as null, ``Decimal`` as a decimal string, ``bytes`` as base64.

Every server error becomes a :class:`ThymeError` carrying the server's
``{"error": {"code", "message"}}``.
"""

from __future__ import annotations

import base64
import datetime as _dt
import decimal
import functools
import http.client
import json
import os
import math
import urllib.error
import urllib.parse
import urllib.request
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

from ._util import format_timestamp

__all__ = ["Client", "ThymeError", "columns_json"]


class ThymeError(Exception):
    """A request failed: the server refused it (``status`` 4xx/5xx with its
    error ``code`` and ``message``) or could not be reached (``status``
    None, ``code`` ``"unreachable"``)."""

    def __init__(self, message: str, code: str = "error", status: Optional[int] = None, url: Optional[str] = None):
        super().__init__(message)
        self.message = message
        self.code = code
        self.status = status
        self.url = url

    def __str__(self) -> str:
        prefix = f"{self.status} {self.code}" if self.status is not None else self.code
        return f"{prefix}: {self.message}"


# ---------------------------------------------------------------------------
# Values -> JSON
# ---------------------------------------------------------------------------


def _optional_modules() -> Tuple[Any, Any]:
    """(pandas, numpy), each None when not installed."""
    try:
        import pandas as pd
    except ImportError:
        pd = None
    try:
        import numpy as np
    except ImportError:
        np = None
    return pd, np


def _is_missing(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, float):
        return math.isnan(value)
    pd, np = _optional_modules()
    if pd is not None and (value is pd.NaT or value is pd.NA):
        return True
    if np is not None:
        if isinstance(value, np.floating) and np.isnan(value):
            return True
        if isinstance(value, (np.datetime64, np.timedelta64)) and np.isnat(value):
            return True
    return False


def to_json_value(value: Any) -> Any:
    """One cell as JSON (see the module docstring for the rules)."""
    if _is_missing(value):
        return None
    if isinstance(value, (bool, str, int)):
        return value
    if isinstance(value, float):
        if math.isinf(value):
            raise ValueError(f"{value} cannot be sent as JSON")
        return value
    if isinstance(value, _dt.datetime):
        return format_timestamp(value)
    if isinstance(value, _dt.date):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, (bytes, bytearray)):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, dict):
        return {str(k): to_json_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json_value(v) for v in value]
    if hasattr(value, "to_pydatetime"):  # pandas.Timestamp
        return format_timestamp(value)
    if hasattr(value, "tolist"):  # numpy arrays and scalars
        return to_json_value(value.tolist())
    if hasattr(value, "isoformat"):
        return value.isoformat()
    fields = getattr(type(value), "__dataclass_fields__", None)
    if fields is not None:  # @struct values
        return {name: to_json_value(getattr(value, name)) for name in fields}
    raise ValueError(f"{value!r} ({type(value).__name__}) cannot be sent as JSON")


def _series_values(series: Any) -> List[Any]:
    """A pandas Series as JSON values, vectorised for datetime columns."""
    import pandas as pd

    if pd.api.types.is_datetime64_any_dtype(series.dtype):
        s = series
        if getattr(s.dt, "tz", None) is None:
            s = s.dt.tz_localize("UTC")
        else:
            s = s.dt.tz_convert("UTC")
        return [None if pd.isna(v) else format_timestamp(v) for v in s]
    return [to_json_value(v) for v in series.astype(object)]


def columns_json(data: Any) -> Dict[str, List[Any]]:
    """Rows as ``{column: [JSON values]}``, from a pandas DataFrame, a dict of
    columns, or a list of row dicts."""
    pd, _ = _optional_modules()
    if pd is not None and isinstance(data, pd.DataFrame):
        return {str(c): _series_values(data[c]) for c in data.columns}
    if isinstance(data, dict):
        out: Dict[str, List[Any]] = {}
        n: Optional[int] = None
        for c, values in data.items():
            if pd is not None and isinstance(values, pd.Series):
                vals = _series_values(values)
            else:
                vals = [to_json_value(v) for v in values]
            if n is not None and len(vals) != n:
                raise ValueError(f"column {c!r} has {len(vals)} values, the first column has {n}")
            n = len(vals)
            out[str(c)] = vals
        return out
    if isinstance(data, list) and all(isinstance(r, dict) for r in data):
        cols: List[str] = []
        for r in data:
            for k in r:
                if k not in cols:
                    cols.append(k)
        return {str(c): [to_json_value(r.get(c)) for r in data] for c in cols}
    raise TypeError(f"data must be a pandas DataFrame, a dict of columns or a list of row dicts, not {type(data).__name__}")


def _num_rows(columns: Dict[str, List[Any]]) -> int:
    return len(next(iter(columns.values()))) if columns else 0


def _timestamps(ts: Any) -> Optional[List[Any]]:
    if ts is None:
        return None
    if isinstance(ts, (str, _dt.datetime, _dt.date)):
        ts = [ts]
    out = []
    for v in list(ts):
        if isinstance(v, str):
            out.append(v)
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            out.append(v)
        else:
            j = to_json_value(v)
            if j is None:
                raise ValueError("timestamps cannot be null")
            out.append(j)
    return out


def _name(obj: Any, kind: str) -> str:
    if isinstance(obj, str):
        return obj
    name = getattr(obj, "_name", None)
    if isinstance(name, str):
        return name
    raise TypeError(f"{kind} must be a name or a {kind} object, not {obj!r}")


def _feature_names(items: Any, what: str) -> List[str]:
    if isinstance(items, (str,)) or not isinstance(items, Iterable):
        items = [items]
    out: List[str] = []
    for x in items:
        if isinstance(x, str):
            out.append(x)
        elif hasattr(x, "fqn") and hasattr(x, "featureset"):
            out.append(x.fqn())
        elif hasattr(x, "_feature_map"):  # a whole featureset
            out.append(x._name)
        else:
            raise TypeError(f"{what}: {x!r} is not a feature, a featureset or a name")
    return out


def _raise_http_error(exc: "urllib.error.HTTPError", url: str) -> None:
    """Raise the server's JSON error (``{"error": {"code", "message"}}``)
    as a :class:`ThymeError`."""
    raw = exc.read()
    code, message = "http_error", f"{exc.code} {exc.reason}"
    try:
        err = json.loads(raw.decode("utf-8")).get("error", {})
        code = err.get("code", code)
        message = err.get("message", message)
    except (ValueError, AttributeError):
        text = raw.decode("utf-8", "replace").strip()
        if text:
            message = text[:500]
    raise ThymeError(message, code=code, status=exc.code, url=url) from None


def _spine_inputs(in_names: List[str], columns: List[str]) -> Dict[str, str]:
    """The spine column feeding each input: its qualified name
    (``UserFeatures.uid``) or, failing that, its plain name (``uid``)."""
    out: Dict[str, str] = {}
    for q in in_names:
        plain = q.rsplit(".", 1)[-1]
        if q in columns:
            out[q] = q
        elif plain in columns:
            out[q] = plain
        else:
            raise ValueError(f"input_dataframe has no column {q!r} (or {plain!r}) for that input")
    return out


def _passed_through(columns: Iterable[str], sent: Dict[str, str], ts_name: str, result: Iterable[str]) -> List[str]:
    """Spine columns that are neither inputs nor the time: they are
    returned as they came. One with the name of an output is refused
    rather than shadowed."""
    fed = set(sent.values())
    have = set(result)
    out = []
    for c in columns:
        if c in fed or c == ts_name:
            continue
        if c in have:
            raise ValueError(f"input_dataframe column {c!r} has the name of an output; rename it")
        out.append(c)
    return out


def _frame(columns: Dict[str, List[Any]]) -> Any:
    try:
        import pandas as pd
    except ImportError:
        return columns
    return pd.DataFrame(columns)


class Client:
    """A Thyme deployment: ``Client(url, query_url)``."""

    def __init__(
        self,
        url: str = "http://127.0.0.1:8080",
        query_url: str = "http://127.0.0.1:8081",
        token: Optional[str] = None,
        timeout: float = 60.0,
    ):
        self.url = url.rstrip("/")
        self.query_url = query_url.rstrip("/")
        # An API token (POST /api/v1/tokens); $THYME_TOKEN when not given.
        self.token = token if token is not None else os.environ.get("THYME_TOKEN")
        self.timeout = timeout

    # -- transport ---------------------------------------------------------

    def _request(self, method: str, url: str, body: Any = None) -> Any:
        data = None
        headers = {"Accept": "application/json"}
        if body is not None:
            data = json.dumps(body, allow_nan=False).encode("utf-8")
            headers["Content-Type"] = "application/json"
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        req = urllib.request.Request(url, data=data, headers=headers, method=method)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as exc:
            _raise_http_error(exc, url)
        except urllib.error.URLError as exc:
            raise ThymeError(f"cannot reach {url}: {exc.reason}", code="unreachable", url=url) from None
        except (ConnectionError, TimeoutError, OSError) as exc:
            raise ThymeError(f"cannot reach {url}: {exc}", code="unreachable", url=url) from None
        if not raw:
            return None
        try:
            return json.loads(raw.decode("utf-8"))
        except ValueError:
            raise ThymeError(f"the server answered {url} with non-JSON: {raw[:200]!r}", code="bad_response", url=url) from None

    # -- control plane -----------------------------------------------------

    def health(self) -> Any:
        """``GET /health`` of the control plane."""
        return self._request("GET", f"{self.url}/health")

    def commit(
        self,
        message: str,
        datasets: Optional[Sequence[Any]] = None,
        featuresets: Optional[Sequence[Any]] = None,
        incremental: bool = False,
    ) -> Dict[str, Any]:
        """Commit definitions (and what they depend on): ``POST
        /api/v1/commit``. Returns ``{"created", "updated", "unchanged"}``."""
        from ._payload import build_payload

        payload = build_payload(list(datasets or []) + list(featuresets or []), message=message,
                                incremental=incremental)
        return self.send_commit(payload)

    def send_commit(self, payload: Dict[str, Any]) -> Dict[str, Any]:
        """Post a ready commit payload (see ``thyme.build_payload``)."""
        return self._request("POST", f"{self.url}/api/v1/commit", payload)  # type: ignore[no-any-return]

    def log(self, webhook: str, endpoint: str, df: Any, batch_size: int = 10000) -> List[Any]:
        """Push rows to a webhook endpoint (``POST /api/v1/log``) in batches of
        ``batch_size`` rows; returns the server's answer to each batch. A
        batch is stored whole or refused whole."""
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, not {batch_size!r}")
        columns = columns_json(df)
        n = _num_rows(columns)
        answers = []
        for start in range(0, n, batch_size):
            chunk = {c: v[start:start + batch_size] for c, v in columns.items()}
            body = {"webhook": webhook, "endpoint": endpoint, "data": chunk}
            answers.append(self._request("POST", f"{self.url}/api/v1/log", body))
        return answers

    def list_datasets(self) -> Any:
        """The committed datasets (``GET /api/v1/datasets``), one dict each."""
        answer = self._request("GET", f"{self.url}/api/v1/datasets")
        return answer.get("datasets", answer) if isinstance(answer, dict) else answer

    def list_featuresets(self) -> Any:
        """The committed featuresets (``GET /api/v1/featuresets``), one dict each."""
        answer = self._request("GET", f"{self.url}/api/v1/featuresets")
        return answer.get("featuresets", answer) if isinstance(answer, dict) else answer

    def lineage(self) -> Any:
        """``GET /api/v1/lineage``."""
        return self._request("GET", f"{self.url}/api/v1/lineage")

    def pipelines(self) -> List[Dict[str, Any]]:
        """``GET /api/v1/pipelines``: every running pipeline with its input
        offsets, lag, records/s, late events and status."""
        return self._request("GET", f"{self.url}/api/v1/pipelines")["pipelines"]

    def inspect(self, dataset: Any, n: int = 10) -> Any:
        """The last ``n`` rows of a dataset: ``GET
        /api/v1/datasets/{name}/inspect?n=``. A column-oriented answer
        (``{"data": {...}}``) becomes a DataFrame when pandas is installed;
        a list of rows is returned as it is."""
        name = _name(dataset, "dataset")
        url = f"{self.url}/api/v1/datasets/{urllib.parse.quote(name)}/inspect?n={int(n)}"
        answer = self._request("GET", url)
        if isinstance(answer, dict) and isinstance(answer.get("data"), dict):
            return _frame(answer["data"])
        return answer

    # -- query server ------------------------------------------------------

    def query(
        self,
        inputs: Any,
        outputs: Any,
        input_dataframe: Any,
        timestamps: Any = None,
    ) -> Any:
        """Compute features: ``POST {query_url}/api/v1/query``. ``inputs``
        and ``outputs`` are features (``UserFeatures.uid``), featuresets or
        qualified names; ``input_dataframe`` has one column per input
        (qualified names). ``timestamps`` (one per row) asks for the values
        as of those times; without them, now. Returns a DataFrame (a dict
        of columns without pandas) keyed by qualified name."""
        body: Dict[str, Any] = {
            "inputs": _feature_names(inputs, "inputs"),
            "outputs": _feature_names(outputs, "outputs"),
            "data": columns_json(input_dataframe),
        }
        ts = _timestamps(timestamps)
        if ts is not None:
            rows = _num_rows(body["data"])
            if len(ts) != rows:
                raise ValueError(f"{len(ts)} timestamps for {rows} input rows")
            body["timestamps"] = ts
        answer = self._request("POST", f"{self.query_url}/api/v1/query", body)
        return _frame(answer.get("data", answer) if isinstance(answer, dict) else answer)

    def query_offline(
        self,
        inputs: Any,
        outputs: Any,
        input_dataframe: Any,
        timestamp_column: Optional[str] = None,
        timestamps: Any = None,
        job: Optional[str] = None,
    ) -> Any:
        """Point-in-time features for training sets: for each row of
        ``input_dataframe`` (the spine), the ``outputs`` as serving would
        have returned them at that row's time, taken from its
        ``timestamp_column`` (or given as ``timestamps``). Returns the output
        features (qualified names), the timestamp column, then every other
        column of the spine as it came (labels, ids: what a training set
        carries beside its inputs), one row per spine row, in order. Only
        the inputs and the time are sent to the server.

        With pyarrow installed the spine goes to ``POST
        {query_url}/api/v1/query_offline`` as an Arrow IPC stream and the
        answer streams back the same way (any size; progress at ``GET
        {query_url}/api/v1/jobs/{job}``, see :meth:`offline_job`); without
        it, through the JSON API (:meth:`query` with timestamps)."""
        if timestamp_column is None and timestamps is None:
            raise ValueError("query_offline needs timestamps: give timestamp_column=... or timestamps=[...]")
        if timestamp_column is not None and timestamps is not None:
            raise ValueError("give timestamp_column or timestamps, not both")
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            return self._query_offline_json(inputs, outputs, input_dataframe, timestamp_column, timestamps)
        return self._query_offline_arrow(inputs, outputs, input_dataframe, timestamp_column, timestamps, job)

    def _query_offline_json(self, inputs: Any, outputs: Any, input_dataframe: Any,
                            timestamp_column: Optional[str], timestamps: Any) -> Any:
        in_names = _feature_names(inputs, "inputs")
        out_names = _feature_names(outputs, "outputs")
        columns = columns_json(input_dataframe)
        name = timestamp_column or "timestamp"
        if timestamp_column is not None:
            if timestamp_column not in columns:
                raise ValueError(f"input_dataframe has no column {timestamp_column!r}")
            timestamps = columns.pop(timestamp_column)
        elif name in columns:
            raise ValueError(f"input_dataframe already has a column {name!r}: pass timestamp_column")
        sent = _spine_inputs(in_names, list(columns))
        data = {q: columns[c] for q, c in sent.items()}
        out = self.query(in_names, out_names, data, timestamps=timestamps)
        extra = _passed_through(list(columns), sent, name, list(out))
        out[name] = _timestamps(timestamps)
        pd, _ = _optional_modules()
        for c in extra:
            if pd is not None and isinstance(out, pd.DataFrame) and isinstance(input_dataframe, pd.DataFrame):
                out[c] = input_dataframe[c].reset_index(drop=True)
            else:
                out[c] = columns[c]
        return out

    def _query_offline_arrow(self, inputs: Any, outputs: Any, input_dataframe: Any,
                             timestamp_column: Optional[str], timestamps: Any, job: Optional[str]) -> Any:
        import uuid

        import pyarrow as pa
        import pyarrow.ipc as ipc

        in_names = _feature_names(inputs, "inputs")
        out_names = _feature_names(outputs, "outputs")
        if isinstance(input_dataframe, pa.Table):
            table = input_dataframe
        else:
            try:
                import pandas as pd
            except ImportError:
                pd = None
            if pd is not None and isinstance(input_dataframe, pd.DataFrame):
                table = pa.Table.from_pandas(input_dataframe, preserve_index=False)
            else:
                table = pa.table(dict(input_dataframe))
        ts_name = timestamp_column or "timestamp"
        if timestamp_column is None:
            ts = list(timestamps) if not hasattr(timestamps, "to_list") else timestamps.to_list()
            if len(ts) != table.num_rows:
                raise ValueError(f"{len(ts)} timestamps for {table.num_rows} input rows")
            if ts_name in table.column_names:
                raise ValueError(f"input_dataframe already has a column {ts_name!r}: pass timestamp_column")
            table = table.append_column(ts_name, pa.array(ts))
        elif timestamp_column not in table.column_names:
            raise ValueError(f"input_dataframe has no column {timestamp_column!r}")
        # Only the columns the server reads are sent: the inputs and the
        # time; the others come back beside the features, row for row.
        sent = _spine_inputs(in_names, table.column_names)
        spine = table
        table = table.select([ts_name] + list(sent.values()))
        sink = pa.BufferOutputStream()
        with ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table, max_chunksize=65536)
        job = job or f"client-{uuid.uuid4().hex[:12]}"
        query = urllib.parse.urlencode([("inputs", ",".join(in_names)), ("outputs", ",".join(out_names)),
                                        ("timestamp_column", ts_name), ("job", job),
                                        ("rows", str(table.num_rows))])
        url = f"{self.query_url}/api/v1/query_offline?{query}"
        headers = {"Content-Type": "application/vnd.apache.arrow.stream",
                   "Accept": "application/vnd.apache.arrow.stream"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        req = urllib.request.Request(url, data=sink.getvalue().to_pybytes(), headers=headers, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                try:
                    result = ipc.open_stream(resp).read_all()
                except (pa.ArrowException, OSError, ValueError, http.client.HTTPException) as exc:
                    state = self.offline_job(job)
                    err = state.get("error") if isinstance(state, dict) else None
                    if err:
                        raise ThymeError(err.get("message", str(exc)), code=err.get("code", "offline_failed"),
                                         url=url) from None
                    raise ThymeError(f"the offline query stream broke: {exc}", code="bad_response", url=url) from None
        except urllib.error.HTTPError as exc:
            _raise_http_error(exc, url)
        except urllib.error.URLError as exc:
            raise ThymeError(f"cannot reach {url}: {exc.reason}", code="unreachable", url=url) from None
        if result.num_rows != spine.num_rows:
            raise ThymeError(f"the offline query answered {result.num_rows} rows for {spine.num_rows}",
                             code="bad_response", url=url)
        for c in _passed_through(spine.column_names, sent, ts_name, result.column_names):
            result = result.append_column(spine.schema.field(c), spine.column(c))
        try:
            return result.to_pandas()
        except ImportError:
            return result.to_pydict()

    def offline_job(self, job: str) -> Any:
        """Progress of an offline query: ``GET {query_url}/api/v1/jobs/{job}``
        (state, rows read and written, rate, percent, error)."""
        return self._request("GET", f"{self.query_url}/api/v1/jobs/{urllib.parse.quote(job)}")

    def lookup(
        self,
        dataset: Any,
        keys: Any,
        fields: Optional[Sequence[str]] = None,
        timestamps: Any = None,
    ) -> Tuple[Any, Any]:
        """Read a keyed dataset: ``POST {query_url}/api/v1/lookup`` with
        ``{"dataset", "keys": {key: [...]}, "fields", "timestamps"}``.
        Returns ``(rows, found)``: a DataFrame (a dict of columns without
        pandas) with the fields, and one boolean per key row."""
        body: Dict[str, Any] = {
            "dataset": _name(dataset, "dataset"),
            "keys": columns_json(keys),
            "fields": list(fields) if fields is not None else None,
        }
        ts = _timestamps(timestamps)
        if ts is not None:
            rows = _num_rows(body["keys"])
            if len(ts) != rows:
                raise ValueError(f"{len(ts)} timestamps for {rows} key rows")
            body["timestamps"] = ts
        answer = self._request("POST", f"{self.query_url}/api/v1/lookup", body)
        if not isinstance(answer, dict):
            raise ThymeError(f"unexpected lookup answer: {answer!r}", code="bad_response")
        data = answer.get("data", {})
        found = answer.get("found", [])
        try:
            import pandas as pd

            return pd.DataFrame(data), pd.Series(found, dtype=bool, name="found")
        except ImportError:
            return data, found
