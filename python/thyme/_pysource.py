"""Python functions shipped as source text.

Pipelines, extractors and the lambdas passed to ``filter`` / ``assign`` /
``transform`` run inside the server later, so the SDK ships their code:

- a ``def`` is sent from its ``def`` line to its end, dedented, without its
  decorators (the server must not re-run ``@pipeline`` or ``@inputs``);
- a lambda is cut out of the statement that contains it by parsing the
  defining module with :mod:`ast` and picking the ``Lambda`` node that
  compiled into the function object (several lambdas on one line are told
  apart by their bytecode positions);
- ``env.imports`` holds the top-level import statements of the defining
  module, so names such as ``pd`` resolve on the server.
"""

from __future__ import annotations

import ast
import inspect
import linecache
import types
from typing import Any, Callable, Dict, List, Optional, Tuple

from ._util import fail

__all__ = ["func_json", "function_source", "module_imports", "env_json"]

_TREES: Dict[str, Tuple[Tuple[str, ...], ast.Module, str]] = {}


def _module_source(code: types.CodeType, module_globals: Optional[dict]) -> Tuple[str, ast.Module]:
    """The text and syntax tree of the file that defined ``code``."""
    filename = code.co_filename
    lines = linecache.getlines(filename, module_globals)
    if not lines:
        linecache.checkcache(filename)
        lines = linecache.getlines(filename, module_globals)
    if not lines:
        raise OSError(f"no source for {filename}")
    key = tuple(lines)
    cached = _TREES.get(filename)
    if cached is not None and cached[0] == key:
        return cached[2], cached[1]
    text = "".join(lines)
    tree = ast.parse(text, filename=filename)
    _TREES[filename] = (key, tree, text)
    return text, tree


def _describe(fn: Callable[..., Any]) -> str:
    name = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", repr(fn))
    code = getattr(fn, "__code__", None)
    if code is not None:
        return f"{name} ({code.co_filename}:{code.co_firstlineno})"
    return name


def _unwrap(fn: Any) -> Callable[..., Any]:
    if isinstance(fn, (classmethod, staticmethod)):
        fn = fn.__func__
    return inspect.unwrap(fn)


def _segment(text_lines: List[str], node: ast.AST) -> str:
    """Lines ``node.lineno .. node.end_lineno`` with the node's indentation
    removed (lines indented less, e.g. inside a multi-line string, are kept
    as they are)."""
    start, end = node.lineno, node.end_lineno  # type: ignore[attr-defined]
    indent = node.col_offset  # type: ignore[attr-defined]
    out = []
    for line in text_lines[start - 1 : end]:
        prefix = line[:indent]
        out.append(line[indent:] if prefix.strip() == "" else line)
    return "".join(out).rstrip() + "\n"


def _def_source(fn: types.FunctionType) -> str:
    code = fn.__code__
    text, tree = _module_source(code, fn.__globals__)
    lines = text.splitlines(keepends=True)
    first = code.co_firstlineno
    candidates = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == fn.__name__:
            starts = [node.lineno] + [d.lineno for d in node.decorator_list]
            if first in starts:
                candidates.append(node)
    if not candidates:
        raise OSError("definition not found in its file")
    return _segment(lines, candidates[0])


def _body_span(node: ast.Lambda) -> Tuple[int, int, int, int]:
    b = node.body
    return (b.lineno, b.col_offset, b.end_lineno, b.end_col_offset)  # type: ignore[return-value]


def _contains(span: Tuple[int, int, int, int], pos: Tuple[int, int, int, int]) -> bool:
    l0, c0, l1, c1 = span
    p0, pc0, p1, pc1 = pos
    return (p0, pc0) >= (l0, c0) and (p1, pc1) <= (l1, c1)


def _lambda_positions(code: types.CodeType) -> List[Tuple[int, int, int, int]]:
    positions = getattr(code, "co_positions", None)
    if positions is None:
        return []
    out = []
    for line, end_line, col, end_col in positions():
        if None in (line, end_line, col, end_col):
            continue
        if line == end_line and col == end_col:
            continue  # zero-width entries (RESUME, implicit returns)
        out.append((line, col, end_line, end_col))
    return out


