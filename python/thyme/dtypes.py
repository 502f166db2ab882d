"""Types and windows of Thyme definitions (``thyme.dtypes``).

This module owns:

- the type constructors beyond Python's own types: ``Embedding[n]``,
  ``Decimal[scale]``, ``between(...)``, ``oneof(...)``, ``regex(...)`` and the
  ``@struct`` class decorator;
- the translation of a field or feature annotation (``int``,
  ``Optional[List[str]]``, ``Dict[str, float]``, a struct class, ...) into the
  payload's JSON type (the "Types" table of ``docs/commit-payload.md``);
- the window classes ``Continuous``, ``Tumbling``, ``Hopping`` and
  ``Session`` used by aggregations and ``dedup``.

Type objects are checked when they are built (``between(int, 5, 1)`` fails
at once); whether a type fits where it is used (a key, a ``Sum``) is judged
when the whole commit is validated.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import decimal as _decimal
import inspect
import re
import sys
import typing
from typing import Any, Dict, List, Optional, Sequence, Union

from ._util import duration_seconds, fail, parse_duration

__all__ = [
    "Embedding",
    "Decimal",
    "between",
    "oneof",
    "regex",
    "struct",
    "Window",
    "Continuous",
    "Tumbling",
    "Hopping",
    "Session",
    "type_to_json",
    "type_repr",
]

JsonType = Union[str, Dict[str, Any]]


# ---------------------------------------------------------------------------
# Type constructors
# ---------------------------------------------------------------------------


class _TypeMarker:
    """A type written as an object (``Embedding[8]``, ``between(...)``).

    Markers are callable only so that ``typing.Optional[...]`` and
    ``typing.List[...]`` accept them as type arguments; calling one is an
    error."""

    def to_json(self) -> JsonType:  # pragma: no cover - overridden
        raise NotImplementedError

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError(f"{self!r} is a type; it cannot be called")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _TypeMarker) and self.to_json() == other.to_json()

    def __hash__(self) -> int:
        return hash(repr(self.to_json()))


class _EmbeddingType(_TypeMarker):
    def __init__(self, size: int):
        self.size = size

    def to_json(self) -> JsonType:
        return {"embedding": self.size}

    def __repr__(self) -> str:
        return f"Embedding[{self.size}]"


class Embedding:
    """``Embedding[n]``: a vector of ``n`` floats (``List(Float64)`` of length
    ``n`` in Arrow, ``float8[]`` in Postgres)."""

    def __init__(self) -> None:
        raise TypeError("write Embedding[n] (e.g. Embedding[32]) as a type")

    def __class_getitem__(cls, size: Any) -> _EmbeddingType:
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise fail(f"Embedding[{size!r}]: the size must be a positive integer")
        return _EmbeddingType(size)


class _DecimalType(_TypeMarker):
    def __init__(self, scale: int):
        self.scale = scale

    def to_json(self) -> JsonType:
        return {"decimal": self.scale}

    def __repr__(self) -> str:
        return f"Decimal[{self.scale}]"


class Decimal:
    """``Decimal[scale]``: a decimal number with ``scale`` digits after the
    point and 28 digits in all (``Decimal128(28, scale)``, ``numeric``)."""

    def __init__(self) -> None:
        raise TypeError("write Decimal[scale] (e.g. Decimal[2]) as a type")

    def __class_getitem__(cls, scale: Any) -> _DecimalType:
        if isinstance(scale, bool) or not isinstance(scale, int) or not 0 <= scale <= 28:
            raise fail(f"Decimal[{scale!r}]: the scale must be an integer from 0 to 28")
        return _DecimalType(scale)


class between(_TypeMarker):
    """``between(int|float, min, max, strict_min=False, strict_max=False)``:
    a number in a range (stored as the base type)."""

    def __init__(
        self,
        dtype: type,
        min: Union[int, float],
        max: Union[int, float],
        strict_min: bool = False,
        strict_max: bool = False,
    ):
        if dtype not in (int, float):
            raise fail(f"between(): the type must be int or float, not {_name(dtype)}")
        for label, v in (("min", min), ("max", max)):
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise fail(f"between(): {label} must be a number, not {v!r}")
            if dtype is int and not isinstance(v, int):
                raise fail(f"between(int, ...): {label} must be an integer, not {v!r}")
        if min > max:
            raise fail(f"between(): min {min} is greater than max {max}")
        self.dtype = dtype
        self.min = min
        self.max = max
        self.strict_min = bool(strict_min)
        self.strict_max = bool(strict_max)

    def to_json(self) -> JsonType:
        return {
            "between": {
                "type": "int" if self.dtype is int else "float",
                "min": self.min,
                "max": self.max,
                "strict_min": self.strict_min,
                "strict_max": self.strict_max,
            }
        }

    def __repr__(self) -> str:
        return f"between({_name(self.dtype)}, {self.min}, {self.max})"


class oneof(_TypeMarker):
    """``oneof(int|str, [options])``: one of a fixed set of values."""

    def __init__(self, dtype: type, options: Sequence[Any]):
        if dtype not in (int, str):
            raise fail(f"oneof(): the type must be int or str, not {_name(dtype)}")
        if isinstance(options, (str, bytes)) or not isinstance(options, (list, tuple, set, frozenset)):
            raise fail(f"oneof(): options must be a list, not {options!r}")
        options = list(options)
        if not options:
            raise fail("oneof(): give at least one option")
        for o in options:
            if (dtype is int and (isinstance(o, bool) or not isinstance(o, int))) or (
                dtype is str and not isinstance(o, str)
            ):
                raise fail(f"oneof({_name(dtype)}, ...): option {o!r} is not a {_name(dtype)}")
        if len(set(options)) != len(options):
            raise fail(f"oneof(): options repeat a value: {options!r}")
        self.dtype = dtype
        self.options = options

    def to_json(self) -> JsonType:
        return {"oneof": {"type": _name(self.dtype), "options": list(self.options)}}

    def __repr__(self) -> str:
        return f"oneof({_name(self.dtype)}, {self.options!r})"


class regex(_TypeMarker):
    """``regex("pattern")``: a string matching the whole pattern."""

    def __init__(self, pattern: str):
        if not isinstance(pattern, str) or not pattern:
            raise fail(f"regex(): the pattern must be a non-empty string, not {pattern!r}")
        try:
            re.compile(pattern)
        except re.error as exc:
            raise fail(f"regex(): {pattern!r} does not compile: {exc}") from None
        self.pattern = pattern

    def to_json(self) -> JsonType:
        return {"regex": self.pattern}

    def __repr__(self) -> str:
        return f"regex({self.pattern!r})"


def struct(cls: type) -> type:
    """Class decorator for struct types: the annotated attributes are the
    struct's fields. The class becomes a dataclass (so values can be built
    as ``Address(city="Paris", zip=None)``) and can be used as a field or
    feature type, also inside ``Optional`` / ``List`` / ``Dict``."""
    if not isinstance(cls, type):
        raise fail(f"@struct decorates a class, not {cls!r}")
    annotations = class_annotations(cls)
    if not annotations:
        raise fail(f"struct {cls.__name__} declares no fields")
    fields = []
    for name, annotation in annotations.items():
        fields.append({"name": name, "type": type_to_json(annotation, f"struct {cls.__name__}.{name}")})
    cls = dataclasses.dataclass(cls)
    cls.__thyme_struct__ = True  # type: ignore[attr-defined]
    cls.__thyme_struct_json__ = {"struct": {"name": cls.__name__, "fields": fields}}  # type: ignore[attr-defined]
    return cls


# ---------------------------------------------------------------------------
# Annotations -> JSON types
# ---------------------------------------------------------------------------

_SCALARS = {
    int: "int",
    float: "float",
    bool: "bool",
    str: "str",
    bytes: "bytes",
    _dt.datetime: "datetime",
    _dt.date: "date",
}

SUPPORTED = (
    "int, float, bool, str, bytes, datetime, date, Optional[T], List[T], "
    "Dict[str, T], Decimal[scale], Embedding[n], a @struct class, between(...), "
    "oneof(...), regex(...)"
)


def _name(t: Any) -> str:
    return getattr(t, "__name__", None) or repr(t)


def class_annotations(cls: type) -> Dict[str, Any]:
    """The class's own annotations, string (postponed) annotations evaluated
    in the defining module, in declaration order."""
    get_annotations = getattr(inspect, "get_annotations", None)
    try:
        if get_annotations is not None:
            raw = get_annotations(cls)  # the class's own, also when lazy (3.14)
        else:
            raw = cls.__dict__.get("__annotations__", {})
    except Exception as exc:  # e.g. a NameError in a lazily evaluated annotation
        raise fail(f"{cls.__name__}: cannot read the annotations: {exc}") from None
    module = sys.modules.get(cls.__module__)
    globalns = dict(vars(module)) if module is not None else {}
    localns = dict(vars(cls))
    out: Dict[str, Any] = {}
    for name, annotation in dict(raw).items():
        if isinstance(annotation, str):
            try:
                annotation = eval(annotation, globalns, localns)  # noqa: S307 - the user's own annotation
            except Exception as exc:
                raise fail(
                    f"{cls.__name__}.{name}: cannot evaluate the annotation {annotation!r}: {exc}"
                ) from None
        out[name] = annotation
    return out


def type_to_json(annotation: Any, where: str) -> JsonType:
    """The payload JSON of a field or feature type; ``where`` (e.g.
    ``"UserStats.uid"``) names it in errors."""
    if annotation is None or annotation is type(None):
        raise fail(f"{where}: None is not a type; write Optional[T]")
    if isinstance(annotation, type) and annotation in _SCALARS:
        return _SCALARS[annotation]
    if isinstance(annotation, _TypeMarker):
        return annotation.to_json()
    if isinstance(annotation, type) and getattr(annotation, "__thyme_struct__", False):
        return annotation.__thyme_struct_json__  # type: ignore[attr-defined,no-any-return]
    if annotation is _decimal.Decimal or annotation is Decimal:
        raise fail(f"{where}: give the decimal a scale: Decimal[2] (from thyme.dtypes)")
    if annotation is Embedding:
        raise fail(f"{where}: give the embedding a size: Embedding[32]")
    if isinstance(annotation, str):
        raise fail(f"{where}: the annotation {annotation!r} could not be resolved to a type")

    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    union_types: tuple = (typing.Union,)
    if sys.version_info >= (3, 10):
        import types as _types

        union_types = (typing.Union, _types.UnionType)
    if origin in union_types:
        rest = [a for a in args if a is not type(None)]
        if len(rest) == 1 and len(rest) < len(args):
            inner = type_to_json(rest[0], where)
            if isinstance(inner, dict) and "optional" in inner:
                return inner
            return {"optional": inner}
        raise fail(
            f"{where}: {annotation!r} is not supported; the only union is Optional[T] (T | None)"
        )
    if origin in (list, List):
        if len(args) != 1:
            raise fail(f"{where}: List needs an element type, e.g. List[int]")
        return {"list": type_to_json(args[0], f"{where} (list element)")}
    if origin in (dict, Dict):
        if len(args) != 2:
            raise fail(f"{where}: Dict needs key and value types, e.g. Dict[str, float]")
        if args[0] is not str:
            raise fail(f"{where}: Dict keys must be str, not {_name(args[0])}")
        return {"map": type_to_json(args[1], f"{where} (dict value)")}
    if annotation in (list, List, dict, Dict):
        raise fail(f"{where}: {_name(annotation)} needs element types, e.g. List[int] or Dict[str, int]")
    shown = annotation if origin is not None else _name(annotation)
    raise fail(f"{where}: unsupported type {shown!s}; supported types are {SUPPORTED}")


def type_repr(t: JsonType) -> str:
    """A JSON type written the way Python writes it (for messages)."""
    if isinstance(t, str):
        return t
    (k, v), = t.items()
    if k == "optional":
        return f"Optional[{type_repr(v)}]"
    if k == "list":
        return f"List[{type_repr(v)}]"
    if k == "map":
        return f"Dict[str, {type_repr(v)}]"
    if k == "decimal":
        return f"Decimal[{v}]"
    if k == "embedding":
        return f"Embedding[{v}]"
    if k == "struct":
        return str(v["name"])
    if k == "between":
        return f"between({v['type']}, {v['min']}, {v['max']})"
    if k == "oneof":
        return f"oneof({v['type']}, {v['options']!r})"
    if k == "regex":
        return f"regex({v!r})"
    return repr(t)


def is_optional(t: JsonType) -> bool:
    return isinstance(t, dict) and "optional" in t


def optional(t: JsonType) -> JsonType:
    return t if is_optional(t) else {"optional": t}


def non_optional(t: JsonType) -> JsonType:
    return t["optional"] if is_optional(t) else t  # type: ignore[index]


# ---------------------------------------------------------------------------
# Windows
# ---------------------------------------------------------------------------


class Window:
    """Base class of the window kinds; ``to_json()`` is the payload's Window."""

    def to_json(self) -> Dict[str, Any]:  # pragma: no cover - overridden
        raise NotImplementedError

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Window) and self.to_json() == other.to_json()

    def __hash__(self) -> int:
        return hash(repr(self.to_json()))

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.to_json().items() if k != "kind")
        return f"{type(self).__name__}({args})"


