"""
The HTTP router: HTTP/1.1 in, uwsgi out (uWSGI's C{--http} / C{--http-to}),
or HTTP/1.1 out to the nodes that speak it (C{http://} nodes, uWSGI 2.1's
subscription C{proto} C{h}).

L{HTTPRouter} is the configured router and the factory of its listeners;
L{HTTPSession} is one client connection, which may carry several requests
(keep-alive), answered strictly one at a time and in order.  Each request
is an L{txrouter.routers.exchange.Exchange}.  With C{http2}, a connection
that turns out to speak HTTP/2 is handed to an
L{txrouter.routers.h2connection.HTTP2Connection} (C{docs/http2.md}).
"""

import socket

import attr

from twisted.internet.interfaces import (
    IHalfCloseableProtocol,
    IProtocolNegotiationFactory,
    IPushProducer,
    ISSLTransport,
)
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from zope.interface import implementer

from txrouter.arguments import checkCount, checkFlag, checkSeconds
from txrouter.limits import MAX_KEY_LENGTH
from txrouter.routers.base import RouterFactory, checkDirectory
from txrouter.routers.exchange import Exchange
from txrouter.routers.h2connection import HTTP2Connection, HTTP2Settings
from txrouter.routers.linger import Lingering, answerAndClose
from txrouter.timers import IdleTimer
from txrouter.nodepool import NodeConnectionPool
from txrouter.proxyprotocol import proxiedHTTPS
from txrouter.tls.clientcert import clientCertificateVars
from txrouter.tls.sni import serverNameOf
from txrouter.trust import AddressSet
from txrouter.wire.h2guard import PREFACE
from txrouter.wire.http1 import HTTPError, RequestHeadParser
from txrouter.wire.http2uwsgi import encodeConnectionVars

log = Logger(namespace="txrouter.http")


