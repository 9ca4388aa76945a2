"""
The PROXY protocol on a router's listeners: the client's address as the
proxy in front says it, from the sources the operator trusts, and the
header for the next hop.

L{ProxyHeaderFactory} wraps the outermost factory of a listener (around
the TLS layer of a TLS listener: the header comes before the
C{ClientHello}); L{proxyProtocolWrapper} makes the wrapping from the
command line's options, for L{txrouter.transports.listeningReactor}.
The rules, by the connection's source (its socket's peer):

  - listed by C{--http-stud-prefix}: the connection must begin with
    uWSGI's stud prefix (L{txrouter.wire.proxy.StudPrefixParser});
  - listed by C{--proxy-protocol-from}: it must begin with a PROXY header,
    version 1 or 2;
  - any other source, while the PROXY protocol is on: it is served as it
    is, under its socket's address, unless it begins with a PROXY header,
    which closes it (a client claiming another's address);
  - the PROXY protocol off: the wrapped factory's protocol, nothing else.

A header that is malformed, missing, or not whole within the deadline
closes the connection, with one log line naming the event.  Once the
header is read, the wrapped factory builds its protocol for the header's
source and the transport is handed to it (C{transport.protocol}): no
wrapper stays between the socket and the protocol, and bytes after the
header (a second PROXY header among them) are the protocol's own.

What the header says is on the transport, where everything in txrouter
looks (through a TLS layer too, which asks its transport):
C{getPeer()} returns the header's source (an C{IPv4Address} or
C{IPv6Address} with the client's port) and C{getHost()} its destination
(the address the client connected to at the proxy); a version 2 C{LOCAL},
a version 1 C{UNKNOWN} or a family without IP addresses (UNSPEC, UNIX)
keeps the socket's.  C{transport.proxyHeader} is the
L{txrouter.wire.proxy.ProxyHeader} (its TLVs, the server name the client
asked for: L{proxyHeaderOf}), and C{transport.proxyHTTPS} is true when the
proxy says the client spoke TLS to it (a stud prefix, or a version 2
C{PP2_TYPE_SSL} TLV): L{proxiedHTTPS}.
"""

from typing import Optional

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.interfaces import IHalfCloseableProtocol, ILoggingContext
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from zope.interface import implementer

from txrouter.timers import IdleTimer
from txrouter.trust import AddressSet
from txrouter.wire.proxy import (
    DEFAULT_MAX_TLV_BYTES, ProxyHeaderError, ProxyHeaderParser, StudPrefixParser,
    encodeV1, encodeV2, startsProxyHeader,
)

__all__ = [
    "DEFAULT_TIMEOUT", "ProxyHeaderFactory", "ProxySources", "proxiedHTTPS", "proxyHeaderFor",
    "proxyHeaderOf", "proxyProtocolWrapper", "serverNameOf",
]

log = Logger(namespace="txrouter.proxyprotocol")

#: Seconds a trusted source has to send its whole header.
DEFAULT_TIMEOUT = 5.0

_ADDRESS_TYPES = {"tcp4": IPv4Address, "tcp6": IPv6Address}


class ProxySources:
    """
    The sources allowed to send a PROXY header (C{--proxy-protocol-from},
    repeatable): IP networks as CIDR or single addresses, and the word
    C{unix} for every peer of a UNIX socket listener (whose file mode
    decides who may connect).

    An IPv4 client of an IPv6 listener (C{::ffff:a.b.c.d}) is matched
    under its IPv4 address too.
    """

    def __init__(self, values=()) -> None:
        """
        @raise ValueError: a value is neither C{unix} nor an IP network.
        """
        values = list(values)
        self.unix = "unix" in values
        self.addresses = AddressSet(value for value in values if value != "unix")

    def __bool__(self) -> bool:
        return self.unix or bool(self.addresses)

    def allows(self, host: Optional[str]) -> bool:
        """
        Whether a connection whose socket peer is C{host} (L{None} for a
        UNIX socket's peer) may send a header.
        """
        if host is None:
            return self.unix
        return _contains(self.addresses, host)


