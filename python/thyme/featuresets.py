"""Featuresets, features and extractors (``thyme.featuresets``).

A featureset is a class whose annotations are typed features::

    @featureset
    class UserFeatures:
        uid: int                                                # an input
        txn_count_7d: int = feature(UserStats.txn_count_7d, default=0)  # lookup
        country: str = feature(Request.country)                 # alias
        avg_txn: float = feature(col("total_7d") / col("txn_count_7d"))  # expression
        is_big: bool                                            # computed below

        @extractor(deps=[UserStats])
        @inputs("total_7d")
        @outputs("is_big")
        def big(cls, ts, total_7d):
            return pd.DataFrame({"is_big": total_7d > 1000})

This module turns it into a :class:`Featureset` object (attribute access
returns :class:`Feature` references, ``UserFeatures.uid``) and into the
payload's Featureset: features plus one extractor per lookup / alias /
expression feature and per ``@extractor`` method (shipped as source text).

Usage errors (a feature without a type, an extractor output that is not a
feature of the featureset, an expression over unknown features, a lookup
whose dataset keys are not features here) are raised while ``@featureset``
runs. Whether the extractor graph is acyclic, each feature has at most one
extractor, and lookups read indexed keyed datasets is checked by
``thyme.validate`` (the native module).
"""

from __future__ import annotations

import inspect
from typing import Any, Callable, Dict, List, Optional

from . import _registry
from ._pysource import env_json, function_source
from ._util import DefinitionError, definition_context, fail, json_value, names_list
from .datasets import MISSING, Dataset, Field
from .dtypes import JsonType, class_annotations, type_to_json
from .expr import Expr, expr_columns
from .lib import INPUTS_ATTR, META_ATTR, OUTPUTS_ATTR, meta_json

__all__ = ["featureset", "feature", "extractor", "Featureset", "Feature", "Extractor", "DefinitionError"]


class Feature:
    """A feature of a featureset (``UserFeatures.uid``); ``str()`` gives its
    qualified name ``UserFeatures.uid``."""

    def __init__(self, featureset: "Featureset", name: str, dtype: JsonType, description: Optional[str]):
        self.featureset = featureset
        self.name = name
        self.dtype = dtype
        self.description = description

    @property
    def featureset_name(self) -> str:
        return self.featureset._name

    def fqn(self) -> str:
        """``Featureset.feature``."""
        return f"{self.featureset._name}.{self.name}"

    def __str__(self) -> str:
        return self.fqn()

    def __repr__(self) -> str:
        return f"Feature({self.fqn()})"

    def to_json(self) -> Dict[str, Any]:
        out: Dict[str, Any] = {"name": self.name, "type": self.dtype}
        if self.description:
            out["description"] = self.description
        return out


class _FeatureSpec:
    """What ``feature(...)`` returns in a featureset class body."""

    def __init__(self, ref: Any, default: Any):
        self.ref = ref
        self.default = default
        self.name: Optional[str] = None
        self.description: Optional[str] = None

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def meta(self, description: Optional[str] = None, owner: Optional[str] = None, **_: Any) -> "_FeatureSpec":
        """Describe the feature (``feature(...).meta(description="...")``)."""
        if description is not None and not isinstance(description, str):
            raise fail(f"feature meta: description must be a string, not {description!r}")
        self.description = description
        return self

    def __repr__(self) -> str:
        return f"feature({self.ref!r})" if self.ref is not None else "feature()"


def feature(ref: Any = None, *, default: Any = MISSING, version: Any = None, env: Any = None, id: Any = None) -> Any:  # noqa: A002
    """A feature's extractor, written on the feature:

    - ``feature()`` (or a bare annotation): an input, or computed by an
      ``@extractor``;
    - ``feature(Dataset.field, default=v)``: look the field up in a keyed,
      indexed dataset as of the query time, keyed by this featureset's
      features named like the dataset's keys; ``default`` when absent;
    - ``feature(Other.feature)``: an alias of another featureset's feature;
    - ``feature(expr)``: an expression over this featureset's features.

    ``version``, ``env`` and ``id`` are accepted for Fennel definitions and
    not used (Thyme identifies features by name).
    """
    if ref is not None and not isinstance(ref, (Field, Feature, Expr)):
        if isinstance(ref, _FeatureSpec):
            raise fail("feature(): refer to another featureset's feature as Other.name, "
                       "or to this featureset's features with col(\"name\")")
        raise fail(f"feature(): the reference must be Dataset.field, Featureset.feature or an expression, not {ref!r}")
    if isinstance(ref, Field) and ref.dataset is None:
        raise fail("feature(): the field does not belong to a @dataset")
    if default is not MISSING and default is not None and not isinstance(ref, Field):
        raise fail("feature(): default is only for lookups: feature(Dataset.field, default=...)")
    return _FeatureSpec(ref, None if default is MISSING else default)