@implementer(IProtocolNegotiationFactory)
class HTTPRouter(RouterFactory):
    """
    A configured HTTP router; also the factory for each of its listeners.

    Every option of C{twistd txrouter-http} is a keyword argument of the
    same name here (dashes become underscores), so a C{.tac} file builds
    exactly what the command line builds.

    @ivar sessions: the open client connections.
    """

    noisy = False

    def __init__(
        self,
        reactor,
        nodes=(),
        *,
        headers_timeout: "float | None" = None,
        body_timeout: "float | None" = None,
        keepalive: float = 0,
        buffer_size: int = 4096,
        modifier1: int = 0,
        modifier2: int = 0,
        http_vars=(),
        chunked_input: bool = False,
        spool_memory: int = 1 << 20,
        spool_dir: "str | None" = None,
        trust_forwarded_from=(),
        server_name: "str | None" = None,
        max_request_line: int = 8192,
        max_headers: int = 100,
        max_head_size: int = 65536,
        max_response_head_size: int = 65536,
        access_log=None,
        websocket_timeout: "float | None" = None,
        auto_chunked: bool = False,
        auto_gzip: bool = False,
        manage_expect: "int | None" = None,
        raw_body: bool = False,
        manage_source: bool = False,
        manage_rtsp: bool = False,
        node_keepalive: int = 0,
        node_keepalive_timeout: float = 4.0,
        send_proxy: int = 0,
        https_export_cert: bool = False,
        http2: bool = False,
        http2_max_streams: int = 100,
        http2_max_resets: int = 100,
        http2_max_header_block: int = 65536,
        http2_max_continuations: int = 32,
        http2_header_table_size: int = 4096,
        http2_max_header_list_size: int = 131072,
        http2_max_pings: int = 10,
        http2_max_settings: int = 10,
        http2_idle_timeout: "float | None" = None,
        http2_max_connection_time: float = 3600.0,
        http2_window: int = 65535,
        **common,
    ) -> None:
        """
        @param keepalive: 0 for no keep-alive, else the idle seconds allowed
            between two requests of one connection.
        @param spool_dir: where de-chunked bodies larger than
            C{spool_memory} go (default: C{post_buffering_dir}).
        @param max_response_head_size: the largest response head taken
            from a node (a larger one is a 502).
        @param access_log: an L{txrouter.accesslog.AccessLog} or L{None}.
        @param websocket_timeout: idle seconds (neither side sending) after
            which a tunnel opened by a C{101} answer is closed (default:
            C{timeout}).
        @param auto_chunked: send a response body without a length chunked
            to HTTP/1.1 clients, so their connection stays open (uWSGI's
            C{--http-auto-chunked}).
        @param auto_gzip: gzip such a body (and chunk it) when the response
            has C{uWSGI-Encoding: gzip} and the client accepts gzip
            (uWSGI's C{--http-auto-gzip}).
        @param manage_expect: L{None}, or (uWSGI's C{--http-manage-expect
            [N]}) refuse an C{Expect} other than C{100-continue} with 417
            and, if not 0, a body over this many bytes that waits for C{100
            Continue} with 413.  C{100 Continue} itself is always answered.
        @param raw_body: a request without C{Content-Length} or
            C{Transfer-Encoding} sends what follows its head to the node
            until the client closes (uWSGI's C{--http-raw-body}).
        @param manage_source: the same for C{SOURCE} requests only (Icecast
            streams; uWSGI's C{--http-manage-source}).
        @param manage_rtsp: take C{RTSP/1.0} requests, routed by the host
            of their C{rtsp://} target, and relay both ways what follows
            their head, the node's answer included, unparsed (uWSGI's
            C{--http-manage-rtsp}).
        @param node_keepalive: most idle connections kept open per HTTP node
            for later requests (nginx's C{keepalive}); 0 closes each after
            its response.
        @param node_keepalive_timeout: seconds such a connection is kept.
        @param send_proxy: 1 or 2 to send HTTP nodes a PROXY protocol
            header of that version before each request (HAProxy's
            C{send-proxy}, C{send-proxy-v2}); 0 for none.  A node connection
            then carries one client's requests only, so it cannot be kept
            for others: not with C{node_keepalive}.
        @param https_export_cert: also send a TLS client's certificate in
            PEM as C{HTTPS_CC} (uWSGI's C{--https-export-cert}).
        @param http2: also serve HTTP/2 clients: C{h2} by ALPN on TLS
            listeners, with prior knowledge (h2c) on plain ones; the
            C{http2_*} bounds are L{HTTP2Settings}' (C{docs/http2.md}).
        @param http2_idle_timeout: seconds an HTTP/2 connection without a
            stream stays open (default: C{keepalive}, else C{timeout}).
        @param common: the keyword arguments of every router
            (L{RouterFactory.__init__}).
        """
        for name, value in [("keepalive", keepalive),
                            ("node_keepalive_timeout", node_keepalive_timeout)]:
            checkSeconds(name, value)
        for name, value in [("headers_timeout", headers_timeout), ("body_timeout", body_timeout),
                            ("websocket_timeout", websocket_timeout)]:
            checkSeconds(name, value, optional=True)
        for name, value in [("buffer_size", buffer_size), ("modifier1", modifier1),
                            ("modifier2", modifier2), ("spool_memory", spool_memory),
                            ("max_request_line", max_request_line), ("max_headers", max_headers),
                            ("max_head_size", max_head_size),
                            ("max_response_head_size", max_response_head_size),
                            ("node_keepalive", node_keepalive), ("send_proxy", send_proxy)]:
            checkCount(name, value)
        checkCount("manage_expect", manage_expect, optional=True)
        for name, value in [("chunked_input", chunked_input), ("auto_chunked", auto_chunked),
                            ("auto_gzip", auto_gzip), ("raw_body", raw_body),
                            ("manage_source", manage_source), ("manage_rtsp", manage_rtsp),
                            ("https_export_cert", https_export_cert)]:
            checkFlag(name, value)
        if not 0 < max_head_size <= 65536:
            # uwsgi var values are 16-bit: a longer head could not be sent.
            raise ValueError("max_head_size must be between 1 and 65536")
        directory = common.get("post_buffering_dir")
        for name, path in [("spool_dir", spool_dir), ("post_buffering_dir", directory)]:
            if path is not None:
                checkDirectory(name, path)
        RouterFactory.__init__(self, reactor, nodes, **common)
        timeout = self.timeout
        self.headersTimeout = timeout if headers_timeout is None else headers_timeout
        self.bodyTimeout = timeout if body_timeout is None else body_timeout
        self.keepalive = keepalive
        self.bufferSize = buffer_size
        self.modifier1 = modifier1
        self.modifier2 = modifier2
        self.httpVars = [
            (k.encode() if isinstance(k, str) else k, v.encode() if isinstance(v, str) else v)
            for k, v in http_vars
        ]
        self.chunkedInput = chunked_input
        self.spoolMemory = spool_memory
        self.spoolDir = spool_dir if spool_dir is not None else directory
        self.trusted = AddressSet(trust_forwarded_from)
        self.serverName = (server_name or socket.gethostname()).encode()
        self.maxRequestLine = max_request_line
        self.maxHeaders = max_headers
        self.maxHeadSize = max_head_size
        self.maxResponseHeadSize = max_response_head_size
        self.accessLog = access_log
        self.websocketTimeout = timeout if websocket_timeout is None else websocket_timeout
        self.autoChunked = auto_chunked
        self.autoGzip = auto_gzip
        self.manageExpect = manage_expect
        self.rawBody = raw_body
        self.manageSource = manage_source
        self.manageRtsp = manage_rtsp
        if send_proxy and node_keepalive:
            raise ValueError("send_proxy: a kept node connection would name another client")
        self.sendProxy = send_proxy
        self.exportCertificate = https_export_cert
        self.nodePool = None
        if node_keepalive:
            self.nodePool = NodeConnectionPool(reactor, node_keepalive, node_keepalive_timeout)
        self.requestSettings = attr.evolve(
            self.requestSettings, accessLog=access_log, nodePool=self.nodePool,
        )
        self.http2 = None
        if http2:
            if http2_idle_timeout is None:
                http2_idle_timeout = keepalive or timeout
            self.http2 = HTTP2Settings(
                maxStreams=http2_max_streams, maxResets=http2_max_resets,
                maxHeaderBlock=http2_max_header_block,
                maxContinuations=http2_max_continuations,
                headerTableSize=http2_header_table_size,
                maxHeaderListSize=http2_max_header_list_size, maxPings=http2_max_pings,
                maxSettings=http2_max_settings, idleTimeout=http2_idle_timeout,
                maxConnectionTime=http2_max_connection_time, window=http2_window,
            )

    def buildProtocol(self, addr):
        return HTTPSession(self)

    def statsFields(self):
        """
        L{RouterFactory.statsFields}, and C{tunnels} (a txrouter key): the
        tunnels open now and opened so far (L{txrouter.lifecycle.TunnelCounts}).
        """
        fields = RouterFactory.statsFields(self) + [
            ("tunnels", self.requestSettings.tunnelCounts.asDict()),
        ]
        pool = self.nodePool
        if pool is not None:
            fields.append(("node_keepalive", {"idle": pool.idleCount(), "reused": pool.reused}))
        if self.http2 is not None:
            fields.append(("http2", self.http2.counts.asDict()))
        return fields

    def drain(self, timeout: float):
        """
        L{RouterFactory.drain}, closing the idle node connections first.
        """
        if self.nodePool is not None:
            self.nodePool.closeAll()
        return RouterFactory.drain(self, timeout)

    @property
    def answersPlainHTTP(self) -> bool:
        """
        Whether a client that sends plain HTTP to one of this router's TLS
        listeners gets a C{400} saying so (L{txrouter.tls.handshake}), as
        nginx answers it: unless C{--silent-errors}.
        """
        return not self.silentErrors

    def acceptableProtocols(self) -> list:
        """
        What a TLS listener answers a client's ALPN offer with: Twisted
        fails the handshake of a client that offers ALPN (curl and browsers
        do) to a factory that names no protocol.  With C{http2}, C{h2}
        first.
        """
        if self.http2 is not None:
            return [b"h2", b"http/1.1", b"http/1.0"]
        return [b"http/1.1", b"http/1.0"]


