"""
The PROXY protocol on a listener (txrouter.proxyprotocol): who may send a
header, what happens to a missing, malformed or late one, the client's
address as the protocol sees it (through TLS too), and the wrapper out of
the way once the header is read.
"""

import shutil
import tempfile

from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IHalfCloseableProtocol, ISSLTransport
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.ssl import (
    Certificate, CertificateOptions, PrivateCertificate, optionsForClientTLS,
)
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import globalLogPublisher
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.failure import Failure
from twisted.python.filepath import FilePath
from twisted.test.iosim import FakeTransport, connect
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from tests.certs import selfSigned
from tests.logs import named
from txrouter.proxyprotocol import (
    ProxyHeaderFactory, ProxySources, proxiedHTTPS, proxyHeaderFor, proxyHeaderOf,
    proxyProtocolWrapper, serverNameOf,
)
from txrouter.transports import listeningReactor
from txrouter.trust import AddressSet
from txrouter.wire.proxy import (
    PP2_TYPE_SSL, ProxyHeader, ProxyHeaderParser, encodeV1, encodeV2,
)

PROXY_HOST = IPv4Address("TCP", "10.0.0.1", 40000)
OTHER_HOST = IPv4Address("TCP", "10.9.9.9", 40001)
LISTENER = IPv4Address("TCP", "10.0.0.9", 8080)
V1 = b"PROXY TCP4 192.0.2.1 198.51.100.7 56324 443\r\n"
REQUEST = b"GET / HTTP/1.1\r\nHost: h\r\n\r\n"


class Recorder(Protocol):
    """
    What a router's session sees of its connection.
    """

    def __init__(self) -> None:
        self.received = []
        self.lost = []

    def connectionMade(self) -> None:
        self.peer = self.transport.getPeer()
        self.host = self.transport.getHost()

    def dataReceived(self, data: bytes) -> None:
        self.received.append(data)

    def connectionLost(self, reason) -> None:
        self.lost.append(reason)


@implementer(IHalfCloseableProtocol)
class HalfCloseableRecorder(Recorder):
    readClosed = False

    def readConnectionLost(self) -> None:
        self.readClosed = True

    def writeConnectionLost(self) -> None:
        pass


class RecorderFactory(Factory):
    protocol = Recorder

    def __init__(self) -> None:
        self.built = []
        self.addresses = []

    def buildProtocol(self, addr):
        self.addresses.append(addr)
        protocol = Factory.buildProtocol(self, addr)
        self.built.append(protocol)
        return protocol


class Connection:
    """
    One accepted connection, driven as a port and a socket transport
    would: every read goes to C{transport.protocol}.
    """

    def __init__(self, factory, peer=PROXY_HOST, host=LISTENER) -> None:
        self.transport = StringTransport(hostAddress=host, peerAddress=peer)
        protocol = factory.buildProtocol(peer)
        self.transport.protocol = protocol
        self.first = protocol
        protocol.makeConnection(self.transport)

    def receive(self, *pieces) -> None:
        for piece in pieces:
            self.transport.protocol.dataReceived(piece)

    def lose(self) -> None:
        self.transport.protocol.connectionLost(Failure(ConnectionDone()))

    @property
    def closed(self) -> bool:
        return self.transport.disconnecting


class Fixture(SynchronousTestCase):
    def setUp(self) -> None:
        self.events = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)
        self.clock = Clock()
        self.inner = RecorderFactory()

    def factory(self, sources=("10.0.0.1",), stud=(), timeout=5.0, enabled=True, **kw):
        return ProxyHeaderFactory(
            self.inner, self.clock, ProxySources(sources) if enabled else None,
            AddressSet(stud), timeout, **kw,
        )

    def assertRefused(self, connection, event):
        self.assertTrue(connection.closed)
        self.assertEqual([e["event"] for e in self.events if "event" in e], [event])
        self.assertEqual(self.inner.built, [])


