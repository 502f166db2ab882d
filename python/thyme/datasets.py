"""Datasets, pipelines and aggregations (``thyme.datasets``).

This module owns:

- ``@dataset`` and ``field(...)``: a class whose annotations are typed
  fields becomes a :class:`Dataset` object (attribute access on it returns
  :class:`Field` references, e.g. ``UserStats.txn_count_7d``);
- ``@pipeline``: a function of input datasets. It is called once, when its
  dataset is decorated, with symbolic :class:`Dataset` nodes; the operators
  it calls (``filter``, ``assign``, ``join``, ``groupby(...).aggregate``, ...)
  record an operator graph. Nothing runs on data in Python;
- the aggregation classes (``Count``, ``Sum``, ``Average``, ...);
- the JSON of a dataset and of its pipelines (the Dataset and Pipeline
  objects of ``docs/commit-payload.md``).

Usage errors are raised while the decorators run, as
:class:`DefinitionError` naming the dataset, pipeline and column at fault:
an unknown column in ``select`` / ``drop`` / ``rename`` / ``groupby`` / ``join`` /
an aggregation's ``of``, a key dropped by ``select``, a pipeline without
``@inputs`` or that does not return a dataset, a bad duration. Judging
types across definitions (does the pipeline output match the dataset, can
``Sum`` add that field) is the job of ``thyme.validate`` (the native module).

Each node's schema (fields, types, keys, timestamp) comes from the model's
schema rules in Rust, the same the control plane validates with and the
stream engine runs on, through ``thyme._native.node_schema``. The Python
schema computed beside it is the fallback for an installation without the
native module; ``python/tests/test_node_schemas.py`` holds both to the
same table of cases.
"""

from __future__ import annotations

import inspect
import itertools
import json
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from . import _registry
from ._pysource import env_json, func_json, function_source
from ._util import (
    DefinitionError,
    definition_context,
    fail,
    json_value,
    names_list,
    native_module,
    parse_duration,
)
from .connectors import SOURCES_ATTR, Source
from .dtypes import (
    JsonType,
    Window,
    as_window,
    class_annotations,
    is_optional,
    non_optional,
    optional,
    type_to_json,
)
from .expr import Expr, cast_type, expr_columns
from .lib import EXPECTATIONS_ATTR, INPUTS_ATTR, META_ATTR, Expectation, meta_json

__all__ = [
    "dataset",
    "field",
    "pipeline",
    "Dataset",
    "Field",
    "Pipeline",
    "GroupBy",
    "Aggregation",
    "Count",
    "Sum",
    "Average",
    "Min",
    "Max",
    "Stddev",
    "Distinct",
    "LastK",
    "FirstK",
    "Quantile",
    "ExpDecaySum",
    "DefinitionError",
]

_SEQ = itertools.count()


class _Missing:
    def __repr__(self) -> str:
        return "<no default>"


MISSING: Any = _Missing()

# ---------------------------------------------------------------------------
# Fields
# ---------------------------------------------------------------------------


class Field:
    """A dataset field: declared with ``field(...)`` in the class body, and
    returned by attribute access on the dataset (``UserStats.uid``)."""

    def __init__(self, key: bool = False, timestamp: bool = False, default: Any = MISSING):
        self.key = key
        self.timestamp = timestamp
        self.default = default
        self.name: Optional[str] = None
        self.dtype: Optional[JsonType] = None
        self.dataset: Optional["Dataset"] = None
        self.description: Optional[str] = None

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def meta(self, description: Optional[str] = None, owner: Optional[str] = None, **_: Any) -> "Field":
        """Describe the field (``field(key=True).meta(description="...")``)."""
        if description is not None and not isinstance(description, str):
            raise fail(f"field meta: description must be a string, not {description!r}")
        self.description = description
        return self

    @property
    def dataset_name(self) -> Optional[str]:
        return self.dataset._name if self.dataset is not None else None

    def fqn(self) -> str:
        """``Dataset.field``."""
        return f"{self.dataset_name}.{self.name}"

    def __str__(self) -> str:
        return str(self.name)

    def __repr__(self) -> str:
        flags = [f for f, on in (("key", self.key), ("timestamp", self.timestamp)) if on]
        return f"Field({self.fqn() if self.dataset else self.name}{', ' + ', '.join(flags) if flags else ''})"

    def to_json(self) -> Dict[str, Any]:
        out: Dict[str, Any] = {"name": self.name, "type": self.dtype}
        if self.key:
            out["key"] = True
        if self.timestamp:
            out["timestamp"] = True
        if self.default is not MISSING:
            out["default"] = json_value(self.default, f"{self.fqn()} default")
        if self.description:
            out["description"] = self.description
        return out


def field(key: bool = False, timestamp: bool = False, default: Any = MISSING) -> Any:
    """Field options: ``key=True`` (a key of a versioned table),
    ``timestamp=True`` (the event-time field; needed only when a dataset has
    several datetime fields), ``default=v`` (filled in when an ingested row
    lacks the field)."""
    if not isinstance(key, bool) or not isinstance(timestamp, bool):
        raise fail("field(): key and timestamp must be True or False")
    if key and timestamp:
        raise fail("field(): a field cannot be both a key and the timestamp")
    return Field(key=key, timestamp=timestamp, default=default)


# ---------------------------------------------------------------------------
# Schemas tracked through pipelines
# ---------------------------------------------------------------------------


class _Schema:
    """Field names and types of a node, its keys and its timestamp."""

    __slots__ = ("fields", "keys", "timestamp")

    def __init__(self, fields: List[Tuple[str, JsonType]], keys: List[str], timestamp: Optional[str]):
        self.fields = list(fields)
        self.keys = list(keys)
        self.timestamp = timestamp

    def names(self) -> List[str]:
        return [n for n, _ in self.fields]

    def get(self, name: str) -> Optional[JsonType]:
        for n, t in self.fields:
            if n == name:
                return t
        return None

    def has(self, name: str) -> bool:
        return any(n == name for n, _ in self.fields)

    def special(self, name: str) -> bool:
        return name == self.timestamp or name in self.keys

    def copy(self) -> "_Schema":
        return _Schema(self.fields, self.keys, self.timestamp)


def _schema_json(s: _Schema) -> Dict[str, Any]:
    return {"fields": [[n, t] for n, t in s.fields], "keys": list(s.keys), "timestamp": s.timestamp or ""}