def _positive(duration: str, what: str) -> str:
    if duration != "forever" and duration_seconds(duration) <= 0:
        raise fail(f"{what}: the duration must be positive, not {duration!r}")
    return duration


class Continuous(Window):
    """A sliding window: read at time ``t``, ``Continuous("7d")`` covers the
    events with timestamps in ``[t - 7d, t]``; ``Continuous("forever")``
    covers all of them."""

    def __init__(self, duration: Any):
        self.duration = _positive(parse_duration(duration, "Continuous"), "Continuous")

    def to_json(self) -> Dict[str, Any]:
        return {"kind": "continuous", "duration": self.duration}


class Tumbling(Window):
    """Fixed, non-overlapping windows of ``duration`` (``lookback`` delays the
    window ends)."""

    def __init__(self, duration: Any, lookback: Any = "0s"):
        d = parse_duration(duration, "Tumbling")
        if d == "forever":
            raise fail('Tumbling: the duration cannot be "forever"; use Continuous("forever")')
        self.duration = _positive(d, "Tumbling")
        self.lookback = parse_duration(lookback, "Tumbling lookback")

    def to_json(self) -> Dict[str, Any]:
        return {"kind": "tumbling", "duration": self.duration, "lookback": self.lookback}


class Hopping(Window):
    """Windows of ``duration`` starting every ``stride``."""

    def __init__(self, duration: Any, stride: Any, lookback: Any = "0s"):
        d = parse_duration(duration, "Hopping")
        s = parse_duration(stride, "Hopping stride")
        if d == "forever" or s == "forever":
            raise fail('Hopping: the duration and stride cannot be "forever"')
        _positive(d, "Hopping")
        _positive(s, "Hopping stride")
        if duration_seconds(s) > duration_seconds(d):
            raise fail(f"Hopping: the stride {s} is longer than the duration {d}")
        self.duration = d
        self.stride = s
        self.lookback = parse_duration(lookback, "Hopping lookback")

    def to_json(self) -> Dict[str, Any]:
        return {
            "kind": "hopping",
            "duration": self.duration,
            "stride": self.stride,
            "lookback": self.lookback,
        }


class Session(Window):
    """Windows of events separated by less than ``gap``."""

    def __init__(self, gap: Any):
        g = parse_duration(gap, "Session")
        if g == "forever":
            raise fail('Session: the gap cannot be "forever"')
        self.gap = _positive(g, "Session")

    def to_json(self) -> Dict[str, Any]:
        return {"kind": "session", "gap": self.gap}


def as_window(value: Any, what: str) -> Optional[Window]:
    """A window argument: a Window object, a duration string (taken as
    ``Continuous``) or None."""
    if value is None or isinstance(value, Window):
        return value
    if isinstance(value, (str, _dt.timedelta)):
        return Continuous(value)
    raise fail(f"{what}: window must be Continuous(...), Tumbling(...), Hopping(...) or Session(...), not {value!r}")
