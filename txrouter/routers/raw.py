"""
The raw router: TCP in, TCP out (uWSGI's C{--rawrouter}).

It balances any TCP service (a database, SMTP, another proxy) with the
forwarders and subscriptions of the other routers.  A client connection
has no wire format to read a key from, so its key is the listener's: the
uWSGI spelling of the bind it was accepted on (C{127.0.0.1:9100}, C{:9100}
for every interface, a UNIX path; reference section 3.4), or a fixed
C{key}.  The node is chosen and connected as soon as the client is
accepted, so protocols where the server speaks first (SMTP, MySQL, SSH)
work: the node's greeting reaches the client before it sends anything.

Then bytes go both ways through the one relay, each direction at the pace
of its reader, until both sides are done: a client's FIN reaches the node
as a half-close (C{shutdown(SHUT_WR)}) and the node may still answer; a
node's FIN reaches the client likewise.  A connect that fails is retried
(on the next node, or the fallback nodes) as in every router; once
connected, never: nothing is half-sent to two nodes.  Every node is spoken
to in plain TCP, an C{http://} node too: the router relays whatever the
client sends.

There is nothing to answer a refusal in: a client whose connection cannot
be routed (no node for the key, every node dead or unreachable) is closed,
with one log line.

With C{xclient} (uWSGI's C{--rawrouter-xclient}), the node's first line
(an SMTP greeting) is read and withheld, C{XCLIENT ADDR=<client address>}
is sent to it, and the client gets what the node says next (Postfix greets
again after an XCLIENT).
"""

import ipaddress

import attr
from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.internet.protocol import Protocol, ServerFactory
from twisted.logger import Logger
from zope.interface import implementer

from txrouter.lifecycle import IHalfClosingFrontEnd, RequestLifecycle
from txrouter.proxyprotocol import proxyHeaderOfClient
from txrouter.relay import Relay
from txrouter.routers.base import RouterFactory
from txrouter.subscription.addresses import uwsgiAddressOfEndpoint

log = Logger(namespace="txrouter.raw")

#: The longest node greeting line (its end of line included) XCLIENT waits
#: for; a longer one is refused.
MAX_GREETING = 512

#: The options of every router that concern request bodies, which a raw
#: connection does not have.
BODY_OPTIONS = ("post_buffering", "post_buffering_dir", "limit_post")


def keyOfEndpoint(description: str) -> bytes:
    """
    The key of the connections a listener bound with the Twisted endpoint
    C{description} accepts: the address uWSGI would have been given for it
    (C{tcp:9100:interface=127.0.0.1} is C{127.0.0.1:9100}, C{tcp:9100} is
    C{:9100}, C{unix:/run/r.sock} is C{/run/r.sock}), which is what uWSGI
    routes by (its bind string, verbatim) and what a node subscribes
    under; else the description itself (C{ssl:...}, C{systemd:...}).
    """
    return (uwsgiAddressOfEndpoint(description) or description).encode()


def keyOfHost(address) -> bytes:
    """
    The key for a connection accepted on C{address} (its transport's
    C{getHost()}), when the router was not told its listener's bind:
    C{HOST:PORT} (C{[HOST]:PORT} for IPv6), or the UNIX path.
    """
    if isinstance(address, IPv6Address):
        return f"[{address.host}]:{address.port}".encode()
    if isinstance(address, IPv4Address):
        return f"{address.host}:{address.port}".encode()
    if isinstance(address, UNIXAddress) and address.name:
        name = address.name
        return name if isinstance(name, bytes) else name.encode()
    return b""


def xclientLine(peer) -> bytes:
    """
    The XCLIENT command telling a node the address of the client at
    C{peer} (its transport's C{getPeer()}): C{ADDR=1.2.3.4}, or, as
    Postfix's XCLIENT specification writes IPv6, C{ADDR=IPV6:2001:db8::1}
    (an IPv4-mapped address is written as IPv4); C{ADDR=[UNAVAILABLE]} for
    a client with no IP address (a UNIX listener).
    """
    host = getattr(peer, "host", None)
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        text = "[UNAVAILABLE]"
    else:
        if ip.version == 6 and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        text = str(ip) if ip.version == 4 else f"IPV6:{ip.compressed}"
    return b"XCLIENT ADDR=" + text.encode("ascii") + b"\r\n"


