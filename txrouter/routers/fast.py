"""
The FastRouter: uwsgi in, uwsgi out (uWSGI's C{--fastrouter}).

It sits behind nginx's C{uwsgi_pass} (or anything speaking uwsgi) in front
of uWSGI instances.  Each client connection carries one request: a uwsgi
packet, routed by C{UWSGI_FASTROUTER_KEY} > C{HTTP_HOST} > C{SERVER_NAME}
(reference sections 3.4 and 4; the first present decides, see
L{routingKey}), forwarded verbatim but for the modifier
bytes (section 1.5), followed by the body and the response streamed with
back-pressure until one side closes.

With post-buffering the body (C{CONTENT_LENGTH} bytes) is read in full,
into memory or an unlinked temporary file, before a node is connected, so a
slow upload never holds a backend worker.

Every node is spoken to in uwsgi: a node that speaks plain HTTP (an
C{http://} address, or a subscription with uWSGI 2.1's C{proto} C{h}) cannot
be, and a request routed to one is refused with a 502 and an
C{http_node_on_fastrouter} line naming the node, rather than sent a uwsgi
packet the node would take for a broken HTTP request (uWSGI 2.1's FastRouter
ignores C{proto} and does that).

A refusal that comes while the client may still be sending its body (nginx
streaming an upload) is written, then the session lingers
(L{txrouter.routers.linger}), and so does one whose node answered before
reading the whole body (an application refusing an upload early): closing
at once would make the kernel reset the connection over the unread bytes,
and nginx would report its own 502 instead of the answer.  The body still
owed is what C{CONTENT_LENGTH} declares less what was streamed; a body
without one (or past it) ends at the client's half-close.
"""

from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from zope.interface import implementer

from txrouter.lifecycle import IFrontEnd, RequestLifecycle
from txrouter.limits import MAX_KEY_LENGTH
from txrouter.relay import Relay
from txrouter.routers.base import RouterFactory
from txrouter.routers.linger import Lingering, answerAndClose
from txrouter.routing.nodes import UWSGI
from txrouter.spool import BodySpool
from txrouter.timers import IdleTimer
from txrouter.wire.uwsgi import MAX_DATASIZE, PacketParser, UwsgiPacketError, misdirectedProtocol

log = Logger(namespace="txrouter.fast")

#: The vars a key is taken from, best first.
_KEY_VARS = (b"UWSGI_FASTROUTER_KEY", b"HTTP_HOST", b"SERVER_NAME")

#: Most digits of a C{CONTENT_LENGTH} (as the HTTP router's Content-Length).
MAX_LENGTH_DIGITS = 19



def contentLength(packet) -> "int | None":
    """
    The body length a request packet declares: its C{CONTENT_LENGTH}, 0
    when absent or empty (nginx sends it empty without a body), or
    L{None} when it is not a plain decimal number of at most
    L{MAX_LENGTH_DIGITS} digits.
    """
    text = packet.get(b"CONTENT_LENGTH", b"")
    if not text:
        return 0
    if len(text) > MAX_LENGTH_DIGITS or not text.isdigit():
        return None
    return int(text)


class KeyRefused(Exception):
    """
    A request's key vars do not name one usable key.

    @ivar event: the stable event name of the refusal.
    @ivar detail: what was wrong, for the log and the answer.
    """

    def __init__(self, event: str, detail: str) -> None:
        Exception.__init__(self, event, detail)
        self.event = event
        self.detail = detail


def routingKey(packet) -> "bytes | None":
    """
    The key of a request packet: the value of the first of L{_KEY_VARS}
    the packet holds, whatever their order in it.

    The first var present decides, even when its value is unusable: a
    forced key that nginx sent empty (C{uwsgi_param UWSGI_FASTROUTER_KEY
    $app} with C{$app} empty) or oversized never lets the client's Host
    pick the pool instead.

    @return: the key, or L{None} if none of the vars is present.
    @raise KeyRefused: the deciding var is empty (C{empty_key}) or longer
        than 255 bytes (C{key_too_long}), or a key var appears twice with
        different values (C{ambiguous_key}).
    """
    found = {}
    for name, value in packet.vars:
        if name in _KEY_VARS:
            seen = found.setdefault(name, value)
            if seen != value:
                raise KeyRefused(
                    "ambiguous_key", f"two {name.decode()} vars with different values",
                )
    for name in _KEY_VARS:
        value = found.get(name)
        if value is None:
            continue
        if not value:
            raise KeyRefused("empty_key", f"{name.decode()} is empty")
        if len(value) > MAX_KEY_LENGTH:
            raise KeyRefused(
                "key_too_long", f"{name.decode()} of {len(value)} bytes (max {MAX_KEY_LENGTH})",
            )
        return value
    return None