class Extractor:
    """An ``@extractor`` method waiting for its featureset."""

    def __init__(self, fn: Callable[..., Any], deps: Any, version: int):
        if isinstance(fn, (classmethod, staticmethod)):
            fn = fn.__func__
        if not callable(fn):
            raise fail(f"@extractor decorates a function, not {fn!r}")
        name = getattr(fn, "__name__", repr(fn))
        if isinstance(version, bool) or not isinstance(version, int) or version < 1:
            raise fail(f"@extractor {name}: version must be a positive integer, not {version!r}")
        deps = list(deps or [])
        for d in deps:
            if not isinstance(d, Dataset):
                raise fail(f"@extractor {name}: deps are datasets (the ones it looks up), not {d!r}")
        self.fn = fn
        self.name: str = name
        self.deps: List[Dataset] = deps
        self.version = version

    def _declared(self, attr: str) -> Optional[List[Any]]:
        own = self.__dict__.get(attr)
        return own if own is not None else getattr(self.fn, attr, None)

    def __repr__(self) -> str:
        return f"<extractor {self.name} v{self.version}>"


def extractor(fn: Any = None, *, deps: Any = None, version: int = 1, env: Any = None, tier: Any = None) -> Any:
    """Mark a method of a featureset as a Python extractor. Use as
    ``@extractor`` or ``@extractor(deps=[UserStats], version=2)`` above
    ``@inputs(...)`` and ``@outputs(...)``. It is called in the server as
    ``fn(cls, ts, *inputs)`` with pandas Series and returns a DataFrame (or a
    Series for one output); ``deps`` are the datasets it reads with
    ``Dataset.lookup``. ``env`` / ``tier`` are accepted and not used."""
    if fn is not None:
        return Extractor(fn, deps, version)

    def decorate(f: Any) -> Extractor:
        return Extractor(f, deps, version)

    return decorate


class Featureset:
    """A committed featureset (what ``@featureset`` returns).
    ``Featureset.feature_name`` is a :class:`Feature`."""

    def __init__(self, name: str, module: Optional[str], description: Optional[str]):
        self._name = name
        self._module = module
        self._features: List[Feature] = []
        self._feature_map: Dict[str, Feature] = {}
        self._extractors: List[Dict[str, Any]] = []
        self._dataset_deps: List[Dataset] = []
        self._featureset_deps: List[Featureset] = []
        self._meta: Dict[str, Any] = {"owner": None, "description": description, "tags": [], "deprecated": False}

    def __getattr__(self, name: str) -> Feature:
        features = self.__dict__.get("_feature_map")
        if features is None or name.startswith("__"):
            raise AttributeError(name)
        if name in features:
            return features[name]  # type: ignore[no-any-return]
        raise AttributeError(
            f"featureset {self.__dict__.get('_name')} has no feature {name!r} (features: {names_list(features)})"
        )

    def __repr__(self) -> str:
        return f"<featureset {self._name}>"

    @property
    def features(self) -> List[Feature]:
        """The features, in declaration order."""
        return list(self._features)

    def _apply_meta(self, info: Dict[str, Any]) -> None:
        for k, v in info.items():
            if k == "tags":
                self._meta["tags"] = list(self._meta["tags"]) + [t for t in v if t not in self._meta["tags"]]
            elif v:
                self._meta[k] = v

    def to_json(self) -> Dict[str, Any]:
        """The payload's Featureset."""
        return {
            "name": self._name,
            "features": [f.to_json() for f in self._features],
            "extractors": [dict(e) for e in self._extractors],
            "owner": self._meta.get("owner"),
            "description": self._meta.get("description"),
            "meta": meta_json(self._meta),
        }

    def dependencies(self) -> List[Any]:
        """Datasets and featuresets this one reads."""
        return list(self._dataset_deps) + list(self._featureset_deps)


_RESERVED = {n for n in dir(Featureset) if not n.startswith("_")}


def _add_dep(lst: List[Any], obj: Any) -> None:
    if not any(obj is x for x in lst):
        lst.append(obj)


