"""Column expressions (``thyme.expr``): ``col``, ``lit``, ``when``.

An expression is a tree built with Python operators and methods; nothing is
evaluated in Python. It serializes to the payload's Expr JSON and is
evaluated by the engine (in ``filter`` / ``assign`` of pipelines) or by the
query server (expression features)::

    (col("amount") * 100).astype(int)
    when(col("age") < 18).then(lit("minor")).otherwise(lit("adult"))
    col("name").str.lower().str.contains("bob") & ~col("banned")

Python's ``and`` / ``or`` / ``not`` cannot be overloaded: use ``&``, ``|``
and ``~`` (an expression refuses to be used as a Python truth value).
"""

from __future__ import annotations

import datetime as _dt
from typing import Any, Dict, List, Optional, Tuple

from ._util import fail, json_value
from .dtypes import type_to_json

__all__ = ["Expr", "col", "lit", "when", "expr_columns"]


def _wrap(value: Any) -> "Expr":
    """An operand: expressions as they are, Python constants as literals."""
    if isinstance(value, Expr):
        return value
    if isinstance(value, When):
        raise fail("a when(...).then(...) chain needs .otherwise(...) before it is used")
    return lit(value)


class Expr:
    """A column expression. Build one with :func:`col`, :func:`lit` or
    :func:`when`, then combine with operators and methods."""

    __slots__ = ("_json",)

    def __init__(self, json: Dict[str, Any]):
        self._json = json

    # -- serialization ----------------------------------------------------

    def to_json(self) -> Dict[str, Any]:
        """The payload's Expr JSON."""
        return self._json

    def __repr__(self) -> str:
        return f"Expr({self._json!r})"

    def __bool__(self) -> bool:
        raise TypeError(
            "an expression has no Python truth value; combine conditions with "
            "& | ~ instead of and / or / not"
        )

    __hash__ = None  # type: ignore[assignment]  # == builds an expression

    # -- operators ---------------------------------------------------------

    def _binary(self, op: str, other: Any, reflected: bool = False) -> "Expr":
        left, right = (self, _wrap(other))
        if reflected:
            left, right = right, left
        return Expr({"binary": op, "left": left._json, "right": right._json})

    def __add__(self, o: Any) -> "Expr": return self._binary("+", o)
    def __radd__(self, o: Any) -> "Expr": return self._binary("+", o, True)
    def __sub__(self, o: Any) -> "Expr": return self._binary("-", o)
    def __rsub__(self, o: Any) -> "Expr": return self._binary("-", o, True)
    def __mul__(self, o: Any) -> "Expr": return self._binary("*", o)
    def __rmul__(self, o: Any) -> "Expr": return self._binary("*", o, True)
    def __truediv__(self, o: Any) -> "Expr": return self._binary("/", o)
    def __rtruediv__(self, o: Any) -> "Expr": return self._binary("/", o, True)
    def __floordiv__(self, o: Any) -> "Expr": return self._binary("//", o)
    def __rfloordiv__(self, o: Any) -> "Expr": return self._binary("//", o, True)
    def __mod__(self, o: Any) -> "Expr": return self._binary("%", o)
    def __rmod__(self, o: Any) -> "Expr": return self._binary("%", o, True)
    def __eq__(self, o: Any) -> "Expr": return self._binary("==", o)  # type: ignore[override]
    def __ne__(self, o: Any) -> "Expr": return self._binary("!=", o)  # type: ignore[override]
    def __lt__(self, o: Any) -> "Expr": return self._binary("<", o)
    def __le__(self, o: Any) -> "Expr": return self._binary("<=", o)
    def __gt__(self, o: Any) -> "Expr": return self._binary(">", o)
    def __ge__(self, o: Any) -> "Expr": return self._binary(">=", o)
    def __and__(self, o: Any) -> "Expr": return self._binary("and", o)
    def __rand__(self, o: Any) -> "Expr": return self._binary("and", o, True)
    def __or__(self, o: Any) -> "Expr": return self._binary("or", o)
    def __ror__(self, o: Any) -> "Expr": return self._binary("or", o, True)

    def __invert__(self) -> "Expr":
        return Expr({"unary": "not", "expr": self._json})

    def __neg__(self) -> "Expr":
        return Expr({"unary": "neg", "expr": self._json})

    def __abs__(self) -> "Expr":
        return self.abs()

    # -- methods -----------------------------------------------------------

    def _fn(self, name: str, *args: Any) -> "Expr":
        return Expr({"fn": name, "args": [self._json] + [_wrap(a)._json for a in args]})

    def astype(self, dtype: Any) -> "Expr":
        """Cast to a type (``int``, ``float``, ``Optional[str]``, ...)."""
        return Expr({"cast": self._json, "type": type_to_json(dtype, "astype()")})

    def isnull(self) -> "Expr":
        """True where the value is null."""
        return Expr({"isnull": self._json})

    def fillnull(self, value: Any) -> "Expr":
        """The value, or ``value`` where it is null."""
        return Expr({"fillnull": self._json, "value": _wrap(value)._json})

    def abs(self) -> "Expr":
        return self._fn("abs")

    def round(self, precision: int = 0) -> "Expr":
        """Round to ``precision`` digits after the point."""
        if isinstance(precision, bool) or not isinstance(precision, int) or precision < 0:
            raise fail(f"round(): precision must be a non-negative integer, not {precision!r}")
        return self._fn("round", precision)

    def __round__(self, precision: int = 0) -> "Expr":
        return self.round(precision)

    def floor(self) -> "Expr":
        return self._fn("floor")

    def ceil(self) -> "Expr":
        return self._fn("ceil")

    @property
    def str(self) -> "_StrMethods":
        """String functions: ``.str.len()``, ``.str.lower()``, ..."""
        return _StrMethods(self)

    @property
    def dt(self) -> "_DtMethods":
        """Datetime parts: ``.dt.hour``, ``.dt.year``, ``.dt.strftime(fmt)``."""
        return _DtMethods(self)

    @property
    def list(self) -> "_ListMethods":
        """List functions: ``.list.len()``, ``.list.contains(v)``."""
        return _ListMethods(self)


