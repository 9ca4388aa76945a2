"""
HTTP/2 client connections of the HTTP router (C{--http2}).

A connection whose client negotiated C{h2} by ALPN, or began with the
HTTP/2 preface on a plain listener (h2c with prior knowledge), is handed by
its L{txrouter.routers.http.HTTPSession} to an L{HTTP2Connection}: the
C{h2} library's state machine (C{h2.connection.H2Connection}) fed with the
client's bytes, and one L{txrouter.routers.h2stream.HTTP2Stream} per
stream, each one request through the one lifecycle.  This module does the
frames: it reads the client's events, sends the streams' HEADERS and DATA
as the client's flow-control windows allow, stops sending when the
client's socket stops taking bytes (it is the producer of the client's
transport), and holds the client to the bounds of L{HTTP2Settings}, every
one counted (L{HTTP2Counts}, the stats' C{http2}) and logged once per
connection:

  - concurrent streams (C{SETTINGS_MAX_CONCURRENT_STREAMS}; a client
    opening more is a protocol error, as C{h2} rules);
  - streams reset by the client per second (rapid reset), header block
    size, CONTINUATION frames per block, PING and SETTINGS frames per
    second (L{txrouter.wire.h2guard.FrameGuard}): past one, C{GOAWAY
    ENHANCE_YOUR_CALM} and the connection is closed;
  - the HPACK dynamic table (C{SETTINGS_HEADER_TABLE_SIZE}) and the
    decoded size of a header list (C{SETTINGS_MAX_HEADER_LIST_SIZE}, held
    by C{hpack} as it decodes: an HPACK bomb is cut there);
  - an idle deadline (no stream open) and a total one; at the total one,
    and when the router drains (SIGTERM), a C{GOAWAY NO_ERROR} is sent
    and the streams in flight finish before the connection closes.

A stream the client resets releases its node connection at once; streams
opened and reset in the same read never reach a node.
"""

import attr
from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.errors import ErrorCodes
from h2.events import (
    ConnectionTerminated,
    DataReceived,
    RemoteSettingsChanged,
    RequestReceived,
    StreamEnded,
    StreamReset,
    WindowUpdated,
)
from h2.exceptions import (
    DenialOfServiceError,
    ProtocolError,
    StreamClosedError,
    TooManyStreamsError,
)
from h2.settings import SettingCodes, Settings
from hpack.exceptions import InvalidTableSizeError
from hyperframe.frame import GoAwayFrame
from twisted.internet.interfaces import IPushProducer
from twisted.logger import Logger
from zope.interface import implementer

from txrouter.limits import LINGER_IDLE, MAX_KEY_LENGTH
from txrouter.routers.h2stream import HTTP2Stream
from txrouter.transports import afterCurrentEvents
from txrouter.wire.h2guard import BoundExceeded, FrameGuard
from txrouter.wire.h2messages import errorResponse, requestHead
from txrouter.wire.http1 import HTTPError

log = Logger(namespace="txrouter.http2")

#: The connection-level window a client gets per stream it may open.
_DEFAULT_WINDOW = 65535
# The GOAWAY error of the guard's bounds that RFC 9113 names one for; the
# others are ENHANCE_YOUR_CALM.
_GUARD_ERRORS = {"frame_too_large": ErrorCodes.FRAME_SIZE_ERROR}


class HTTP2Counts:
    """
    The HTTP/2 side of a router, shown as C{http2} in the stats document.

    @ivar connections: HTTP/2 connections accepted so far.
    @ivar open: HTTP/2 connections open now.
    @ivar streams: streams (requests) the clients opened.
    @ivar bounds: C{{bound: count}}: how many times each bound was hit
        (C{max_streams}, C{rapid_reset}, C{header_block_too_large},
        C{continuation_flood}, C{header_list_too_large},
        C{header_table_too_large}, C{ping_flood},
        C{settings_flood}, C{idle_timeout}, C{connection_deadline}).
    """

    __slots__ = ("connections", "open", "streams", "bounds")

    def __init__(self) -> None:
        self.connections = self.open = self.streams = 0
        self.bounds = {}

    def asDict(self) -> dict:
        return {
            "connections": self.connections,
            "open": self.open,
            "streams": self.streams,
            "bounds": dict(sorted(self.bounds.items())),
        }


