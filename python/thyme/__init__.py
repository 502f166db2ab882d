"""Thyme: a feature database. Declare datasets, pipelines and featuresets
in Python, commit them, and query features online and point in time.

The package mirrors Fennel's public API, module by module:

- :mod:`thyme.datasets`: ``dataset``, ``field``, ``pipeline``, ``Dataset`` and
  the aggregations (``Count``, ``Sum``, ...);
- :mod:`thyme.featuresets`: ``featureset``, ``feature``, ``extractor``;
- :mod:`thyme.lib`: ``inputs``, ``outputs``, ``meta``, ``expectations``;
- :mod:`thyme.dtypes`: windows and extra types (``Continuous``,
  ``Embedding``, ``struct``, ...);
- :mod:`thyme.connectors`: ``source`` and the connectors;
- :mod:`thyme.expr`: ``col``, ``lit``, ``when``;
- :mod:`thyme.client`: the HTTP ``Client``; :mod:`thyme.cli`: ``thyme commit``.

This top-level module adds :func:`definitions` (every dataset and
featureset decorated so far, optionally of one module),
:func:`build_payload` / :func:`commit_payload` (the JSON of
``docs/commit-payload.md``), :func:`validate` (the control plane's rules,
run locally by the native module ``thyme._native``, which is imported only
when needed) and :func:`check_columns` (rows against a dataset, as
ingestion checks them).
"""

from __future__ import annotations

from typing import Any, Dict, Optional

from ._payload import build_payload, check_columns, validate
from ._registry import definitions
from ._util import DefinitionError
from .client import Client, ThymeError
from .datasets import Dataset, dataset, field, pipeline
from .featuresets import Featureset, extractor, feature, featureset
from .lib import inputs, meta, outputs

__version__ = "0.1.0"

__all__ = [
    "Client",
    "Dataset",
    "DefinitionError",
    "Featureset",
    "ThymeError",
    "build_payload",
    "check_columns",
    "commit_payload",
    "dataset",
    "definitions",
    "extractor",
    "feature",
    "featureset",
    "field",
    "inputs",
    "meta",
    "outputs",
    "pipeline",
    "validate",
    "__version__",
]


def commit_payload(*objs: Any, message: Optional[str] = None, incremental: bool = False) -> Dict[str, Any]:
    """The commit payload for these datasets and featuresets (and what they
    depend on), as a JSON-ready dict."""
    return build_payload(objs, message=message, incremental=incremental)
