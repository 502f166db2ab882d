"""Small shared pieces of the SDK: the usage-error type, the current
definition context used to prefix error messages, duration strings,
RFC 3339 timestamps and conversion of Python values to JSON values.

Nothing here knows about datasets or featuresets; every other module
builds on it.
"""

from __future__ import annotations

import base64
import contextlib
import contextvars
import datetime as _dt
import decimal
import math
import re
from typing import Any, Iterator, Optional, Tuple

__all__ = [
    "DefinitionError",
    "definition_context",
    "fail",
    "parse_duration",
    "duration_seconds",
    "native_module",
    "format_timestamp",
    "json_value",
]


class DefinitionError(ValueError):
    """A definition is written wrong (a usage error caught by the SDK while
    the decorators run). The message names the definition and the field
    or argument at fault."""


_CONTEXT: "contextvars.ContextVar[Tuple[str, ...]]" = contextvars.ContextVar("thyme_definition", default=())


@contextlib.contextmanager
def definition_context(what: str) -> Iterator[None]:
    """Name the definition being built (e.g. ``"pipeline UserStats.compute"``)
    so that errors raised by operator methods say where they happened."""
    token = _CONTEXT.set(_CONTEXT.get() + (what,))
    try:
        yield
    finally:
        _CONTEXT.reset(token)


def current_context() -> Optional[str]:
    """The innermost definition being built, if any."""
    stack = _CONTEXT.get()
    return stack[-1] if stack else None


def fail(message: str) -> "DefinitionError":
    """A DefinitionError whose message is prefixed with the current
    definition context (raise the result)."""
    ctx = current_context()
    return DefinitionError(f"{ctx}: {message}" if ctx else message)


# ---------------------------------------------------------------------------
# The native module
# ---------------------------------------------------------------------------

_NATIVE: Any = ...  # not looked up yet


def native_module() -> Any:
    """``thyme._native`` (the model's rules, compiled) when this installation
    has it, else ``None``: the SDK then uses its pure-Python fallbacks,
    which the tests hold to the same cases."""
    global _NATIVE
    if _NATIVE is ...:
        try:
            from . import _native  # type: ignore[attr-defined]
        except ImportError:
            _NATIVE = None
        else:
            _NATIVE = _native
    return _NATIVE


# ---------------------------------------------------------------------------
# Durations
# ---------------------------------------------------------------------------

_UNIT_SECONDS = {
    "y": 365 * 86400,
    "w": 7 * 86400,
    "d": 86400,
    "h": 3600,
    "m": 60,
    "s": 1,
}
_DURATION_RE = re.compile(r"^(?:\d+(?:ms|[ywdhms]))+$")
_DURATION_PART = re.compile(r"(\d+)(ms|[ywdhms])")
DURATION_HELP = (
    'expected e.g. "30s", "15m", "1h", "7d", "2w", "1y", "1d12h" or "forever"'
)


def parse_duration(value: Any, what: str) -> str:
    """Check a duration and return its canonical string.

    Accepts strings such as ``"7d"``, ``"1d12h"``, ``"1d 12h"`` (spaces are
    removed), ``"forever"``, and ``datetime.timedelta`` values (written in
    days, hours, minutes and seconds). ``what`` names the argument in the
    error message.
    """
    if isinstance(value, _dt.timedelta):
        return _timedelta_to_duration(value, what)
    if not isinstance(value, str):
        raise fail(
            f"{what}: {value!r} is not a duration ({DURATION_HELP})"
        )
    text = "".join(value.split())
    if text == "forever":
        return text
    if duration_micros(text) is None:
        raise fail(f"{what}: {value!r} is not a duration ({DURATION_HELP})")
    return text


_MAX_MICROS = 2**63 - 1


def duration_micros(text: str) -> Optional[int]:
    """Microseconds of a duration string without spaces (``"forever"`` is
    not one), or ``None`` when it is not a duration: the model's parser
    through the native module, else the same rule in Python."""
    nat = native_module()
    if nat is not None:
        try:
            m = nat.parse_duration(text)
        except ValueError:
            return None
        return None if m is None else int(m)
    if not _DURATION_RE.match(text):
        return None
    total = 0
    for n, unit in _DURATION_PART.findall(text):
        total += int(n) * (1000 if unit == "ms" else _UNIT_SECONDS[unit] * 1_000_000)
        if total > _MAX_MICROS:
            return None
    return total