class FastRouter(RouterFactory):
    """
    A configured FastRouter; also the factory for each of its listeners.

    Every option of C{twistd txrouter-fast} is a keyword argument of the
    same name here (dashes become underscores).
    """

    def __init__(
        self,
        reactor,
        nodes=(),
        *,
        buffer_size: int = MAX_DATASIZE,
        force_key: "bytes | str | None" = None,
        keep_modifiers: bool = False,
        **common,
    ) -> None:
        """
        @param buffer_size: largest vars block accepted from a client.
        @param force_key: route every request by this key.
        @param keep_modifiers: forward the client's modifier1/modifier2
            when the node does not impose its own (uWSGI forces 0).
        @param common: the keyword arguments of every router
            (L{RouterFactory.__init__}).
        """
        RouterFactory.__init__(self, reactor, nodes, **common)
        self.bufferSize = min(buffer_size, MAX_DATASIZE)
        if isinstance(force_key, str):
            force_key = force_key.encode()
        self.forceKey = force_key
        self.keepModifiers = keep_modifiers

    def buildProtocol(self, addr):
        return FastSession(self)


@implementer(IHalfCloseableProtocol, IFrontEnd)
class FastSession(Protocol):
    """
    One client connection: one request packet, its body, its response; the
    uwsgi front end of the request's L{RequestLifecycle}.

    @ivar finished: the session is over (refused, or the node is done).
    @ivar lingering: after a refusal or an early answer, the rest of the
        request body is being read and dropped until the client closes (a
        L{txrouter.routers.linger.Lingering}), or L{None}.
    @ivar lifecycle: the request's lifecycle, once its packet is read.
    """

    finished = False
    lingering = None
    packet = None
    lifecycle = None
    key = None
    _start = b""
    _headTimer = None
    _bodyRemaining = 0
    _spooled = False
    _buffering = False
    _clientEOF = False
    _dropped = 0

    def __init__(self, router: FastRouter) -> None:
        self.router = router
        self._parser = PacketParser(router.bufferSize)

    # Connection lifetime

    def connectionMade(self) -> None:
        router = self.router
        router.sessions.add(self)
        peer = self.transport.getPeer()
        self.client = getattr(peer, "host", None)
        self.relay = Relay(self.transport, self.transport)
        self._timer = IdleTimer(router.reactor, router.timeout, self._idle)
        # Never touched: the packet's total deadline.
        self._headTimer = IdleTimer(router.reactor, router.timeout, self._headTimedOut)

    def connectionLost(self, reason) -> None:
        self._end()
        if self.lingering is not None:
            self.lingering.stop()
        self.router.sessionClosed(self)

    def _end(self) -> None:
        """
        Stop everything this session started (timers, the request).
        """
        self.finished = True
        self._buffering = False
        self._timer.cancel()
        if self._headTimer is not None:
            self._headTimer.cancel()
            self._headTimer = None
        if self.lifecycle is not None:
            self.lifecycle.release()

    def closeWhenIdle(self) -> None:
        """
        Draining: a session lingering after a refusal goes at once; one
        whose request has begun to arrive finishes it, and so does one
        whose client begins it in time (L{closeIfSilent}).
        """
        if self.lingering is not None:
            self.transport.loseConnection()

    def closeIfSilent(self) -> None:
        """
        Draining: close if the client has sent nothing yet.
        """
        if self._start == b"" and not self.finished:
            self.transport.loseConnection()

    def _idle(self) -> None:
        self.refuse(408, "client_timeout", "the request was not received in time")

    def _headTimedOut(self) -> None:
        self._headTimer = None
        self.refuse(408, "headers_timeout", "the request packet was not received in time")

    # The request

    def dataReceived(self, data: bytes) -> None:
        if self.finished:
            if self.lingering is not None:
                self.lingering.dataReceived()
            return
        self._timer.touch()
        if self.packet is None:
            self._headReceived(data)
        elif self._buffering:
            self._buffer(data)
        elif self._spooled:
            # Post-buffered: bytes past CONTENT_LENGTH are dropped.
            return
        else:
            self._stream(data)

    def _stream(self, data: bytes) -> None:
        """
        Send body bytes to the node, counting them against what is owed.
        """
        remaining = self._bodyRemaining
        if remaining is not None:
            remaining -= len(data)
            # Past CONTENT_LENGTH (or without one), the body ends at the
            # client's half-close.
            self._bodyRemaining = remaining if remaining >= 0 else None
        self.relay.toNode(data)

    def _headReceived(self, data: bytes) -> None:
        if self._start is not None:
            start = self._start + data
            if len(start) < 4:
                self._start = start
                return
            self._start = None
            mistake = misdirectedProtocol(start)
            if mistake is not None:
                self._misdirected(mistake)
                return
            data = start
        try:
            packet = self._parser.feed(data)
        except UwsgiPacketError as e:
            self.refuse(400, e.event, e.detail)
            return
        if packet is None:
            return
        self.packet = packet
        leftover = self._parser.leftover
        self._parser = None
        self._headTimer.cancel()
        self._headTimer = None
        try:
            key = self.router.forceKey or routingKey(packet)
        except KeyRefused as e:
            self.refuse(400, e.event, e.detail)
            return
        if key is None:
            self.refuse(400, "no_key", "the request has no UWSGI_FASTROUTER_KEY, HTTP_HOST or SERVER_NAME")
            return
        self.key = key
        self._bodyRemaining = contentLength(packet)
        self.lifecycle = lifecycle = RequestLifecycle(
            self.router.requestSettings, self, self.relay, key, self.client,
        )
        lifecycle.method = packet.get(b"REQUEST_METHOD")
        if not self._checkBody(packet):
            return
        if self._buffering:
            # Dispatched by _buffer once the body is complete, which may be
            # now.
            if leftover:
                self._buffer(leftover)
            return
        if leftover:
            self._stream(leftover)
        self.lifecycle.dispatch()

    def _misdirected(self, mistake: str) -> None:
        if mistake == "http":
            self.refuse(
                400, "http_on_uwsgi_port",
                "this port speaks the uwsgi protocol (nginx uwsgi_pass), not HTTP",
            )
        else:
            log.warn(
                "tls_on_uwsgi_port: a TLS client reached the uwsgi port {client}",
                event="tls_on_uwsgi_port", client=self.client,
            )
            self._abort()

    def _checkBody(self, packet) -> bool:
        """
        With post-buffering or a body limit, check C{CONTENT_LENGTH}; with
        post-buffering, start collecting that many bytes before connecting
        (uWSGI streams the body verbatim otherwise, and so does this).

        @return: whether the session goes on.
        """
        router = self.router
        if not (router.postBuffering or router.limitPost):
            return True
        length = contentLength(packet)
        if length is None:
            text = packet.get(b"CONTENT_LENGTH")
            self.refuse(
                400, "bad_content_length",
                f"CONTENT_LENGTH {text[:32]!r} is not a number of at most"
                f" {MAX_LENGTH_DIGITS} digits",
            )
            return False
        if router.limitPost and length > router.limitPost:
            self.refuse(413, "body_too_large", f"body of {length} bytes, limit {router.limitPost}")
            return False
        if router.postBuffering and length:
            self.lifecycle.spoolBody(BodySpool(router.postBuffering, router.postBufferingDir))
            self.lifecycle.watchBody(router.timeout)
            self._spooled = True
            self._bodyRemaining = length
            self._buffering = True
        return True

    def _buffer(self, data: bytes) -> None:
        remaining = self._bodyRemaining
        if len(data) >= remaining:
            self._dropped += len(data) - remaining
            data = data[:remaining]
        self._bodyRemaining = remaining = remaining - len(data)
        lifecycle = self.lifecycle
        lifecycle.bodyActivity(len(data))
        if lifecycle.finished or not lifecycle.spooled((data,), not remaining):
            return
        if not remaining:
            self._buffering = False
            lifecycle.bodyComplete()
            if self._dropped:
                log.info("body_surplus: {count} bytes past CONTENT_LENGTH dropped",
                         event="body_surplus", count=self._dropped)
            self.lifecycle.dispatch()

    def _bodyMayFollow(self) -> bool:
        """
        Whether the client may still be sending body bytes: it has not
        half-closed, a post-buffered body is not complete, and a streamed
        one is owed bytes or ends only at the half-close (its
        C{CONTENT_LENGTH} is no number, or bytes came past it or without
        one).
        """
        if self.packet is None or self._clientEOF:
            return False
        if self._spooled and not self._buffering:
            return False
        remaining = self._bodyRemaining
        return remaining is None or remaining > 0

    def readConnectionLost(self) -> None:
        """
        The client half-closed: pass it on once its bytes are sent.
        """
        self._clientEOF = True
        if self.finished:
            if self.lingering is not None:
                self.lingering.clientClosed()
            return
        if self.packet is None or self._buffering:
            self.refuse(400, "client_truncated", "the client closed before the end of its request")
        else:
            self.relay.clientEOF()

    def writeConnectionLost(self) -> None:
        if self.lingering is None:
            self._abort()

    # IFrontEnd

    def headFor(self, node) -> "bytes | None":
        """
        The client's packet with the modifiers C{node} wants, or L{None}
        after refusing the request if C{node} does not speak uwsgi.
        """
        if node.protocol != UWSGI:
            log.warn(
                "http_node_on_fastrouter: {key!r} => {node} speaks {protocol}, the FastRouter"
                " only uwsgi: 502 (client {client})",
                event="http_node_on_fastrouter", key=self.key[:64], node=node.name,
                protocol=node.protocol, client=self.client,
            )
            self._close(502, "the backend node does not speak uwsgi")
            return None
        raw = self.packet.raw
        modifier1, modifier2 = node.modifier1, node.modifier2
        if self.router.keepModifiers and not (modifier1 or modifier2):
            return raw
        return bytes((modifier1,)) + raw[1:3] + bytes((modifier2,)) + raw[4:]

    def nodeConnected(self, upstream) -> bool:
        # From now on the upstream's own timer watches both directions.
        self._timer.cancel()
        return True

    def responseReceived(self, data: bytes) -> None:
        self.lifecycle.responseStarted = True
        self.relay.fromNode(data)

    def responseEnded(self, reason, timedOut: bool) -> None:
        if reason is None and not timedOut:
            bodyMayFollow = self._bodyMayFollow()
            self._end()
            if bodyMayFollow:
                # The node answered before reading the whole body.
                self.lingering = Lingering(self.router.reactor, self.transport)
                # The node's pace may have paused the client.
                self.transport.resumeProducing()
            else:
                self.transport.loseConnection()
        else:
            log.warn(
                "response_truncated: from {node}: {reason}",
                event="response_truncated", node=self.lifecycle.node.name,
                reason="timed out" if timedOut else reason,
            )
            self._abort()

    def refuse(self, status: int, event: str, detail: str) -> None:
        """
        End the session with a short HTTP error response (nginx relays it),
        or a bare close with C{silent_errors}, and one log line.
        """
        if self.finished:
            return
        log.info(
            "{event}: {client}: {detail}", event=event, client=self.client, detail=detail,
        )
        self._close(status, detail)

    def abort(self, event: str) -> None:
        self._abort()

    # Ending

    def _close(self, status: int, detail: str) -> None:
        """
        End the session with a short error response (unless silent, or the
        node has started answering), lingering if body bytes may follow.
        """
        bodyMayFollow = self._bodyMayFollow()
        responded = self.lifecycle is not None and self.lifecycle.responseStarted
        self._end()
        router = self.router
        self.lingering = answerAndClose(
            router.reactor, self.transport, status, detail, bodyMayFollow,
            router.silentErrors or responded,
        )

    def _abort(self) -> None:
        """
        Cut both connections: a response that is not whole must not look
        whole to the client.
        """
        self._end()
        self.transport.abortConnection()