class TrustedSourceTests(Fixture):
    """
    A source listed by C{--proxy-protocol-from} must send a header; its
    source becomes the client's address.
    """

    def test_v1_header(self):
        connection = Connection(self.factory())
        self.assertEqual(self.inner.built, [])
        connection.receive(V1 + REQUEST[:5], REQUEST[5:])
        [session] = self.inner.built
        self.assertEqual(session.peer, IPv4Address("TCP", "192.0.2.1", 56324))
        self.assertEqual(session.host, IPv4Address("TCP", "198.51.100.7", 443))
        self.assertEqual(self.inner.addresses, [IPv4Address("TCP", "192.0.2.1", 56324)])
        self.assertEqual(b"".join(session.received), REQUEST)
        self.assertEqual(proxyHeaderOf(session.transport).version, 1)
        self.assertFalse(proxiedHTTPS(session.transport))
        self.assertFalse(connection.closed)
        self.assertEqual(self.events, [])

    def test_the_wrapper_leaves_the_data_path(self):
        """
        Once the header is read, the transport's protocol is the wrapped
        factory's: later reads go straight to it.
        """
        connection = Connection(self.factory())
        connection.receive(V1)
        [session] = self.inner.built
        self.assertIs(connection.transport.protocol, session)
        self.assertIs(session.transport, connection.transport)
        connection.receive(b"abc")
        self.assertEqual(session.received, [b"abc"])
        connection.lose()
        self.assertEqual(len(session.lost), 1)

    def test_header_byte_by_byte(self):
        connection = Connection(self.factory())
        data = encodeV2(("2001:db8::7", 1234), ("2001:db8::1", 443), sni="www.example") + REQUEST
        for i in range(len(data)):
            connection.receive(data[i:i + 1])
        [session] = self.inner.built
        self.assertEqual(session.peer, IPv6Address("TCP", "2001:db8::7", 1234))
        self.assertEqual(session.host, IPv6Address("TCP", "2001:db8::1", 443))
        self.assertEqual(b"".join(session.received), REQUEST)
        self.assertEqual(proxyHeaderOf(session.transport).authority, "www.example")
        self.assertEqual(serverNameOf(session.transport), "www.example")

    def test_second_header_is_the_applications(self):
        """
        A second PROXY header on the connection is never read as one: the
        wrapped protocol receives it verbatim (the HTTP router refuses it
        as a request line).
        """
        connection = Connection(self.factory())
        second = b"PROXY TCP4 6.6.6.6 198.51.100.7 1 443\r\n"
        connection.receive(V1 + second[:10], second[10:])
        [session] = self.inner.built
        self.assertEqual(b"".join(session.received), second)
        self.assertEqual(session.transport.getPeer().host, "192.0.2.1")

    def test_keeps_the_socket_addresses(self):
        """
        v2 LOCAL and v1 UNKNOWN: the socket's addresses stay.
        """
        for header in [encodeV2(None, None), b"PROXY UNKNOWN\r\n"]:
            self.inner.built.clear()
            connection = Connection(self.factory())
            connection.receive(header + b"x")
            [session] = self.inner.built
            self.assertEqual((session.peer, session.host), (PROXY_HOST, LISTENER))
            self.assertEqual(session.received, [b"x"])
            self.assertIsNotNone(proxyHeaderOf(session.transport))

    def test_tls_to_the_proxy(self):
        """
        A v2 SSL TLV with the client bit marks the connection HTTPS.
        """
        connection = Connection(self.factory())
        connection.receive(encodeV2(("1.2.3.4", 5), ("5.6.7.8", 443), [(PP2_TYPE_SSL, b"\x01" + bytes(4))]))
        self.assertTrue(proxiedHTTPS(self.inner.built[0].transport))

    def test_missing(self):
        connection = Connection(self.factory())
        connection.receive(REQUEST)
        self.assertRefused(connection, "proxy_missing")

    def test_malformed(self):
        connection = Connection(self.factory())
        connection.receive(b"PROXY TCP4 1.2.3.4  5.6.7.8 1 2\r\n")
        self.assertRefused(connection, "proxy_malformed")

    def test_bad_tlv(self):
        header = encodeV2(("1.2.3.4", 5), ("5.6.7.8", 443), [(0xE0, b"abc")])
        connection = Connection(self.factory())
        connection.receive(header[:-1])
        self.assertEqual(self.inner.built, [])
        connection.receive(header[-1:])
        self.assertEqual(len(self.inner.built), 1)
        self.inner.built.clear()
        broken = bytearray(header)
        broken[-4] = 9
        connection = Connection(self.factory())
        connection.receive(bytes(broken))
        self.assertRefused(connection, "proxy_bad_tlv")

    def test_bounded(self):
        """
        A header that never ends is refused at its bound, not buffered.
        """
        connection = Connection(self.factory())
        connection.receive(b"PROXY UNKNOWN ")
        for _ in range(10):
            connection.receive(b"x" * 50)
        self.assertRefused(connection, "proxy_too_long")
        # Refused in the write that crossed 107 bytes.
        self.assertEqual(connection.first._received, 14 + 50 * 2)

    def test_deadline(self):
        """
        A header not whole within the deadline closes the connection; once
        read, no call is left on the clock.
        """
        connection = Connection(self.factory(timeout=3.0))
        connection.receive(V1[:10])
        self.clock.advance(2.9)
        self.assertFalse(connection.closed)
        self.clock.advance(0.1)
        self.assertRefused(connection, "proxy_timeout")
        connection.receive(V1[10:])
        self.assertEqual(self.inner.built, [])

        self.events.clear()
        connection = Connection(self.factory(timeout=3.0))
        connection.receive(V1)
        self.clock.advance(10)
        self.assertFalse(connection.closed)
        self.assertEqual(self.events, [])

    def test_closed_before_the_header_ended(self):
        connection = Connection(self.factory())
        connection.receive(V1[:10])
        connection.lose()
        self.assertEqual(len(named(self.events, "proxy_incomplete")), 1)
        self.clock.advance(10)
        self.assertEqual(len(self.events), 1)

    def test_closed_without_a_byte(self):
        """
        A connection closed unused (a load balancer's TCP check) is not
        worth a log line.
        """
        connection = Connection(self.factory())
        connection.lose()
        self.clock.advance(10)
        self.assertEqual(self.events, [])

    def test_refused_by_the_wrapped_factory(self):
        self.inner.buildProtocol = lambda addr: None
        connection = Connection(self.factory())
        connection.receive(V1)
        self.assertTrue(connection.closed)

    def test_ipv4_client_of_an_ipv6_listener(self):
        mapped = IPv6Address("TCP", "::ffff:10.0.0.1", 40000)
        connection = Connection(self.factory(), peer=mapped)
        connection.receive(V1)
        self.assertEqual(self.inner.built[0].peer.host, "192.0.2.1")

    def test_unix_listener(self):
        """
        With C{unix} among the sources, the peers of a UNIX listener send
        a header, whose source becomes theirs.
        """
        peer, host = UNIXAddress(None), UNIXAddress(b"/run/router.sock")
        connection = Connection(self.factory(sources=["unix"]), peer=peer, host=host)
        connection.receive(V1 + b"x")
        [session] = self.inner.built
        self.assertEqual(session.peer, IPv4Address("TCP", "192.0.2.1", 56324))
        self.assertEqual(session.received, [b"x"])

        self.inner.built.clear()
        connection = Connection(self.factory(sources=["10.0.0.0/8"]), peer=peer, host=host)
        connection.receive(b"x")
        self.assertEqual(self.inner.built[0].peer, peer)


