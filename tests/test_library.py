"""
The parts compose: the TCP relay that docs/library.md builds from the
request lifecycle and the relay routes, retries, falls back, relays both
ways with a half-close, and leaves nothing behind.
"""

import pathlib
import re

from twisted.internet.protocol import Factory, Protocol
from twisted.trial.unittest import SynchronousTestCase

from txrouter.routing.nodes import parseNode
from txrouter.testing import MemoryNetwork

DOC = pathlib.Path(__file__).resolve().parent.parent / "docs" / "library.md"


def documentedRelay():
    """
    The router class the doc's Python block defines.
    """
    [block] = re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S)
    namespace = {}
    exec(compile(block, str(DOC), "exec"), namespace)
    return namespace["TCPRelay"]


class Echo(Protocol):
    """
    A node that echoes upper-cased and closes when the client half-closes.
    """

    def dataReceived(self, data):
        self.transport.write(data.upper())

    def readConnectionLost(self):
        self.transport.loseConnection()


class LibraryTests(SynchronousTestCase):
    def setUp(self):
        self.network = MemoryNetwork()
        self.TCPRelay = documentedRelay()

    def test_bytes_go_both_ways_through_a_node(self):
        self.network.addBackend(("127.0.0.1", 5000), Factory.forProtocol(Echo))
        router = self.TCPRelay(self.network.reactor, [parseNode("127.0.0.1:5000")])
        client = self.network.connect(router)
        client.send(b"hello ")
        client.send(b"world")
        self.assertEqual(client.received(), b"HELLO WORLD")
        client.close()
        self.assertEqual(router.sessions, set())

    def test_a_failed_connect_falls_back(self):
        self.network.addBackend(("127.0.0.1", 5001), Factory.forProtocol(Echo))
        router = self.TCPRelay(
            self.network.reactor, [parseNode("127.0.0.1:5000")],
            fallback=[parseNode("127.0.0.1:5001")],
        )
        client = self.network.connect(router)
        client.send(b"x")
        self.assertEqual(client.received(), b"X")

    def test_no_node_reachable_closes_the_client(self):
        router = self.TCPRelay(self.network.reactor, [parseNode("127.0.0.1:5000")], max_retries=1)
        client = self.network.connect(router)
        self.assertTrue(client.closed)
        self.assertEqual(router.sessions, set())