@attr.frozen(kw_only=True)
class HTTP2Settings:
    """
    The HTTP/2 options of a router (C{--http2-*}); a bound of 0 is none.

    @ivar maxStreams: C{SETTINGS_MAX_CONCURRENT_STREAMS}.
    @ivar maxResets: streams the client may reset per second.
    @ivar maxHeaderBlock: bytes of one header block (HEADERS and its
        CONTINUATION frames, as sent: compressed).
    @ivar maxContinuations: CONTINUATION frames in one header block.
    @ivar headerTableSize: C{SETTINGS_HEADER_TABLE_SIZE}, the HPACK table.
    @ivar maxHeaderListSize: C{SETTINGS_MAX_HEADER_LIST_SIZE}: a header list
        decoded past it closes the connection.
    @ivar maxPings: PING frames the client may send per second.
    @ivar maxSettings: SETTINGS frames the client may send per second.
    @ivar idleTimeout: seconds a connection without streams stays open.
    @ivar maxConnectionTime: seconds after which a connection takes no new
        stream and closes once its streams are done.
    @ivar window: C{SETTINGS_INITIAL_WINDOW_SIZE}: request body bytes a
        stream may have in the router before its node has taken them.
    @ivar counts: the router's L{HTTP2Counts}.
    """

    maxStreams: int = 100
    maxResets: int = 100
    maxHeaderBlock: int = 65536
    maxContinuations: int = 32
    headerTableSize: int = 4096
    maxHeaderListSize: int = 131072
    maxPings: int = 10
    maxSettings: int = 10
    idleTimeout: float = 60.0
    maxConnectionTime: float = 3600.0
    window: int = _DEFAULT_WINDOW
    counts: HTTP2Counts = attr.ib(factory=HTTP2Counts, eq=False)

    def __attrs_post_init__(self) -> None:
        if not 1 <= self.maxStreams <= 2**31 - 1:
            raise ValueError("http2_max_streams: 1 to 2147483647")
        if not _DEFAULT_WINDOW <= self.window <= 2**31 - 1:
            raise ValueError("http2_window: 65535 to 2147483647")