def _contains(addresses: AddressSet, host: str) -> bool:
    """
    Whether C{host} is in C{addresses}, an IPv4-mapped IPv6 address
    (C{::ffff:a.b.c.d}, an IPv4 client of an IPv6 listener) under its IPv4
    address too.
    """
    if addresses.contains(host):
        return True
    return host.startswith("::ffff:") and "." in host and addresses.contains(host[7:])


class ProxyHeaderFactory(Factory):
    """
    Reads the header a connection from a trusted source begins with, then
    hands the connection to C{wrappedFactory}'s protocol; see the module's
    docstring for the rules.

    @ivar wrappedFactory: the listener's factory (a TLS listener's
        C{TLSMemoryBIOFactory}).
    @ivar proxyFrom: the L{ProxySources} allowed to send a PROXY header, or
        L{None} if the PROXY protocol is off.
    @ivar studFrom: the C{AddressSet} of the sources that send uWSGI's stud
        prefix.
    @ivar timeout: seconds a source that must send a header has to send
        it whole.
    """

    noisy = False

    def __init__(
        self, wrappedFactory, reactor, proxyFrom: Optional[ProxySources] = None,
        studFrom: Optional[AddressSet] = None, timeout: float = DEFAULT_TIMEOUT,
        maxTLVBytes: int = DEFAULT_MAX_TLV_BYTES,
    ) -> None:
        self.wrappedFactory = wrappedFactory
        self.reactor = reactor
        self.proxyFrom = proxyFrom
        self.studFrom = studFrom or AddressSet()
        self.timeout = timeout
        self.maxTLVBytes = maxTLVBytes

    def logPrefix(self) -> str:
        wrapped = self.wrappedFactory
        if ILoggingContext.providedBy(wrapped):
            return f"{wrapped.logPrefix()} (PROXY)"
        return f"{type(wrapped).__name__} (PROXY)"

    def doStart(self) -> None:
        self.wrappedFactory.doStart()

    def doStop(self) -> None:
        self.wrappedFactory.doStop()

    def buildProtocol(self, addr):
        host = getattr(addr, "host", None)
        if host is not None and self.studFrom and _contains(self.studFrom, host):
            return _HeaderReader(self, StudPrefixParser(), "stud_prefix", "stud prefix")
        proxyFrom = self.proxyFrom
        if proxyFrom is None:
            return self.wrappedFactory.buildProtocol(addr)
        if proxyFrom.allows(host):
            return _HeaderReader(
                self, ProxyHeaderParser(self.maxTLVBytes), "proxy", "PROXY header"
            )
        protocol = self.wrappedFactory.buildProtocol(addr)
        if protocol is None:
            return None
        return _UntrustedPeek(protocol)


def _client(transport) -> str:
    peer = transport.getPeer()
    host = getattr(peer, "host", None)
    return host if host is not None else getattr(peer, "name", None) or "unix socket"


def _returning(address):
    def returning():
        return address
    return returning