class _StrMethods:
    __slots__ = ("_e",)

    def __init__(self, e: Expr):
        self._e = e

    def len(self) -> Expr:
        return self._e._fn("str.len")

    def lower(self) -> Expr:
        return self._e._fn("str.lower")

    def upper(self) -> Expr:
        return self._e._fn("str.upper")

    def contains(self, sub: Any) -> Expr:
        return self._e._fn("str.contains", sub)

    def startswith(self, prefix: Any) -> Expr:
        return self._e._fn("str.startswith", prefix)

    def endswith(self, suffix: Any) -> Expr:
        return self._e._fn("str.endswith", suffix)

    def concat(self, other: Any) -> Expr:
        return self._e._fn("str.concat", other)


class _DtMethods:
    __slots__ = ("_e",)

    def __init__(self, e: Expr):
        self._e = e

    @property
    def year(self) -> Expr:
        return self._e._fn("dt.year")

    @property
    def month(self) -> Expr:
        return self._e._fn("dt.month")

    @property
    def day(self) -> Expr:
        return self._e._fn("dt.day")

    @property
    def hour(self) -> Expr:
        return self._e._fn("dt.hour")

    @property
    def minute(self) -> Expr:
        return self._e._fn("dt.minute")

    @property
    def second(self) -> Expr:
        return self._e._fn("dt.second")

    def strftime(self, fmt: str) -> Expr:
        if not isinstance(fmt, str):
            raise fail(f"dt.strftime(): the format must be a string, not {fmt!r}")
        return self._e._fn("dt.strftime", fmt)


class _ListMethods:
    __slots__ = ("_e",)

    def __init__(self, e: Expr):
        self._e = e

    def len(self) -> Expr:
        return self._e._fn("list.len")

    def contains(self, item: Any) -> Expr:
        return self._e._fn("list.contains", item)


def col(name: str) -> Expr:
    """The column (in a pipeline) or feature (in a featureset) ``name``."""
    if not isinstance(name, str) or not name:
        raise fail(f"col(): the column name must be a non-empty string, not {name!r}")
    return Expr({"col": name})


def lit(value: Any, type: Any = None) -> Expr:  # noqa: A002 - Fennel's name
    """A constant. ``type`` is optional for numbers, strings and booleans;
    datetimes and dates carry theirs."""
    if isinstance(value, Expr):
        return value
    node: Dict[str, Any] = {"lit": json_value(value, "lit()")}
    if type is not None:
        node["type"] = type_to_json(type, "lit()")
    elif isinstance(value, _dt.datetime):
        node["type"] = "datetime"
    elif isinstance(value, _dt.date):
        node["type"] = "date"
    return Expr(node)


class When:
    """``when(cond)`` waiting for ``.then(value)``."""

    __slots__ = ("_branches", "_cond")

    def __init__(self, branches: List[Tuple[Dict[str, Any], Dict[str, Any]]], cond: Any):
        self._branches = branches
        self._cond = _wrap(cond)

    def then(self, value: Any) -> "WhenThen":
        return WhenThen(self._branches + [(self._cond._json, _wrap(value)._json)])

    def __bool__(self) -> bool:
        raise TypeError("when(...) needs .then(...) and .otherwise(...)")


class WhenThen(Expr):
    """A ``when(...).then(...)`` chain: an expression that is null where no
    branch matches, until ``.otherwise(...)`` gives the fallback."""

    __slots__ = ("_branches",)

    def __init__(self, branches: List[Tuple[Dict[str, Any], Dict[str, Any]]]):
        self._branches = branches
        super().__init__(self._build({"lit": None}))

    def _build(self, otherwise: Dict[str, Any]) -> Dict[str, Any]:
        return {"when": [[c, v] for c, v in self._branches], "otherwise": otherwise}

    def when(self, cond: Any) -> When:
        return When(self._branches, cond)

    def otherwise(self, value: Any) -> Expr:
        return Expr(self._build(_wrap(value)._json))


def when(cond: Any) -> When:
    """Start a conditional: ``when(c1).then(v1).when(c2).then(v2).otherwise(v)``."""
    return When([], cond)


def expr_columns(node: Any) -> List[str]:
    """Column names an Expr JSON reads, in order of first appearance."""
    out: List[str] = []

    def walk(n: Any) -> None:
        if isinstance(n, dict):
            if "col" in n and isinstance(n["col"], str) and len(n) == 1:
                if n["col"] not in out:
                    out.append(n["col"])
                return
            for k, v in n.items():
                if k == "lit" or k == "type":
                    continue
                walk(v)
        elif isinstance(n, list):
            for v in n:
                walk(v)

    walk(node.to_json() if isinstance(node, Expr) else node)
    return out


def cast_type(e: Expr) -> Optional[Any]:
    """The type of an expression that ends in ``.astype(T)``, else None."""
    j = e.to_json()
    return j["type"] if "cast" in j else None
