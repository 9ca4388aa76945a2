"""
Which of txrouter's modules run compiled by mypyc.

The hot path's self-contained modules (the HTTP/1 parsers, the uwsgi
packet and vars encoders, the idle timers) are typed Python that mypyc
can compile into C extension modules from the same source: an install
with C{TXROUTER_COMPILE=1} builds them (C{setup.py}), and Python then
imports the extension module in place of the C{.py} beside it.  Without
that build, the same modules run as pure Python, as everything else does.

This module is read by C{setup.py} before txrouter is installed, so it
imports nothing of txrouter's.
"""

from importlib import import_module
from importlib.machinery import EXTENSION_SUFFIXES

__all__ = ["MODULES", "compiledModules", "describe"]

#: The modules C{TXROUTER_COMPILE=1} compiles.  Each must pass mypy, and
#: no code may patch their functions or set attributes their classes do
#: not declare (mypyc's native classes have fixed slots).
MODULES = (
    "txrouter.timers",
    "txrouter.wire.http1",
    "txrouter.wire.http2uwsgi",
    "txrouter.wire.uwsgi",
)


def compiledModules() -> "list[str]":
    """
    The modules of L{MODULES} imported from a compiled extension module.
    """
    suffixes = tuple(EXTENSION_SUFFIXES)
    return [name for name in MODULES if (import_module(name).__file__ or "").endswith(suffixes)]


def describe() -> str:
    """
    One phrase for the start-up log line: C{"pure Python"}, or which
    modules are compiled.
    """
    compiled = compiledModules()
    if not compiled:
        return "pure Python"
    return f"compiled by mypyc: {', '.join(compiled)}"