def _node_schema(op: str, params: Dict[str, Any], ins: List["_Node"], fallback: _Schema,
                 joined: Optional["Dataset"]) -> _Schema:
    """The schema of a new node: the model's rules through the native
    module, else ``fallback`` (the SDK's own, for installations without
    it). Problems the rules find are left to ``thyme.validate`` / the
    commit, which report them with the rest, naming the pipeline; where
    they leave no schema (e.g. join columns that are not the right side's
    keys) the node keeps the provisional ``fallback`` until then."""
    nat = native_module()
    if nat is None:
        return fallback
    node: Dict[str, Any] = {"id": len(ins), "op": op, **params}
    if op == "union":
        node["inputs"] = list(range(len(ins)))
    else:
        node["input"] = 0
    out = nat.node_schema(
        json.dumps(node, allow_nan=False),
        json.dumps([_schema_json(n._schema) for n in ins], allow_nan=False),
        None if joined is None else joined._name,
        None if joined is None else json.dumps(_schema_json(joined._schema), allow_nan=False),
    )
    if out is None:
        return fallback
    d = json.loads(out)
    return _Schema([(n, t) for n, t in d["fields"]], d["keys"], d["timestamp"] or None)


def _colname(c: Any, what: str) -> str:
    if isinstance(c, Field):
        return str(c.name)
    if isinstance(c, str) and c:
        return c
    raise fail(f"{what}: column names are strings, not {c!r}")


def _column_args(args: Tuple[Any, ...], columns: Any, op: str, allow_empty: bool = False) -> Optional[List[str]]:
    """The columns of ``select("a", "b")``, ``select(["a", "b"])`` or
    ``select(columns=[...])``."""
    if args and columns is not None:
        raise fail(f"{op}: give the columns as arguments or as columns=[...], not both")
    if columns is None:
        if len(args) == 1 and isinstance(args[0], (list, tuple)):
            columns = args[0]
        else:
            columns = list(args)
    elif isinstance(columns, (str, Field)):
        columns = [columns]
    cols = [_colname(c, op) for c in columns]
    if not cols:
        if allow_empty:
            return None
        raise fail(f"{op}: name at least one column")
    dup = sorted({c for c in cols if cols.count(c) > 1})
    if dup:
        raise fail(f"{op}: column {names_list(dup)} is listed twice")
    return cols


def _unknown(schema: _Schema, cols: Sequence[str], op: str) -> None:
    for c in cols:
        if not schema.has(c):
            raise fail(f"{op}: unknown column {c!r} (columns: {names_list(schema.names())})")


# ---------------------------------------------------------------------------
# Aggregations
# ---------------------------------------------------------------------------


def _numeric_kind(t: JsonType) -> Optional[str]:
    """``"int"`` / ``"float"`` for numeric types, else None."""
    t = non_optional(t)
    if t in ("int", "float"):
        return t  # type: ignore[return-value]
    if isinstance(t, dict) and "between" in t:
        return t["between"]["type"]  # type: ignore[no-any-return]
    if isinstance(t, dict) and "decimal" in t:
        return "float"
    return None


class Aggregation:
    """Base of the aggregations of ``groupby(...).aggregate(...)``.

    ``of`` is the input field, ``window`` the window (a ``Continuous`` /
    ``Tumbling`` / ``Hopping`` / ``Session``, or omitted when the groupby has
    one), ``into_field`` the output field in the list form of
    ``aggregate([...])`` (the keyword form names it by the keyword)."""

    kind = ""
    needs_of = True

    def __init__(self, of: Any = None, window: Any = None, into_field: Optional[str] = None):
        name = type(self).__name__
        if of is not None:
            of = _colname(of, name)
        if of is None and self.needs_of:
            raise fail(f"{name} needs of=\"<field>\": the field to aggregate")
        self.of: Optional[str] = of
        self.window: Optional[Window] = as_window(window, name)
        if into_field is not None and (not isinstance(into_field, str) or not into_field):
            raise fail(f"{name}: into_field must be a field name, not {into_field!r}")
        self.into_field = into_field

    def _extra(self) -> Dict[str, Any]:
        return {}

    def to_json(self, into: str) -> Dict[str, Any]:
        out: Dict[str, Any] = {
            "kind": self.kind,
            "into": into,
            "of": self.of,
            "window": self.window.to_json() if self.window is not None else None,
        }
        out.update(self._extra())
        return out

    def output_type(self, of_type: Optional[JsonType]) -> JsonType:
        """The output field's type given the ``of`` field's (best effort; the
        native validator has the last word)."""
        return "float"

    def _default_json(self, default: Any) -> Any:
        return None if default is None else json_value(default, f"{type(self).__name__} default")

    def __repr__(self) -> str:
        return f"{type(self).__name__}(of={self.of!r}, window={self.window!r}, into_field={self.into_field!r})"


class Count(Aggregation):
    """Number of events in the window (``unique=True``: of distinct ``of``
    values, ``approx=True`` allows an approximate count)."""

    kind = "count"
    needs_of = False

    def __init__(self, of: Any = None, window: Any = None, into_field: Optional[str] = None,
                 unique: bool = False, approx: bool = False, dropnull: bool = False):
        super().__init__(of, window, into_field)
        if unique and self.of is None:
            raise fail("Count(unique=True) needs of=\"<field>\": the field whose distinct values are counted")
        self.unique = bool(unique)
        self.approx = bool(approx)
        self.dropnull = bool(dropnull)

    def _extra(self) -> Dict[str, Any]:
        out: Dict[str, Any] = {"unique": self.unique, "approx": self.approx}
        if self.dropnull:
            out["dropnull"] = True
        return out

    def output_type(self, of_type: Optional[JsonType]) -> JsonType:
        return "int"


class Sum(Aggregation):
    """Sum of ``of`` over the window (an int field sums to int)."""

    kind = "sum"

    def output_type(self, of_type: Optional[JsonType]) -> JsonType:
        return "int" if of_type is not None and _numeric_kind(of_type) == "int" else "float"


class _WithDefault(Aggregation):
    def __init__(self, of: Any = None, window: Any = None, into_field: Optional[str] = None, default: Any = None):
        super().__init__(of, window, into_field)
        self.default = default

    def _extra(self) -> Dict[str, Any]:
        d = self._default_json(self.default)
        return {} if d is None else {"default": d}

    def _maybe_optional(self, t: JsonType) -> JsonType:
        return t if self.default is not None else optional(t)


