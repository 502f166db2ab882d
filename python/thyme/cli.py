"""The ``thyme`` command line (``thyme.cli``).

``thyme commit features.py [--url URL] [--message TEXT] [--incremental] [--dry-run]``

imports the file by path, collects every dataset and featureset it defines
(and what they depend on), validates the payload locally with the native
module, posts it to the control plane and prints what was created,
updated or left unchanged. ``--dry-run`` prints the payload JSON instead of
posting it.

Every failure (missing file, import or definition error, validation error,
server refusal, server unreachable) is printed as one readable message on
stderr and the exit status is 1 (2 for bad command-line arguments).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import sys
import traceback
from typing import Any, Dict, List, Optional, Sequence

from . import _registry
from ._payload import build_payload, native
from ._util import DefinitionError
from .client import Client, ThymeError
from .datasets import Dataset
from .featuresets import Featureset

__all__ = ["main", "load_definitions", "CliError"]


class CliError(Exception):
    """A failure to report to the user as ``error: <message>``."""


def _location(exc: BaseException, path: str) -> str:
    """``file:line`` of the deepest frame of ``exc`` inside ``path``."""
    where = ""
    real = os.path.realpath(path)
    for frame, lineno in traceback.walk_tb(exc.__traceback__):
        if os.path.realpath(frame.f_code.co_filename) == real:
            where = f"{path}:{lineno}"
    return where


def _module_name(path: str) -> str:
    stem = os.path.splitext(os.path.basename(path))[0]
    name = re.sub(r"\W", "_", stem)
    if not name or name[0].isdigit():
        name = f"_{name}"
    if name in sys.modules or name == "thyme":
        name = f"_thyme_user_{name}"
    return name


def load_definitions(path: str) -> List[Any]:
    """Import ``path`` and return the datasets and featuresets it defined or
    imported, in definition order."""
    if not os.path.exists(path):
        raise CliError(f"file not found: {path}")
    if not os.path.isfile(path):
        raise CliError(f"not a file: {path}")
    name = _module_name(path)
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise CliError(f"cannot import {path}: not a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    folder = os.path.dirname(os.path.abspath(path))
    if folder not in sys.path:
        sys.path.insert(0, folder)
    start = _registry.mark()
    try:
        spec.loader.exec_module(module)
    except SyntaxError as exc:
        raise CliError(f"{path}:{exc.lineno}: syntax error: {exc.msg}") from None
    except DefinitionError as exc:
        where = _location(exc, path)
        raise CliError(f"{where + ': ' if where else ''}{exc}") from None
    except Exception as exc:  # anything the user's module raises on import
        where = _location(exc, path)
        raise CliError(f"{where + ': ' if where else ''}importing {path} failed: {type(exc).__name__}: {exc}") from None
    found: List[Any] = []
    for obj in _registry.since(start) + list(vars(module).values()):
        if isinstance(obj, (Dataset, Featureset)) and not any(obj is x for x in found):
            found.append(obj)
    return found


def _validate_locally(payload: Dict[str, Any], err: Any) -> None:
    try:
        nat = native()
    except RuntimeError:
        print("warning: thyme._native is not built into this installation; skipping local "
              "validation (the server validates the commit)", file=err)
        return
    try:
        nat.validate_commit(json.dumps(payload, allow_nan=False))
    except ValueError as exc:
        raise CliError(f"invalid definitions: {exc}") from None


def _summary(answer: Any, out: Any) -> None:
    if not isinstance(answer, dict):
        print(f"committed: {answer!r}", file=out)
        return
    total = 0
    for status in ("created", "updated", "unchanged"):
        for entry in answer.get(status) or []:
            total += 1
            if isinstance(entry, dict):
                version = entry.get("version")
                shown = f"{entry.get('kind', '?')} {entry.get('name', '?')}" + (f" (version {version})" if version is not None else "")
                if entry.get("from_version") is not None:
                    shown += f", recreated from version {entry['from_version']}"
            else:
                shown = str(entry)
            print(f"{status:<9} {shown}", file=out)
    if total == 0:
        print("nothing to commit", file=out)


def commit(args: argparse.Namespace, out: Any, err: Any) -> int:
    defs = load_definitions(args.file)
    if not defs:
        raise CliError(f"{args.file} defines no datasets or featuresets")
    message = args.message if args.message is not None else f"thyme commit {os.path.basename(args.file)}"
    try:
        payload = build_payload(defs, message=message, incremental=args.incremental)
    except DefinitionError as exc:
        raise CliError(str(exc)) from None
    _validate_locally(payload, err)
    if args.dry_run:
        print(json.dumps(payload, indent=2, allow_nan=False), file=out)
        return 0
    client = Client(url=args.url, token=args.token)
    try:
        answer = client.send_commit(payload)
    except ThymeError as exc:
        if exc.status is None:
            raise CliError(f"{exc.message} (is `thyme serve` running? pass --url to point elsewhere)") from None
        raise CliError(f"the server refused the commit ({exc.status} {exc.code}): {exc.message}") from None
    _summary(answer, out)
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="thyme", description="Thyme feature database command line.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    c = sub.add_parser("commit", help="commit the datasets and featuresets defined in a Python file")
    c.add_argument("file", help="the Python file with the definitions (e.g. features.py)")
    c.add_argument("--url", default=os.environ.get("THYME_URL", "http://127.0.0.1:8080"),
                   help="control plane URL (default: $THYME_URL or http://127.0.0.1:8080)")
    c.add_argument("--token", default=os.environ.get("THYME_TOKEN"),
                   help="API token of a role with CREATE (default: $THYME_TOKEN; "
                        "create one with POST /api/v1/tokens)")
    c.add_argument("-m", "--message", default=None, help="commit message")
    c.add_argument("--incremental", action="store_true",
                   help="mark the commit incremental (commits never remove other definitions either way)")
    c.add_argument("--dry-run", action="store_true", help="print the payload JSON instead of posting it")
    return parser


def main(argv: Optional[Sequence[str]] = None, out: Any = None, err: Any = None) -> int:
    """Run the command line; returns the exit status."""
    out = out if out is not None else sys.stdout
    err = err if err is not None else sys.stderr
    args = _parser().parse_args(list(argv) if argv is not None else None)
    try:
        if args.command == "commit":
            return commit(args, out, err)
    except CliError as exc:
        print(f"error: {exc}", file=err)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=err)
        return 130
    except BrokenPipeError:  # output piped into e.g. `head`
        try:
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - silence the flush at exit
        except OSError:
            pass
        return 1
    return 2


if __name__ == "__main__":
    sys.exit(main())
