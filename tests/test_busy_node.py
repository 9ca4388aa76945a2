"""
A UNIX node whose listen queue is full is busy, not dead (issue 11, hole
8): the connect fails with a clear L{NodeBusy} rather than Twisted's
"Connection was closed cleanly", the request tries the node again after a
short backoff and gets 503 C{node_busy} only once the retries are spent,
and the node is not put in quarantine, so the next request reaches it as
soon as its workers are free again.  Real sockets, real reactor.
"""

import os
import socket

import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import serverFromString
from twisted.internet.protocol import ClientFactory
from twisted.logger import globalLogPublisher

from tests.logs import named
from tests.test_transports import Collector, OneProtocolFactory, deadline
from txrouter.routers.http import HTTPRouter
from txrouter.routing.nodes import parseNode
from txrouter.testing import UwsgiWSGIBackend
from txrouter.transports import NodeBusy, connectNode, listeningReactor


def fullBacklog(path: str):
    """
    A UNIX socket listening at C{path} that never accepts, with its listen
    queue filled: a node whose every worker is busy.

    @return: the sockets to close to free it.
    """
    server = socket.socket(socket.AF_UNIX)
    server.bind(path)
    server.listen(0)
    held = [server]
    while True:
        client = socket.socket(socket.AF_UNIX)
        client.setblocking(False)
        held.append(client)
        if client.connect_ex(path):
            return held


class Failing(ClientFactory):
    def __init__(self) -> None:
        self.failed = Deferred()

    def clientConnectionFailed(self, connector, reason) -> None:
        self.failed.callback([reason])


@pytest_twisted.inlineCallbacks
def test_a_full_listen_queue_is_a_busy_node_reported_after_connect_node_returns(tmp_path):
    path = str(tmp_path / "busy.sock")
    held = fullBacklog(path)
    try:
        factory = Failing()
        connectNode(reactor, parseNode(path), factory)
        assert not factory.failed.called, "reported inside connectNode"
        [reason] = yield deadline(factory.failed)
        assert reason.check(NodeBusy)
        assert "listen queue is full" in reason.getErrorMessage()
    finally:
        for skt in held:
            skt.close()


@pytest_twisted.inlineCallbacks
def test_a_busy_node_is_tried_again_then_503_and_never_quarantined(tmp_path):
    path = str(tmp_path / "app.sock")
    held = fullBacklog(path)
    events = []
    globalLogPublisher.addObserver(events.append)
    router = HTTPRouter(reactor, [parseNode(path)], max_retries=2, gracetime=30)
    port = yield serverFromString(
        listeningReactor(reactor), "tcp:0:interface=127.0.0.1").listen(router)
    backend = None
    try:
        answer = yield request(port)
        assert answer.startswith(b"HTTP/1.1 503 "), answer
        assert b"busy" in answer
        tries = [e for e in named(events, "node_busy") if e["log_namespace"] == "txrouter.lifecycle"]
        assert [e["attempt"] for e in tries] == [1, 2, 3]
        assert named(events, "backend_unreachable") == []
        assert dict(router.statsFields())["retries"] == {
            "connect_failed": 0, "node_closed": 0, "node_busy": 2}
        # The workers are free again: the very next request gets through
        # (a quarantined node would be refused for the whole gracetime).
        for skt in held:
            skt.close()
        held = []
        os.unlink(path)
        backend = yield serverFromString(reactor, f"unix:{path}").listen(UwsgiWSGIBackend())
        answer = yield request(port)
        assert answer.startswith(b"HTTP/1.1 200 "), answer
    finally:
        globalLogPublisher.removeObserver(events.append)
        for skt in held:
            skt.close()
        yield port.stopListening()
        if backend is not None:
            yield backend.stopListening()


@pytest_twisted.inlineCallbacks
def request(port):
    client = Collector()
    reactor.connectTCP("127.0.0.1", port.getHost().port, OneProtocolFactory(client))
    yield deadline(client.made)
    client.transport.write(b"GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
    answer = yield deadline(client.done)
    return answer
