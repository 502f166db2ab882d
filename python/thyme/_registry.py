"""The registry of definitions: every ``@dataset`` and ``@featureset``
records the object it creates here, in creation order, so that
``thyme commit features.py`` can collect what importing a file defined
without the file listing its definitions.
"""

from __future__ import annotations

from typing import Any, List

__all__ = ["register", "registered", "mark", "since", "definitions"]

_DEFINITIONS: List[Any] = []


def register(obj: Any) -> None:
    """Record a dataset or featureset object."""
    _DEFINITIONS.append(obj)


def registered() -> List[Any]:
    """Every definition created so far in this process, oldest first."""
    return list(_DEFINITIONS)


def mark() -> int:
    """A position in the registry, for :func:`since`."""
    return len(_DEFINITIONS)


def since(position: int) -> List[Any]:
    """The definitions created after ``mark()`` returned ``position``."""
    return list(_DEFINITIONS[position:])


def definitions(module: Any = None) -> List[Any]:
    """Definitions created so far, or only those of ``module`` (a module
    object or its name), oldest first."""
    if module is None:
        return registered()
    name = module if isinstance(module, str) else getattr(module, "__name__", None)
    return [d for d in _DEFINITIONS if getattr(d, "_module", None) == name]