class _HeaderReader(Protocol):
    """
    The protocol of a connection from a source that must send a header,
    until its header is read.
    """

    _deadline = None
    _received = 0

    def __init__(self, factory: ProxyHeaderFactory, parser, event: str, what: str) -> None:
        self.factory = factory
        self._parser = parser
        self._event = event
        self._what = what

    def connectionMade(self) -> None:
        # Never touched: a deadline, sharing the clock's one delayed call
        # with every other timer (txrouter.timers).
        factory = self.factory
        self._deadline = IdleTimer(factory.reactor, factory.timeout, self._timedOut)

    def dataReceived(self, data: bytes) -> None:
        parser = self._parser
        if parser is None:
            return
        self._received += len(data)
        try:
            result = parser.feed(data)
        except ProxyHeaderError as e:
            self._refuse(e.event, e.detail)
            return
        if result is not None:
            self._handOver(*result)

    def connectionLost(self, reason) -> None:
        self._stopDeadline()
        if self._parser is not None and self._received:
            self._parser = None
            log.info(
                "{event}: the connection closed after {received} bytes, before its {what} ended"
                " (client {client})",
                event=f"{self._event}_incomplete", received=self._received, what=self._what,
                client=_client(self.transport),
            )
        self._parser = None

    def _timedOut(self) -> None:
        self._deadline = None
        self._refuse(
            f"{self._event}_timeout",
            f"no whole {self._what} within {self.factory.timeout:g} s ({self._received} bytes)",
        )

    def _stopDeadline(self) -> None:
        deadline, self._deadline = self._deadline, None
        if deadline is not None:
            deadline.cancel()

    def _refuse(self, event: str, detail: str) -> None:
        self._parser = None
        self._stopDeadline()
        log.info("{event}: {detail} (client {client})",
                 event=event, detail=detail, client=_client(self.transport))
        self.transport.loseConnection()

    def _handOver(self, header, rest: bytes) -> None:
        self._parser = None
        self._stopDeadline()
        transport = self.transport
        addressType = _ADDRESS_TYPES.get(header.family)
        if addressType is not None:
            transport.getPeer = _returning(addressType("TCP", *header.source))
            if header.destination is not None:
                transport.getHost = _returning(addressType("TCP", *header.destination))
        transport.proxyHeader = header
        transport.proxyHTTPS = header.clientTLS
        protocol = self.factory.wrappedFactory.buildProtocol(transport.getPeer())
        if protocol is None:
            transport.loseConnection()
            return
        transport.protocol = protocol
        protocol.makeConnection(transport)
        if rest and not transport.disconnecting:
            protocol.dataReceived(rest)


@implementer(IHalfCloseableProtocol)
class _UntrustedPeek(Protocol):
    """
    Between the socket and the protocol of a connection from a source not
    allowed to send a PROXY header, until its first bytes show that it
    does not begin with one (at most 11 bytes are held): the connection is
    then the protocol's alone.  The protocol is connected at once, so that
    it may speak first (a raw router's node greeting its client).
    """

    def __init__(self, protocol) -> None:
        self._protocol = protocol
        self._held = b""
        self._refused = False

    def makeConnection(self, transport) -> None:
        self.transport = transport
        self.connected = 1
        self._protocol.makeConnection(transport)

    def dataReceived(self, data: bytes) -> None:
        if self._refused:
            return
        held = self._held + data
        verdict = startsProxyHeader(held)
        if verdict is None:
            self._held = held
        elif verdict:
            self._refused = True
            self._held = b""
            log.info(
                "{event}: a PROXY header from a source not in --proxy-protocol-from"
                " (client {client})",
                event="proxy_untrusted", client=_client(self.transport),
            )
            self.transport.loseConnection()
        else:
            self._handOver(held)

    def _handOver(self, held: bytes):
        protocol, transport = self._protocol, self.transport
        self._held = b""
        transport.protocol = protocol
        if held and not transport.disconnecting:
            protocol.dataReceived(held)
        return protocol

    def connectionLost(self, reason) -> None:
        self._protocol.connectionLost(reason)

    def readConnectionLost(self) -> None:
        if self._refused:
            return
        protocol = self._handOver(self._held)
        halfCloseable = IHalfCloseableProtocol(protocol, None)
        if halfCloseable is not None:
            halfCloseable.readConnectionLost()
        else:
            self.transport.loseConnection()

    def writeConnectionLost(self) -> None:
        halfCloseable = IHalfCloseableProtocol(self._protocol, None)
        if halfCloseable is not None:
            halfCloseable.writeConnectionLost()


