"""
Health checks of the C{--to} and C{--fallback} nodes (C{--check-interval};
beyond uWSGI, as HAProxy's C{check}): every C{interval} seconds each node is
probed, and the outcome goes to the router's
L{txrouter.routing.health.NodeHealth}, which takes a node that keeps
failing out of rotation before a client's request has to find it dead.

A probe is:

 - for a uwsgi node (and a raw or SSL router's node), a connect, TCP or
   unix, closed at once without a byte: the node's listener accepts, so a
   request would reach it.  A full listen queue
   (L{txrouter.transports.NodeBusy}) passes: a busy node is no dead one;
 - for an HTTP node, C{GET PATH HTTP/1.1} with C{Connection: close}: a
   response whose status is below 500 passes (a 404 at C{/} is an
   application without a root page, not a dead node; HAProxy's C{httpchk}
   wants 2xx or 3xx, which would take every such node out unless
   C{--check-path} names a page it has); a 5xx, anything that is no HTTP
   response, or a close before a whole response head fails.

With C{--send-proxy} (or C{--send-proxy-v2}), the nodes expect a PROXY
protocol header first: each probe starts with one that names no client
(v1 C{PROXY UNKNOWN}, v2's C{LOCAL} command, meant for health checks), as
HAProxy's checks of a C{send-proxy} server do.

A probe has C{timeout} seconds for all of it.  Connects go through
L{txrouter.transports.connectNode}, as requests' do; the timers are the
reactor's, so that checks run on a C{task.Clock} in tests.  A node whose
probe is still under way when its next one is due is not probed twice.
"""

from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.protocol import ClientFactory, Protocol
from twisted.internet.task import LoopingCall

from txrouter.routing.nodes import HTTP
from txrouter.transports import NodeBusy, connectNode
from txrouter.wire.http1 import HTTPError, ResponseHeadParser
from txrouter.wire.proxy import encodeV1, encodeV2

__all__ = ["HealthChecker", "NodeProbe", "checkRequest", "proxyHeaderFor"]

#: The largest response head an HTTP probe reads.
MAX_HEAD = 16384


def checkRequest(node, path: str) -> bytes:
    """
    The request an HTTP probe of C{node} sends: C{GET PATH}, with the
    node's address as C{Host} (C{localhost} for a unix socket node).
    """
    if node.path is not None:
        host = "localhost"
    elif ":" in node.host:
        host = f"[{node.host}]:{node.port}"
    else:
        host = f"{node.host}:{node.port}"
    return (
        f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: txrouter-check\r\n"
        "Accept: */*\r\nConnection: close\r\n\r\n"
    ).encode("ascii")


def proxyHeaderFor(version: int) -> bytes:
    """
    The PROXY protocol header of a probe for nodes sent version
    C{version} (0: none): it names no client.
    """
    if version == 2:
        return encodeV2(None, None)
    if version == 1:
        return encodeV1(None, None)
    return b""


class _ConnectProbe(Protocol):
    """
    Passes once connected, and closes.
    """

    def connectionMade(self) -> None:
        if self.factory.proxyHeader:
            self.transport.write(self.factory.proxyHeader)
        self.factory.settle(True, "connected")
        self.transport.loseConnection()


class _HTTPProbe(Protocol):
    """
    Sends the check request; the status of the response head decides.
    """

    def connectionMade(self) -> None:
        self._parser = ResponseHeadParser(maxHeadSize=MAX_HEAD)
        self.transport.write(self.factory.proxyHeader + self.factory.request)

    def dataReceived(self, data: bytes) -> None:
        if self.factory.deferred is None:
            # Decided (the body of the response goes on arriving until the
            # close is done).
            return
        try:
            head = self._parser.feed(data)
        except HTTPError as e:
            self.factory.settle(False, e.detail)
            self.transport.abortConnection()
            return
        if head is None:
            return
        self.factory.settle(head.status < 500, f"status {head.status}")
        self.transport.loseConnection()

    def connectionLost(self, reason) -> None:
        self.factory.settle(False, "closed before a response")