class Average(_WithDefault):
    """Mean of ``of`` over the window; ``default`` when the window is empty
    (without one the output is ``Optional[float]``)."""

    kind = "average"

    def output_type(self, of_type: Optional[JsonType]) -> JsonType:
        return self._maybe_optional("float")


class Min(_WithDefault):
    """Smallest ``of`` in the window; ``default`` when it is empty."""

    kind = "min"

    def output_type(self, of_type: Optional[JsonType]) -> JsonType:
        base = _numeric_kind(of_type) if of_type is not None else None
        return self._maybe_optional(base or "float")


class Max(Min):
    """Largest ``of`` in the window; ``default`` when it is empty."""

    kind = "max"


class Stddev(_WithDefault):
    """Standard deviation of ``of`` over the window; ``default`` when empty."""

    kind = "stddev"

    def output_type(self, of_type: Optional[JsonType]) -> JsonType:
        return self._maybe_optional("float")


class Distinct(Aggregation):
    """The distinct values of ``of`` in the window, as a list."""

    kind = "distinct"

    def __init__(self, of: Any = None, window: Any = None, into_field: Optional[str] = None,
                 unordered: bool = True):
        super().__init__(of, window, into_field)
        self.unordered = bool(unordered)

    def _extra(self) -> Dict[str, Any]:
        return {"unordered": self.unordered}

    def output_type(self, of_type: Optional[JsonType]) -> JsonType:
        return {"list": of_type if of_type is not None else "str"}


class LastK(Aggregation):
    """The last ``limit`` values of ``of`` in the window, newest first
    (``dedup``: without repeats, ``dropnull``: skipping nulls)."""

    kind = "lastk"

    def __init__(self, of: Any = None, window: Any = None, into_field: Optional[str] = None,
                 limit: Optional[int] = None, dedup: bool = False, dropnull: bool = False):
        super().__init__(of, window, into_field)
        name = type(self).__name__
        if limit is None:
            raise fail(f"{name} needs limit=<n>: how many values to keep")
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise fail(f"{name}: limit must be a positive integer, not {limit!r}")
        self.limit = limit
        self.dedup = bool(dedup)
        self.dropnull = bool(dropnull)

    def _extra(self) -> Dict[str, Any]:
        return {"limit": self.limit, "dedup": self.dedup, "dropnull": self.dropnull}

    def output_type(self, of_type: Optional[JsonType]) -> JsonType:
        t = of_type if of_type is not None else "str"
        return {"list": non_optional(t) if self.dropnull else t}


class FirstK(LastK):
    """The first ``limit`` values of ``of`` in the window, oldest first."""

    kind = "firstk"


class Quantile(Aggregation):
    """The ``p`` quantile of ``of`` over the window (approximate, with the
    error bound of the sketch); ``default`` when the window is empty."""

    kind = "quantile"

    def __init__(self, of: Any = None, window: Any = None, into_field: Optional[str] = None,
                 p: Optional[float] = None, default: Any = None, approx: bool = True):
        super().__init__(of, window, into_field)
        if p is None:
            raise fail("Quantile needs p=<quantile between 0 and 1>")
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 <= p <= 1:
            raise fail(f"Quantile: p must be between 0 and 1, not {p!r}")
        self.p = float(p)
        self.default = default
        self.approx = bool(approx)

    def _extra(self) -> Dict[str, Any]:
        out: Dict[str, Any] = {"p": self.p, "approx": self.approx}
        d = self._default_json(self.default)
        if d is not None:
            out["default"] = d
        return out

    def output_type(self, of_type: Optional[JsonType]) -> JsonType:
        return "float" if self.default is not None else {"optional": "float"}


class ExpDecaySum(Aggregation):
    """Sum of ``of`` with each event weighted by ``0.5 ** (age / half_life)``."""

    kind = "expdecaysum"

    def __init__(self, of: Any = None, window: Any = None, into_field: Optional[str] = None,
                 half_life: Any = None):
        super().__init__(of, window, into_field)
        if half_life is None:
            raise fail("ExpDecaySum needs half_life=<duration>, e.g. half_life=\"1d\"")
        h = parse_duration(half_life, "ExpDecaySum half_life")
        if h == "forever" or h in ("0s", "0m", "0h", "0d"):
            raise fail(f"ExpDecaySum: half_life must be a positive duration, not {half_life!r}")
        self.half_life = h

    def _extra(self) -> Dict[str, Any]:
        return {"half_life": self.half_life}


# ---------------------------------------------------------------------------
# Operator graph nodes
# ---------------------------------------------------------------------------