@implementer(IPushProducer)
class HTTP2Connection:
    """
    One client's HTTP/2 connection: the frames of its streams.

    It stands in for its L{HTTPSession}: the session's protocol methods
    (C{dataReceived}, C{connectionLost}, C{closeWhenIdle}...) are this
    connection's once it has taken over (L{takeOver}).

    @ivar session: the L{HTTPSession} it took over.
    @ivar streams: C{{stream id: HTTP2Stream}}, the streams in flight.
    """

    _paused = False
    _writeScheduled = False
    _lost = False
    _closing = False
    _lastStream = None
    _idleCall = None
    _deadlineCall = None

    def __init__(self, session) -> None:
        self.session = session
        self.router = router = session.router
        self.settings = settings = router.http2
        self.transport = session.transport
        self.reactor = router.reactor
        self.streams = {}
        self._lingering = {}
        self._logged = set()
        # The response headers are made lower-case and free of HTTP/1.1's
        # connection headers (and NULs) by responseHeaders: h2's checks of
        # them again are left out.  What the client sends is checked.
        h2 = self.h2 = H2Connection(H2Configuration(
            client_side=False, header_encoding=None, validate_outbound_headers=False,
            normalize_outbound_headers=False,
        ))
        h2.local_settings = Settings(client=False, initial_values={
            SettingCodes.MAX_CONCURRENT_STREAMS: settings.maxStreams,
            SettingCodes.MAX_HEADER_LIST_SIZE: settings.maxHeaderListSize,
            SettingCodes.HEADER_TABLE_SIZE: settings.headerTableSize,
            SettingCodes.INITIAL_WINDOW_SIZE: settings.window,
        })
        h2.decoder.max_header_list_size = settings.maxHeaderListSize
        h2.decoder.max_allowed_table_size = settings.headerTableSize
        self.guard = FrameGuard(
            settings.maxHeaderBlock, settings.maxContinuations, settings.maxResets,
            settings.maxPings, settings.maxSettings, h2.local_settings.max_frame_size,
        )

    def takeOver(self, data: bytes) -> None:
        """
        Become the protocol of the session's connection, send the server
        preface, and read C{data}, the client's first bytes.
        """
        session = self.session
        for name in (
            "dataReceived", "connectionLost", "readConnectionLost", "writeConnectionLost",
            "closeWhenIdle", "pauseProducing", "resumeProducing", "stopProducing",
        ):
            setattr(session, name, getattr(self, name))
        session.http2 = self
        settings = self.settings
        counts = settings.counts
        counts.connections += 1
        counts.open += 1
        h2 = self.h2
        h2.initiate_connection()
        # Every stream may have its window of body bytes in flight.
        extra = settings.maxStreams * settings.window - _DEFAULT_WINDOW
        if extra > 0:
            h2.increment_flow_control_window(min(extra, 2**31 - 1 - _DEFAULT_WINDOW))
        self.transport.registerProducer(self, True)
        reactor = self.reactor
        if settings.idleTimeout:
            self._idleCall = reactor.callLater(settings.idleTimeout, self._idleTimedOut)
        if settings.maxConnectionTime:
            self._deadlineCall = reactor.callLater(settings.maxConnectionTime, self._deadline)
        self._write()
        # The streams of these first bytes began before the client could
        # know of a drain: they are served, and GOAWAY names the last.
        self.dataReceived(data)
        if self.router.draining:
            self.closeWhenIdle()

    # Reading

    def dataReceived(self, data: bytes) -> None:
        if self._lost:
            return
        try:
            self.guard.feed(data, self.reactor.seconds())
        except BoundExceeded as e:
            self._calm(e.bound, e.detail, _GUARD_ERRORS.get(e.bound, ErrorCodes.ENHANCE_YOUR_CALM))
            return
        h2 = self.h2
        try:
            events = h2.receive_data(data)
        except TooManyStreamsError as e:
            self._boundHit("max_streams", str(e))
            self._fail()
            return
        except DenialOfServiceError as e:
            self._boundHit("header_list_too_large", str(e))
            self._fail()
            return
        except ProtocolError as e:
            if isinstance(e.__cause__, InvalidTableSizeError):
                self._boundHit("header_table_too_large", str(e))
                self._fail()
                return
            log.info(
                "http2_protocol_error: {detail} (client {client})",
                event="http2_protocol_error", detail=str(e), client=self._client(),
            )
            self._fail()
            return
        # Resets first: a stream reset in this read is closed for h2
        # already, and one opened and reset in it never reaches a node.
        resets = None
        for event in events:
            if type(event) is StreamReset:
                if resets is None:
                    resets = set()
                resets.add(event.stream_id)
                if self._lingering:
                    self._lingerEnded(event.stream_id)
                stream = self.streams.pop(event.stream_id, None)
                if stream is not None:
                    self._clientReset(stream)
        for event in events:
            if self._lost:
                return
            kind = type(event)
            if kind is DataReceived:
                stream = self.streams.get(event.stream_id)
                if stream is None:
                    h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                else:
                    stream.dataReceived(event.data, event.flow_controlled_length)
            elif kind is RequestReceived:
                streamID = event.stream_id
                if resets is not None and streamID in resets:
                    self.settings.counts.streams += 1
                    continue
                self._requestReceived(streamID, event.headers, event.stream_ended is not None)
            elif kind is StreamEnded:
                if self._lingering:
                    self._lingerEnded(event.stream_id)
                stream = self.streams.get(event.stream_id)
                if stream is not None:
                    stream.clientEnded()
                    self._retireIfDone(stream)
            elif kind is WindowUpdated:
                if event.stream_id:
                    stream = self.streams.get(event.stream_id)
                    if stream is not None:
                        self.flush(stream)
                else:
                    self._flushAll()
            elif kind is RemoteSettingsChanged:
                if SettingCodes.INITIAL_WINDOW_SIZE in event.changed_settings:
                    self._flushAll()
            elif kind is ConnectionTerminated:
                # The client is going away.  h2 sends nothing after a GOAWAY
                # it received, so no stream in flight can be answered: they
                # end now, as abandoned, not at their deadlines.
                self._fail()
                return
        self._write()

    def _requestReceived(self, streamID: int, headers, endStream: bool) -> None:
        counts = self.settings.counts
        counts.streams += 1
        if self._lastStream is not None and streamID > self._lastStream:
            # Opened after the GOAWAY was sent: the client may retry it.
            self.h2.reset_stream(streamID, ErrorCodes.REFUSED_STREAM)
            return
        self._stopIdle()
        router = self.router
        session = self.session
        try:
            head = requestHead(headers, router.maxRequestLine, router.maxHeaders, router.maxHeadSize)
        except HTTPError as e:
            self._refuseStream(streamID, e.status, e.event, e.detail, endStream)
            return
        key = head.host or session.sniName or b""
        if len(key) > MAX_KEY_LENGTH:
            self._refuseStream(
                streamID, 400, "key_too_long", f"Host of {len(key)} bytes (max 255)", endStream,
            )
            return
        stream = HTTP2Stream(self, streamID, head, key)
        self.streams[streamID] = stream
        stream.start(endStream)

    def _refuseStream(self, streamID: int, status: int, event: str, detail: str, ended: bool) -> None:
        """
        Refuse a request whose head was refused, before it has a stream.
        """
        log.info(
            "{event}: {status} {detail} (client {client}, HTTP/2 stream {stream})",
            event=event, status=status, detail=detail, client=self._client(), stream=streamID,
        )
        h2 = self.h2
        if self.router.silentErrors:
            h2.reset_stream(streamID, ErrorCodes.REFUSED_STREAM)
        else:
            headers, body = errorResponse(status, detail)
            h2.send_headers(streamID, headers)
            h2.send_data(streamID, body, end_stream=True)
            if not ended:
                self._linger(streamID)
        self._closeIfIdle()

    def _clientReset(self, stream) -> None:
        """
        The client reset C{stream}: its node connection is released now.
        """
        lifecycle = stream.lifecycle
        if not lifecycle.finished:
            stream.stop()
            # nginx's status for a request its client abandoned.
            stream.logAccess(499, 0, "stream_reset")
        self._giveBack(stream)
        self._closeIfIdle()

    def acknowledge(self, stream, size: int) -> None:
        """
        C{size} bytes of C{stream}'s body were taken: open the client's
        windows again by as much.
        """
        if size:
            self.h2.acknowledge_received_data(size, stream.streamID)
            self._write()

    def _giveBack(self, stream) -> None:
        """
        Acknowledge at the connection level the body bytes a closed stream
        still held, so that other streams can use them.
        """
        size, stream.unacknowledged = stream.unacknowledged, 0
        if size:
            self.h2.acknowledge_received_data(size, stream.streamID)

    # Writing

    def _write(self) -> None:
        """
        Send what C{h2} has to send, once the events being handled are:
        the frames of every stream answered in one reactor iteration go
        out in one write, not one per call.
        """
        if not self._writeScheduled:
            self._writeScheduled = True
            afterCurrentEvents(self.reactor, self._writeNow)

    def _writeNow(self) -> None:
        self._writeScheduled = False
        data = self.h2.data_to_send()
        if data and not self._lost:
            self.transport.write(data)

    def sendHeaders(self, stream, headers, endStream: bool = False) -> bool:
        """
        Send C{stream}'s response HEADERS; C{endStream} if there is no body.

        @return: whether they could be sent (C{h2} refuses header fields
            that HTTP/2 does not allow, which a node may have sent).
        """
        try:
            self.h2.send_headers(stream.streamID, headers, end_stream=endStream)
        except ProtocolError as e:
            node = stream.lifecycle.node
            log.warn(
                "bad_response: from {node}: {detail}", event="bad_response",
                node=node.name if node is not None else "(no node)", detail=str(e),
            )
            return False
        stream.headersSent = True
        stream.endSent = endStream
        self._write()
        return True

    def sendInformational(self, stream, status: int) -> None:
        """
        Send an interim response (C{100 Continue}) on C{stream}.
        """
        self.h2.send_headers(stream.streamID, [(b":status", b"%d" % status)])
        self._write()

    def flush(self, stream) -> None:
        """
        Send what C{stream} has waiting, as far as the client's windows and
        socket allow; end the stream once its response is out.
        """
        if self._paused or self._lost or self.streams.get(stream.streamID) is not stream:
            return
        try:
            self._send(stream)
        except StreamClosedError:
            # Closed for h2, not yet here: h2 closes a stream as soon as it
            # reads the client's reset; its event ends it here.
            return

    def _send(self, stream) -> None:
        """
        L{flush}'s frames: DATA while the windows allow, then the end.
        """
        h2 = self.h2
        streamID = stream.streamID
        queue = stream.outbound
        sent = False
        while queue:
            window = h2.local_flow_control_window(streamID)
            if window <= 0:
                break
            chunk = queue[0]
            size = min(window, h2.max_outbound_frame_size, len(chunk))
            if size < len(chunk):
                h2.send_data(streamID, chunk[:size])
                queue[0] = chunk[size:]
            else:
                queue.popleft()
                # The last bytes of a response end its stream.
                last = not queue and stream.ending
                h2.send_data(streamID, chunk, end_stream=last)
                stream.endSent = last
            stream.outboundSize -= size
            sent = True
        if not queue and stream.ending:
            if not stream.endSent:
                stream.endSent = True
                h2.end_stream(streamID)
            self._retireIfDone(stream)
        self._write()
        if sent:
            stream.drained()

    def _flushAll(self) -> None:
        for stream in list(self.streams.values()):
            if stream.outbound or stream.ending:
                self.flush(stream)

    def answer(self, stream, status: int, detail: str) -> None:
        """
        C{stream} was refused: a short error response if nothing was sent
        on it yet (else, or with C{--silent-errors}, a reset).
        """
        if stream.headersSent or self.router.silentErrors:
            self.resetStream(stream)
            return
        headers, body = errorResponse(status, detail)
        stream.outbound.clear()
        stream.outboundSize = 0
        self.sendHeaders(stream, headers)
        stream.outbound.append(body)
        stream.outboundSize = len(body)
        stream.ending = True
        self.flush(stream)

    def resetStream(self, stream, code=ErrorCodes.INTERNAL_ERROR) -> None:
        """
        Reset C{stream}: what was sent on it is all it gets.
        """
        if self.streams.get(stream.streamID) is not stream:
            return
        del self.streams[stream.streamID]
        stream.stop()
        if not self._lost:
            self.h2.reset_stream(stream.streamID, code)
            self._giveBack(stream)
            self._write()
        self._closeIfIdle()

    def _retireIfDone(self, stream) -> None:
        """
        Forget C{stream} once its response is out; a client still sending
        a body it no longer needs is told to stop (C{RST_STREAM NO_ERROR}).
        """
        if not (stream.ending and not stream.outbound):
            return
        if self.streams.get(stream.streamID) is not stream:
            return
        del self.streams[stream.streamID]
        if stream.bodyOpen:
            stream.bodyOpen = False
            self._giveBack(stream)
            self._linger(stream.streamID)
        self._closeIfIdle()

    def _linger(self, streamID: int) -> None:
        """
        The response of C{streamID} is out, its client still sending a
        body nobody will read: what comes is acknowledged and dropped for
        L{LINGER_IDLE} seconds, then the client is told to stop
        (C{RST_STREAM NO_ERROR}).  Resetting at once is what RFC 9113
        allows, but clients (curl 7.88) then drop the response they were
        reading.
        """
        self._lingering[streamID] = self.reactor.callLater(
            LINGER_IDLE, self._stopLingering, streamID)

    def _stopLingering(self, streamID: int) -> None:
        del self._lingering[streamID]
        if self._lost:
            return
        try:
            self.h2.reset_stream(streamID, ErrorCodes.NO_ERROR)
        except ProtocolError:
            # The client ended or reset it meanwhile.
            return
        self._write()

    def _lingerEnded(self, streamID: int) -> None:
        call = self._lingering.pop(streamID, None)
        if call is not None:
            call.cancel()

    # IPushProducer, for the client's transport

    def pauseProducing(self) -> None:
        self._paused = True

    def resumeProducing(self) -> None:
        self._paused = False
        self._flushAll()

    def stopProducing(self) -> None:
        """
        The client's connection is going; L{connectionLost} follows.
        """

    # Bounds and ending

    def _client(self) -> str:
        return self.session.remoteAddr.decode() or "unix"

    def _boundHit(self, bound: str, detail: str, emit=None) -> None:
        """
        Count C{bound} in the stats, and log it the first time this
        connection hits it.

        @param emit: the logger's method for it: C{log.warn} (a client
            going past a bound) unless given (a deadline, the usual end of
            a connection, is not a warning).
        """
        bounds = self.settings.counts.bounds
        bounds[bound] = bounds.get(bound, 0) + 1
        if bound not in self._logged:
            self._logged.add(bound)
            (emit or log.warn)(
                "http2_{bound}: {detail} (client {client})",
                event=f"http2_{bound}", bound=bound, detail=detail, client=self._client(),
            )

    def _calm(self, bound: str, detail: str, code=ErrorCodes.ENHANCE_YOUR_CALM) -> None:
        """
        The client went past C{bound}: C{GOAWAY} with C{code}
        (C{ENHANCE_YOUR_CALM} unless the protocol names another), close.
        """
        self._boundHit(bound, detail)
        try:
            self.h2.close_connection(code)
        except ProtocolError:
            pass
        self._fail()

    def _fail(self) -> None:
        """
        Send what C{h2} has (its GOAWAY) and close, aborting the streams.
        """
        self._writeNow()
        self._abortStreams()
        self._lost = True
        self.transport.loseConnection()

    def _abortStreams(self) -> None:
        streams, self.streams = self.streams, {}
        for stream in streams.values():
            if not stream.finished:
                stream.stop()
                stream.logAccess(499, 0)

    def _stopIdle(self) -> None:
        call, self._idleCall = self._idleCall, None
        if call is not None and call.active():
            call.cancel()

    def _closeIfIdle(self) -> None:
        """
        With no stream left: close if closing, else start the idle deadline.
        """
        if self.streams or self._lost:
            return
        if self._closing:
            self._writeNow()
            self._lost = True
            self.transport.loseConnection()
            return
        timeout = self.settings.idleTimeout
        if timeout and self._idleCall is None:
            self._idleCall = self.reactor.callLater(timeout, self._idleTimedOut)

    def _idleTimedOut(self) -> None:
        self._idleCall = None
        if self.streams or self._lost:
            return
        self._boundHit(
            "idle_timeout", f"no stream for {self.settings.idleTimeout:g} s", log.debug)
        self._goAway()
        self._closing = True
        self._closeIfIdle()

    def _deadline(self) -> None:
        self._deadlineCall = None
        self._boundHit(
            "connection_deadline", f"open for {self.settings.maxConnectionTime:g} s", log.info)
        self.closeWhenIdle()

    def _goAway(self) -> None:
        """
        Send C{GOAWAY NO_ERROR} naming the last stream taken, without
        ending C{h2}'s side: the streams in flight go on (C{h2} would refuse
        every frame after its own GOAWAY).
        """
        if self._lastStream is not None or self._lost:
            return
        self._lastStream = last = self.h2.highest_inbound_stream_id
        frame = GoAwayFrame(0)
        frame.last_stream_id = last
        frame.error_code = ErrorCodes.NO_ERROR
        self._writeNow()
        self.transport.write(frame.serialize())

    def closeWhenIdle(self) -> None:
        """
        Take no new stream (C{GOAWAY}), close once the streams in flight
        are done: the router drains (SIGTERM), or the connection is old.
        """
        if self._lost:
            return
        self._goAway()
        self._closing = True
        self._closeIfIdle()

    def readConnectionLost(self) -> None:
        """
        The client half-closed: the responses of its complete requests
        still go out; a stream whose body was still coming can never be
        complete, and is reset now (its spooled body let go), not at its
        body deadline.
        """
        self._closing = True
        for stream in list(self.streams.values()):
            if stream.bodyOpen and not stream.lifecycle.finished:
                stream.stop()
                stream.logAccess(499, 0, "client_body_truncated")
                self.resetStream(stream, ErrorCodes.CANCEL)
        self._closeIfIdle()

    def writeConnectionLost(self) -> None:
        self._lost = True
        self.transport.loseConnection()

    def connectionLost(self, reason) -> None:
        self._lost = True
        self._stopIdle()
        call, self._deadlineCall = self._deadlineCall, None
        if call is not None and call.active():
            call.cancel()
        self._abortStreams()
        for call in self._lingering.values():
            call.cancel()
        self._lingering.clear()
        self.settings.counts.open -= 1
        self.router.sessionClosed(self.session)