class NodeProbe(ClientFactory):
    """
    One probe of one node.

    @ivar deferred: fires with C{(passed, reason)} once the probe is over
        (L{None} afterwards): C{reason} says what was found (C{connected},
        C{status 200}, C{connect timed out}, the connect error).
    """

    noisy = False
    connector = None
    protocol = None

    def __init__(self, reactor, node, timeout: float, path: str = "/",
                 proxyHeader: bytes = b"") -> None:
        """
        @param proxyHeader: the PROXY protocol header sent first, or
            nothing.
        """
        self.reactor = reactor
        self.proxyHeader = proxyHeader
        self.node = node
        self.timeout = timeout
        self.request = checkRequest(node, path) if node.protocol == HTTP else None
        self.deferred = Deferred()
        self._timer = None

    def start(self) -> None:
        """
        Connect to the node; the outcome comes later, never before this
        returns.
        """
        self._timer = self.reactor.callLater(self.timeout, self._timedOut)
        self.connector = connectNode(self.reactor, self.node, self)

    def startedConnecting(self, connector) -> None:
        self.connector = connector

    def buildProtocol(self, addr):
        self.protocol = (_ConnectProbe if self.request is None else _HTTPProbe)()
        self.protocol.factory = self
        return self.protocol

    def clientConnectionFailed(self, connector, reason) -> None:
        if reason.check(NodeBusy) is not None:
            self.settle(True, "busy (listen queue full)")
        else:
            self.settle(False, reason.getErrorMessage())

    def settle(self, passed: bool, reason: str) -> None:
        """
        End the probe with this outcome (later ones are ignored).
        """
        deferred, self.deferred = self.deferred, None
        if deferred is None:
            return
        self._cancelTimer()
        deferred.callback((passed, reason))

    def _cancelTimer(self) -> None:
        timer, self._timer = self._timer, None
        if timer is not None and timer.active():
            timer.cancel()

    def _timedOut(self) -> None:
        self._timer = None
        connected = self.protocol is not None
        self.settle(False, "no response in time" if connected else "connect timed out")
        self.abandon()

    def abandon(self) -> None:
        """
        Stop the probe without an outcome (the checks are stopping), or cut
        what is left of one that is over.
        """
        self.deferred = None
        self._cancelTimer()
        protocol = self.protocol
        if protocol is not None:
            if protocol.transport is not None:
                protocol.transport.abortConnection()
        elif self.connector is not None:
            connector, self.connector = self.connector, None
            connector.stopConnecting()


class HealthChecker(Service):
    """
    Probes every node of a L{txrouter.routing.health.NodeHealth} each
    C{interval} seconds while running (the first round at start), and tells
    it the outcomes.

    @ivar health: the L{txrouter.routing.health.NodeHealth} told.
    @ivar interval: seconds between two probes of a node.
    @ivar timeout: seconds a probe may take.
    @ivar path: the path HTTP nodes are asked for.
    @ivar proxyHeader: the PROXY protocol header each probe starts with
        (L{proxyHeaderFor}), or nothing.
    """

    def __init__(self, reactor, health, interval: float, timeout: "float | None" = None,
                 path: str = "/", proxyHeader: bytes = b"") -> None:
        """
        @param timeout: seconds a probe may take; L{None} for C{interval}
            (HAProxy's default when there is no C{timeout check}).
        """
        self.proxyHeader = proxyHeader
        self.reactor = reactor
        self.health = health
        self.interval = interval
        self.timeout = interval if timeout is None else timeout
        self.path = path
        self._probes = {}
        self._loop = None

    def startService(self) -> None:
        Service.startService(self)
        self._loop = LoopingCall(self.checkAll)
        self._loop.clock = self.reactor
        self._loop.start(self.interval, now=True)

    def stopService(self):
        Service.stopService(self)
        loop, self._loop = self._loop, None
        if loop is not None and loop.running:
            loop.stop()
        probes, self._probes = self._probes, {}
        for probe in probes.values():
            probe.abandon()

    def checkAll(self) -> None:
        """
        Probe each node that has no probe under way.
        """
        for node in self.health.nodes:
            if node in self._probes:
                continue
            probe = NodeProbe(self.reactor, node, self.timeout, self.path, self.proxyHeader)
            self._probes[node] = probe
            probe.deferred.addCallback(self._outcome, probe)
            probe.start()

    def _outcome(self, result, probe) -> None:
        if self._probes.get(probe.node) is not probe:
            return
        del self._probes[probe.node]
        if probe.node not in self.health.nodes:
            # A reload (SIGHUP) took the node out of the list meanwhile.
            return
        passed, reason = result
        if passed:
            self.health.passed(probe.node, reason)
        else:
            self.health.failed(probe.node, reason)