class _Node:
    """A dataset inside a pipeline: a committed dataset (an ``input`` node)
    or the result of an operator. Operators return new nodes."""

    def __init__(self, op: str, inputs: List["_Node"], params: Dict[str, Any], schema: _Schema):
        self._seq = next(_SEQ)
        self._op = op
        self._inputs = inputs
        self._params = params
        self._schema = schema
        self._join_dataset: Optional[Dataset] = None

    # -- graph -------------------------------------------------------------

    def _node_json(self, nid: int, ids: Dict[int, int]) -> Dict[str, Any]:
        out: Dict[str, Any] = {"id": nid, "op": self._op}
        if self._op == "union":
            out["inputs"] = [ids[id(n)] for n in self._inputs]
        elif self._op != "input":
            out["input"] = ids[id(self._inputs[0])]
        out.update(self._params)
        return out

    def _derive(self, op: str, params: Dict[str, Any], fallback: _Schema,
                inputs: Optional[List["_Node"]] = None,
                joined: Optional["Dataset"] = None) -> "_Node":
        ins = inputs if inputs is not None else [self]
        return _Node(op, ins, params, _node_schema(op, params, ins, fallback, joined))

    # -- row operators -----------------------------------------------------

    def filter(self, predicate: Any) -> "_Node":
        """Keep the rows where ``predicate`` holds: an expression
        (``col("amount") > 10``) or a function of a pandas DataFrame returning
        a boolean Series (``lambda df: df["amount"] > 10``)."""
        if isinstance(predicate, Expr):
            _unknown(self._schema, expr_columns(predicate), "filter")
            pred: Dict[str, Any] = {"expr": predicate.to_json()}
        elif callable(predicate):
            pred = {"func": func_json(predicate)}
        else:
            raise fail(f"filter: the predicate must be an expression or a function, not {predicate!r}")
        return self._derive("filter", {"predicate": pred}, self._schema.copy())

    def assign(self, *args: Any, **columns: Any) -> "_Node":
        """Add or replace columns: ``assign("amount_usd", float, lambda df:
        df.amount * 1.1)`` (a function of the DataFrame returning a Series),
        or ``assign(cents=(col("amount") * 100).astype(int))`` (expressions,
        typed with ``.astype``)."""
        out: Dict[str, Dict[str, Any]] = {}
        schema = self._schema.copy()
        if args:
            if columns:
                raise fail("assign: use assign(name, type, func) or assign(name=expr.astype(T), ...), not both")
            if len(args) != 3:
                raise fail("assign: the function form is assign(\"name\", type, func)")
            name, dtype, fn = args
            name = _colname(name, "assign")
            if not callable(fn) or isinstance(fn, Expr):
                raise fail(f"assign({name!r}, ...): the third argument must be a function, not {fn!r}")
            t = type_to_json(dtype, f"assign({name!r})")
            out[name] = {"type": t, "func": func_json(fn)}
            new = [(name, t)]
        else:
            if not columns:
                raise fail("assign: give at least one column")
            new = []
            for name, e in columns.items():
                if not isinstance(e, Expr):
                    raise fail(
                        f"assign({name}=...): the value must be an expression such as "
                        f"(col(\"a\") * 2).astype(int), not {e!r}"
                    )
                t = cast_type(e)
                if t is None:
                    raise fail(f"assign({name}=...): give the expression a type with .astype(T)")
                _unknown(self._schema, expr_columns(e), f"assign({name}=...)")
                out[name] = {"type": t, "expr": e.to_json()}
                new.append((name, t))
        for name, t in new:
            if schema.special(name):
                raise fail(f"assign: cannot assign to key or timestamp field {name!r}")
            if schema.has(name):
                schema.fields = [(n, t if n == name else ot) for n, ot in schema.fields]
            else:
                schema.fields.append((name, t))
        return self._derive("assign", {"columns": out}, schema)

    def transform(self, func: Callable[..., Any], schema: Optional[Dict[str, Any]] = None) -> "_Node":
        """Apply ``func`` (DataFrame -> DataFrame) to the rows. ``schema``
        (``{name: type}``) is the output's when it differs from the input's;
        it keeps the keys and the timestamp."""
        if not callable(func) or isinstance(func, Expr):
            raise fail(f"transform: the first argument must be a function, not {func!r}")
        fj = func_json(func)
        if schema is None or (isinstance(schema, dict) and not schema):  # Fennel writes schema={} for "unchanged"
            return self._derive("transform", {"func": fj, "schema": None}, self._schema.copy())
        if not isinstance(schema, dict):
            raise fail(f"transform: schema must be a dict of column -> type, not {schema!r}")
        types = {_colname(k, "transform schema"): type_to_json(v, f"transform schema {k!r}") for k, v in schema.items()}
        for k in self._schema.keys + ([self._schema.timestamp] if self._schema.timestamp else []):
            if k not in types:
                raise fail(f"transform: the schema must keep key/timestamp field {k!r}")
        out = _Schema(list(types.items()), self._schema.keys, self._schema.timestamp)
        return self._derive("transform", {"func": fj, "schema": types}, out)

    # -- column operators --------------------------------------------------

    def select(self, *args: Any, columns: Any = None) -> "_Node":
        """Keep only these columns (the timestamp is kept; keys must be listed)."""
        cols = _column_args(args, columns, "select") or []
        _unknown(self._schema, cols, "select")
        for k in self._schema.keys:
            if k not in cols:
                raise fail(f"select must keep key field {k!r} (keys: {names_list(self._schema.keys)})")
        ts = self._schema.timestamp
        if ts is not None and ts not in cols:
            cols.append(ts)
        s = self._schema.copy()
        s.fields = [(n, t) for n, t in s.fields if n in cols]
        return self._derive("select", {"columns": cols}, s)

    def drop(self, *args: Any, columns: Any = None) -> "_Node":
        """Remove these columns (not keys, not the timestamp)."""
        cols = _column_args(args, columns, "drop") or []
        _unknown(self._schema, cols, "drop")
        for c in cols:
            if self._schema.special(c):
                raise fail(f"drop: cannot drop key or timestamp field {c!r}")
        s = self._schema.copy()
        s.fields = [(n, t) for n, t in s.fields if n not in cols]
        return self._derive("drop", {"columns": cols}, s)

    def rename(self, columns: Optional[Dict[str, str]] = None, **kwargs: str) -> "_Node":
        """Rename columns: ``rename({"old": "new"})``."""
        if columns is not None and kwargs:
            raise fail("rename: give a dict or keyword arguments, not both")
        mapping = dict(columns if columns is not None else kwargs)
        if not mapping:
            raise fail("rename: give at least one {old: new} pair")
        mapping = {_colname(k, "rename"): _colname(v, "rename") for k, v in mapping.items()}
        _unknown(self._schema, list(mapping), "rename")
        renamed = [mapping.get(n, n) for n in self._schema.names()]
        for n in renamed:
            if renamed.count(n) > 1:
                raise fail(f"rename: renaming makes two columns named {n!r}")
        s = _Schema(
            [(mapping.get(n, n), t) for n, t in self._schema.fields],
            [mapping.get(k, k) for k in self._schema.keys],
            mapping.get(self._schema.timestamp, self._schema.timestamp) if self._schema.timestamp else None,
        )
        return self._derive("rename", {"columns": mapping}, s)

    def dropnull(self, *args: Any, columns: Any = None) -> "_Node":
        """Drop the rows where these optional columns are null (no columns:
        every optional column); the columns are no longer optional."""
        cols = _column_args(args, columns, "dropnull", allow_empty=True)
        if cols is not None:
            _unknown(self._schema, cols, "dropnull")
        which = cols if cols is not None else [n for n, t in self._schema.fields if is_optional(t)]
        s = self._schema.copy()
        s.fields = [(n, non_optional(t) if n in which else t) for n, t in s.fields]
        return self._derive("dropnull", {"columns": cols}, s)

    def explode(self, *args: Any, columns: Any = None) -> "_Node":
        """One row per element of these list columns (each becomes its
        element type, optional)."""
        cols = _column_args(args, columns, "explode") or []
        _unknown(self._schema, cols, "explode")
        s = self._schema.copy()
        fields = []
        for n, t in s.fields:
            inner = non_optional(t)
            if n in cols and isinstance(inner, dict) and "list" in inner:
                t = optional(inner["list"])
            fields.append((n, t))
        s.fields = fields
        return self._derive("explode", {"columns": cols}, s)

    def dedup(self, *args: Any, by: Any = None, window: Any = None) -> "_Node":
        """Drop repeated rows: rows equal on ``by`` (default: all columns)
        and the timestamp, within ``window`` when given."""
        cols = _column_args(args, by, "dedup", allow_empty=True)
        if cols is not None:
            _unknown(self._schema, cols, "dedup")
        w = as_window(window, "dedup")
        params = {"by": cols, "window": w.to_json() if w is not None else None}
        return self._derive("dedup", params, self._schema.copy())

    # -- combining -----------------------------------------------------------

    def join(
        self,
        other: Any,
        how: Optional[str] = None,
        on: Any = None,
        left_on: Any = None,
        right_on: Any = None,
        within: Tuple[Any, Any] = ("forever", "0s"),
        fields: Any = None,
    ) -> "_Node":
        """Join each row with the keyed dataset ``other`` as of the row's
        event time. ``how``: ``"inner"`` or ``"left"`` (the right's fields
        become optional); ``on`` (same names) or ``left_on`` + ``right_on``
        (default: the right's keys); ``within``: how far back / ahead of the
        row's time the right row may be; ``fields``: the right fields to add
        (default all non-key, non-timestamp ones)."""
        if not isinstance(other, Dataset):
            if isinstance(other, _Node):
                raise fail("join: the right side must be a dataset (one of the pipeline's @inputs), "
                           "not an intermediate result of the pipeline")
            raise fail(f"join: the right side must be a dataset, not {other!r}")
        if how not in ("inner", "left"):
            raise fail(f"join with {other._name}: how must be \"inner\" or \"left\", not {how!r}")
        right = other._schema
        what = f"join with {other._name}"
        if not right.keys:
            raise fail(f"{what}: the right side of a join must be a keyed dataset; {other._name} is keyless")
        params: Dict[str, Any] = {"dataset": other._name, "how": how}
        if on is not None:
            if left_on is not None or right_on is not None:
                raise fail(f"{what}: give on=[...] or left_on and right_on, not both")
            lcols = rcols = _column_args((), on, what) or []
            params["on"] = lcols
        elif left_on is not None or right_on is not None:
            if left_on is None or right_on is None:
                raise fail(f"{what}: left_on and right_on go together")
            lcols = _column_args((), left_on, what) or []
            rcols = _column_args((), right_on, what) or []
            if len(lcols) != len(rcols):
                raise fail(f"{what}: left_on and right_on have different lengths")
            params["left_on"], params["right_on"] = lcols, rcols
        else:
            lcols = rcols = list(right.keys)
            params["on"] = lcols
        _unknown(self._schema, lcols, f"{what} (left side)")
        for c in rcols:
            if not right.has(c):
                raise fail(f"{what}: {other._name} has no column {c!r} (columns: {names_list(right.names())})")
        if not isinstance(within, (tuple, list)) or len(within) != 2:
            raise fail(f"{what}: within must be a pair of durations, e.g. (\"forever\", \"0s\")")
        params["within"] = [parse_duration(within[0], f"{what} within"), parse_duration(within[1], f"{what} within")]
        candidates = [(n, t) for n, t in right.fields if not right.special(n)]
        if fields is not None:
            wanted = _column_args((), fields, what) or []
            names = [n for n, _ in candidates]
            for f in wanted:
                if f not in names:
                    raise fail(f"{what}: fields names {f!r}, which is not a non-key, non-timestamp field of "
                               f"{other._name} (those are: {names_list(names)})")
            take = [(n, t) for n, t in candidates if n in wanted]
            params["fields"] = wanted
        else:
            take = candidates
            params["fields"] = None
        s = self._schema.copy()
        for n, t in take:
            if s.has(n):
                raise fail(f"{what}: field {n!r} exists on both sides of the join (rename or drop one, "
                           "or pick the right fields with fields=[...])")
            s.fields.append((n, optional(t) if how == "left" else t))
        node = self._derive("join", params, s, joined=other)
        node._join_dataset = other
        return node

    def union(self, *others: "_Node") -> "_Node":
        """Rows of this and the other datasets (same schema); also ``a + b``."""
        if not others:
            raise fail("union: give at least one other dataset")
        for o in others:
            if not isinstance(o, _Node):
                raise fail(f"union: can only union datasets, not {o!r}")
        return self._derive("union", {}, self._schema.copy(), inputs=[self, *others])

    def __add__(self, other: Any) -> "_Node":
        if not isinstance(other, _Node):
            return NotImplemented
        return self.union(other)

    def groupby(self, *keys: Any, window: Any = None) -> "GroupBy":
        """Group by key columns, then ``.aggregate(...)``, ``.first()`` or
        ``.latest()``. ``window`` (Tumbling / Hopping / Session) applies to
        every aggregation."""
        cols = _column_args(keys, None, "groupby") or []
        _unknown(self._schema, cols, "groupby")
        return GroupBy(self, cols, as_window(window, "groupby"))

    def changelog(self, delete: Optional[str] = None, delete_column: Optional[str] = None) -> "_Node":
        """The versions of a keyed dataset as an event stream, with a
        boolean column ``delete`` true for deletions."""
        if delete is not None and delete_column is not None:
            raise fail("changelog: give delete or delete_column, not both")
        name = delete if delete is not None else delete_column
        if name is None:
            raise fail("changelog needs delete=\"<column>\": the boolean column marking deletions")
        name = _colname(name, "changelog")
        if self._schema.has(name):
            raise fail(f"changelog: delete column {name!r} already exists")
        s = _Schema(self._schema.fields + [(name, "bool")], [], self._schema.timestamp)
        return self._derive("changelog", {"delete_column": name}, s)

    # -- introspection -----------------------------------------------------

    def schema(self) -> Dict[str, JsonType]:
        """Column name -> payload JSON type."""
        return dict(self._schema.fields)

    def __repr__(self) -> str:
        return f"<{self._op} node: {names_list(self._schema.names())}>"