@implementer(IHalfCloseableProtocol, IPushProducer)
class HTTPSession(Protocol):
    """
    One client connection.

    Requests are read one at a time; bytes of a pipelined next request are
    kept (bounded) until the current response is complete.

    The vars every request of the connection shares (L{connectionVars})
    are encoded at its first request: on a TLS connection that is after
    the handshake (C{connectionMade} comes before it), when the client
    certificate and the SNI name are known.

    @ivar sniName: on a TLS connection, the client's SNI name once
        checked (L{txrouter.tls.sni.serverNameOf}), or L{None}: the key of
        a request without C{Host}, as uWSGI.
    """

    connectionVars = None
    sniName = None
    #: The L{HTTP2Connection} that took the connection over, if one did.
    http2 = None
    _sniffed = b""

    def __init__(self, router: HTTPRouter) -> None:
        self.router = router
        self.exchange = None
        self._parser = RequestHeadParser(
            router.maxRequestLine, router.maxHeaders, router.maxHeadSize, router.manageRtsp,
        )
        self._pipelined = b""
        self._closing = False
        self._clientEOF = False
        self._lingering = None
        self._timer = None
        self._timerAction = None
        self._pausedReasons = 0

    # Connection lifetime

    def connectionMade(self) -> None:
        router = self.router
        router.sessions.add(self)
        peer = self.transport.getPeer()
        host = self.transport.getHost()
        peerHost = getattr(peer, "host", None)
        self.clientHost = peerHost or None
        self.remoteAddr = peerHost.encode() if peerHost else b""
        self.remotePort = b"%d" % peer.port if peerHost else b""
        self.serverPort = b"%d" % host.port if getattr(host, "port", None) else b""
        self.trustForwarded = bool(peerHost) and router.trusted.contains(peerHost)
        self.tls = ISSLTransport.providedBy(self.transport)
        self.https = self.tls or proxiedHTTPS(self.transport)
        self._arm(router.headersTimeout, self._headTimedOut)
        if router.http2 is not None:
            self.dataReceived = self._firstBytes

    def _firstBytes(self, data: bytes) -> None:
        """
        With C{--http2}, the connection's first bytes: a client that
        negotiated C{h2} (ALPN) or sends the HTTP/2 preface is handed to
        an L{HTTP2Connection}; any other reads HTTP/1.x from here on, at
        no further cost.
        """
        data = self._sniffed + data
        h2 = (
            self.tls and getattr(self.transport, "negotiatedProtocol", None) == b"h2"
        ) or data[:len(PREFACE)] == PREFACE
        if not h2 and PREFACE.startswith(data):
            # Maybe the preface, in pieces.
            self._sniffed = data
            return
        self._sniffed = b""
        del self.dataReceived
        if not h2:
            self.dataReceived(data)
            return
        self._cancelTimer()
        if self.connectionVars is None and not self._encodeConnectionVars():
            return
        HTTP2Connection(self).takeOver(data)

    def _encodeConnectionVars(self) -> bool:
        """
        Encode L{connectionVars}, with a TLS client's certificate vars and
        SNI name.

        @return: whether the connection can go on (a certificate too large
            for a uwsgi var is refused with a 431).
        """
        router = self.router
        clientVars = ()
        if self.tls:
            transport = self.transport
            self.sniName = serverNameOf(transport)
            try:
                clientVars = clientCertificateVars(transport, router.exportCertificate)
            except ValueError as e:
                self.refuse(431, "client_certificate_too_large", str(e))
                return False
        self.connectionVars = encodeConnectionVars(
            router.serverName, self.serverPort, self.remoteAddr, self.remotePort, self.https,
            clientVars,
        )
        return True

    def connectionLost(self, reason) -> None:
        self._cancelTimer()
        if self._lingering is not None:
            self._lingering.stop()
        exchange, self.exchange = self.exchange, None
        if exchange is not None and not exchange.finished:
            exchange.stop()
            # nginx's status for a request its client abandoned.
            exchange.logAccess(499, 0)
        self.router.sessionClosed(self)

    def readConnectionLost(self) -> None:
        """
        The client half-closed: finish the current response and those of
        the complete requests it pipelined, then close.
        """
        self._closing = True
        self._clientEOF = True
        exchange = self.exchange
        if self._lingering is not None:
            self._lingering.clientClosed()
        elif exchange is None:
            self.transport.loseConnection()
        else:
            exchange.clientEOF()

    def writeConnectionLost(self) -> None:
        if self._lingering is None:
            self.transport.loseConnection()

    def closeWhenIdle(self) -> None:
        """
        Draining: close now if idle between two requests.  A request in
        flight, or whose head has begun to arrive, is answered first (its
        response says C{Connection: close}), and so is the first request
        of a connection accepted before the drain, if it begins in time
        (L{closeIfSilent}): a client sends it before it can know.
        """
        if self.exchange is None and (
            self._closing or (self.connectionVars is not None and not self._parser.begun)
        ):
            self._closing = True
            self.transport.loseConnection()

    def closeIfSilent(self) -> None:
        """
        Draining: close if the client has sent nothing yet.
        """
        if self.exchange is None and self.connectionVars is None and not (
            self._parser.begun or self._sniffed or self._closing
        ):
            self._closing = True
            self.transport.loseConnection()

    # One timer per session, restarted rather than re-created: waiting for
    # a request head (408 when late), or idle between requests (silent
    # close).  Restarting an IdleTimer later costs a timestamp, and while a
    # client is connected its timer keeps the timers' shared delayed call
    # alive: the node connection's timer, started and cancelled once per
    # request, then costs no delayed call of its own.

    def _arm(self, seconds: float, action) -> None:
        self._timerAction = action
        timer = self._timer
        if timer is None:
            self._timer = IdleTimer(self.router.reactor, seconds, self._timerFired)
        else:
            timer.restart(seconds)

    def _disarm(self) -> None:
        self._timerAction = None

    def _timerFired(self) -> None:
        self._timer = None
        action, self._timerAction = self._timerAction, None
        if action is not None:
            action()

    def _cancelTimer(self) -> None:
        self._timerAction = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _headTimedOut(self) -> None:
        self.refuse(408, "headers_timeout", "request head not received in time")

    def _keepaliveExpired(self) -> None:
        self.closeConnection()

    def closeConnection(self) -> None:
        """
        Close the connection, and read no request from it any more: the
        reactor may still hand over bytes it read (a read event of the same
        poll), such as the rest of a body the node answered without
        reading, which must never be parsed as a request.
        """
        self._closing = True
        self.transport.loseConnection()

    # Reading

    def pauseReading(self) -> None:
        """
        Stop reading the client (nested: one resume per pause).
        """
        self._pausedReasons += 1
        if self._pausedReasons == 1:
            self.transport.pauseProducing()

    def resumeReading(self) -> None:
        """
        Undo one L{pauseReading}.
        """
        self._pausedReasons -= 1
        if self._pausedReasons == 0:
            self.transport.resumeProducing()

    # As the producer of a request body for the upstream connection

    def pauseProducing(self) -> None:
        self.pauseReading()

    def resumeProducing(self) -> None:
        self.resumeReading()

    def stopProducing(self) -> None:
        """
        The upstream connection ended; its exchange deals with that.
        """

    def dataReceived(self, data: bytes) -> None:
        exchange = self.exchange
        if exchange is not None:
            if exchange.bodyOpen:
                data = exchange.bodyReceived(data)
                if not data or self.exchange is None:
                    return
            pipelined = self._pipelined + data
            self._pipelined = pipelined
            if len(pipelined) > self.router.maxHeadSize and self._pausedReasons == 0:
                self.pauseReading()
            return
        if self._closing:
            if self._lingering is not None:
                self._lingering.dataReceived()
            return
        try:
            head = self._parser.feed(data)
        except HTTPError as e:
            self.refuse(e.status, e.event, e.detail, e.silent)
            return
        if head is None:
            if self._timerAction != self._headTimedOut:
                self._arm(self.router.headersTimeout, self._headTimedOut)
            return
        self._disarm()
        self._startRequest(head, self._parser.leftover)

    def _startRequest(self, head, leftover: bytes) -> None:
        if self.connectionVars is None and not self._encodeConnectionVars():
            return
        key = head.host or self.sniName or b""
        if len(key) > MAX_KEY_LENGTH:
            self.refuse(400, "key_too_long", f"Host of {len(key)} bytes (max 255)")
            return
        exchange = Exchange(self, head, key)
        self.exchange = exchange
        if exchange.start(leftover) and self.exchange is exchange and leftover:
            self.dataReceived(leftover)

    def takePipelined(self) -> bytes:
        """
        The client bytes read past the current request, which are no longer
        a next request (after a 101, they belong to the tunnel).
        """
        pipelined, self._pipelined = self._pipelined, b""
        return pipelined

    # Ending a request

    def exchangeFinished(self, exchange, keepAlive: bool) -> None:
        """
        The response of C{exchange} is complete.
        """
        if self.exchange is not exchange:
            return
        self.exchange = None
        if not keepAlive or self.router.draining or (self._closing and not self._clientEOF):
            if exchange.bodyPending and not self._clientEOF and self._lingering is None:
                # Answered before its body was read whole (a node may
                # answer an upload early): lingering, as after a refusal,
                # so that the unread bytes cost the client no reset over
                # the answer.
                self._closing = True
                self._lingering = Lingering(self.router.reactor, self.transport)
                if self._pausedReasons:
                    self._pausedReasons = 1
                    self.resumeReading()
                return
            self.closeConnection()
            return
        self._parser.reset()
        pipelined, self._pipelined = self._pipelined, b""
        if self._clientEOF:
            self._afterClientEOF(pipelined)
            return
        self._arm(self.router.keepalive, self._keepaliveExpired)
        if self._pausedReasons:
            self._pausedReasons = 1
            self.resumeReading()
        if pipelined:
            self.dataReceived(pipelined)

    def _afterClientEOF(self, pipelined: bytes) -> None:
        """
        The client half-closed after pipelining: each complete request it
        sent is still answered, in order (as nginx does), and the
        connection closes once none is left.
        """
        try:
            head = self._parser.feed(pipelined)
        except HTTPError as e:
            self.refuse(e.status, e.event, e.detail, e.silent)
            return
        if head is None:
            self.transport.loseConnection()
            return
        self._startRequest(head, self._parser.leftover)
        exchange = self.exchange
        if exchange is not None:
            exchange.clientEOF()

    def refuse(self, status: int, event: str, detail: str, silent: bool = False) -> None:
        """
        Answer with an error (unless C{--silent-errors}, or C{silent}: no
        answer makes sense to this client) and close; linger first if the
        client may still be sending a request body.
        """
        log.info(
            "{event}: {status} {detail} (client {client})",
            event=event, status=status, detail=detail,
            client=self.remoteAddr.decode() or "unix",
        )
        self._closing = True
        self._disarm()
        exchange, self.exchange = self.exchange, None
        bodyMayFollow = False
        if exchange is not None:
            bodyMayFollow = exchange.bodyPending and not self._clientEOF
            exchange.stop()
            exchange.logAccess(status, 0, event)
        router = self.router
        self._lingering = answerAndClose(
            router.reactor, self.transport, status, detail, bodyMayFollow,
            router.silentErrors or silent,
        )
