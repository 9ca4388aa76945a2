"""
One HTTP/2 stream through the HTTP router: one request to a node.

An L{HTTP2Stream} is to an HTTP/2 stream what
L{txrouter.routers.exchange.Exchange} is to an HTTP/1.1 request: the front
end of one L{txrouter.lifecycle.RequestLifecycle}, so node choice, retries,
body holding and spooling, deadlines, refusals and the access log are the
lifecycle's, the same for both.  What is its own:

  - the request head is L{txrouter.wire.h2messages.requestHead}'s (version
    C{HTTP/2}); a node is sent the same uwsgi vars, or the same HTTP/1.1
    request, an HTTP/1.1 client's request would make.  A body without
    C{content-length} is stored whole first (as a chunked HTTP/1.1 body
    is), so that the node gets its C{CONTENT_LENGTH};
  - flow control towards the client: the bytes of the body the client
    sends are acknowledged (the stream's window opened again) as they are
    handed to the node's connection, and no longer while that connection
    has paused its producer (the node is not reading): a client can have
    at most a window of body bytes in the router;
  - the node's response head becomes the stream's HEADERS
    (L{txrouter.wire.h2messages.responseHeaders}); a chunked body is
    de-chunked, a body ends where its framing says, and the stream is the
    consumer its relay writes the body to: bytes beyond what the client's
    window lets out wait in the stream, and past L{HIGH_WATER} of them
    the node's connection is paused, resumed below L{LOW_WATER}.  A slow
    reader of one stream pauses its own node only.

The frames themselves are the connection's
(L{txrouter.routers.h2connection.HTTP2Connection}).
"""

from collections import deque

from twisted.internet.interfaces import IConsumer, IPushProducer
from twisted.logger import Logger
from zope.interface import implementer

from txrouter.lifecycle import IFrontEnd, RequestLifecycle
from txrouter.proxyprotocol import proxyHeaderOfClient
from txrouter.relay import Relay
from txrouter.routers.noderesponse import NodeResponseReader
from txrouter.routing.nodes import HTTP
from txrouter.spool import BodySpool
from txrouter.wire.h2messages import NodeResponseParser, responseHeaders
from txrouter.wire.http1 import ChunkedDecoder, HTTPError, responseFraming
from txrouter.wire.http2http import encodeRequestHead, relayedResponseHead
from txrouter.wire.http2uwsgi import encodeRequestVars
from txrouter.wire.uwsgi import MAX_DATASIZE, encodeHeader

log = Logger(namespace="txrouter.http2")

#: Response bytes waiting in a stream past which its node's connection is
#: paused, and below which it is resumed.
HIGH_WATER = 65536
LOW_WATER = 16384

_HTTP11 = b"HTTP/1.1"