class GroupBy:
    """``node.groupby(keys...)``, waiting for ``aggregate``, ``first`` or ``latest``."""

    def __init__(self, node: _Node, keys: List[str], window: Optional[Window]):
        self._node = node
        self._keys = keys
        self._window = window

    def aggregate(self, *args: Any, emit: str = "eager", along: Optional[str] = None, **kwargs: Any) -> _Node:
        """Aggregate each group: ``aggregate(n=Count(window=Continuous("7d")))``
        or ``aggregate([Count(window=..., into_field="n")])``. ``emit``:
        ``"eager"`` (update on every event) or ``"final"`` (once a window
        closes); ``along``: aggregate along another datetime column."""
        if len(args) == 1 and isinstance(args[0], (list, tuple)):
            listed = list(args[0])
        else:
            listed = list(args)
        if emit not in ("eager", "final"):
            raise fail(f"aggregate: emit must be \"eager\" or \"final\", not {emit!r}")
        named: List[Tuple[str, Aggregation]] = []
        for a in listed:
            if not isinstance(a, Aggregation):
                raise fail(f"aggregate: {a!r} is not an aggregation (Count, Sum, Average, ...)")
            if a.into_field is None:
                raise fail(f"aggregate: {type(a).__name__}(of={a.of!r}) needs into_field=\"<name>\" "
                           "in the list form (or use aggregate(name=...))")
            named.append((a.into_field, a))
        for name, a in kwargs.items():
            if not isinstance(a, Aggregation):
                raise fail(f"aggregate({name}=...): {a!r} is not an aggregation (Count, Sum, Average, ...)")
            if a.into_field is not None and a.into_field != name:
                raise fail(f"aggregate({name}=...): the aggregation also says into_field={a.into_field!r}")
            named.append((name, a))
        if not named:
            raise fail("aggregate needs at least one aggregation")
        schema = self._node._schema
        ts = schema.timestamp
        seen: List[str] = []
        aggs = []
        fields: List[Tuple[str, JsonType]] = [(k, schema.get(k)) for k in self._keys]  # type: ignore[misc]
        if ts is not None:
            fields.append((ts, "datetime"))
        for into, a in named:
            what = f"aggregate {type(a).__name__} into {into!r}"
            if into in seen:
                raise fail(f"aggregate: output field {into!r} is produced twice")
            if into in self._keys or into == ts:
                raise fail(f"{what}: {into!r} is a groupby key or the timestamp")
            seen.append(into)
            if a.of is not None:
                _unknown(schema, [a.of], f"{what}: of")
            if self._window is not None and a.window is not None:
                raise fail(f"{what}: the groupby already has a window; drop window= from the aggregation")
            if self._window is None and a.window is None:
                raise fail(f"{what}: needs a window, e.g. window=Continuous(\"7d\") "
                           "(or give the groupby a window)")
            aggs.append(a.to_json(into))
            fields.append((into, a.output_type(schema.get(a.of) if a.of else None)))
        params: Dict[str, Any] = {
            "keys": list(self._keys),
            "window": self._window.to_json() if self._window is not None else None,
            "aggregates": aggs,
            "emit": emit,
        }
        if along is not None:
            along = _colname(along, "aggregate along")
            _unknown(schema, [along], "aggregate along")
            params["along"] = along
        return self._node._derive("aggregate", params, _Schema(fields, self._keys, ts))

    def _pick(self, op: str) -> _Node:
        if self._window is not None:
            raise fail(f"groupby(...).{op}() takes no window")
        s = self._node._schema.copy()
        s.keys = list(self._keys)
        return self._node._derive(op, {"keys": list(self._keys)}, s)

    def first(self) -> _Node:
        """The first row of each group: a dataset keyed by the groupby keys."""
        return self._pick("first")

    def latest(self) -> _Node:
        """The latest row of each group: a dataset keyed by the groupby keys."""
        return self._pick("latest")


