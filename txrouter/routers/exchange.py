"""
One HTTP request through the HTTP router: client body in, response out.

An L{Exchange} is the HTTP front end of one request's
L{txrouter.lifecycle.RequestLifecycle}: it settles the body framing, builds
the request head in the node's protocol (a uwsgi packet, or an HTTP/1.1
request for an HTTP node, see L{txrouter.wire.http2http}), de-chunks, and
reads the response head for its framing, so that a keep-alive connection
knows exactly where a response ends and bytes past that end are never
taken for the next answer.  Node choice, body holding and spooling,
producers, deadlines and refusals are the lifecycle's; bytes go through
its L{txrouter.relay.Relay}, which becomes a tunnel after a 101.
"""

from twisted.logger import Logger
from zope.interface import implementer

from txrouter.lifecycle import IFrontEnd, RequestLifecycle
from txrouter.proxyprotocol import proxyHeaderOfClient
from txrouter.relay import Relay
from txrouter.routers.noderesponse import NodeResponseReader
from txrouter.routing.nodes import HTTP
from txrouter.spool import BodySpool
from txrouter.wire.http1 import (
    ChunkedDecoder,
    ChunkedScanner,
    HTTPError,
    RTSP_VERSION,
    responseFraming,
)
from txrouter.wire.coding import bodyCoding, withHeaderLines
from txrouter.wire.http2http import encodeRequestHead, relayedResponseHead
from txrouter.wire.http2uwsgi import encodeRequestVars
from txrouter.wire.responses import CONTINUE
from txrouter.wire.uwsgi import MAX_DATASIZE, encodeHeader

log = Logger(namespace="txrouter.http")

_CLOSE_HEADER = b"Connection: close\r\n\r\n"


