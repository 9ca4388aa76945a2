"""
The optional mypyc build (C{TXROUTER_COMPILE=1}, see C{setup.py}): the
tests run against whichever build is imported, and these say which one it
is and that it is the one meant.

C{.ci/run} runs the unit tests a second time on a compiled build, with
C{TXROUTER_COMPILED=1} in the environment; everywhere else the checkout is
expected to be pure Python.
"""

import os

from twisted.internet.testing import MemoryReactorClock

from tests.logs import named
from txrouter.build import buildService
from txrouter.compiled import MODULES, compiledModules, describe
from txrouter.config import HTTPRouterConfig


def test_the_build_is_the_one_meant():
    """
    Every module of the list is compiled in the compiled run, none in the
    others: a compiled module left in a checkout would shadow the edits of
    its C{.py}.
    """
    if os.environ.get("TXROUTER_COMPILED") == "1":
        assert compiledModules() == list(MODULES)
        assert describe() == "compiled by mypyc: " + ", ".join(MODULES)
    else:
        assert compiledModules() == []
        assert describe() == "pure Python"


def test_the_router_logs_its_build(events):
    """
    Building a router logs, once, which build runs it.
    """
    buildService(HTTPRouterConfig(bind=["tcp:0"], to=["127.0.0.1:3031"]), MemoryReactorClock())
    [event] = named(events, "txrouter_build")
    assert event["build"] == describe()
    assert event["version"] == __import__("txrouter").__version__