# ---------------------------------------------------------------------------
# Pipelines
# ---------------------------------------------------------------------------


class Pipeline:
    """A ``@pipeline`` function waiting for its dataset."""

    def __init__(self, fn: Callable[..., Any], version: int):
        if isinstance(fn, (classmethod, staticmethod)):
            fn = fn.__func__
        if not callable(fn):
            raise fail(f"@pipeline decorates a function, not {fn!r}")
        if isinstance(version, bool) or not isinstance(version, int) or version < 1:
            raise fail(f"@pipeline {getattr(fn, '__name__', fn)}: version must be a positive integer, not {version!r}")
        self.fn = fn
        self.name: str = fn.__name__
        self.version = version

    def _declared_inputs(self) -> Optional[List[Any]]:
        own = self.__dict__.get(INPUTS_ATTR)
        return own if own is not None else getattr(self.fn, INPUTS_ATTR, None)

    def _call(self, ds: "Dataset", ins: List["Dataset"]) -> Any:
        try:
            params = [
                p for p in inspect.signature(self.fn).parameters.values()
                if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
            ]
            varargs = any(p.kind == p.VAR_POSITIONAL for p in inspect.signature(self.fn).parameters.values())
        except (TypeError, ValueError):
            params, varargs = [], True
        if varargs or len(params) == len(ins) + 1:
            return self.fn(ds, *ins)
        if len(params) == len(ins):
            return self.fn(*ins)
        raise fail(f"takes {len(params)} arguments but @inputs gives {len(ins)} "
                   f"dataset(s) (write def {self.name}(cls, {', '.join(i._name.lower() for i in ins)}))")

    def build(self, ds: "Dataset") -> Dict[str, Any]:
        """Run the pipeline function on symbolic inputs and return the
        payload's Pipeline."""
        what = f"pipeline {ds._name}.{self.name}"
        with definition_context(what):
            declared = self._declared_inputs()
            if not declared:
                raise fail("has no @inputs: add @inputs(SomeDataset) below @pipeline")
            ins: List[Dataset] = []
            for d in declared:
                if not isinstance(d, Dataset):
                    raise fail(f"@inputs takes datasets (classes decorated with @dataset), not {d!r}")
                if any(d is x for x in ins):
                    raise fail(f"@inputs lists {d._name} twice")
                if d is ds:
                    raise fail(f"reads its own dataset {ds._name}")
                ins.append(d)
            try:
                result = self._call(ds, ins)
            except DefinitionError:
                raise
            except Exception as exc:
                raise fail(f"the pipeline function raised {type(exc).__name__}: {exc}") from exc
            if not isinstance(result, _Node):
                raise fail(
                    "must return a dataset built from its inputs (e.g. return txn.filter(...)), "
                    f"not {type(result).__name__}"
                )
            nodes, output = _assemble(ins, result)
            source, _ = function_source(self.fn)
            return {
                "name": self.name,
                "version": self.version,
                "inputs": [d._name for d in ins],
                "nodes": nodes,
                "output": output,
                "source": source,
                "env": env_json(self.fn),
            }

    def __repr__(self) -> str:
        return f"<pipeline {self.name} v{self.version}>"


