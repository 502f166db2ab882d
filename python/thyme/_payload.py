"""The commit payload: turns dataset and featureset objects into the JSON
document of ``docs/commit-payload.md`` and hands it to the native
validator.

- :func:`build_payload` collects the given definitions plus everything
  they depend on (pipeline inputs, looked-up datasets, extractor deps,
  aliased featuresets), so a payload is self-contained; datasets come
  before the datasets and featuresets that read them;
- :func:`validate` runs the native module's ``validate_commit`` on it
  (the same rules the control plane applies);
- :func:`check_columns` checks column-oriented rows against a dataset the
  way ingestion does.

The native module ``thyme._native`` is imported only when validation is
asked for, so defining and serializing work without it.
"""

from __future__ import annotations

import json
from typing import Any, Dict, Iterable, List, Optional, Tuple

from ._util import DefinitionError, native_module
from .datasets import Dataset
from .featuresets import Featureset

__all__ = ["build_payload", "validate", "check_columns", "collect", "SCHEMA_VERSION", "native"]

SCHEMA_VERSION = 1


def _flatten(objs: Iterable[Any]) -> List[Any]:
    out: List[Any] = []
    for o in objs:
        if isinstance(o, (list, tuple, set)):
            out.extend(_flatten(o))
        else:
            out.append(o)
    return out


def _where(obj: Any) -> str:
    return f" (module {obj._module})" if getattr(obj, "_module", None) else ""


def collect(objs: Iterable[Any], include_dependencies: bool = True) -> Tuple[List[Dataset], List[Featureset]]:
    """The datasets and featuresets to commit for ``objs``: each once,
    dependencies first (when ``include_dependencies``)."""
    datasets: List[Dataset] = []
    featuresets: List[Featureset] = []
    by_name: Dict[Tuple[str, str], Any] = {}
    visiting: List[Any] = []

    def add(obj: Any) -> None:
        if isinstance(obj, Dataset):
            kind, bucket = "dataset", datasets
        elif isinstance(obj, Featureset):
            kind, bucket = "featureset", featuresets
        elif isinstance(obj, type):
            raise DefinitionError(
                f"{obj.__name__} is a plain class; decorate it with @dataset or @featureset to commit it"
            )
        else:
            raise DefinitionError(f"{obj!r} is not a dataset or featureset")
        key = (kind, obj._name)
        seen = by_name.get(key)
        if seen is obj:
            return
        if seen is not None:
            raise DefinitionError(
                f"two different {kind}s are named {obj._name}{_where(seen)}{_where(obj)}; "
                "a commit holds one definition per name"
            )
        if any(obj is v for v in visiting):
            return  # cycles between definitions are reported by the validator
        visiting.append(obj)
        if include_dependencies:
            for dep in obj.dependencies():
                add(dep)
        visiting.pop()
        by_name[key] = obj
        bucket.append(obj)

    for o in _flatten(objs):
        add(o)
    return datasets, featuresets


def build_payload(
    objs: Iterable[Any],
    message: Optional[str] = None,
    incremental: bool = False,
    include_dependencies: bool = True,
) -> Dict[str, Any]:
    """The commit payload (a JSON-ready dict) for datasets and featuresets."""
    datasets, featuresets = collect(objs, include_dependencies)
    return {
        "schema_version": SCHEMA_VERSION,
        "message": message,
        "incremental": bool(incremental),
        "datasets": [d.to_json() for d in datasets],
        "featuresets": [f.to_json() for f in featuresets],
    }


def native() -> Any:
    """The native module, or a clear error when the package was installed
    without it."""
    nat = native_module()
    if nat is None:
        raise RuntimeError(
            "thyme._native (the compiled validator) is not available in this installation; "
            "build the package with maturin (pip install ./python) to validate definitions locally"
        )
    return nat


def validate(*objs: Any, incremental: bool = False) -> Dict[str, Any]:
    """Validate definitions (and what they depend on) as the control plane
    would, and return the payload. Raises ``ValueError`` naming the
    definition and field at fault."""
    payload = build_payload(objs, message=None, incremental=incremental)
    native().validate_commit(json.dumps(payload, allow_nan=False))
    return payload


def check_columns(dataset: Dataset, data: Any) -> int:
    """Check rows (a pandas DataFrame, ``{column: [values]}`` or a list of
    row dicts) against a dataset's fields as ingestion does; returns the
    number of rows, raises ``ValueError`` naming the row, the field and the
    value."""
    from .client import columns_json

    if not isinstance(dataset, Dataset):
        raise TypeError(f"check_columns needs a dataset, not {dataset!r}")
    return int(native().check_columns(
        json.dumps(dataset.to_json(), allow_nan=False),
        json.dumps(columns_json(data), allow_nan=False),
    ))
