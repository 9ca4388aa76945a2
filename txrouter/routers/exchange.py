"""
One HTTP request through the HTTP router: client body in, response out.

An L{Exchange} is created by the session for each request head.  It picks a
node (with uWSGI's retry rules), sends the request head in the node's
protocol (a uwsgi packet, or an HTTP/1.1 request for an HTTP node, see
L{txrouter.wire.http2http}) and the body through L{txrouter.upstream}, and
relays the response while tracking its framing, so that a keep-alive
connection knows exactly where a response ends and bytes past that end are
never taken for the next answer.
"""

from twisted.logger import Logger

from txrouter.routers.dispatch import Dispatching
from txrouter.routing.nodes import HTTP
from txrouter.spool import BodySpool, SpoolError
from txrouter.timers import IdleTimer
from txrouter.wire.http1 import (
    ChunkedDecoder,
    ChunkedScanner,
    HTTPError,
    ResponseHeadParser,
    response_framing,
)
from txrouter.wire.http2http import encodeRequestHead, relayedResponseHead
from txrouter.wire.http2uwsgi import encodeRequestVars
from txrouter.wire.responses import CONTINUE
from txrouter.wire.uwsgi import MAX_DATASIZE, encodeHeader

log = Logger(namespace="txrouter.http")

#: Body bytes held while the backend connection is being set up before the
#: client is paused.
_PENDING_LIMIT = 65536

_CLOSE_HEADER = b"Connection: close\r\n\r\n"