class UntrustedSourceTests(Fixture):
    """
    Any other source is served as it is, unless it sends a PROXY header.
    """

    def test_served_as_it_is(self):
        connection = Connection(self.factory(), peer=OTHER_HOST)
        # Connected before any byte: a protocol may speak first.
        [session] = self.inner.built
        self.assertEqual(session.peer, OTHER_HOST)
        connection.receive(REQUEST[:1])
        self.assertIs(connection.transport.protocol, session)
        connection.receive(REQUEST[1:])
        self.assertEqual(b"".join(session.received), REQUEST)
        self.assertEqual(self.events, [])

    def test_held_until_decided(self):
        """
        Bytes that may begin a header wait (never more than 11) until they
        cannot, and then arrive in order.
        """
        connection = Connection(self.factory(), peer=OTHER_HOST)
        [session] = self.inner.built
        connection.receive(b"P", b"RO", b"PFIND / HTTP/1.1\r\n")
        self.assertEqual(b"".join(session.received), b"PROPFIND / HTTP/1.1\r\n")
        self.assertIs(connection.transport.protocol, session)

    def test_proxy_header_refused(self):
        for header in [V1, encodeV2(("1.2.3.4", 5), ("5.6.7.8", 443))]:
            self.events.clear()
            connection = Connection(self.factory(), peer=OTHER_HOST)
            session = self.inner.built[-1]
            for i in range(len(header)):
                connection.receive(header[i:i + 1])
            self.assertTrue(connection.closed)
            self.assertEqual([e["event"] for e in self.events], ["proxy_untrusted"])
            self.assertEqual(session.received, [])
            connection.lose()
            self.assertEqual(len(session.lost), 1)

    def test_half_close_while_undecided(self):
        """
        The client's FIN while its bytes may still begin a header: they
        are its request, and the protocol hears of the FIN after them.
        """
        self.inner.protocol = HalfCloseableRecorder
        connection = Connection(self.factory(), peer=OTHER_HOST)
        connection.receive(b"PRO")
        IHalfCloseableProtocol(connection.transport.protocol).readConnectionLost()
        [session] = self.inner.built
        self.assertEqual(session.received, [b"PRO"])
        self.assertTrue(session.readClosed)

        self.inner.protocol = Recorder
        connection = Connection(self.factory(), peer=OTHER_HOST)
        connection.receive(b"PRO")
        IHalfCloseableProtocol(connection.transport.protocol).readConnectionLost()
        self.assertEqual(self.inner.built[-1].received, [b"PRO"])
        self.assertTrue(connection.closed)

    def test_no_wrapper_without_the_protocol(self):
        """
        With the PROXY protocol off (a stud prefix alone), connections from
        other sources get the wrapped factory's protocol itself.
        """
        factory = self.factory(enabled=False, stud=["10.0.0.1"])
        connection = Connection(factory, peer=OTHER_HOST)
        self.assertIs(connection.first, self.inner.built[0])