@implementer(IFrontEnd)
class Exchange(NodeResponseReader):
    """
    The state of one request and its response.

    @ivar lifecycle: the request's L{RequestLifecycle}.
    @ivar bodyOpen: request body bytes are still expected from the client.
    @ivar bodyPending: the request declared a body not yet read whole (it
        may be arriving even though the router has not asked for it).
    """

    bodyOpen = False
    keepAlive = False
    _bodyRemaining = 0
    _decoder = None
    _raw = False
    _tunnelled = False
    _rtsp = False
    _block = None
    _dechunkedLength = None
    _httpHead = None
    _scanner = None
    _headOut = None
    _spool = None
    _coding = None

    def __init__(self, session, head, key: bytes) -> None:
        self.session = session
        self.router = session.router
        self.head = head
        self.key = key
        self.bodyPending = bool(head.chunked or head.contentLength)
        self.relay = Relay(session, session.transport)
        self.lifecycle = lifecycle = RequestLifecycle(
            self.router.requestSettings, self, self.relay, key, session.clientHost,
        )
        lifecycle.method = head.method

    @property
    def finished(self) -> bool:
        """
        The request is over.
        """
        return self.lifecycle.finished

    # Request side

    def start(self, leftover: bytes) -> bool:
        """
        Decide the body framing and dispatch when the packet can be built.

        @return: whether C{leftover} should now be fed as client data.
        """
        head = self.head
        router = self.router
        lifecycle = self.lifecycle
        if router.manageExpect is not None and not self._expectationMet():
            return False
        if head.version == RTSP_VERSION:
            # RTSP speaks its own protocol both ways once the head is sent:
            # a tunnel from the start, the node's answer relayed unparsed.
            self._raw = self._rtsp = True
            self.bodyOpen = True
            self._framing = "close"
        elif head.chunked:
            self.bodyOpen = True
            if router.chunkedInput:
                self._raw = True
            else:
                self._decoder = ChunkedDecoder()
                self._spool = BodySpool(router.spoolMemory, router.spoolDir)
                lifecycle.spoolBody(self._spool)
        elif head.contentLength:
            if router.limitPost and head.contentLength > router.limitPost:
                self.session.refuse(
                    413, "body_too_large",
                    f"body of {head.contentLength} bytes, limit {router.limitPost}",
                )
                return False
            self._bodyRemaining = head.contentLength
            self.bodyOpen = True
            if router.postBuffering:
                self._spool = BodySpool(router.postBuffering, router.postBufferingDir)
                lifecycle.spoolBody(self._spool)
        elif router.rawBody or (router.manageSource and head.method == b"SOURCE"):
            # uWSGI's raw mode: what follows the head goes to the node
            # until the client closes (an Icecast SOURCE stream).
            self._raw = True
            self.bodyOpen = True
        if self._decoder is None:
            # Most nodes speak uwsgi: the vars are built at once.
            self._block = self._uwsgiVars()
        if self.bodyOpen:
            lifecycle.watchBody(router.bodyTimeout)
        if self._spool is None:
            # The head for the chosen node is built (and may be refused)
            # before the client is told to send its body.
            lifecycle.dispatch()
            if lifecycle.finished:
                return False
        if self.bodyOpen and head.expectContinue and head.version == b"HTTP/1.1":
            self.session.transport.write(CONTINUE)
        return True

    def _expectationMet(self) -> bool:
        """
        C{--manage-expect}: refuse an C{Expect} other than C{100-continue}
        (417), and with a limit, a body over it that waits for C{100
        Continue} (413) before a byte of it is read.

        @return: whether the request goes on.
        """
        head = self.head
        limit = self.router.manageExpect
        if head.expectContinue:
            if limit and (head.contentLength or 0) > limit:
                self.session.refuse(
                    413, "body_too_large",
                    f"body of {head.contentLength} bytes, --manage-expect limit {limit}",
                )
                return False
            return True
        for name, value in head.headers:
            if name.lower() == b"expect":
                self.session.refuse(
                    417, "expectation_failed", f"cannot meet Expect: {value[:40]!r}",
                )
                return False
        return True

    def _uwsgiVars(self) -> bytes:
        session = self.session
        router = self.router
        return encodeRequestVars(
            self.head, session.connectionVars, router.httpVars, session.trustForwarded,
            self._dechunkedLength,
        )

    def _headIn(self, protocol) -> "bytes | None":
        """
        The request head (without uwsgi's 4-byte header) for a node that
        speaks C{protocol}, built once per protocol; or L{None} after
        refusing a request whose head that node could not take (431: the
        request is at fault, no other node is tried).
        """
        session = self.session
        router = self.router
        if protocol == HTTP:
            head = self._httpHead
            if head is None:
                try:
                    head = self._httpHead = encodeRequestHead(
                        self.head, session.remoteAddr, session.https,
                        session.trustForwarded, self._dechunkedLength, router.maxHeadSize,
                        router.nodePool is not None,
                    )
                except HTTPError as e:
                    session.refuse(e.status, e.event, e.detail)
                    return None
            return head
        block = self._block
        if block is None:
            block = self._block = self._uwsgiVars()
        if len(block) > router.bufferSize or len(block) > MAX_DATASIZE:
            session.refuse(
                431, "packet_too_large",
                f"request vars take {len(block)} bytes, the backend buffer-size"
                f" is {router.bufferSize}",
            )
            return None
        return block

    def bodyReceived(self, data: bytes) -> bytes:
        """
        Client bytes while the body is open.

        @return: the bytes past the end of this body (a pipelined request).
        """
        if self._raw:
            if not self._tunnelled:
                # Chunked input passed through raw: still a request body.
                self.lifecycle.bodyActivity(len(data))
            self.relay.toNode(data)
            return b""
        lifecycle = self.lifecycle
        lifecycle.bodyActivity(len(data))
        if self._decoder is not None:
            return self._chunkReceived(data)
        remaining = self._bodyRemaining
        surplus = b""
        if len(data) > remaining:
            surplus = data[remaining:]
            data = data[:remaining]
        self._bodyRemaining = remaining = remaining - len(data)
        if self._spool is None:
            self.relay.toNode(data)
        elif not lifecycle.spooled((data,), not remaining):
            return b""
        if not remaining:
            self._bodyComplete()
            if self._spool is not None:
                lifecycle.dispatch()
        return surplus

    def _chunkReceived(self, data: bytes) -> bytes:
        decoder = self._decoder
        try:
            pieces = decoder.feed(data)
        except HTTPError as e:
            self.session.refuse(e.status, e.event, e.detail)
            return b""
        lifecycle = self.lifecycle
        if not lifecycle.spooled(pieces, decoder.done):
            return b""
        limit = self.router.limitPost
        length = self._spool.length
        if limit and length > limit:
            self.session.refuse(
                413, "body_too_large", f"chunked body over the limit of {limit} bytes"
            )
            return b""
        if not decoder.done:
            return b""
        self._bodyComplete()
        self._dechunkedLength = b"%d" % length
        lifecycle.dispatch()
        return decoder.leftover

    def _bodyComplete(self) -> None:
        self.bodyOpen = self.bodyPending = False
        self.lifecycle.bodyComplete()

    def clientEOF(self) -> None:
        """
        The client will send nothing more: in a tunnel, tell the node too.
        """
        if self._raw:
            self.relay.clientEOF()
        elif self.bodyOpen:
            log.info(
                "client_body_truncated: client closed before the end of its body",
                event="client_body_truncated",
            )
            self.abort("client_body_truncated")

    # IFrontEnd: connecting

    def refuse(self, status: int, event: str, detail: str) -> None:
        self.session.refuse(status, event, detail)

    def headFor(self, node) -> "bytes | None":
        """
        The request head in C{node}'s protocol, or L{None} if the request
        was refused because that node could not take it.
        """
        head = self._headIn(node.protocol)
        if head is None:
            return None
        if node.protocol == HTTP:
            version = self.router.sendProxy
            if version:
                return proxyHeaderOfClient(version, self.session.transport) + head
            return head
        router = self.router
        return encodeHeader(
            router.modifier1 or node.modifier1, len(head), router.modifier2 or node.modifier2,
        ) + head

    def nodeConnected(self, upstream) -> bool:
        if self._rtsp:
            self.lifecycle.responseStarted = True
            self._tunnel()
            return True
        self._startResponse()
        return self.bodyOpen

    # IFrontEnd: the response

    def _chunkedBody(self, data: bytes) -> None:
        """
        Relay chunked body bytes as they are, up to the last chunk's end.
        """
        try:
            end = self._scanner.feed(data)
        except HTTPError as e:
            self._truncated(e.detail)
            return
        if end is None:
            self._toClient(data)
            return
        if end < len(data):
            self._surplus(len(data) - end)
            data = data[:end]
        self._toClient(data, True)
        self._complete()

    def _closeDelimitedBody(self, data: bytes) -> None:
        if self._framing == "recoded":
            data = self._coding.encode(data)
            if not data:
                return
        self._toClient(data)

    def _interimHead(self, resp) -> None:
        """
        A node's interim head (100 Continue, 103 Early Hints) is relayed;
        the final one follows it.
        """
        self.session.transport.write(resp.headBytes)

    def _responseHead(self, data: bytes):
        """
        Feed the response head; write it out once complete.

        @return: the body bytes that followed the head, or L{None}.
        """
        resp = self._finalHead(data)
        if resp is None:
            return None
        parser = self._respParser
        status = resp.status
        self.status = status
        self.lifecycle.responseStarted = True
        request = self.head
        out = resp.headBytes
        if status == 101:
            if request.upgrade is None:
                self._badResponse("101 Switching Protocols to a request without Upgrade")
                return None
            self._framing = "close"
            self._tunnel()
        else:
            self._framing, self._respRemaining = responseFraming(resp, request.method)
            if self._framing == "chunked":
                self._scanner = ChunkedScanner()
            if self.lifecycle.node.protocol == HTTP:
                # The node's Connection header is about its own hop: it
                # is removed, and the router decides for the client's.
                out, reusable = relayedResponseHead(resp)
                closes = not reusable
                saysClose = False
                self._nodeReusable = (
                    reusable and not resp.connectionClose and self._framing != "close"
                )
            else:
                closes = saysClose = resp.connectionClose
            if self._framing == "close" and request.version == b"HTTP/1.1":
                out = self._recoded(resp, out)
            self.keepAlive = bool(
                self.router.keepalive
                and not self.router.draining
                and request.keepAlive
                and request.version == b"HTTP/1.1"
                and self._framing != "close"
                and not closes
                and not self._raw
                # An answer before the body was read whole is followed by
                # lingering, then a close.
                and not self.bodyOpen
            )
            if not self.keepAlive and not saysClose:
                out = out[:-2] + _CLOSE_HEADER
        leftover = parser.leftover
        if self._framing == "none":
            if leftover:
                if self.keepAlive:
                    out = out[:-2] + _CLOSE_HEADER
                self._surplus(len(leftover))
            self.session.transport.write(out)
            self._complete()
            return None
        self._headOut = out
        return leftover

    def _recoded(self, resp, out: bytes) -> bytes:
        """
        With C{--auto-chunked} or C{--auto-gzip}, a close-delimited body
        goes to the client chunked (and maybe gzipped), so that its
        connection can carry another request.

        @return: the response head to send.
        """
        router = self.router
        if not out.startswith(b"HTTP/1.1 "):
            return out
        coding = bodyCoding(self.head.headers, resp.headers, router.autoChunked, router.autoGzip)
        if coding is None:
            return out
        self._coding = coding
        self._framing = "recoded"
        return withHeaderLines(out, coding.headerLines)

    def _tunnel(self) -> None:
        """
        After a 101 answer, the relay carries the client's bytes to the
        node until either side closes.
        """
        self._raw = self._tunnelled = True
        self.bodyOpen = True
        self.lifecycle.tunnel(self.router.websocketTimeout)
        pipelined = self.session.takePipelined()
        if pipelined:
            self.relay.toNode(pipelined)
        self.relay.streamFromClient()

    def _toClient(self, data: bytes, last: bool = False) -> None:
        """
        Relay response bytes; C{last} when they end the response.
        """
        self._bodySent += len(data)
        head = self._headOut
        if head is not None:
            # The head goes out with the first body bytes, in one write when
            # the copy is small.
            self._headOut = None
            if len(data) < 65536:
                data = head + data
            else:
                self.session.transport.write(head)
        self.relay.fromNode(data, last)

    def _truncated(self, detail: str) -> None:
        """
        The body broke off or went wrong: if nothing of the response has
        reached the client yet (its head waits for the first body bytes),
        the client gets a 502 rather than a silent close, which a client
        may take for a request never answered and send again.
        """
        if self._headOut is not None:
            self._headOut = None
            self._badResponse(detail, "response_truncated")
            return
        NodeResponseReader._truncated(self, detail)

    def _surplus(self, count: int) -> None:
        """
        Bytes past the end of the response: dropped, and the connection
        closes after it; a head not sent yet (it waits for the first body
        bytes) says so.
        """
        NodeResponseReader._surplus(self, count)
        head = self._headOut
        if self.keepAlive and head is not None:
            self._headOut = head[:-2] + _CLOSE_HEADER
        self.keepAlive = False

    def _cut(self, event: str) -> None:
        """
        End the exchange cutting both connections, with its access log line.
        """
        self.logAccess(self.status, self._bodySent, event)
        self.session.exchange = None
        self.abort(event)

    def responseEnded(self, reason, timedOut: bool) -> None:
        if self._tunnelled and (timedOut or reason is not None):
            # A tunnel has no length to fall short of: idle or reset is how
            # it ends, not a broken response.
            log.info(
                "tunnel_closed: {node}: {why}", event="tunnel_closed",
                node=self.lifecycle.node.name,
                why=f"idle both ways for {self.router.websocketTimeout} s" if timedOut else reason,
            )
            self._cut("tunnel_closed")
            return
        if reason is None and not timedOut and self._framing in ("close", "recoded"):
            if self._coding is not None:
                self._toClient(self._coding.finish(), True)
            self._complete()
        else:
            self._truncated("timed out" if timedOut else (reason or "closed early"))

    def _complete(self) -> None:
        """
        The response is over: let the session read the next request.
        """
        lifecycle = self.lifecycle
        if lifecycle.finished:
            return
        lifecycle.keepNodeConnection = self._nodeReusable and not self.bodyOpen
        lifecycle.release()
        lifecycle.logAccess(self.head, self.status, self._bodySent)
        self.session.exchangeFinished(self, self.keepAlive and not self.bodyOpen)

    # Ending

    def abort(self, event: str) -> None:
        """
        Stop everything this exchange started and close both connections
        (the client's gracefully: what was sent is all it gets).
        """
        if self.lifecycle.finished:
            return
        self.lifecycle.abort()
        self.session.closeConnection()

    def stop(self) -> None:
        """
        Stop everything this exchange started, cutting the node's
        connection; the session deals with the client's.
        """
        self.lifecycle.abort()