@implementer(IFrontEnd, IPushProducer, IConsumer)
class HTTP2Stream(NodeResponseReader):
    """
    The state of one stream: its request, its response, its flow control.

    It is the client side of its L{Relay} both ways: the producer of the
    body (pausing it holds the client's window) and the consumer of the
    response (what it is written goes out in DATA frames).

    @ivar streamID: the stream's id.
    @ivar lifecycle: the request's L{RequestLifecycle}.
    @ivar bodyOpen: request body bytes are still expected from the client.
    @ivar headersSent: the response's HEADERS have gone out.
    @ivar ending: the response is complete once L{outbound} is sent.
    @ivar endSent: the stream's end (C{END_STREAM}) has been sent.
    @ivar outbound: response bytes waiting for the client's window.
    @ivar outboundSize: how many.
    @ivar unacknowledged: body bytes received but not acknowledged yet.
    """

    log = log
    bodyOpen = False
    headersSent = False
    ending = False
    endSent = False
    unacknowledged = 0
    _paused = False
    _producer = None
    _producerPaused = False
    _spool = None
    _block = None
    _httpHead = None
    headParser = NodeResponseParser
    _decoder = None

    def __init__(self, connection, streamID: int, head, key: bytes) -> None:
        self.connection = connection
        self.session = session = connection.session
        self.router = connection.router
        self.streamID = streamID
        self.head = head
        self.key = key
        self.outbound = deque()
        self.outboundSize = 0
        self.relay = Relay(self, self)
        self.lifecycle = lifecycle = RequestLifecycle(
            self.router.requestSettings, self, self.relay, key, session.clientHost,
        )
        lifecycle.method = head.method

    @property
    def finished(self) -> bool:
        """
        The request is over (its response may still be leaving).
        """
        return self.lifecycle.finished

    # The request

    def start(self, endStream: bool) -> None:
        """
        Settle the body and dispatch.

        @param endStream: the HEADERS ended the stream: no body.
        """
        head = self.head
        router = self.router
        lifecycle = self.lifecycle
        if not endStream:
            self.bodyOpen = True
            length = head.contentLength
            # A connection's streams store bodies together: each keeps at
            # most a window's worth in memory, the rest in the spool's file.
            window = self.connection.settings.window
            if length is None:
                # Only a stored body's length can be told to a uwsgi node.
                self._spool = BodySpool(min(router.spoolMemory, window), router.spoolDir)
                lifecycle.spoolBody(self._spool)
            else:
                if router.limitPost and length > router.limitPost:
                    self.refuse(413, "body_too_large",
                                f"body of {length} bytes, limit {router.limitPost}")
                    return
                if router.postBuffering:
                    self._spool = BodySpool(
                        min(router.postBuffering, window), router.postBufferingDir)
                    lifecycle.spoolBody(self._spool)
            lifecycle.watchBody(router.bodyTimeout)
        if self._spool is None:
            lifecycle.dispatch()
            if lifecycle.finished:
                return
        if self.bodyOpen and head.expectContinue:
            self.connection.sendInformational(self, 100)

    def dataReceived(self, data: bytes, flowLength: int) -> None:
        """
        Body bytes from the client, C{flowLength} of its window (padding
        included).
        """
        connection = self.connection
        lifecycle = self.lifecycle
        if lifecycle.finished or not self.bodyOpen:
            connection.acknowledge(self, flowLength)
            return
        lifecycle.bodyActivity(len(data))
        spool = self._spool
        if spool is None:
            self.relay.toNode(data)
            if self._paused:
                self.unacknowledged += flowLength
            else:
                connection.acknowledge(self, flowLength)
            return
        connection.acknowledge(self, flowLength)
        if not lifecycle.spooled((data,), False):
            return
        limit = self.router.limitPost
        if limit and spool.length > limit:
            self.refuse(413, "body_too_large", f"body over the limit of {limit} bytes")

    def clientEnded(self) -> None:
        """
        The client ended the stream: the body is complete.
        """
        if not self.bodyOpen:
            return
        self.bodyOpen = False
        lifecycle = self.lifecycle
        if lifecycle.finished:
            return
        spool = self._spool
        if spool is None:
            lifecycle.bodyComplete()
            return
        if not lifecycle.spooled((), True):
            return
        lifecycle.bodyComplete()
        head = self.head
        if head.contentLength is None:
            # The node is told the length the body turned out to have.
            length = spool.length
            self.head = head._replace(
                headers=head.headers + [(b"content-length", b"%d" % length)],
                contentLength=length,
            )
        lifecycle.dispatch()

    # IPushProducer: the body's producer.  Not nested: a transport pauses
    # its producer at each write past its buffer's size, and resumes it
    # once; the relay's own pause (the node not yet connected) is over
    # before the node's transport can pause it.

    def pauseProducing(self) -> None:
        self._paused = True

    def resumeProducing(self) -> None:
        self._paused = False
        if self.unacknowledged:
            size, self.unacknowledged = self.unacknowledged, 0
            self.connection.acknowledge(self, size)

    def stopProducing(self) -> None:
        """
        The node's connection ended; the lifecycle deals with that.
        """

    # IConsumer: the response body, for the client

    def write(self, data: bytes) -> None:
        if data:
            self.outbound.append(data)
            self.outboundSize += len(data)
            self.connection.flush(self)
        producer = self._producer
        if producer is not None and self.outboundSize > HIGH_WATER and not self._producerPaused:
            self._producerPaused = True
            producer.pauseProducing()

    def registerProducer(self, producer, streaming: bool) -> None:
        self._producer = producer
        self._producerPaused = False
        if self.outboundSize > HIGH_WATER:
            self._producerPaused = True
            producer.pauseProducing()

    def unregisterProducer(self) -> None:
        self._producer = None
        self._producerPaused = False

    def drained(self) -> None:
        """
        The connection sent some of L{outbound}: resume the node's
        connection once little is left.
        """
        if self._producerPaused and self.outboundSize <= LOW_WATER:
            self._producerPaused = False
            self._producer.resumeProducing()

    # IFrontEnd: connecting

    def _uwsgiVars(self) -> bytes:
        session = self.session
        return encodeRequestVars(
            self.head, session.connectionVars, self.router.httpVars, session.trustForwarded,
        )

    def headFor(self, node) -> "bytes | None":
        """
        The request head in C{node}'s protocol, or L{None} if the request
        was refused because that node could not take it.
        """
        router = self.router
        session = self.session
        if node.protocol == HTTP:
            head = self._httpHead
            if head is None:
                try:
                    head = self._httpHead = encodeRequestHead(
                        self.head._replace(version=_HTTP11), session.remoteAddr, session.https,
                        session.trustForwarded, None, router.maxHeadSize,
                        router.nodePool is not None,
                    )
                except HTTPError as e:
                    self.refuse(e.status, e.event, e.detail)
                    return None
            version = router.sendProxy
            if version:
                return proxyHeaderOfClient(version, session.transport) + head
            return head
        block = self._block
        if block is None:
            block = self._block = self._uwsgiVars()
        if len(block) > router.bufferSize or len(block) > MAX_DATASIZE:
            self.refuse(
                431, "packet_too_large",
                f"request vars take {len(block)} bytes, the backend buffer-size"
                f" is {router.bufferSize}",
            )
            return None
        return encodeHeader(
            router.modifier1 or node.modifier1, len(block), router.modifier2 or node.modifier2,
        ) + block

    def nodeConnected(self, upstream) -> bool:
        self._startResponse()
        return self.bodyOpen

    # IFrontEnd: the response

    def _chunkedBody(self, data: bytes) -> None:
        """
        De-chunk body bytes: HTTP/2 frames the body itself.
        """
        decoder = self._decoder
        try:
            pieces = decoder.feed(data)
        except HTTPError as e:
            self._truncated(e.detail)
            return
        done = decoder.done
        if pieces or done:
            self._toClient(b"".join(pieces), done)
        if done:
            if decoder.leftover:
                self._surplus(len(decoder.leftover))
            self._complete()

    def _interimHead(self, resp) -> None:
        """
        A node's interim head is dropped: interim answers on a stream are
        the router's to give (100 Continue).
        """

    def _responseHead(self, data: bytes):
        """
        Feed the response head; send its HEADERS once complete.

        @return: the body bytes that followed the head, or L{None}.
        """
        resp = self._finalHead(data)
        if resp is None:
            return None
        parser = self._respParser
        status = resp.status
        if status == 101:
            self._badResponse("101 Switching Protocols on an HTTP/2 stream")
            return None
        self.status = status
        lifecycle = self.lifecycle
        lifecycle.responseStarted = True
        self._framing, self._respRemaining = responseFraming(resp, self.head.method)
        if self._framing == "chunked":
            self._decoder = ChunkedDecoder(maxTrailerSize=65536)
        if lifecycle.node.protocol == HTTP:
            self._nodeReusable = (
                relayedResponseHead(resp)[1] and not resp.connectionClose
                and self._framing != "close"
            )
        leftover = parser.leftover
        try:
            headers = responseHeaders(resp)
        except HTTPError as e:
            self._badResponse(e.detail, e.event)
            return None
        none = self._framing == "none"
        if not self.connection.sendHeaders(self, headers, none):
            self.refuse(502, "bad_response", "the backend sent an invalid response")
            return None
        if none:
            if leftover:
                self._surplus(len(leftover))
            self._complete()
            return None
        return leftover

    def _toClient(self, data: bytes, last: bool = False) -> None:
        self._bodySent += len(data)
        if last:
            # The last DATA frame carries END_STREAM.
            self.ending = True
        self.relay.fromNode(data, last)

    def _cut(self, event: str) -> None:
        """
        End the request cutting the node's connection and resetting the
        stream, with its access log line.
        """
        self.logAccess(self.status, self._bodySent, event)
        self.abort(event)

    def responseEnded(self, reason, timedOut: bool) -> None:
        if reason is None and not timedOut and self._framing == "close":
            self._complete()
        else:
            self._truncated("timed out" if timedOut else (reason or "closed early"))

    def _complete(self) -> None:
        """
        The node's response is over: the stream ends once its bytes are
        out, and the node's connection is released now.
        """
        lifecycle = self.lifecycle
        if lifecycle.finished:
            return
        lifecycle.keepNodeConnection = self._nodeReusable and not self.bodyOpen
        lifecycle.release()
        lifecycle.logAccess(self.head, self.status, self._bodySent)
        self.ending = True
        self.connection.flush(self)

    # Ending

    def refuse(self, status: int, event: str, detail: str) -> None:
        """
        End the request with a short error response on the stream (a reset
        once its response has begun, or with C{--silent-errors}).
        """
        session = self.session
        log.info(
            "{event}: {status} {detail} (client {client}, HTTP/2 stream {stream})",
            event=event, status=status, detail=detail,
            client=session.remoteAddr.decode() or "unix", stream=self.streamID,
        )
        lifecycle = self.lifecycle
        if not lifecycle.finished:
            lifecycle.abort()
            self.logAccess(status, 0, event)
        self.connection.answer(self, status, detail)

    def abort(self, event: str) -> None:
        """
        Cut the request: its node connection, and the stream (reset), so
        that what was sent does not look complete.
        """
        self.lifecycle.abort()
        self.connection.resetStream(self)

    def stop(self) -> None:
        """
        The client is gone or reset the stream: release the node.
        """
        self.lifecycle.abort()
        self.outbound.clear()
        self.outboundSize = 0