class Exchange(Dispatching):
    """
    The state of one request and its response.

    @ivar bodyOpen: request body bytes are still expected from the client.
    """

    bodyOpen = False
    finished = False
    keepAlive = False
    status = 0
    _bodyRemaining = 0
    _decoder = None
    _spool = None
    _raw = False
    _pendingSize = 0
    _pausedForConnect = False
    _bodyTimer = None
    _block = None
    _dechunkedLength = None
    _httpHead = None
    _upstream = None
    _relaying = False
    _bodyProducer = False
    _respParser = None
    _framing = None
    _respRemaining = 0
    _scanner = None
    _sent = 0
    _headOut = None

    def __init__(self, session, head, key: bytes) -> None:
        self.session = session
        self.router = session.router
        self.head = head
        self.key = key
        self._pending = []

    # Request side

    def start(self, leftover: bytes) -> bool:
        """
        Decide the body framing and dispatch when the packet can be built.

        @return: whether C{leftover} should now be fed as client data.
        """
        head = self.head
        router = self.router
        if head.chunked:
            self.bodyOpen = True
            if router.chunkedInput:
                self._raw = True
            else:
                self._decoder = ChunkedDecoder()
                self._spool = BodySpool(router.spoolMemory, router.spoolDir)
        elif head.content_length:
            if router.limitPost and head.content_length > router.limitPost:
                self.session.refuse(
                    413, "body_too_large",
                    f"body of {head.content_length} bytes, limit {router.limitPost}",
                )
                return False
            self._bodyRemaining = head.content_length
            self.bodyOpen = True
            if router.postBuffering:
                self._spool = BodySpool(router.postBuffering, router.postBufferingDir)
        if self._decoder is None:
            # Most nodes speak uwsgi: the vars are built at once.
            self._block = self._uwsgiVars()
        if self.bodyOpen:
            self._bodyTimer = IdleTimer(router.reactor, router.bodyTimeout, self._bodyTimedOut)
        if self._spool is None:
            # The head for the chosen node is built (and may be refused)
            # before the client is told to send its body.
            self._dispatchRequest()
            if self.finished:
                return False
        if self.bodyOpen and head.expect_continue and head.version == b"HTTP/1.1":
            self.session.transport.write(CONTINUE)
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
            self._bodyOut(data)
            return b""
        if self._decoder is not None:
            return self._chunkReceived(data)
        remaining = self._bodyRemaining
        surplus = b""
        if len(data) > remaining:
            surplus = data[remaining:]
            data = data[:remaining]
        self._bodyRemaining = remaining - len(data)
        spool = self._spool
        if spool is None:
            self._bodyOut(data)
        else:
            self._bodyTimer.touch()
            try:
                spool.write(data)
                if not self._bodyRemaining:
                    spool.finish()
            except SpoolError as e:
                self._spoolFailed(e)
                return b""
        if not self._bodyRemaining:
            self._bodyComplete()
            if spool is not None:
                self._dispatchRequest()
        return surplus

    def _chunkReceived(self, data: bytes) -> bytes:
        decoder = self._decoder
        self._bodyTimer.touch()
        try:
            pieces = decoder.feed(data)
        except HTTPError as e:
            self.session.refuse(e.status, e.event, e.detail)
            return b""
        spool = self._spool
        try:
            for piece in pieces:
                spool.write(piece)
            if decoder.done:
                spool.finish()
        except SpoolError as e:
            self._spoolFailed(e)
            return b""
        limit = self.router.limitPost
        if limit and spool.length > limit:
            self.session.refuse(
                413, "body_too_large", f"chunked body over the limit of {limit} bytes"
            )
            return b""
        if not decoder.done:
            return b""
        self._bodyComplete()
        self._dechunkedLength = b"%d" % spool.length
        self._dispatchRequest()
        return decoder.leftover

    def _bodyOut(self, data: bytes) -> None:
        self._bodyTimer.touch()
        upstream = self._upstream
        if upstream is not None:
            upstream.write(data)
            return
        self._pending.append(data)
        self._pendingSize += len(data)
        if self._pendingSize > _PENDING_LIMIT and not self._pausedForConnect:
            self._pausedForConnect = True
            self.session.pauseReading()

    def _spoolFailed(self, error: SpoolError) -> None:
        """
        The body could not be stored (or read back): 503, and an error line
        for the operator, who has a disk or a directory to fix; the client
        is not told where.
        """
        if self.finished:
            return
        log.error(
            "spool_failed: {client}: the request body could not be stored: {error}",
            event="spool_failed", client=self.session.remoteAddr.decode() or "unix",
            error=str(error),
        )
        self.session.refuse(503, "spool_failed", "the request body could not be stored")

    def _spoolSendFailed(self, failure) -> None:
        """
        The spooled body did not all reach the node: reading it back
        failed, or the transfer stopped because the exchange ended (nothing
        more to do then).
        """
        if failure.check(SpoolError):
            self._spoolFailed(failure.value)

    def _bodyComplete(self) -> None:
        self.bodyOpen = False
        self._bodyTimer.cancel()
        if self._bodyProducer:
            self._bodyProducer = False
            self._upstream.transport.unregisterProducer()

    def _bodyTimedOut(self) -> None:
        if self._framing is None:
            self.session.refuse(408, "body_timeout", "request body not received in time")
        else:
            self.abort("body_timeout")
            self.session.transport.loseConnection()

    def clientEOF(self) -> None:
        """
        The client will send nothing more: in a tunnel, tell the node too.
        """
        if self._raw:
            if self._upstream is not None:
                self._upstream.transport.loseWriteConnection()
        elif self.bodyOpen:
            log.info(
                "client_body_truncated: client closed before the end of its body",
                event="client_body_truncated",
            )
            self.abort("client_body_truncated")
            self.session.transport.loseConnection()

    # Connecting

    def _dispatchRequest(self) -> None:
        self._dispatch(self.key, self.session.remoteAddr)

    def _refuse(self, status: int, event: str, detail: str) -> None:
        self.session.refuse(status, event, detail)

    def _headFor(self, node) -> "bytes | None":
        """
        The request head in C{node}'s protocol, or L{None} if the request
        was refused because that node could not take it.
        """
        head = self._headIn(node.protocol)
        if head is None or node.protocol == HTTP:
            return head
        router = self.router
        return encodeHeader(
            router.modifier1 or node.modifier1, len(head), router.modifier2 or node.modifier2,
        ) + head

    def upstreamConnected(self, upstream) -> None:
        self._nodeConnected(upstream)
        self._upstream = upstream
        self._respParser = ResponseHeadParser(self.router.maxHeadSize)
        if self._spool is not None:
            self._spool.sendTo(upstream).addErrback(self._spoolSendFailed)
            return
        if self._pending:
            upstream.write(b"".join(self._pending))
            self._pending = []
        if self.bodyOpen:
            upstream.transport.registerProducer(self.session, True)
            self._bodyProducer = True
            if self._pausedForConnect:
                self._pausedForConnect = False
                self.session.resumeReading()

    # Response side

    def upstreamDataReceived(self, data: bytes) -> None:
        if self._framing is None:
            data = self._responseHead(data)
            if data is None or self.finished:
                return
        framing = self._framing
        if framing == "length":
            remaining = self._respRemaining
            if len(data) < remaining:
                self._respRemaining = remaining - len(data)
                self._toClient(data)
                return
            if len(data) > remaining:
                self._surplus(len(data) - remaining)
                data = data[:remaining]
            self._respRemaining = 0
            self._toClient(data, True)
            self._complete()
        elif framing == "chunked":
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
        else:
            self._toClient(data)

    def _responseHead(self, data: bytes):
        """
        Feed the response head; write it out once complete.

        @return: the body bytes that followed the head, or L{None}.
        """
        parser = self._respParser
        try:
            resp = parser.feed(data)
        except HTTPError as e:
            self._badResponse(e.detail)
            return None
        if resp is None:
            return None
        status = resp.status
        if status < 200 and status != 101:
            self.session.transport.write(resp.head_bytes)
            leftover = parser.leftover
            self._respParser = ResponseHeadParser(self.router.maxHeadSize)
            return self._responseHead(leftover) if leftover else None
        self.status = status
        request = self.head
        out = resp.head_bytes
        if status == 101:
            if request.upgrade is None:
                self._badResponse("101 Switching Protocols to a request without Upgrade")
                return None
            self._framing = "close"
            self._tunnel()
        else:
            self._framing, self._respRemaining = response_framing(resp, request.method)
            if self._framing == "chunked":
                self._scanner = ChunkedScanner()
            if self._node.protocol == HTTP:
                # The node's Connection header is about its own hop: it
                # is removed, and the router decides for the client's.
                out, reusable = relayedResponseHead(resp)
                closes = not reusable
                saysClose = False
            else:
                closes = saysClose = resp.connection_close
            self.keepAlive = bool(
                self.router.keepalive
                and request.keep_alive
                and request.version == b"HTTP/1.1"
                and self._framing != "close"
                and not closes
                and not self._raw
            )
            if not self.keepAlive and not saysClose:
                out = out[:-2] + _CLOSE_HEADER
        leftover = parser.leftover
        if self._framing == "none":
            self.session.transport.write(out)
            if leftover:
                self._surplus(len(leftover))
            self._complete()
            return None
        self._headOut = out
        return leftover

    def _tunnel(self) -> None:
        """
        After a 101 answer, pipe the client's bytes to the backend until EOF.
        """
        session = self.session
        self._raw = True
        self.bodyOpen = True
        if self._bodyTimer is not None:
            self._bodyTimer.cancel()
        self._bodyTimer = IdleTimer(self.router.reactor, self.router.timeout, self._bodyTimedOut)
        pipelined, session._pipelined = session._pipelined, b""
        if pipelined:
            self._bodyOut(pipelined)
        if not self._bodyProducer:
            self._upstream.transport.registerProducer(session, True)
            self._bodyProducer = True

    def _toClient(self, data: bytes, last: bool = False) -> None:
        """
        Relay response bytes; C{last} when they end the response.

        A response that arrives whole never waits on the client; one that
        does not makes the client's transport the producer of the node's
        from its first bytes, so a slow client slows the node down.
        """
        self._sent += len(data)
        transport = self.session.transport
        if not (last or self._relaying):
            transport.registerProducer(self._upstream.transport, True)
            self._relaying = True
        head = self._headOut
        if head is not None:
            # The head goes out with the first body bytes, in one write when
            # the copy is small.
            self._headOut = None
            if len(data) < 65536:
                data = head + data
            else:
                transport.write(head)
        transport.write(data)

    def _surplus(self, count: int) -> None:
        log.warn(
            "response_surplus: {node} sent {count} bytes past the end of its response;"
            " dropped",
            event="response_surplus", node=self._node.name, count=count,
        )
        self.keepAlive = False

    def _badResponse(self, detail: str) -> None:
        log.warn(
            "bad_response: from {node}: {detail}",
            event="bad_response", node=self._node.name, detail=detail,
        )
        self.session.refuse(502, "bad_response", "the backend sent an invalid response")

    def _truncated(self, detail: str) -> None:
        log.warn(
            "response_truncated: from {node}: {detail}",
            event="response_truncated", node=self._node.name, detail=detail,
        )
        self.logAccess(self.status, self._sent)
        self.abort("response_truncated")
        self.session.exchange = None
        self.session.transport.loseConnection()

    def upstreamLost(self, reason, timedOut: bool) -> None:
        self._upstream = None
        if self.finished:
            return
        if self._framing is None:
            if timedOut:
                self.session.refuse(504, "backend_timeout", "the backend did not answer in time")
            else:
                log.warn(
                    "backend_closed: {node} closed without a response: {reason}",
                    event="backend_closed", node=self._node.name,
                    reason=reason or "connection closed",
                )
                self.session.refuse(502, "backend_closed", "the backend closed without a response")
        elif self._framing == "close" and reason is None and not timedOut:
            self._complete()
        else:
            self._truncated("timed out" if timedOut else (reason or "closed early"))

    def _complete(self) -> None:
        """
        The response is over: let the session read the next request.
        """
        if self.finished:
            return
        self._release()
        self.logAccess(self.status, self._sent)
        self.session.exchangeFinished(self, self.keepAlive and not self.bodyOpen)

    # Ending

    def _release(self) -> None:
        self.finished = True
        self._releaseNode()
        if self._bodyTimer is not None:
            self._bodyTimer.cancel()
        if self._relaying:
            self._relaying = False
            self.session.transport.unregisterProducer()
        upstream, self._upstream = self._upstream, None
        if upstream is not None:
            if self._bodyProducer:
                self._bodyProducer = False
                upstream.transport.unregisterProducer()
            upstream.detach()
        if self._spool is not None:
            self._spool.close()

    def abort(self, reason: str) -> None:
        """
        Stop everything this exchange started; the backend connection is cut.
        """
        if self.finished:
            return
        upstream = self._upstream
        self._release()
        if upstream is not None and upstream.transport is not None:
            upstream.transport.abortConnection()

    def logAccess(self, status: int, size: int) -> None:
        """
        Write the access log line of this request, if there is a log.
        """
        accessLog = self.router.accessLog
        if accessLog is not None:
            accessLog.log(self.session.remoteAddr, self.head, status, size)
