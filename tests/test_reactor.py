"""
L{txrouter.reactor.RouterReactor} is an epoll reactor: Twisted's own reactor
conformance tests (TCP and TLS included) run against it, those on the log
context it no longer sets replaced by tests of what it does instead, and
the one Twisted skips for its epoll reactor left out; its listening, TLS
and UNIX tests run again with the router's listening transports; calls
asked for while events are handled run before the next poll; errors
escaping a dispatch are logged and the loop goes on; and the router
plugins run on it unless told otherwise.
"""

import os
import socket
import subprocess
import sys

import pytest

from twisted.internet.protocol import DatagramProtocol, Factory, Protocol
from twisted.internet.test import (
    test_core, test_fdset, test_tcp, test_threads, test_time, test_tls, test_udp, test_unix,
)
from twisted.internet.test.connectionmixins import ConnectableProtocol, runProtocolsWithReactor
from twisted.logger import formatEvent
from twisted.python import context
from twisted.python.log import ILogContext

from tests.realpeers import (
    ROOT, TWISTD_COMMAND, Process, curl, free_port, uwsgi_worker, wait_for_tcp,
)
from txrouter.reactor import RouterReactor

_REACTOR = "txrouter.reactor.RouterReactor"
_LISTENING = "tests.routerlisteners.ListeningAsRouters"

# Twisted's test_badContext gives a legacy context factory on purpose.
pytestmark = pytest.mark.filterwarnings("ignore:.*does not explicitly provide any OpenSSL")


class _Divergences:
    """
    What RouterReactor answers differently from Twisted's epoll reactor,
    on purpose.
    """

    def test_logPrefix(self):
        """
        Transports still name their protocol in C{logPrefix()}, but an event
        is handled outside any legacy log context (that context is what the
        dispatch no longer pays for).
        """
        class Recording(ConnectableProtocol):
            def __init__(self, prefix):
                self._prefix = prefix
                self.system = self.transportPrefix = None

            def connectionMade(self):
                self.transport.write(b"a")

            def logPrefix(self):
                return self._prefix

            def dataReceived(self, data):
                self.system = context.get(ILogContext)["system"]
                self.transportPrefix = self.transport.logPrefix()
                self.transport.write(b"b")
                if b"b" in data:
                    self.transport.loseConnection()

        client, server = Recording("Custom Client"), Recording("Custom Server")
        runProtocolsWithReactor(self, server, client, self.endpoints)
        assert "Custom Client" in client.transportPrefix
        assert "Custom Server" in server.transportPrefix
        assert client.system == server.system == "-"

    def test_datagramLogPrefix(self):
        """
        The same for a datagram transport.
        """
        reactor = self.buildReactor()
        seen = []

        class Recording(DatagramProtocol):
            def logPrefix(self):
                return "Custom Datagrams"

            def datagramReceived(self, data, address):
                seen.append((context.get(ILogContext)["system"], self.transport.logPrefix()))
                reactor.stop()

        port = self.getListeningPort(reactor, Recording())
        sender = reactor.listenUDP(0, DatagramProtocol(), interface="127.0.0.1")
        sender.write(b"x", ("127.0.0.1", port.getHost().port))
        self.runReactor(reactor)
        assert seen == [("-", "Custom Datagrams (UDP)")]


def _conformance(builder, reactorName=_REACTOR):
    """
    Twisted's test case classes of C{builder}, for RouterReactor (or the
    reactor named) only.
    """
    replaced = {}
    if hasattr(builder, "test_logPrefix"):
        replaced["test_logPrefix"] = _Divergences.test_logPrefix
    if hasattr(builder, "test_lostFileDescriptor"):
        # Not a test: Twisted skips it for its epoll reactor by class name
        # (epoll forgets a closed descriptor without telling anyone), and
        # RouterReactor is that reactor.
        replaced["test_lostFileDescriptor"] = None
    if issubclass(builder, test_udp.UDPServerTestsBuilder):
        replaced["test_logPrefix"] = _Divergences.test_datagramLogPrefix
    name = builder.__name__ if reactorName == _REACTOR else builder.__name__ + "_OurListeners"
    ours = type(name, (builder,), {"_reactors": [reactorName], **replaced})
    return ours.makeTestCaseClasses()


for _builder in [
    test_core.SystemEventTestsBuilder,
    test_time.TimeTestsBuilder,
    test_threads.ThreadTestsBuilder,
    test_fdset.ReactorFDSetTestsBuilder,
    test_tcp.TCPConnectionTestsBuilder,
    test_tcp.TCP4ClientTestsBuilder,
    test_tcp.TCP6ClientTestsBuilder,
    test_tcp.TCP4ConnectorTestsBuilder,
    test_tcp.TCP6ConnectorTestsBuilder,
    test_tcp.TCPPortTestsBuilder,
    test_tcp.TCPFDPortTestsBuilder,
    test_tcp.TCPTransportTestsBuilder,
    test_tcp.AdoptStreamConnectionTestsBuilder,
    test_tcp.TestBindAddressBuilder,
    test_tcp.AbortConnectionTests,
    test_tls.SSLClientTestsMixin,
    test_tls.StartTLSClientTestsMixin,
    test_tls.TLSPortTestsBuilder,
    test_tls.AbortSSLConnectionTests,
    test_unix.UNIXTestsBuilder,
    test_unix.UNIXPortTestsBuilder,
    test_unix.UNIXDatagramTestsBuilder,
    test_udp.UDPServerTestsBuilder,
]:
    globals().update(_conformance(_builder))