def _build_featureset(cls: type) -> Featureset:
    if not isinstance(cls, type):
        raise fail(f"@featureset decorates a class, not {cls!r}")
    name = cls.__name__
    with definition_context(f"featureset {name}"):
        annotations = class_annotations(cls)
    body = dict(cls.__dict__)
    info = body.get(META_ATTR) or {}
    description = info.get("description") or (inspect.cleandoc(cls.__doc__) if cls.__doc__ else None)
    fs = Featureset(name, cls.__module__, description)
    if info:
        fs._apply_meta({k: v for k, v in info.items() if k != "description"})

    specs: Dict[str, _FeatureSpec] = {}
    for fname, annotation in annotations.items():
        if fname in _RESERVED or fname.startswith("__"):
            raise fail(f"featureset {name}: feature name {fname!r} is reserved; rename the feature")
        declared = body.get(fname, MISSING)
        if isinstance(declared, _FeatureSpec):
            spec = declared
        elif declared is MISSING:
            spec = _FeatureSpec(None, None)
        else:
            raise fail(f"featureset {name}: feature {fname!r} is assigned {declared!r}; "
                       f"write {fname}: T = feature(...)")
        spec.name = fname
        specs[fname] = spec
        f = Feature(fs, fname, type_to_json(annotation, f"{name}.{fname}"), spec.description)
        fs._features.append(f)
        fs._feature_map[fname] = f
    for attr, value in body.items():
        if isinstance(value, _FeatureSpec) and attr not in annotations:
            raise fail(f"featureset {name}: feature {attr!r} has no type; write {attr}: T = feature(...)")
    if not fs._features:
        raise fail(f"featureset {name} declares no features (write them as annotations: uid: int)")

    for fname, spec in specs.items():
        ref = spec.ref
        what = f"featureset {name}: feature {fname}"
        if isinstance(ref, Field):
            ds = ref.dataset
            assert ds is not None
            inputs = []
            for k in ds.key_fields:
                if k not in specs:
                    raise fail(f"{what} looks up {ds._name}, which is keyed by {names_list(ds.key_fields)}; "
                               f"add a feature named {k!r} to {name} to bind the key")
                inputs.append(f"{name}.{k}")
            ext: Dict[str, Any] = {
                "name": f"_lookup_{fname}",
                "kind": "lookup",
                "inputs": inputs,
                "outputs": [fname],
                "dataset": ds._name,
                "field": ref.name,
            }
            if spec.default is not None:
                ext["default"] = json_value(spec.default, f"{what} default")
            fs._extractors.append(ext)
            _add_dep(fs._dataset_deps, ds)
        elif isinstance(ref, Feature):
            fs._extractors.append({
                "name": f"_alias_{fname}",
                "kind": "alias",
                "inputs": [ref.fqn()],
                "outputs": [fname],
            })
            if ref.featureset is not fs:
                _add_dep(fs._featureset_deps, ref.featureset)
        elif isinstance(ref, Expr):
            cols = expr_columns(ref)
            for c in cols:
                if c not in specs:
                    raise fail(f"{what}: the expression reads {c!r}, which is not a feature of {name} "
                               f"(features: {names_list(specs)})")
                if c == fname:
                    raise fail(f"{what}: the expression reads the feature itself")
            fs._extractors.append({
                "name": f"_expr_{fname}",
                "kind": "expr",
                "inputs": [f"{name}.{c}" for c in cols],
                "outputs": [fname],
                "expr": ref.to_json(),
            })

    for value in body.values():
        if isinstance(value, Extractor):
            fs._extractors.append(_extractor_json(fs, specs, value))
    _registry.register(fs)
    return fs


def _extractor_json(fs: Featureset, specs: Dict[str, _FeatureSpec], ex: Extractor) -> Dict[str, Any]:
    name = fs._name
    with definition_context(f"featureset {name}: extractor {ex.name}"):
        declared_in = ex._declared(INPUTS_ATTR)
        declared_out = ex._declared(OUTPUTS_ATTR)
        if not declared_out:
            raise fail("has no @outputs: add @outputs(\"feature\", ...) below @extractor")
        inputs: List[str] = []
        for x in declared_in or []:
            if isinstance(x, str):
                if "." in x:
                    inputs.append(x)
                elif x in specs:
                    inputs.append(f"{name}.{x}")
                else:
                    raise fail(f"input {x!r} is not a feature of {name} (features: {names_list(specs)}); "
                               "name another featureset's feature as Other.feature")
            elif isinstance(x, Feature):
                inputs.append(x.fqn())
                if x.featureset is not fs:
                    _add_dep(fs._featureset_deps, x.featureset)
            elif isinstance(x, _FeatureSpec) and x.name in specs and specs[x.name] is x:
                inputs.append(f"{name}.{x.name}")
            elif isinstance(x, Featureset):
                raise fail(f"input {x._name}: name its features (e.g. {x._name}.{x._features[0].name}), "
                           "not the whole featureset")
            else:
                raise fail(f"inputs are features (\"name\" or Featureset.feature), not {x!r}")
        outputs: List[str] = []
        for x in declared_out:
            if isinstance(x, _FeatureSpec) and x.name in specs and specs[x.name] is x:
                x = x.name
            if isinstance(x, Feature):
                if x.featureset is not fs:
                    raise fail(f"output {x.fqn()} is not a feature of {name}; an extractor computes "
                               "features of its own featureset")
                x = x.name
            if not isinstance(x, str) or x not in specs:
                raise fail(f"output {x!r} is not a feature of {name} (features: {names_list(specs)})")
            if x in outputs:
                raise fail(f"output {x!r} is listed twice")
            outputs.append(x)
        for d in ex.deps:
            _add_dep(fs._dataset_deps, d)
        source, _ = function_source(ex.fn)
        return {
            "name": ex.name,
            "kind": "python",
            "inputs": inputs,
            "outputs": outputs,
            "deps": [d._name for d in ex.deps],
            "version": ex.version,
            "source": source,
            "env": env_json(ex.fn),
        }


def featureset(cls: Optional[type] = None) -> Any:
    """Declare a featureset (``@featureset`` or ``@featureset()``)."""
    if cls is not None:
        return _build_featureset(cls)
    return _build_featureset