def _assemble(ins: List["Dataset"], out: _Node) -> Tuple[List[Dict[str, Any]], int]:
    """Number the nodes (inputs first, then operators in creation order) and
    serialize them."""
    reachable: Dict[int, _Node] = {}
    stack = [out]
    while stack:
        n = stack.pop()
        if id(n) in reachable:
            continue
        reachable[id(n)] = n
        if isinstance(n, Dataset):
            if not any(n is d for d in ins):
                raise fail(f"uses dataset {n._name}, which is not among its @inputs "
                           f"({names_list(d._name for d in ins)})")
            continue
        if n._join_dataset is not None and not any(n._join_dataset is d for d in ins):
            raise fail(f"joins with {n._join_dataset._name}, which is not among its @inputs "
                       f"({names_list(d._name for d in ins)})")
        stack.extend(n._inputs)
    ops = sorted((n for n in reachable.values() if not isinstance(n, Dataset)), key=lambda n: n._seq)
    order: List[_Node] = list(ins) + ops
    ids = {id(n): i for i, n in enumerate(order)}
    return [n._node_json(i, ids) for i, n in enumerate(order)], ids[id(out)]


def pipeline(fn: Any = None, *, version: int = 1, env: Any = None, tier: Any = None) -> Any:
    """Mark a method of a dataset class as a pipeline computing the dataset
    from the ``@inputs`` datasets. Use as ``@pipeline`` or
    ``@pipeline(version=2)`` (bump it when the logic changes). ``env`` /
    ``tier`` are Fennel's deployment selectors, accepted and not used (Thyme
    has one deployment)."""
    if fn is not None and not isinstance(fn, int):
        return Pipeline(fn, version)
    if isinstance(fn, int):  # @pipeline(2): Fennel's positional version
        version = fn

    def decorate(f: Any) -> Pipeline:
        return Pipeline(f, version)

    return decorate


# ---------------------------------------------------------------------------
# Datasets
# ---------------------------------------------------------------------------

_LOOKUP_HOOK: Optional[Callable[..., Any]] = None


def _set_lookup_hook(hook: Optional[Callable[..., Any]]) -> None:
    """Install the function that serves ``Dataset.lookup`` (the server's
    extractor runtime does; outside it, lookups raise)."""
    global _LOOKUP_HOOK
    _LOOKUP_HOOK = hook


class Dataset(_Node):
    """A committed dataset (what ``@dataset`` returns) and, inside
    pipelines, the ``input`` node reading it. ``Dataset.field_name`` is a
    :class:`Field` reference."""

    def __init__(
        self,
        name: str,
        fields: List[Field],
        version: int,
        index: bool,
        history: Optional[str],
        module: Optional[str],
        description: Optional[str],
    ):
        self._name = name
        self._fields = fields
        self._field_map = {f.name: f for f in fields}
        self._version = version
        self._index = index
        self._history = history
        self._module = module
        self._sources: List[Dict[str, Any]] = []
        self._pipeline_defs: List[Pipeline] = []
        self._pipelines: List[Dict[str, Any]] = []
        self._expectations: Optional[Dict[str, Any]] = None
        self._meta: Dict[str, Any] = {"owner": None, "description": description, "tags": [], "deprecated": False}
        keys = [str(f.name) for f in fields if f.key]
        ts = [f for f in fields if f.timestamp]
        super().__init__(
            "input",
            [],
            {"dataset": name},
            _Schema([(str(f.name), f.dtype) for f in fields], keys,  # type: ignore[misc]
                    str(ts[0].name) if len(ts) == 1 else None),
        )

    # -- attribute access -> fields ------------------------------------------

    def __getattr__(self, name: str) -> Field:
        fields = self.__dict__.get("_field_map")
        if fields is None or name.startswith("__"):
            raise AttributeError(name)
        if name in fields:
            return fields[name]  # type: ignore[no-any-return]
        raise AttributeError(
            f"dataset {self.__dict__.get('_name')} has no field {name!r} (fields: {names_list(fields)})"
        )

    def __repr__(self) -> str:
        return f"<dataset {self._name} v{self._version}>"

    # -- public helpers ----------------------------------------------------

    @property
    def fields(self) -> List[Field]:
        """The fields, in declaration order."""
        return list(self._fields)

    @property
    def key_fields(self) -> List[str]:
        """Names of the key fields."""
        return list(self._schema.keys)

    @property
    def timestamp_field(self) -> Optional[str]:
        """Name of the event-time field."""
        return self._schema.timestamp

    def lookup(self, ts: Any, *args: Any, fields: Optional[List[str]] = None, **keys: Any) -> Any:
        """Read the dataset as of ``ts`` for the given keys (inside the Thyme
        server, from Python extractors): returns ``(DataFrame, found)``."""
        if _LOOKUP_HOOK is None:
            raise RuntimeError(
                f"{self._name}.lookup(...) reads the dataset inside the Thyme server, where extractors run; "
                f"to read it from Python use thyme.Client(...).lookup({self._name!r}, keys)"
            )
        return _LOOKUP_HOOK(self, ts, *args, fields=fields, **keys)

    # -- decoration --------------------------------------------------------

    def _apply_meta(self, info: Dict[str, Any]) -> None:
        for k, v in info.items():
            if k == "tags":
                self._meta["tags"] = list(self._meta["tags"]) + [t for t in v if t not in self._meta["tags"]]
            elif v:
                self._meta[k] = v

    def _add_source(self, src: Source, front: bool = False) -> None:
        if self._pipeline_defs:
            raise fail(f"dataset {self._name} has both a source and a pipeline; "
                       "a dataset is fed by one or the other")
        j = src.bind(self._name, [str(f.name) for f in self._fields], bool(self._schema.keys))
        if front:
            self._sources.insert(0, j)
        else:
            self._sources.append(j)

    # -- payload -----------------------------------------------------------

    def to_json(self) -> Dict[str, Any]:
        """The payload's Dataset."""
        meta = meta_json(self._meta) or {}
        if self._history is not None:
            meta["history"] = self._history
        return {
            "name": self._name,
            "version": self._version,
            "index": self._index,
            "fields": [f.to_json() for f in self._fields],
            "sources": [dict(s) for s in self._sources],
            "pipelines": list(self._pipelines),
            "expectations": self._expectations,
            "owner": self._meta.get("owner"),
            "description": self._meta.get("description"),
            "meta": meta or None,
        }

    def dependencies(self) -> List["Dataset"]:
        """Datasets this one reads (pipeline inputs)."""
        out: List[Dataset] = []
        for p in self._pipeline_defs:
            for d in p._declared_inputs() or []:
                if isinstance(d, Dataset) and not any(d is x for x in out):
                    out.append(d)
        return out