for _builder in [
    test_tcp.TCP4ClientTestsBuilder,
    test_tcp.TCPPortTestsBuilder,
    test_tcp.TCPConnectionTestsBuilder,
    test_tcp.TCPTransportTestsBuilder,
    test_tcp.AbortConnectionTests,
    test_tls.SSLClientTestsMixin,
    test_tls.StartTLSClientTestsMixin,
    test_tls.TLSPortTestsBuilder,
    test_tls.AbortSSLConnectionTests,
    test_unix.UNIXTestsBuilder,
    test_unix.UNIXPortTestsBuilder,
]:
    globals().update(_conformance(_builder, _LISTENING))


class _BrokenOnClose(Protocol):
    def connectionLost(self, reason):
        raise RuntimeError("connectionLost blew up")


def test_an_error_out_of_a_dispatch_is_logged_and_the_loop_goes_on(events):
    reactor = RouterReactor()
    broken, peer = socket.socketpair()
    survivor, survivorPeer = socket.socketpair()
    received = []

    class Receiving(Protocol):
        def dataReceived(self, data):
            received.append(data)
            reactor.stop()

    for skt, protocol in ((broken, _BrokenOnClose()), (survivor, Receiving())):
        skt.setblocking(False)
        transport = reactor.adoptStreamConnection(skt.fileno(), socket.AF_UNIX, _factory(protocol))
        del transport
    broken.close()
    survivor.close()
    peer.close()  # EOF for the broken one: its connectionLost raises
    reactor.callLater(0.05, survivorPeer.send, b"still here")
    reactor.callLater(5, reactor.stop)
    reactor.run()
    survivorPeer.close()
    assert received == [b"still here"]
    [failure] = [e for e in events if "log_failure" in e]
    assert failure["log_failure"].check(RuntimeError)
    assert failure["log_namespace"] == "txrouter.reactor"
    assert "_BrokenOnClose" in formatEvent(failure)


class _RecordingPoller:
    """
    The reactor's epoll object, recording each poll in C{order}.
    """

    def __init__(self, poller, order) -> None:
        self._poller = poller
        self._order = order

    def poll(self, *args):
        self._order.append("poll")
        return self._poller.poll(*args)

    def __getattr__(self, name):
        return getattr(self._poller, name)


def test_calls_after_events_run_before_the_next_poll(events):
    """
    A call asked for while an event is handled runs once the handler has
    returned, before the reactor polls again, with those it asks for in
    turn; one that raises is logged and the others still run.  Asked for
    outside any event, it runs on the next iteration.
    """
    reactor = RouterReactor()
    order = []
    ours, peer = socket.socketpair()

    def fails():
        order.append("fails")
        raise RuntimeError("after events")

    class Receiving(Protocol):
        def dataReceived(self, data):
            reactor.callAfterEvents(order.append, "after")
            reactor.callAfterEvents(fails)
            reactor.callAfterEvents(lambda: reactor.callAfterEvents(order.append, "nested"))
            order.append("handled")
            reactor.callLater(0, reactor.stop)

    ours.setblocking(False)
    reactor.adoptStreamConnection(ours.fileno(), socket.AF_UNIX, _factory(Receiving()))
    ours.close()
    reactor.callAfterEvents(order.append, "before running")
    reactor._poller = _RecordingPoller(reactor._poller, order)
    peer.send(b"x")
    reactor.callLater(5, reactor.stop)
    reactor.run()
    peer.close()
    assert order[0] == "before running"
    firstData = order.index("handled")
    assert order[firstData - 1:firstData + 5] == [
        "poll", "handled", "after", "fails", "nested", "poll",
    ]
    [failure] = [e for e in events if "log_failure" in e]
    assert failure["log_failure"].check(RuntimeError)


def _factory(protocol):
    factory = Factory()
    factory.buildProtocol = lambda address: protocol
    return factory


def _reactorOfMakeService(*before):
    script = "\n".join([
        *before,
        "from txrouter.tap import http",
        "options = http.Options()",
        "options.parseOptions(['--bind', 'tcp:0:interface=127.0.0.1', '--to', '/x.sock'])",
        "http.makeService(options)",
        "from twisted.internet import reactor",
        "print(type(reactor).__module__ + '.' + type(reactor).__name__)",
    ])
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=60, check=True)
    return result.stdout.strip()


def test_the_plugins_install_it_when_no_reactor_is_chosen():
    assert _reactorOfMakeService() == _REACTOR


def test_a_reactor_chosen_before_is_kept():
    chosen = _reactorOfMakeService("from twisted.internet import pollreactor", "pollreactor.install()")
    assert chosen == "twisted.internet.pollreactor.PollReactor"


@pytest.mark.e2e
@pytest.mark.parametrize("reactorArgs, reactorClass", [
    (["-r", "txrouter"], _REACTOR),
    ([], "twisted.internet.epollreactor.EPollReactor"),
])
def test_the_example_tac_runs_as_documented(tmp_path, reactorArgs, reactorClass):
    """
    C{twistd -r txrouter -ny examples/router.tac} (its port and nodes moved
    here as its docstring says) routes to real uWSGI workers; so does the
    same without C{-r}, on twistd's own reactor.
    """
    port, sock = free_port(), str(tmp_path / "app.sock")
    tac = ROOT / "examples" / "router.tac"
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env["TXROUTER_BIND"] = f"tcp:{port}:interface=127.0.0.1"
    env["TXROUTER_NODES"] = f"{sock} {sock}"
    with uwsgi_worker(tmp_path, sock), Process(
        [*TWISTD_COMMAND, *reactorArgs, "-n", "--pidfile=", "-y", str(tac)],
        tmp_path / "router.log", env=env,
    ) as router:
        wait_for_tcp(port, process=router)
        result = curl(f"http://127.0.0.1:{port}/hello")
        assert result.returncode == 0 and b"/hello" in result.stdout
        assert f"reactor class: {reactorClass}." in router.log()