class RawRouter(RouterFactory):
    """
    A configured raw router; L{listenerFactory} gives the factory of each
    of its listeners.

    Every option of C{twistd txrouter-raw} is a keyword argument of the
    same name here (dashes become underscores).
    """

    def __init__(
        self,
        reactor,
        nodes=(),
        *,
        key: "bytes | str | None" = None,
        xclient: bool = False,
        send_proxy: int = 0,
        **common,
    ) -> None:
        """
        @param key: route every connection by this key instead of its
            listener's.
        @param send_proxy: 1 or 2 to send nodes a PROXY protocol header of
            that version before the client's bytes (HAProxy's
            C{send-proxy}, C{send-proxy-v2}); 0 for none.
        @param xclient: pass the client's address to the node with an
            XCLIENT command after its greeting.
        @param common: the keyword arguments of every router
            (L{RouterFactory.__init__}) but those about request bodies
            (L{BODY_OPTIONS}).
        @raise ValueError: a body option is set.
        """
        for name in BODY_OPTIONS:
            if common.get(name):
                raise ValueError(f"{name}: the raw router relays bytes, it has no request body")
        RouterFactory.__init__(self, reactor, nodes, **common)
        # Each direction of a relayed stream is closed on its own.
        self.requestSettings = attr.evolve(self.requestSettings, nodeHalfClose=True)
        if isinstance(key, str):
            key = key.encode()
        self.key = key
        self.xclient = xclient
        self.sendProxy = send_proxy

    def listenerFactory(self, description: str) -> "RawListenerFactory":
        """
        The factory of the listener bound with the endpoint C{description}:
        its connections are routed by L{keyOfEndpoint}C{(description)}, or
        by the fixed C{key}.
        """
        return RawListenerFactory(self, self.key or keyOfEndpoint(description))

    def buildProtocol(self, addr):
        """
        A session for a listener this router was given directly, not
        through L{listenerFactory}: routed by the fixed C{key}, else by
        the address it was accepted on (L{keyOfHost}).
        """
        return RawSession(self, self.key)


class RawListenerFactory(ServerFactory):
    """
    The factory of one listener of a L{RawRouter}: its sessions are the
    router's, routed by the listener's key.

    @ivar router: the L{RawRouter}.
    @ivar key: the key of every connection this listener accepts.
    @ivar protocol: the session class (L{RawSession}, or the SSL router's).
    """

    noisy = False

    def __init__(self, router: RawRouter, key: bytes) -> None:
        self.router = router
        self.key = key
        self.protocol = RawSession

    def buildProtocol(self, addr):
        return self.protocol(self.router, self.key)


