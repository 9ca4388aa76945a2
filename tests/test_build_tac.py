"""
The builder block of docs/tac.md is code that works: run on a memory
reactor, it makes the router the matching command line makes, with its
subscription server, stats listener and router listeners.
"""

import pathlib
import re

from twisted.application.service import IServiceCollection
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from tests.test_accesslog import temporaryPath
from txrouter.routing.subscriptions import SubscriptionRegistry
from txrouter.service import RouterService
from txrouter.stats.server import StatsFactory
from txrouter.tap import http

TAC_DOC = pathlib.Path(__file__).resolve().parent.parent / "docs" / "tac.md"
IMPORT_REACTOR = "from twisted.internet import reactor\n"
ACCESS_LOG = "/var/log/txrouter/access.log"


class PortsReactor(MemoryReactorClock):
    """
    A memory reactor whose ports can pause (cheap mode) and which records
    datagram ports.
    """

    def __init__(self):
        super().__init__()
        self.udpServers = []

    def _pausable(self, port):
        port.stopReading = port.startReading = lambda: None
        return port

    def listenTCP(self, *args, **kwargs):
        return self._pausable(super().listenTCP(*args, **kwargs))

    def listenUNIX(self, *args, **kwargs):
        return self._pausable(super().listenUNIX(*args, **kwargs))

    def listenUDP(self, port, protocol, interface="", maxPacketSize=8192):
        self.udpServers.append((port, protocol, interface))
        return self._pausable(type("UDPPort", (), {"stopListening": lambda self: None})())


def documentedBlock() -> str:
    blocks = re.findall(r"```python\n(.*?)```", TAC_DOC.read_text(), re.S)
    [code] = [block for block in blocks if "buildService(config, reactor)" in block]
    return code


def runDocumentedBlock(reactor, accessLog: str) -> dict:
    """
    Run the block on C{reactor} instead of the global one, with its access
    log at C{accessLog}; its namespace.
    """
    code = documentedBlock()
    assert IMPORT_REACTOR in code and ACCESS_LOG in code
    code = code.replace(IMPORT_REACTOR, "").replace(ACCESS_LOG, accessLog)
    namespace = {"reactor": reactor}
    exec(compile(code, str(TAC_DOC), "exec"), namespace)
    return namespace


class DocumentedBuilderTests(SynchronousTestCase):
    def setUp(self):
        self.reactor = PortsReactor()
        self.accessLog = temporaryPath(self)
        self.namespace = runDocumentedBlock(self.reactor, self.accessLog)
        [self.service] = list(IServiceCollection(self.namespace["application"]))

    def test_it_builds_a_router_with_subscriptions_and_stats(self):
        service = self.service
        self.assertIsInstance(service, RouterService)
        self.assertIsInstance(service.router.forwarder, SubscriptionRegistry)
        self.assertEqual(service.router.keepalive, 15)
        service.privilegedStartService()
        service.startService()
        self.addCleanup(service.stopService)
        tcp = {port: (factory, interface) for port, factory, _, interface in self.reactor.tcpServers}
        self.assertIs(tcp[8080][0], service.router)
        stats, interface = tcp[9191]
        self.assertIsInstance(stats, StatsFactory)
        self.assertEqual(interface, "127.0.0.1")
        self.assertTrue(stats.http)
        self.assertEqual(stats.document()["http"], [":8080", "/run/router.sock", "127.0.0.1:7000"])
        [(path, factory, *_)] = self.reactor.unixServers
        self.assertEqual((path, factory), ("/run/router.sock", service.router))
        [(port, protocol, interface)] = self.reactor.udpServers
        self.assertEqual((port, interface), (7000, "127.0.0.1"))
        self.assertIs(protocol.registry, service.router.forwarder)
        # No node subscribed yet: cheap mode does not accept.
        self.assertTrue(service.cheap)

    def test_it_is_the_command_line_it_names(self):
        """
        The command line the page gives for the block makes the same
        configuration value.
        """
        text = TAC_DOC.read_text()
        match = re.search(r"is `twistd txrouter-http (.*?)`", text, re.S)
        options = http.Options()
        options.parseOptions(match.group(1).replace(ACCESS_LOG, self.accessLog).split())
        self.assertEqual(options.config, self.namespace["config"])