class StudPrefixTests(Fixture):
    """
    uWSGI's C{--http-stud-prefix}: five bytes from a TLS terminator.
    """

    def test_prefix(self):
        connection = Connection(self.factory(enabled=False, stud=["10.0.0.1"]))
        connection.receive(b"\x02\xc0\x00", b"\x02\x01" + REQUEST)
        [session] = self.inner.built
        self.assertEqual(session.peer, IPv4Address("TCP", "192.0.2.1", 0))
        self.assertEqual(session.host, LISTENER)
        self.assertTrue(proxiedHTTPS(session.transport))
        self.assertEqual(b"".join(session.received), REQUEST)

    def test_malformed(self):
        connection = Connection(self.factory(enabled=False, stud=["10.0.0.1"]))
        connection.receive(REQUEST)
        self.assertRefused(connection, "stud_prefix_malformed")

    def test_deadline(self):
        connection = Connection(self.factory(enabled=False, stud=["10.0.0.1"]))
        connection.receive(b"\x02")
        self.clock.advance(5)
        self.assertRefused(connection, "stud_prefix_timeout")


class TLSTests(Fixture):
    """
    In front of a TLS listener's protocol: the header comes before the
    ClientHello, and the session under TLS sees the header's addresses.
    """

    def test_through_tls(self):
        # Not self.mktemp(): under pytest it litters the working directory.
        directory = FilePath(tempfile.mkdtemp(prefix="txrouter-proxy-"))
        self.addCleanup(shutil.rmtree, directory.path, True)
        keyPath, certPath, certPEM = selfSigned(directory.path)
        serverOptions = PrivateCertificate.loadPEM(keyPath.read_bytes() + certPEM).options()
        self.inner = RecorderFactory()
        proxyFactory = ProxyHeaderFactory(
            TLSMemoryBIOFactory(serverOptions, False, self.inner, self.clock), self.clock,
            ProxySources(["10.0.0.1"]),
        )

        class Hello(Protocol):
            def connectionMade(self):
                self.transport.write(b"hello over TLS")

        clientTLS = TLSMemoryBIOFactory(
            optionsForClientTLS("localhost", Certificate.loadPEM(certPEM)), True,
            Factory.forProtocol(Hello), self.clock,
        ).buildProtocol(LISTENER)

        class HeaderFirst(Protocol):
            def makeConnection(self, transport):
                transport.write(encodeV2(("192.0.2.1", 56324), ("198.51.100.7", 443), sni="localhost"))
                transport.protocol = clientTLS
                clientTLS.makeConnection(transport)

        serverProtocol = proxyFactory.buildProtocol(PROXY_HOST)
        serverTransport = FakeTransport(serverProtocol, True, LISTENER, PROXY_HOST)
        clientProtocol = HeaderFirst()
        clientTransport = FakeTransport(clientProtocol, False, PROXY_HOST, LISTENER)
        connect(serverProtocol, serverTransport, clientProtocol, clientTransport, clock=self.clock)

        [session] = self.inner.built
        self.assertEqual(b"".join(session.received), b"hello over TLS")
        self.assertTrue(ISSLTransport.providedBy(session.transport))
        self.assertEqual(session.transport.getPeer(), IPv4Address("TCP", "192.0.2.1", 56324))
        self.assertEqual(session.peer, IPv4Address("TCP", "192.0.2.1", 56324))
        self.assertEqual(session.transport.getHost(), IPv4Address("TCP", "198.51.100.7", 443))
        self.assertEqual(proxyHeaderOf(session.transport).authority, "localhost")
        self.assertEqual(serverNameOf(session.transport), "localhost")
        self.assertEqual(self.events, [])