def proxyProtocolWrapper(
    reactor, enabled: bool = False, sources=(), timeout: float = DEFAULT_TIMEOUT,
    studPrefix=(), maxTLVBytes: int = DEFAULT_MAX_TLV_BYTES,
):
    """
    The wrapping of a router's listening factories for its options, to
    give L{txrouter.transports.listeningReactor}.

    @param enabled: C{--enable-proxy-protocol}.
    @param sources: C{--proxy-protocol-from}, its values (CIDR, address or
        C{unix}).
    @param timeout: C{--proxy-protocol-timeout}.
    @param studPrefix: C{--http-stud-prefix}, its IPv4 addresses.
    @return: a one-argument callable wrapping a factory in a
        L{ProxyHeaderFactory}, or L{None} if neither option is on.
    @raise ValueError: the PROXY protocol is on with no source, a source is
        not an IP network (or C{unix}), a stud prefix source is not an
        IPv4 address, or the timeout is not positive.
    """
    if not enabled and not studPrefix:
        return None
    proxyFrom = None
    if enabled:
        proxyFrom = ProxySources(sources)
        if not proxyFrom:
            raise ValueError("--enable-proxy-protocol needs --proxy-protocol-from")
    studFrom = AddressSet(studPrefix)
    if any(network.version != 4 for network in studFrom.networks):
        raise ValueError("--http-stud-prefix takes IPv4 addresses")
    if not timeout > 0:
        raise ValueError(f"--proxy-protocol-timeout must be positive, not {timeout}")

    def wrap(factory):
        return ProxyHeaderFactory(factory, reactor, proxyFrom, studFrom, timeout, maxTLVBytes)

    return wrap


def proxyHeaderOf(transport):
    """
    The L{txrouter.wire.proxy.ProxyHeader} the connection of C{transport}
    (or of the TLS layer above it) began with, or L{None}.
    """
    return getattr(transport, "proxyHeader", None)


def proxiedHTTPS(transport) -> bool:
    """
    Whether the proxy in front says the client spoke TLS to it (uWSGI's
    stud prefix, or a version 2 C{PP2_TYPE_SSL} TLV): the request is then
    an HTTPS one though the router's listener is plain.
    """
    return getattr(transport, "proxyHTTPS", False)


# Sending a header to a node (--send-proxy, --send-proxy-v2)


def _endpoint(address) -> Optional[tuple]:
    if isinstance(address, (IPv4Address, IPv6Address)):
        return address.host, address.port
    return None


def serverNameOf(transport) -> Optional[str]:
    """
    The server name the client asked for: the SNI of the TLS layer of
    C{transport}'s connection if it has one, else the authority of the
    PROXY header the connection began with; L{None} if neither says.
    """
    getHandle = getattr(transport, "getHandle", None)
    getServerName = getattr(getHandle() if getHandle is not None else None, "get_servername", None)
    if getServerName is not None:
        name = getServerName()
        if name:
            return name.decode("ascii", "replace")
    header = proxyHeaderOf(transport)
    return header.authority if header is not None else None


def proxyHeaderFor(version: int, peer, host, serverName: Optional[str] = None) -> bytes:
    """
    The PROXY header to send a node ahead of a client's bytes, for the
    client connection whose addresses are C{peer} and C{host} (its
    transport's C{getPeer()} and C{getHost()}: the PROXY header's, if it
    came with one).

    @param version: 1 (C{--send-proxy}) or 2 (C{--send-proxy-v2}).
    @param serverName: the server name the client asked for
        (L{serverNameOf}), sent as the C{PP2_TYPE_AUTHORITY} TLV of a
        version 2 header.
    @return: a C{TCP4}/C{TCP6} header, or for a client on a UNIX socket
        (no IP addresses) a version 1 C{UNKNOWN} or a version 2 C{LOCAL}
        one.
    """
    source, destination = _endpoint(peer), _endpoint(host)
    if version == 1:
        return encodeV1(source, destination)
    if version == 2:
        return encodeV2(source, destination, sni=serverName)
    raise ValueError(f"PROXY protocol version {version}")


def proxyHeaderOfClient(version: int, transport) -> bytes:
    """
    L{proxyHeaderFor} the client connection of C{transport}: its
    addresses, and the server name it asked for.
    """
    return proxyHeaderFor(
        version, transport.getPeer(), transport.getHost(), serverNameOf(transport),
    )
