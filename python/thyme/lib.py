"""Decorators shared by datasets and featuresets (``thyme.lib``):

- ``@inputs(...)`` / ``@outputs(...)``: the inputs of a pipeline (datasets)
  or of an extractor (features), and an extractor's outputs;
- ``@meta(owner=..., description=..., tags=...)``: ownership metadata of a
  dataset, featureset, field or feature;
- ``@expectations`` and the ``expect_*`` helpers: data expectations of a
  dataset, serialized into its ``expectations`` (the server stores them
  as given).

They only record what they are given on the decorated object; ``@dataset``,
``@pipeline``, ``@featureset`` and ``@extractor`` read it.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Sequence, TypeVar, Union

from ._util import fail, json_value

__all__ = [
    "inputs",
    "outputs",
    "meta",
    "expectations",
    "Expectation",
    "expect_column_values_to_be_between",
    "expect_column_values_to_be_in_set",
    "expect_column_values_to_not_be_null",
    "expect_column_values_to_be_null",
    "expect_column_values_to_match_regex",
    "expect_column_pair_values_A_to_be_greater_than_B",
]

T = TypeVar("T")

INPUTS_ATTR = "__thyme_inputs__"
OUTPUTS_ATTR = "__thyme_outputs__"
META_ATTR = "__thyme_meta__"
EXPECTATIONS_ATTR = "__thyme_expectations__"


def _set(target: Any, attr: str, value: Any, decorator: str) -> None:
    fn = target.__func__ if isinstance(target, (classmethod, staticmethod)) else target
    try:
        setattr(fn, attr, value)
    except (AttributeError, TypeError):
        raise fail(f"{decorator} cannot decorate {target!r}") from None


def inputs(*args: Any) -> Callable[[T], T]:
    """The inputs of a pipeline or an extractor.

    - pipeline: the datasets it reads, passed to the function in this order:
      ``@inputs(Transaction, UserInfo)``;
    - extractor: its input features, as names of this featureset's features
      (``@inputs("uid")``) or feature references (``@inputs(Request.uid)``).
    """
    if not args:
        raise fail("@inputs() needs at least one input")
    if len(args) == 1 and isinstance(args[0], (list, tuple)):
        args = tuple(args[0])

    def decorate(target: T) -> T:
        if getattr(target, INPUTS_ATTR, None) is not None:
            raise fail(f"@inputs is given twice on {getattr(target, '__name__', target)!r}")
        _set(target, INPUTS_ATTR, list(args), "@inputs")
        return target

    return decorate


def outputs(*args: Any) -> Callable[[T], T]:
    """The features an extractor computes: names of its featureset's
    features (``@outputs("is_big")``) or the features themselves."""
    if not args:
        raise fail("@outputs() needs at least one feature")
    if len(args) == 1 and isinstance(args[0], (list, tuple)):
        args = tuple(args[0])

    def decorate(target: T) -> T:
        if getattr(target, OUTPUTS_ATTR, None) is not None:
            raise fail(f"@outputs is given twice on {getattr(target, '__name__', target)!r}")
        _set(target, OUTPUTS_ATTR, list(args), "@outputs")
        return target

    return decorate


def _tags(tags: Union[None, str, Sequence[str]]) -> List[str]:
    if tags is None:
        return []
    if isinstance(tags, str):
        return [tags]
    out = list(tags)
    for t in out:
        if not isinstance(t, str):
            raise fail(f"meta(): tags must be strings, not {t!r}")
    return out


def meta(
    owner: Optional[str] = None,
    description: Optional[str] = None,
    tags: Union[None, str, Sequence[str]] = None,
    deprecated: bool = False,
) -> Callable[[T], T]:
    """Ownership metadata. Decorates a dataset or featureset (above or below
    ``@dataset`` / ``@featureset``), a pipeline or an extractor; on fields and
    features use ``field(...).meta(...)`` / ``feature(...).meta(...)``."""
    for label, v in (("owner", owner), ("description", description)):
        if v is not None and not isinstance(v, str):
            raise fail(f"meta(): {label} must be a string, not {v!r}")
    info: Dict[str, Any] = {
        "owner": owner,
        "description": description,
        "tags": _tags(tags),
        "deprecated": bool(deprecated),
    }

    def decorate(target: T) -> T:
        apply = getattr(target, "_apply_meta", None)
        if callable(apply) and not isinstance(target, type):
            apply(info)
        else:
            _set(target, META_ATTR, info, "@meta")
        return target

    return decorate


def meta_json(info: Optional[Dict[str, Any]]) -> Optional[Dict[str, Any]]:
    """The payload's free-form ``meta`` object for a definition (tags,
    deprecation), or None when there is nothing to say."""
    if not info:
        return None
    out: Dict[str, Any] = {}
    if info.get("tags"):
        out["tags"] = list(info["tags"])
    if info.get("deprecated"):
        out["deprecated"] = True
    return out or None


# ---------------------------------------------------------------------------
# Expectations
# ---------------------------------------------------------------------------


class Expectation:
    """One data expectation: a Great Expectations-style name and its
    arguments. ``columns`` are the dataset fields it reads."""

    def __init__(self, name: str, columns: Sequence[str], **kwargs: Any):
        for c in columns:
            if not isinstance(c, str) or not c:
                raise fail(f"{name}: column names must be strings, not {c!r}")
        mostly = kwargs.get("mostly", 1.0)
        if isinstance(mostly, bool) or not isinstance(mostly, (int, float)) or not 0 <= mostly <= 1:
            raise fail(f"{name}: mostly must be a fraction between 0 and 1, not {mostly!r}")
        self.name = name
        self.columns = list(columns)
        self.kwargs = kwargs

    def to_json(self) -> Dict[str, Any]:
        return {"expectation": self.name, "kwargs": json_value(self.kwargs, self.name)}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.kwargs.items())
        return f"{self.name}({args})"


def expectations(func: Optional[Callable[..., Any]] = None, *, version: int = 1) -> Any:
    """Mark a method of a dataset class as its expectation suite: it is called
    with the class and returns a list of ``expect_*`` objects::

        @expectations
        def checks(cls):
            return [expect_column_values_to_be_between("age", 0, 150, mostly=0.99)]
    """
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise fail(f"@expectations: version must be a positive integer, not {version!r}")

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        _set(fn, EXPECTATIONS_ATTR, version, "@expectations")
        return fn

    if func is not None:
        return decorate(func)
    return decorate


def expect_column_values_to_be_between(
    column: str,
    min_value: Any = None,
    max_value: Any = None,
    strict_min: bool = False,
    strict_max: bool = False,
    mostly: float = 1.0,
) -> Expectation:
    """Values of ``column`` lie between ``min_value`` and ``max_value``."""
    if min_value is None and max_value is None:
        raise fail("expect_column_values_to_be_between: give min_value, max_value or both")
    if min_value is not None and max_value is not None and min_value > max_value:
        raise fail(
            f"expect_column_values_to_be_between({column!r}): min_value {min_value} "
            f"is greater than max_value {max_value}"
        )
    return Expectation(
        "expect_column_values_to_be_between",
        [column],
        column=column,
        min_value=min_value,
        max_value=max_value,
        strict_min=strict_min,
        strict_max=strict_max,
        mostly=mostly,
    )


def expect_column_values_to_be_in_set(column: str, value_set: Sequence[Any], mostly: float = 1.0) -> Expectation:
    """Values of ``column`` are among ``value_set``."""
    if isinstance(value_set, (str, bytes)) or not list(value_set):
        raise fail(f"expect_column_values_to_be_in_set({column!r}): value_set must be a non-empty list")
    return Expectation(
        "expect_column_values_to_be_in_set", [column], column=column, value_set=list(value_set), mostly=mostly
    )


def expect_column_values_to_not_be_null(column: str, mostly: float = 1.0) -> Expectation:
    """Values of ``column`` are not null."""
    return Expectation("expect_column_values_to_not_be_null", [column], column=column, mostly=mostly)


def expect_column_values_to_be_null(column: str, mostly: float = 1.0) -> Expectation:
    """Values of ``column`` are null."""
    return Expectation("expect_column_values_to_be_null", [column], column=column, mostly=mostly)


def expect_column_values_to_match_regex(column: str, regex: str, mostly: float = 1.0) -> Expectation:
    """Values of ``column`` match ``regex``."""
    if not isinstance(regex, str) or not regex:
        raise fail(f"expect_column_values_to_match_regex({column!r}): regex must be a non-empty string")
    return Expectation(
        "expect_column_values_to_match_regex", [column], column=column, regex=regex, mostly=mostly
    )


def expect_column_pair_values_A_to_be_greater_than_B(  # noqa: N802 - Great Expectations' name
    column_A: str, column_B: str, or_equal: bool = False, mostly: float = 1.0  # noqa: N803
) -> Expectation:
    """Values of ``column_A`` are greater than (or equal to) ``column_B``'s."""
    return Expectation(
        "expect_column_pair_values_A_to_be_greater_than_B",
        [column_A, column_B],
        column_A=column_A,
        column_B=column_B,
        or_equal=or_equal,
        mostly=mostly,
    )
