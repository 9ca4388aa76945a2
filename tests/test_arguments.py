"""
The Python API refuses a C{.tac} file's mistakes where they are made, with
a C{TypeError} or C{ValueError} that says what was expected (issue 20),
instead of accepting them and failing every request later.
"""

from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import TestCase

from txrouter.config import HTTPRouterConfig
from txrouter.routers.fast import FastRouter
from txrouter.routers.http import HTTPRouter
from txrouter.routers.raw import RawRouter
from txrouter.routing.cache import CacheForwarder, InMemoryStore
from txrouter.routing.code import CodeForwarder
from txrouter.routing.paths import PathForwarder
from txrouter.routing.static import StaticForwarder
from txrouter.routing.nodes import Node, parseNode
from txrouter.service import RouterService


class RouterArgumentTests(TestCase):
    def setUp(self):
        self.reactor = MemoryReactorClock()
        self.node = parseNode("/run/app.sock")

    def assertRefused(self, exception, expected, make, *args, **kwargs):
        error = self.assertRaises(exception, make, *args, **kwargs)
        self.assertIn(expected, str(error))

    def test_a_string_where_nodes_are_expected(self):
        for router in (HTTPRouter, FastRouter, RawRouter):
            self.assertRefused(TypeError, "each a Node, not '/run/app.sock' (parseNode('/run/app.sock')",
                               router, self.reactor, ["/run/app.sock"])
            self.assertRefused(TypeError, "nodes: a list of nodes, not the string '/run/app.sock'",
                               router, self.reactor, "/run/app.sock")
            self.assertRefused(TypeError, "fallback: each a Node, not '/b.sock'",
                               router, self.reactor, [self.node], fallback=["/b.sock"])

    def test_the_reactor_left_out(self):
        self.assertRefused(TypeError, "reactor: the reactor (from twisted.internet import reactor)"
                           " comes first", HTTPRouter, [self.node])

    def test_numbers_and_flags(self):
        self.assertRefused(TypeError, "timeout: a number of seconds, not '60'",
                           HTTPRouter, self.reactor, [self.node], timeout="60")
        self.assertRefused(ValueError, "gracetime: must not be negative, not -1",
                           FastRouter, self.reactor, [self.node], gracetime=-1)
        self.assertRefused(TypeError, "max_retries: a whole number, not 2.5",
                           RawRouter, self.reactor, [self.node], max_retries=2.5)
        self.assertRefused(TypeError, "keepalive: a number of seconds, not '15'",
                           HTTPRouter, self.reactor, [self.node], keepalive="15")
        self.assertRefused(TypeError, "quiet: True or False, not 'yes'",
                           HTTPRouter, self.reactor, [self.node], quiet="yes")
        self.assertRefused(TypeError, "auto_gzip: True or False, not 1",
                           HTTPRouter, self.reactor, [self.node], auto_gzip=1)

    def test_forwarders(self):
        store = InMemoryStore({"a.local": "/run/a.sock"})
        self.assertRefused(TypeError, "a key/value store goes into CacheForwarder(store, reactor)",
                           FastRouter, self.reactor, forwarder=store)
        self.assertRefused(ValueError, "give nodes or a forwarder, not both",
                           FastRouter, self.reactor, [self.node], forwarder=CacheForwarder(store))
        self.assertRefused(TypeError, "store: an IKeyValueStore such as InMemoryStore({...})",
                           CacheForwarder, {"a.local": "/run/a.sock"})
        self.assertRefused(TypeError, "nodes: each a Node, not '/a.sock'",
                           StaticForwarder, ["/a.sock"], self.reactor)
        self.assertRefused(TypeError, "pattern: a path with %s (a str), not b'/run/%s.sock'",
                           PathForwarder, b"/run/%s.sock")
        self.assertRefused(TypeError, "function: a callable taking the key, not 'myrouting:route'",
                           CodeForwarder, "myrouting:route", self.reactor)

    def test_node_addresses_and_binds(self):
        self.assertRefused(TypeError, "a node address is a string", parseNode, b"/run/app.sock")
        self.assertRefused(ValueError, "Node '/run/app.sock': give a host and port, or a path,"
                           " not neither (parseNode('/run/app.sock')", Node, "/run/app.sock")
        router = HTTPRouter(self.reactor, [self.node])
        self.assertRefused(TypeError, "binds: a list of strings (['tcp:8080']), not the string",
                           RouterService, self.reactor, router, "tcp:8080")

    def test_right_arguments_pass(self):
        router = HTTPRouter(self.reactor, [self.node], fallback=[parseNode(":3031")],
                            timeout=5, keepalive=15.0, max_retries=2, quiet=True)
        RouterService(self.reactor, router, ["tcp:8080"], cheap=False)
        FastRouter(self.reactor, forwarder=CacheForwarder(InMemoryStore(), self.reactor))


class ConfigArgumentTests(TestCase):
    def test_numbers_and_flags(self):
        error = self.assertRaises(TypeError, HTTPRouterConfig, bind=["tcp:8080"], to=["/a.sock"],
                                  timeout="60")
        self.assertEqual(str(error), "--timeout: a number, not '60'")
        error = self.assertRaises(TypeError, HTTPRouterConfig, bind=["tcp:8080"], to=["/a.sock"],
                                  cheap="no")
        self.assertEqual(str(error), "a flag is True or False, not 'no'")
        error = self.assertRaises(ValueError, HTTPRouterConfig, bind="tcp:8080", to=["/a.sock"])
        self.assertEqual(str(error), "--bind: a list of values, not 'tcp:8080'")
        self.assertTrue(HTTPRouterConfig(bind=["tcp:8080"], to=["/a.sock"], cheap=1).cheap)