@implementer(IHalfCloseableProtocol, IHalfClosingFrontEnd)
class RawSession(Protocol):
    """
    One client connection relayed to one node: the raw front end of its
    L{RequestLifecycle}.

    The session is over when both directions are: the client's FIN was
    passed to the node and the node's to the client (or either connection
    was cut).

    @ivar key: the key the connection is routed by (L{None}: the address it
        was accepted on).
    @ivar client: the client's IP address, or L{None}.
    @ivar finished: the session is over.
    """

    finished = False
    lifecycle = None
    client = None
    # Withheld node bytes while waiting for its greeting (XCLIENT), else
    # None.
    _greeting = None
    # Each direction's FIN, passed on.
    _nodeWriteClosed = False
    _clientWriteClosed = False

    def __init__(self, router: RawRouter, key: "bytes | None") -> None:
        self.router = router
        self.key = key

    # Connection lifetime

    def connectionMade(self) -> None:
        router = self.router
        router.sessions.add(self)
        transport = self.transport
        peer = transport.getPeer()
        self.client = getattr(peer, "host", None)
        if self.key is None:
            self.key = keyOfHost(transport.getHost())
        self.relay = Relay(transport, transport)
        if router.xclient:
            # Nothing of the client's may reach the node before XCLIENT.
            self._greeting = b""
            self._xclient = xclientLine(peer)
            transport.pauseProducing()
        self.dispatch()

    def dispatch(self) -> None:
        """
        Choose the node for L{key} and connect to it; the client's bytes
        received meanwhile are held by the relay.
        """
        self.lifecycle = RequestLifecycle(
            self.router.requestSettings, self, self.relay, self.key, self.client,
        )
        self.lifecycle.dispatch()

    def dataReceived(self, data: bytes) -> None:
        if not self.finished:
            self.relay.toNode(data)

    def readConnectionLost(self) -> None:
        """
        The client's FIN: passed on to the node after the bytes before it,
        now or once it is connected.
        """
        if not self.finished:
            self.relay.clientEOF()

    def writeConnectionLost(self) -> None:
        """
        The node's FIN has reached the client.
        """
        self._clientWriteClosed = True
        self._endIfBothClosed()

    def connectionLost(self, reason) -> None:
        self._end()
        self.router.sessionClosed(self)

    def closeWhenIdle(self) -> None:
        """
        Draining: a raw connection is never idle between requests, so its
        relay goes on until it ends or the drain deadline aborts it.
        """

    def _end(self) -> None:
        self.finished = True
        if self.lifecycle is not None:
            self.lifecycle.release()

    def _endIfBothClosed(self) -> None:
        if self._nodeWriteClosed and self._clientWriteClosed and not self.finished:
            self._end()
            self.transport.loseConnection()

    # IHalfClosingFrontEnd: the node's half of the connection (the router's
    # requests set nodeHalfClose, so the node's FIN does not end it).

    def nodeReadConnectionLost(self) -> None:
        """
        The node's FIN: passed on to the client after the bytes before it;
        the client may still send.
        """
        if self.finished:
            return
        if self._greeting is not None:
            self.refuse(502, "xclient_no_greeting", "the node closed before its greeting")
            return
        self.transport.loseWriteConnection()

    def nodeWriteConnectionLost(self) -> None:
        """
        The client's FIN has reached the node.
        """
        self._nodeWriteClosed = True
        self._endIfBothClosed()

    # IFrontEnd

    def headFor(self, node) -> bytes:
        """
        Nothing precedes the client's bytes but, with C{--send-proxy}, a
        PROXY header naming the client.  An C{http://} node is relayed to
        as any TCP node.
        """
        version = self.router.sendProxy
        if version:
            return proxyHeaderOfClient(version, self.transport)
        return b""

    def nodeConnected(self, upstream) -> bool:
        # With XCLIENT, the client streams once the greeting has come.
        return self._greeting is None

    def responseReceived(self, data: bytes) -> None:
        if self._greeting is not None:
            self._greetingReceived(data)
            return
        self.lifecycle.responseStarted = True
        self.relay.fromNode(data)

    def responseEnded(self, reason, timedOut: bool) -> None:
        """
        The node connection ended otherwise than by a FIN (reset, idle
        timeout, harakiri): the client's is cut too, so that it cannot take
        a truncated stream for a whole one.
        """
        if self.finished:
            return
        if reason is None and not timedOut:
            self._end()
            self.transport.loseConnection()
            return
        log.info(
            "relay_cut: {client} <-> {node}: {reason}",
            event="relay_cut", client=self.client, node=self.lifecycle.node.name,
            reason="timed out" if timedOut else reason,
        )
        self.abort("relay_cut")

    def refuse(self, status: int, event: str, detail: str) -> None:
        """
        Close the client with one log line: there is no wire format to
        answer in (C{status} is the other routers' answer, for the log).
        """
        if self.finished:
            return
        if event == "backend_timeout" and self._greeting is not None:
            event, detail = "xclient_no_greeting", "no greeting from the node in time"
        log.info(
            "{event}: {client} ({key!r}): {detail}",
            event=event, client=self.client, key=self.key[:64], detail=detail, status=status,
        )
        self._end()
        self.transport.loseConnection()

    def abort(self, event: str) -> None:
        self._end()
        self.transport.abortConnection()

    # XCLIENT

    def _greetingReceived(self, data: bytes) -> None:
        """
        Withhold the node's bytes up to the end of its first line; then
        send XCLIENT, relay what came after that line, and let the client
        stream.
        """
        greeting = self._greeting + data
        end = greeting.find(b"\n", 0, MAX_GREETING)
        if end < 0:
            if len(greeting) >= MAX_GREETING:
                self.refuse(
                    502, "xclient_greeting_too_long",
                    f"the node's greeting line is longer than {MAX_GREETING} bytes",
                )
            else:
                self._greeting = greeting
            return
        self._greeting = None
        self.relay.upstream.write(self._xclient)
        rest = greeting[end + 1:]
        if rest:
            self.responseReceived(rest)
        if self.finished:
            return
        self.relay.streamFromClient()
        self.transport.resumeProducing()
