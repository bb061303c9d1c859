"""What the user sees: live renderers fed by events, and the text forms of plans and tables.

Renderers are looked up by name; `auto` picks the live view on a terminal and plain lines elsewhere.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from ansflow.errors import UsageError


def _tty(quiet: bool, forced: bool) -> Any:
    from ansflow.render.tty import TtyRenderer

    return TtyRenderer(quiet=quiet, force_terminal=True if forced else None)


def _plain(quiet: bool, forced: bool) -> Any:
    from ansflow.render.plain import PlainRenderer

    return PlainRenderer(quiet=quiet)


def _json(quiet: bool, forced: bool) -> Any:
    from ansflow.render.json import JsonRenderer

    return JsonRenderer(quiet=quiet)


RENDERERS: dict[str, Callable[[bool, bool], Any]] = {"tty": _tty, "plain": _plain, "json": _json}


def resolve_output(name: str) -> str:
    """`auto` becomes tty on a terminal, plain otherwise; unknown names list the known ones."""
    if name == "auto":
        return "tty" if sys.stdout.isatty() else "plain"
    if name not in RENDERERS:
        raise UsageError(f"unknown output {name!r}; choose one of auto, {', '.join(RENDERERS)}")
    return name


def make_renderer(name: str, quiet: bool = False) -> Any:
    chosen = resolve_output(name)
    return RENDERERS[chosen](quiet, name == "tty")