def _lambda_signature(node: ast.Lambda) -> Tuple[str, ...]:
    a = node.args
    # The order of co_varnames: positional, keyword-only, *args, **kwargs.
    names = [x.arg for x in getattr(a, "posonlyargs", [])] + [x.arg for x in a.args]
    names += [x.arg for x in a.kwonlyargs]
    if a.vararg:
        names.append(a.vararg.arg)
    if a.kwarg:
        names.append(a.kwarg.arg)
    return tuple(names)


def _code_signature(code: types.CodeType) -> Tuple[str, ...]:
    n = code.co_argcount + code.co_kwonlyargcount
    n += bool(code.co_flags & inspect.CO_VARARGS) + bool(code.co_flags & inspect.CO_VARKEYWORDS)
    return tuple(code.co_varnames[:n])


def _lambda_source(fn: types.FunctionType) -> str:
    code = fn.__code__
    text, tree = _module_source(code, fn.__globals__)
    on_line = [
        n for n in ast.walk(tree) if isinstance(n, ast.Lambda) and n.lineno == code.co_firstlineno
    ]
    if not on_line:
        raise OSError("lambda not found in its file")
    chosen: Optional[ast.Lambda] = None
    if len(on_line) == 1:
        chosen = on_line[0]
    else:
        positions = _lambda_positions(code)
        if positions:
            fits = [n for n in on_line if all(_contains(_body_span(n), p) for p in positions)]
            if fits:
                # The innermost lambda whose body holds every instruction.
                chosen = min(
                    fits,
                    key=lambda n: (
                        (n.body.end_lineno - n.body.lineno) * 10**6  # type: ignore[operator]
                        + (n.body.end_col_offset - n.body.col_offset)  # type: ignore[operator]
                    ),
                )
        if chosen is None:
            sig = _code_signature(code)
            fits = [n for n in on_line if _lambda_signature(n) == sig]
            if len(fits) == 1:
                chosen = fits[0]
    if chosen is None:
        raise fail(
            f"cannot tell apart the lambdas on line {code.co_firstlineno} of "
            f"{code.co_filename}; put them on separate lines or use def functions"
        )
    segment = ast.get_source_segment(text, chosen)
    if segment is not None:
        try:
            ast.parse(segment, mode="eval")
            return segment
        except SyntaxError:
            pass
    # A lambda spanning lines inside the caller's brackets does not parse on
    # its own; its normalized text always does.
    return ast.unparse(chosen)


def function_source(fn: Callable[..., Any]) -> Tuple[str, str]:
    """``(source, kind)`` of a function: kind is ``"lambda"`` or ``"def"``."""
    fn = _unwrap(fn)
    if not isinstance(fn, types.FunctionType):
        raise fail(
            f"{fn!r} is not a Python function; pass a lambda or a def function "
            "(its source text is shipped to the server)"
        )
    try:
        if fn.__name__ == "<lambda>":
            return _lambda_source(fn), "lambda"
        return _def_source(fn), "def"
    except (OSError, SyntaxError, TypeError) as exc:
        raise fail(
            f"cannot read the source of {_describe(fn)}: {exc}; define it in a "
            ".py file (the server runs its source text)"
        ) from None


def func_json(fn: Callable[..., Any]) -> Dict[str, str]:
    """The payload's Func: ``{"name", "source", "kind"}``."""
    source, kind = function_source(fn)
    name = _unwrap(fn).__name__
    return {"name": name, "source": source, "kind": kind}


def module_imports(fn: Callable[..., Any]) -> str:
    """The top-level ``import`` / ``from ... import`` statements of the
    module that defined ``fn``, one per line, in file order."""
    fn = _unwrap(fn)
    code = getattr(fn, "__code__", None)
    if code is None:
        return ""
    try:
        text, tree = _module_source(code, getattr(fn, "__globals__", None))
    except (OSError, SyntaxError):
        return ""
    out = []
    for node in tree.body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            seg = ast.get_source_segment(text, node)
            out.append(seg if seg is not None else ast.unparse(node))
    return "\n".join(out)


def env_json(fn: Callable[..., Any]) -> Dict[str, str]:
    """The payload's Env for code defined with ``fn``: ``{"imports": ...}``."""
    return {"imports": module_imports(fn)}