class ListeningReactorTests(SynchronousTestCase):
    """
    C{listeningReactor(reactor, wrap)}: the wrapping is outside TLS.
    """

    def test_wraps_the_outermost_factory(self):
        reactor = MemoryReactorClock()
        wrapped = []

        def wrap(factory):
            wrapped.append(factory)
            return ProxyHeaderFactory(factory, reactor, ProxySources(["10.0.0.1"]))

        listening = listeningReactor(reactor, wrap)
        factory = Factory.forProtocol(Protocol)
        listening.listenTCP(80, factory)
        listening.listenSSL(443, factory, CertificateOptions())
        listening.listenUNIX("/tmp/x.sock", factory)
        self.assertIs(wrapped[0], factory)
        self.assertIsInstance(wrapped[1], TLSMemoryBIOFactory)
        self.assertIs(wrapped[1].wrappedFactory, factory)
        self.assertIs(wrapped[2], factory)
        self.assertEqual(
            [type(port[1]) for port in reactor.tcpServers], [ProxyHeaderFactory, ProxyHeaderFactory]
        )
        self.assertIsInstance(reactor.unixServers[0][1], ProxyHeaderFactory)

    def test_no_wrap(self):
        reactor = MemoryReactorClock()
        self.assertIs(listeningReactor(reactor), reactor)


class OptionsTests(SynchronousTestCase):
    def test_off(self):
        self.assertIsNone(proxyProtocolWrapper(Clock()))

    def test_wrapper(self):
        wrap = proxyProtocolWrapper(Clock(), True, ["10.0.0.0/8", "unix"], 2.5, ["10.1.1.1"])
        factory = wrap(Factory())
        self.assertIsInstance(factory, ProxyHeaderFactory)
        self.assertEqual(factory.timeout, 2.5)
        self.assertTrue(factory.proxyFrom.unix)
        self.assertTrue(factory.studFrom.contains("10.1.1.1"))

    def test_mistakes(self):
        for args in [(True, []), (True, ["nonsense"]), (False, [], 5.0, ["::1"]),
                     (True, ["10.0.0.1"], 0)]:
            self.assertRaises(ValueError, proxyProtocolWrapper, Clock(), *args)


class SendProxyTests(SynchronousTestCase):
    """
    The header a router sends its node (C{--send-proxy}, C{--send-proxy-v2}).
    """

    def parse(self, data: bytes) -> ProxyHeader:
        header, rest = ProxyHeaderParser().feed(data)
        self.assertEqual(rest, b"")
        return header

    def test_v1(self):
        data = proxyHeaderFor(1, IPv4Address("TCP", "192.0.2.1", 5), LISTENER)
        self.assertEqual(data, b"PROXY TCP4 192.0.2.1 10.0.0.9 5 8080\r\n")

    def test_v2_with_sni(self):
        header = self.parse(proxyHeaderFor(
            2, IPv6Address("TCP", "2001:db8::1", 5), IPv6Address("TCP", "::1", 443), "a.example"
        ))
        self.assertEqual((header.source, header.destination), (("2001:db8::1", 5), ("::1", 443)))
        self.assertEqual(header.authority, "a.example")

    def test_unix_client(self):
        peer, host = UNIXAddress(None), UNIXAddress(b"/run/r.sock")
        self.assertEqual(proxyHeaderFor(1, peer, host), b"PROXY UNKNOWN\r\n")
        self.assertEqual(self.parse(proxyHeaderFor(2, peer, host)).command, "local")

    def test_the_proxied_client(self):
        """
        A client that came with a PROXY header is sent on under its
        address.
        """
        connection = Connection(ProxyHeaderFactory(
            RecorderFactory(), Clock(), ProxySources(["10.0.0.1"])
        ))
        connection.receive(encodeV1(("192.0.2.1", 56324), ("198.51.100.7", 443)))
        transport = connection.transport
        data = proxyHeaderFor(2, transport.getPeer(), transport.getHost(), serverNameOf(transport))
        self.assertEqual(self.parse(data).source, ("192.0.2.1", 56324))