_RESERVED = {n for n in dir(Dataset) if not n.startswith("_")}


def _build_dataset(cls: type, version: int, index: bool, history: Any) -> Dataset:
    if not isinstance(cls, type):
        raise fail(f"@dataset decorates a class, not {cls!r}")
    name = cls.__name__
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise fail(f"dataset {name}: version must be a positive integer, not {version!r}")
    if not isinstance(index, bool):
        raise fail(f"dataset {name}: index must be True or False, not {index!r}")
    hist = None if history is None else parse_duration(history, f"dataset {name} history")
    with definition_context(f"dataset {name}"):
        annotations = class_annotations(cls)
    body = dict(cls.__dict__)
    fields: List[Field] = []
    for fname, annotation in annotations.items():
        where = f"{name}.{fname}"
        if fname in _RESERVED:
            raise fail(f"dataset {name}: field name {fname!r} is reserved (it is a Dataset method); rename the field")
        if fname.startswith("__"):
            raise fail(f"dataset {name}: field name {fname!r} cannot start with two underscores")
        declared = body.get(fname, MISSING)
        if isinstance(declared, Field):
            f = declared
        elif declared is MISSING:
            f = Field()
        else:
            raise fail(f"dataset {name}: field {fname!r} is assigned {declared!r}; "
                       f"write {fname}: T = field(default=...) for a default")
        f.name = fname
        f.dtype = type_to_json(annotation, where)
        fields.append(f)
    for attr, value in body.items():
        if isinstance(value, Field) and attr not in annotations:
            raise fail(f"dataset {name}: field {attr!r} has no type annotation; write {attr}: T = field(...)")
    if not fields:
        raise fail(f"dataset {name} declares no fields (write them as annotations: uid: int)")
    # The timestamp: the one marked, else the only datetime field.
    if not any(f.timestamp for f in fields):
        dts = [f for f in fields if f.dtype == "datetime" and not f.key]
        if len(dts) == 1:
            dts[0].timestamp = True

    info = cls.__dict__.get(META_ATTR) or {}
    description = info.get("description") or (inspect.cleandoc(cls.__doc__) if cls.__doc__ else None)
    ds = Dataset(name, fields, version, index, hist, cls.__module__, description)
    for f in fields:
        f.dataset = ds
    if info:
        ds._apply_meta({k: v for k, v in info.items() if k != "description"})

    pipelines = [v for v in body.values() if isinstance(v, Pipeline)]
    pending: List[Source] = list(body.get(SOURCES_ATTR, []))
    if pipelines and pending:
        raise fail(f"dataset {name} has both a source and a pipeline; a dataset is fed by one or the other")
    for src in pending:
        ds._add_source(src)
    ds._pipeline_defs = pipelines
    names = [p.name for p in pipelines]
    for p in pipelines:
        if names.count(p.name) > 1:
            raise fail(f"dataset {name}: pipeline {p.name} is defined twice")
    ds._pipelines = [p.build(ds) for p in pipelines]

    suites = [v for v in body.values() if _expectations_version(v) is not None]
    if len(suites) > 1:
        raise fail(f"dataset {name} has {len(suites)} @expectations methods; combine them into one")
    if suites:
        ds._expectations = _expectations_json(ds, suites[0])
    _registry.register(ds)
    return ds


def _expectations_version(value: Any) -> Optional[int]:
    """The suite version of an ``@expectations`` method, None for other
    class attributes."""
    if isinstance(value, (classmethod, staticmethod)):
        value = value.__func__
    if not callable(value) or isinstance(value, (Dataset, Pipeline)):
        return None
    v = getattr(value, EXPECTATIONS_ATTR, None)
    return v if isinstance(v, int) else None


def _expectations_json(ds: Dataset, fn: Any) -> Dict[str, Any]:
    version = _expectations_version(fn)
    target = fn.__func__ if isinstance(fn, (classmethod, staticmethod)) else fn
    what = f"dataset {ds._name}: @expectations {getattr(target, '__name__', '')}"
    with definition_context(what):
        try:
            items = target(ds)
        except DefinitionError:
            raise
        except Exception as exc:
            raise fail(f"raised {type(exc).__name__}: {exc}") from exc
        if not isinstance(items, (list, tuple)):
            raise fail(f"must return a list of expect_* objects, not {type(items).__name__}")
        suite = []
        for e in items:
            if not isinstance(e, Expectation):
                raise fail(f"{e!r} is not an expectation (use the expect_* helpers of thyme.lib)")
            _unknown(ds._schema, e.columns, e.name)
            suite.append(e.to_json())
    return {"version": version, "suite": suite}


def dataset(
    cls: Optional[type] = None,
    *,
    version: int = 1,
    index: bool = False,
    history: Any = None,
) -> Any:
    """Declare a dataset. Use as ``@dataset`` or ``@dataset(index=True,
    version=2, history="1y")``:

    - ``index=True``: the dataset can be looked up (online and point in time);
    - ``version``: bump it when the definition changes;
    - ``history``: how long old versions and events are kept (sent in the
      dataset's ``meta``; default forever).
    """
    if cls is not None:
        return _build_dataset(cls, version, index, history)

    def decorate(c: type) -> Dataset:
        return _build_dataset(c, version, index, history)

    return decorate