def _timedelta_to_duration(td: _dt.timedelta, what: str) -> str:
    if td < _dt.timedelta(0):
        raise fail(f"{what}: a duration cannot be negative ({td})")
    micros = td // _dt.timedelta(microseconds=1)
    if micros % 1000:
        raise fail(f"{what}: {td} is finer than a millisecond")
    millis = micros // 1000
    secs, ms = divmod(millis, 1000)
    parts = []
    for unit in ("d", "h", "m", "s"):
        n, secs = divmod(secs, _UNIT_SECONDS[unit])
        if n:
            parts.append(f"{n}{unit}")
    if ms:
        parts.append(f"{ms}ms")
    return "".join(parts) or "0s"


def duration_seconds(duration: str) -> float:
    """Seconds in a canonical duration string (``inf`` for ``"forever"``)."""
    if duration == "forever":
        return math.inf
    micros = duration_micros(duration)
    if micros is None:
        raise ValueError(f"{duration!r} is not a duration ({DURATION_HELP})")
    return micros / 1_000_000


# ---------------------------------------------------------------------------
# Timestamps and JSON values
# ---------------------------------------------------------------------------


def format_timestamp(value: Any, what: str = "timestamp") -> str:
    """An RFC 3339 UTC string (``2024-01-15T12:00:00Z``, with microseconds
    when present) for a ``datetime``, a ``date`` (midnight UTC), a pandas
    ``Timestamp``, an epoch number (seconds) or an RFC 3339 string (checked
    and normalized). Naive datetimes are taken as UTC."""
    if isinstance(value, str):
        text = value.strip()
        try:
            parsed = _dt.datetime.fromisoformat(
                text[:-1] + "+00:00" if text.endswith(("Z", "z")) else text
            )
        except ValueError:
            raise fail(f"{what}: {value!r} is not an RFC 3339 timestamp") from None
        return format_timestamp(parsed, what)
    if isinstance(value, bool):
        raise fail(f"{what}: {value!r} is not a timestamp")
    if isinstance(value, (int, float)):
        if isinstance(value, float) and not math.isfinite(value):
            raise fail(f"{what}: {value!r} is not a timestamp")
        value = _dt.datetime(1970, 1, 1, tzinfo=_dt.timezone.utc) + _dt.timedelta(
            seconds=value
        )
    # pandas.Timestamp is a datetime subclass; to_pydatetime keeps µs.
    if hasattr(value, "to_pydatetime") and not isinstance(value, _dt.datetime):
        value = value.to_pydatetime()
    if isinstance(value, _dt.datetime):
        if value.tzinfo is None or value.tzinfo.utcoffset(value) is None:
            value = value.replace(tzinfo=_dt.timezone.utc)
        value = value.astimezone(_dt.timezone.utc)
        text = value.strftime("%Y-%m-%dT%H:%M:%S")
        if value.microsecond:
            text += f".{value.microsecond:06d}"
        return text + "Z"
    if isinstance(value, _dt.date):
        return f"{value.isoformat()}T00:00:00Z"
    raise fail(f"{what}: {value!r} is not a timestamp")


def json_value(value: Any, what: str) -> Any:
    """A JSON-ready copy of a constant written in a definition (defaults,
    literals, preproc constants, expectation arguments).

    datetimes become RFC 3339 strings, dates ISO dates, ``Decimal`` a decimal
    string, ``bytes`` base64 text, tuples and sets lists; NaN and infinities
    are refused (JSON has no such numbers)."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise fail(f"{what}: {value!r} cannot be written as JSON")
        return value
    if isinstance(value, _dt.datetime):
        return format_timestamp(value, what)
    if isinstance(value, _dt.date):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        if not value.is_finite():
            raise fail(f"{what}: {value!r} cannot be written as JSON")
        return str(value)
    if isinstance(value, (bytes, bytearray)):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise fail(f"{what}: dictionary keys must be strings, not {k!r}")
            out[k] = json_value(v, what)
        return out
    if isinstance(value, (list, tuple, set, frozenset)):
        items = sorted(value, key=repr) if isinstance(value, (set, frozenset)) else value
        return [json_value(v, what) for v in items]
    # numpy scalars and similar expose item()
    item = getattr(value, "item", None)
    if callable(item) and not isinstance(value, type):
        try:
            return json_value(item(), what)
        except (TypeError, ValueError):
            pass
    if hasattr(value, "__dataclass_fields__") and getattr(
        type(value), "__thyme_struct__", False
    ):
        return {
            name: json_value(getattr(value, name), what)
            for name in type(value).__dataclass_fields__
        }
    raise fail(f"{what}: {value!r} ({type(value).__name__}) cannot be written as JSON")


def plural(n: int, word: str) -> str:
    """``"1 field"`` / ``"2 fields"``."""
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def names_list(names: Any) -> str:
    """``"a, b, c"`` for error messages."""
    return ", ".join(str(n) for n in names)
