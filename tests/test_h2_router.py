"""
The HTTP router's HTTP/2 side (C{--http2}) against in-memory clients and
nodes: a client-side C{h2.connection.H2Connection} builds the client's
frames (hostile ones by hand with C{hyperframe}), the router's bytes are
read back through it, and each stream must behave as an HTTP/1.1 request
would: the same vars, refusals and access log line, with flow control
and the bounds of C{docs/http2.md}.
"""

import io

from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.errors import ErrorCodes
from h2.events import (
    ConnectionTerminated,
    DataReceived,
    InformationalResponseReceived,
    ResponseReceived,
    StreamEnded,
    StreamReset,
)
from h2.settings import SettingCodes
from hpack import Encoder
from hyperframe.frame import ContinuationFrame, DataFrame, Frame, HeadersFrame, PingFrame, RstStreamFrame, SettingsFrame
from twisted.internet.protocol import Protocol, ServerFactory
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from txrouter.accesslog import AccessLog
from txrouter.routers.http import HTTPRouter
from txrouter.routing.nodes import parseNode
from txrouter.stats.metrics import metricsPage
from txrouter.testing import HTTPWSGIBackend, MemoryNetwork, UwsgiWSGIBackend
from txrouter.wire.h2guard import PREFACE

NODE = "127.0.0.1:3031"
HTTP_NODE = "http://127.0.0.1:8000"


def _frames(data: bytes) -> list:
    """
    The frames in C{data}.
    """
    frames = []
    while data:
        frame, length = Frame.parse_frame_header(memoryview(data[:9]))
        frame.parse_body(memoryview(data[9:9 + length]))
        frames.append(frame)
        data = data[9 + length:]
    return frames


def _varsOf(body: bytes) -> dict:
    """
    The vars the in-memory echo application saw, from its answer.
    """
    text, _, rest = body.partition(b"\nBODY=")
    return dict(line.split(b"=", 1) for line in text.split(b"\n")), rest


class Response:
    """
    What a stream got: its headers, body, and how it ended.
    """

    def __init__(self) -> None:
        self.headers = None
        self.informational = []
        self.body = b""
        self.ended = False
        self.reset = None

    @property
    def status(self) -> int:
        return int(dict(self.headers)[b":status"])


class H2Client:
    """
    An HTTP/2 client (prior knowledge) on an in-memory connection.
    """

    def __init__(self, network, router, settings=None, read=True) -> None:
        self.conn = H2Connection(H2Configuration(client_side=True, header_encoding=None))
        self.conn.initiate_connection()
        if settings:
            self.conn.update_settings(settings)
        self.responses = {}
        self.terminated = None
        self.reading = read
        self._seen = 0
        self.network = network
        self.memory = network.connect(router)
        self.send()

    def send(self, raw: bytes = b"") -> None:
        """
        Send what the client's state machine has, then C{raw}, and read
        the answers.
        """
        data = self.conn.data_to_send() + raw
        if data:
            self.memory.send(data)
        self.read()

    def read(self) -> None:
        if not self.reading:
            return
        self.network.flush()
        data = self.memory.received()[self._seen:]
        self._seen += len(data)
        if not data or self.terminated is not None:
            return
        for event in self.conn.receive_data(data):
            response = self.responses.setdefault(getattr(event, "stream_id", 0), Response())
            if isinstance(event, ResponseReceived):
                response.headers = event.headers
            elif isinstance(event, InformationalResponseReceived):
                response.informational.append(event.headers)
            elif isinstance(event, DataReceived):
                response.body += event.data
                self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            elif isinstance(event, StreamEnded):
                response.ended = True
            elif isinstance(event, StreamReset):
                response.reset = event.error_code
            elif isinstance(event, ConnectionTerminated):
                self.terminated = event.error_code
        out = self.conn.data_to_send()
        if out:
            self.memory.send(out)
            self.read()

    def request(self, path=b"/x", method=b"GET", body=None, headers=(), end=True, authority=b"example.com"):
        streamID = self.conn.get_next_available_stream_id()
        self.conn.send_headers(streamID, [
            (b":method", method), (b":path", path), (b":scheme", b"http"),
            (b":authority", authority), *headers,
        ], end_stream=body is None and end)
        if body is not None:
            self.conn.send_data(streamID, body, end_stream=end)
        self.send()
        return streamID

    def response(self, streamID) -> Response:
        return self.responses.setdefault(streamID, Response())


class HTTP2TestCase(SynchronousTestCase):
    """
    A router with C{http2} in front of in-memory nodes running the echo
    application.
    """

    def setUp(self):
        self.network = MemoryNetwork()
        self.backend = UwsgiWSGIBackend()
        self.network.addBackend(("127.0.0.1", 3031), self.backend)
        self.events = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    def router(self, nodes=(NODE,), **kwargs):
        kwargs.setdefault("server_name", "vm")
        kwargs.setdefault("http2", True)
        return HTTPRouter(self.network.reactor, [parseNode(n) for n in nodes], **kwargs)

    def client(self, router, **kwargs) -> H2Client:
        return H2Client(self.network, router, **kwargs)

    def loggedEvents(self):
        return [e.get("event") for e in self.events if "event" in e]

    def connectionOf(self, router):
        [session] = router.sessions
        return session.http2


class RequestTests(HTTP2TestCase):
    """
    Each stream is one request to a node, as an HTTP/1.1 request would be.
    """

    def test_vars(self):
        """
        A stream's request reaches the node with the vars of the same
        HTTP/1.1 request, C{SERVER_PROTOCOL} C{HTTP/2}; the response comes
        back with its status and lower-cased headers.
        """
        client = self.client(self.router())
        streamID = client.request(b"/a%20b?x=1", headers=[(b"user-agent", b"t"), (b"x-dup", b"1"),
                                                         (b"x-dup", b"2")])
        response = client.response(streamID)
        self.assertTrue(response.ended)
        self.assertEqual(response.status, 200)
        self.assertIn((b"content-type", b"text/plain"), response.headers)
        [(sent, body, _)] = self.backend.requests
        self.assertEqual(sent[b"SERVER_PROTOCOL"], b"HTTP/2")
        self.assertEqual(sent[b"HTTP_HOST"], b"example.com")
        self.assertEqual(sent[b"PATH_INFO"], b"/a b")
        self.assertEqual(sent[b"QUERY_STRING"], b"x=1")
        self.assertEqual(sent[b"REQUEST_URI"], b"/a%20b?x=1")
        self.assertEqual(sent[b"HTTP_X_DUP"], b"1, 2")
        self.assertEqual(sent[b"REMOTE_ADDR"], b"127.0.0.1")
        seen, _ = _varsOf(response.body)
        self.assertEqual(seen[b"SERVER_PROTOCOL"], b"HTTP/2")

    def test_cookies_are_one_field(self):
        """
        Cookie fields split by the client are joined with C{; } again.
        """
        client = self.client(self.router())
        client.request(headers=[(b"cookie", b"a=1"), (b"cookie", b"b=2")])
        [(sent, _, _)] = self.backend.requests
        self.assertEqual(sent[b"HTTP_COOKIE"], b"a=1; b=2")

    def test_body_with_length(self):
        client = self.client(self.router())
        streamID = client.request(b"/p", b"POST", b"hello", [(b"content-length", b"5")])
        [(sent, body, _)] = self.backend.requests
        self.assertEqual((sent[b"CONTENT_LENGTH"], body), (b"5", b"hello"))
        self.assertEqual(client.response(streamID).status, 200)

    def test_body_without_length_is_stored_and_measured(self):
        """
        A body without C{content-length} is stored whole, then sent with
        the C{CONTENT_LENGTH} it turned out to have.
        """
        router = self.router()
        client = self.client(router)
        streamID = client.request(b"/p", b"POST", b"abc", end=False)
        self.assertEqual(self.backend.requests, [])
        # At most a window of it in memory: the connection's other streams
        # may be storing theirs too.
        spool = self.connectionOf(router).streams[streamID]._spool
        self.assertEqual(spool.memoryLimit, 65535)
        client.conn.send_data(streamID, b"defg", end_stream=True)
        client.send()
        [(sent, body, _)] = self.backend.requests
        self.assertEqual((sent[b"CONTENT_LENGTH"], body), (b"7", b"abcdefg"))
        self.assertEqual(client.response(streamID).status, 200)

    def test_http_node_gets_http11(self):
        """
        An HTTP node is sent the HTTP/1.1 request an HTTP/1.1 client's
        request would make, and its hop-by-hop headers do not reach the
        client.
        """
        def app(environ, start_response):
            start_response("200 OK", [("Content-Length", "2"), ("Keep-Alive", "timeout=5"),
                                      ("Connection", "x-private"), ("X-Private", "1"),
                                      ("X-Kept", "yes")])
            return [b"ok"]

        node = HTTPWSGIBackend(app)
        self.network.addBackend(("127.0.0.1", 8000), node)
        client = self.client(self.router([HTTP_NODE]))
        streamID = client.request(b"/h")
        [record] = node.requests
        self.assertTrue(record.raw.startswith(b"GET /h HTTP/1.1\r\n"))
        self.assertEqual(record.header(b"host"), [b"example.com"])
        response = client.response(streamID)
        names = [name for name, _ in response.headers]
        self.assertEqual(response.body, b"ok")
        self.assertIn(b"x-kept", names)
        for name in (b"connection", b"keep-alive", b"x-private"):
            self.assertNotIn(name, names)

    def test_http_node_connection_kept(self):
        """
        With C{node_keepalive}, an HTTP node's connection carries the
        requests of later streams.
        """
        node = HTTPWSGIBackend()
        self.network.addBackend(("127.0.0.1", 8000), node)
        router = self.router([HTTP_NODE], node_keepalive=2)
        client = self.client(router)
        for path in (b"/a", b"/b", b"/c"):
            self.assertEqual(client.response(client.request(path)).status, 200)
        self.assertEqual(len(node.connections), 1)
        self.assertEqual(router.nodePool.reused, 2)

    def test_chunked_response_is_dechunked(self):
        """
        A node's chunked body reaches the client de-chunked, in DATA frames.
        """
        def app(environ, start_response):
            start_response("200 OK", [("Transfer-Encoding", "chunked")])
            return [b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"]

        node = HTTPWSGIBackend(app)
        self.network.addBackend(("127.0.0.1", 8000), node)
        client = self.client(self.router([HTTP_NODE]))
        response = client.response(client.request())
        self.assertEqual((response.body, response.ended), (b"abcde", True))
        self.assertNotIn(b"transfer-encoding", dict(response.headers))

    def test_interim_storm(self):
        """
        Thousands of interim (1xx) heads from a node in one read are
        dropped (the router gives its own interim answers) and the
        response that follows them reaches the stream, with no traceback
        (each one was once a level of recursion, to a C{RecursionError}).
        """
        class Storm(Protocol):
            def dataReceived(self, data):
                self.transport.write(b"HTTP/1.1 103 Early Hints\r\n\r\n" * 5000
                                     + b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                self.transport.loseConnection()

        self.network.addBackend(("127.0.0.1", 8000), ServerFactory.forProtocol(Storm))
        client = self.client(self.router([HTTP_NODE]))
        response = client.response(client.request())
        self.assertEqual((response.status, response.body, response.ended), (200, b"ok", True))
        self.assertEqual(response.informational, [])
        self.assertEqual([e for e in self.events if e.get("log_failure")], [])

    def test_streams_in_parallel(self):
        """
        Streams of one connection are at their nodes together, and each
        answer goes to its own stream, in whatever order they come.
        """
        self.backend.hold = True
        client = self.client(self.router())
        streams = [client.request(b"/s%d" % i) for i in range(5)]
        pending = self.backend.pending()
        self.assertEqual(len(pending), 5)
        for connection in reversed(pending):
            connection.respond()
        self.network.flush()
        client.read()
        for i, streamID in enumerate(streams):
            seen, _ = _varsOf(client.response(streamID).body)
            self.assertEqual(seen[b"PATH_INFO"], b"/s%d" % i)

    def test_http11_still_served(self):
        """
        With C{http2}, an HTTP/1.1 client of the same listener is served as
        before, and a preface arriving in pieces is still HTTP/2.
        """
        router = self.router()
        memory = self.network.connect(router)
        memory.send(b"GET /one HTTP/1.1\r\nHost: h\r\n\r\n")
        self.assertTrue(memory.received().startswith(b"HTTP/1.1 200 OK\r\n"))
        memory = self.network.connect(router)
        conn = H2Connection(H2Configuration(client_side=True, header_encoding=None))
        conn.initiate_connection()
        conn.send_headers(1, [(b":method", b"GET"), (b":path", b"/two"), (b":scheme", b"http"),
                              (b":authority", b"h")], end_stream=True)
        data = conn.data_to_send()
        memory.send(data[:5])
        memory.send(data[5:])
        events = conn.receive_data(memory.received())
        self.assertIn(StreamEnded, [type(e) for e in events])

    def test_alpn(self):
        """
        A TLS listener of a router with C{http2} offers C{h2} first.
        """
        self.assertEqual(self.router().acceptableProtocols()[0], b"h2")
        self.assertNotIn(b"h2", self.router(http2=False).acceptableProtocols())

    def test_expect_continue(self):
        """
        C{expect: 100-continue} is answered with an interim C{100}.
        """
        client = self.client(self.router())
        streamID = client.request(b"/p", b"POST", headers=[(b"content-length", b"3"),
                                                          (b"expect", b"100-continue")], end=False)
        self.assertEqual(client.response(streamID).informational, [[(b":status", b"100")]])


class RefusalTests(HTTP2TestCase):
    """
    A stream is refused with the status and event an HTTP/1.1 request
    would get; the connection and its other streams go on.
    """

    def test_bad_head(self):
        client = self.client(self.router())
        bad = client.request(b"nopath")
        good = client.request(b"/fine")
        self.assertEqual(client.response(bad).status, 400)
        self.assertIn("bad_target", self.loggedEvents())
        self.assertEqual(client.response(good).status, 200)

    def test_bad_head_with_a_body_coming(self):
        """
        A refused head whose body is on its way: the answer, then what comes
        is dropped for a while before C{RST_STREAM NO_ERROR}.
        """
        client = self.client(self.router())
        streamID = client.request(b"nopath", b"POST", b"x", end=False)
        response = client.response(streamID)
        self.assertEqual((response.status, response.ended, response.reset), (400, True, None))
        self.network.reactor.advance(5)
        client.read()
        self.assertEqual(response.reset, ErrorCodes.NO_ERROR)

    def test_connect_refused(self):
        client = self.client(self.router())
        streamID = client.conn.get_next_available_stream_id()
        client.conn.send_headers(streamID, [(b":method", b"CONNECT"), (b":authority", b"h:443")])
        client.send()
        self.assertEqual(client.response(streamID).status, 405)

    def test_too_many_headers(self):
        client = self.client(self.router(max_headers=3))
        streamID = client.request(headers=[(b"x-%d" % i, b"v") for i in range(4)])
        self.assertEqual(client.response(streamID).status, 431)

    def test_body_too_large(self):
        """
        A declared body over C{limit_post} is a 413; what the client still
        sends of it is dropped for a while, then it is told to stop
        (C{RST_STREAM NO_ERROR}).
        """
        client = self.client(self.router(limit_post=10))
        streamID = client.request(b"/p", b"POST", b"x", [(b"content-length", b"11")], end=False)
        response = client.response(streamID)
        self.assertEqual((response.status, response.ended), (413, True))
        self.assertIsNone(response.reset)
        client.conn.send_data(streamID, b"y" * 5)
        client.send()
        self.network.reactor.advance(5)
        client.read()
        self.assertEqual(response.reset, ErrorCodes.NO_ERROR)
        self.assertEqual(self.backend.requests, [])

    def test_unreachable_node_and_access_log(self):
        """
        No node reachable: 502 on the stream, and the access log line says
        C{HTTP/2}.
        """
        out = io.StringIO()
        router = self.router(["127.0.0.1:9"], access_log=AccessLog(out), max_retries=0)
        client = self.client(router)
        self.assertEqual(client.response(client.request(b"/gone")).status, 502)
        self.assertIn("backend_unreachable", self.loggedEvents())
        self.assertIn('"GET /gone HTTP/2" 502', out.getvalue())

    def test_access_log(self):
        out = io.StringIO()
        client = self.client(self.router(access_log=AccessLog(out)))
        client.request(b"/logged")
        self.assertIn('"GET /logged HTTP/2" 200', out.getvalue())


class FlowControlTests(HTTP2TestCase):
    """
    Windows open as nodes take bytes; a slow reader pauses its own node.
    """

    def test_body_window_opens_as_node_takes_it(self):
        """
        While the node's connection has paused its producer, the body
        bytes the client sends are not acknowledged: its window stays shut
        until the node reads again.
        """
        self.backend.hold = True
        router = self.router()
        client = self.client(router)
        streamID = client.request(b"/p", b"POST", headers=[(b"content-length", b"200000")],
                                  end=False)
        stream = self.connectionOf(router).streams[streamID]
        relay = stream.lifecycle.relay
        self.assertIsNotNone(relay.upstream)
        relay.pauseProducing()
        window = client.conn.local_flow_control_window(streamID)
        for offset in range(0, window, 16384):
            client.conn.send_data(streamID, b"x" * min(16384, window - offset))
        client.send()
        self.assertEqual(client.conn.local_flow_control_window(streamID), 0)
        relay.resumeProducing()
        client.read()
        self.assertEqual(client.conn.local_flow_control_window(streamID), window)

    def test_transport_pauses_are_not_nested(self):
        """
        A node's transport pauses its producer at every write past its
        buffer, and resumes it once: one resume opens the window again.
        """
        self.backend.hold = True
        router = self.router()
        client = self.client(router)
        streamID = client.request(b"/p", b"POST", headers=[(b"content-length", b"200000")],
                                  end=False)
        relay = self.connectionOf(router).streams[streamID].lifecycle.relay
        for _ in range(4):
            relay.pauseProducing()
            client.conn.send_data(streamID, b"x" * 16383)
            client.send()
        relay.resumeProducing()
        client.read()
        self.assertEqual(client.conn.local_flow_control_window(streamID), 65535)

    def test_slow_reader_pauses_its_node_only(self):
        """
        A client whose window for one stream is shut leaves that stream's
        response in the router, up to a bound past which that node's
        connection is paused; another stream of the connection is answered
        meanwhile.
        """
        size = 300000

        def app(environ, start_response):
            if environ["PATH_INFO"] == "/big":
                start_response("200 OK", [("Content-Length", str(size))])
                return [b"y" * size]
            start_response("200 OK", [("Content-Length", "5")])
            return [b"small"]

        self.network.addBackend(("127.0.0.1", 3031), UwsgiWSGIBackend(app))
        self.backend = None
        router = self.router()
        client = self.client(router, settings={SettingCodes.INITIAL_WINDOW_SIZE: 1000})
        # The client reads nothing from the big stream: its window stays shut.
        client.conn.acknowledge_received_data = lambda size, streamID: None
        big = client.request(b"/big")
        stream = self.connectionOf(router).streams[big]
        self.assertEqual(len(client.response(big).body), 1000)
        self.assertEqual(stream.outboundSize, size - 1000)
        small = client.request(b"/small")
        self.assertEqual(client.response(small).body, b"small")

    def test_node_paused_past_high_water(self):
        """
        The node's connection is paused once more than C{HIGH_WATER} bytes
        wait in its stream, and resumed as the client's window opens.
        """
        from txrouter.routers.h2stream import HIGH_WATER

        self.backend.hold = True
        router = self.router()
        client = self.client(router, settings={SettingCodes.INITIAL_WINDOW_SIZE: 1000})
        reads = client.conn.acknowledge_received_data
        client.conn.acknowledge_received_data = lambda size, streamID: None
        streamID = client.request(b"/big")
        stream = self.connectionOf(router).streams[streamID]
        calls = []

        class Producer:
            def pauseProducing(self):
                calls.append("pause")

            def resumeProducing(self):
                calls.append("resume")

        stream.registerProducer(Producer(), True)
        self.connectionOf(router).sendHeaders(stream, [(b":status", b"200")])
        stream.write(b"z" * (HIGH_WATER + 2000))
        self.assertEqual(calls, ["pause"])
        client.conn.acknowledge_received_data = reads
        for _ in range(200):
            if not stream.outbound:
                break
            client.conn.increment_flow_control_window(65535, streamID)
            client.conn.increment_flow_control_window(65535)
            client.send()
        self.assertEqual(calls, ["pause", "resume"])


class ResetTests(HTTP2TestCase):
    def test_client_reset_releases_node(self):
        """
        A stream the client resets closes its node connection at once and
        is logged as 499.
        """
        out = io.StringIO()
        self.backend.hold = True
        client = self.client(self.router(access_log=AccessLog(out)))
        streamID = client.request(b"/held")
        [node] = self.backend.pending()
        client.conn.reset_stream(streamID, ErrorCodes.CANCEL)
        client.send()
        self.assertTrue(node.transport.disconnecting)
        self.assertIn('"GET /held HTTP/2" 499', out.getvalue())

    def test_client_goaway_ends_the_streams_in_flight(self):
        """
        After the client's GOAWAY nothing more can be sent to it (h2 sends
        nothing after a GOAWAY it received): its streams in flight are
        ended at once as abandoned (499) and the connection closed, not
        left until their deadlines to fail with a traceback.
        """
        out = io.StringIO()
        router = self.router(access_log=AccessLog(out), body_timeout=5)
        client = self.client(router)
        streamID = client.request(b"/p", b"POST", b"abc", end=False)
        client.conn.close_connection()
        client.send()
        self.assertTrue(client.memory.closed)
        self.assertIn('"POST /p HTTP/2" 499', out.getvalue())
        self.network.reactor.advance(10)
        self.assertEqual([e for e in self.events if e.get("log_failure")], [])

    def test_client_half_close_resets_streams_whose_body_was_coming(self):
        """
        A client's FIN: a stream whose body was still coming can never be
        complete and is reset at once, its stored body let go; a complete
        request is still answered.
        """
        out = io.StringIO()
        self.backend.hold = True
        router = self.router(access_log=AccessLog(out))
        client = self.client(router)
        complete = client.request(b"/held")
        cut = client.request(b"/p", b"POST", b"abc", end=False)
        spool = self.connectionOf(router).streams[cut]._spool
        closes = []
        close = spool.close
        spool.close = lambda: (closes.append(True), close())
        self.connectionOf(router).readConnectionLost()
        client.read()
        self.assertEqual(client.response(cut).reset, ErrorCodes.CANCEL)
        self.assertTrue(closes)
        self.assertIn('"POST /p HTTP/2" 499', out.getvalue())
        [node] = self.backend.pending()
        node.respond()
        self.network.flush()
        client.read()
        self.assertEqual(client.response(complete).status, 200)
        self.assertTrue(client.memory.closed)

    def test_opened_and_reset_together_never_reach_a_node(self):
        client = self.client(self.router())
        streamID = client.conn.get_next_available_stream_id()
        client.conn.send_headers(streamID, [(b":method", b"GET"), (b":path", b"/"),
                                            (b":scheme", b"http"), (b":authority", b"h")],
                                 end_stream=True)
        client.conn.reset_stream(streamID)
        client.send()
        self.assertEqual(self.backend.requests, [])
        self.assertEqual(self.network.reactor.tcpClients, [])


class BoundTests(HTTP2TestCase):
    """
    Each attack hits its bound: counted, logged once, the connection closed
    with C{GOAWAY}; other connections go on.
    """

    def assertCalmed(self, router, client, bound):
        self.assertEqual(client.terminated, ErrorCodes.ENHANCE_YOUR_CALM)
        self.assertTrue(client.memory.closed)
        self.assertEqual(router.http2.counts.bounds.get(bound), 1)
        self.assertEqual(self.loggedEvents().count(f"http2_{bound}"), 1)
        other = self.client(router)
        self.assertEqual(other.response(other.request()).status, 200)

    def test_rapid_reset(self):
        router = self.router(http2_max_resets=10)
        client = self.client(router)
        raw = b""
        encoder = Encoder()
        for i in range(11):
            streamID = 1 + 2 * i
            headers = HeadersFrame(streamID, flags=["END_HEADERS", "END_STREAM"])
            headers.data = encoder.encode([(b":method", b"GET"), (b":path", b"/"),
                                           (b":scheme", b"http"), (b":authority", b"h")])
            raw += headers.serialize() + RstStreamFrame(streamID, error_code=8).serialize()
        client.conn = H2Connection(H2Configuration(client_side=True, header_encoding=None))
        client.conn.initiate_connection()
        client.conn.data_to_send()
        client.conn.receive_data(client.memory.received())
        client._seen = len(client.memory.received())
        client.send(raw)
        self.assertCalmed(router, client, "rapid_reset")
        self.assertEqual(self.backend.requests[:-1], [])

    def test_rapid_reset_releases_nodes(self):
        """
        Streams reset one read after they were opened released their node
        connections before the bound closed the connection.
        """
        self.backend.hold = True
        router = self.router(http2_max_resets=3)
        client = self.client(router)
        for _ in range(4):
            streamID = client.request()
            client.conn.reset_stream(streamID, ErrorCodes.CANCEL)
            client.send()
        nodes = self.backend.connections
        self.assertEqual(len(nodes), 4)
        self.assertTrue(all(node.transport.disconnecting for node in nodes))
        self.assertEqual(client.terminated, ErrorCodes.ENHANCE_YOUR_CALM)

    def test_continuation_flood(self):
        router = self.router(http2_max_continuations=5)
        client = self.client(router)
        headers = HeadersFrame(1)
        headers.data = Encoder().encode([(b":method", b"GET")])
        raw = headers.serialize()
        for _ in range(6):
            continuation = ContinuationFrame(1)
            continuation.data = b""
            raw += continuation.serialize()
        client.send(raw)
        self.assertCalmed(router, client, "continuation_flood")

    def test_header_block_too_large(self):
        router = self.router(http2_max_header_block=20000)
        client = self.client(router)
        headers = HeadersFrame(1)
        headers.data = b"\x00" * 16000
        continuation = ContinuationFrame(1)
        continuation.data = b"\x00" * 16000
        client.send(headers.serialize() + continuation.serialize()[:20])
        self.assertCalmed(router, client, "header_block_too_large")

    def test_frame_over_max_frame_size(self):
        """
        A frame whose header announces more than C{SETTINGS_MAX_FRAME_SIZE}
        (16384) bytes is refused at its header, before its payload is
        held: C{GOAWAY FRAME_SIZE_ERROR}.  (h2 alone waits for the whole
        frame, up to 16 MiB a connection, before it checks.)
        """
        router = self.router()
        client = self.client(router)
        header = DataFrame(1, data=b"x" * 16385).serialize()[:9]
        client.send(header + b"x" * 100)
        self.assertEqual(client.terminated, ErrorCodes.FRAME_SIZE_ERROR)
        self.assertTrue(client.memory.closed)
        self.assertEqual(router.http2.counts.bounds, {"frame_too_large": 1})
        self.assertEqual(self.loggedEvents().count("http2_frame_too_large"), 1)
        other = self.client(router)
        self.assertEqual(other.response(other.request()).status, 200)

    def test_hpack_bomb(self):
        """
        A small header block that decodes into a huge header list (one
        large entry of the dynamic table, referred to again and again) is
        cut as it is decoded.
        """
        router = self.router(http2_max_header_list_size=65536)
        client = self.client(router)
        encoder = Encoder()
        block = encoder.encode(
            [(b":method", b"GET"), (b":path", b"/"), (b":scheme", b"http"),
             (b":authority", b"h")] + [(b"x-bomb", b"a" * 3000)] * 200)
        self.assertLess(len(block), 4000)
        headers = HeadersFrame(1, flags=["END_HEADERS", "END_STREAM"])
        headers.data = block
        client.send(headers.serialize())
        self.assertCalmed(router, client, "header_list_too_large")
        self.assertEqual(self.backend.requests[:-1], [])

    def test_hpack_table_past_its_size(self):
        router = self.router(http2_header_table_size=4096)
        client = self.client(router)
        encoder = Encoder()
        encoder.header_table_size = 1 << 20
        headers = HeadersFrame(1, flags=["END_HEADERS", "END_STREAM"])
        headers.data = encoder.encode([(b":method", b"GET"), (b":path", b"/"),
                                       (b":scheme", b"http"), (b":authority", b"h")])
        client.send(headers.serialize())
        self.assertEqual(client.terminated, ErrorCodes.PROTOCOL_ERROR)
        self.assertTrue(client.memory.closed)
        self.assertEqual(router.http2.counts.bounds, {"header_table_too_large": 1})

    def test_ping_flood(self):
        router = self.router(http2_max_pings=5)
        client = self.client(router)
        client.send(b"".join(PingFrame(0, opaque_data=b"%08d" % i).serialize() for i in range(6)))
        self.assertCalmed(router, client, "ping_flood")

    def test_pings_within_the_bound_each_second(self):
        router = self.router(http2_max_pings=5)
        client = self.client(router)
        for _ in range(3):
            client.send(b"".join(PingFrame(0, opaque_data=b"12345678").serialize()
                                 for i in range(5)))
            self.network.reactor.advance(1)
        self.assertIsNone(client.terminated)

    def test_settings_flood(self):
        router = self.router(http2_max_settings=5)
        client = self.client(router)
        client.send(b"".join(SettingsFrame(0, settings={4: 65535}).serialize() for _ in range(6)))
        self.assertCalmed(router, client, "settings_flood")

    def test_max_streams(self):
        """
        A client opening more streams than the router allows (before it
        read the router's SETTINGS) loses its connection; the excess is
        counted.
        """
        self.backend.hold = True
        router = self.router(http2_max_streams=2)
        client = self.client(router, read=False)
        for _ in range(3):
            client.request()
        client.reading = True
        client.read()
        self.assertEqual(client.terminated, ErrorCodes.PROTOCOL_ERROR)
        self.assertEqual(router.http2.counts.bounds, {"max_streams": 1})


class DeadlineTests(HTTP2TestCase):
    def test_idle(self):
        """
        A connection without streams is closed after its idle deadline,
        with C{GOAWAY NO_ERROR}; PINGs do not keep it.
        """
        router = self.router(http2_idle_timeout=5)
        client = self.client(router)
        client.request()
        self.network.reactor.advance(4)
        client.send(PingFrame(0, opaque_data=b"12345678").serialize())
        self.network.reactor.advance(1.5)
        self.network.flush()
        client.read()
        self.assertEqual(client.terminated, ErrorCodes.NO_ERROR)
        self.assertTrue(client.memory.closed)
        self.assertEqual(router.http2.counts.bounds, {"idle_timeout": 1})
        self.assertEqual(self.loggedEvents().count("http2_idle_timeout"), 1)

    def test_drain_sends_goaway_and_finishes_streams(self):
        """
        Draining (SIGTERM): C{GOAWAY NO_ERROR} naming the last stream
        taken; that stream is answered, a newer one refused, then the
        connection closes.
        """
        self.backend.hold = True
        router = self.router()
        client = self.client(router)
        first = client.request(b"/first")
        router.drain(30)
        self.network.flush()
        client.read()
        self.assertEqual(client.terminated, ErrorCodes.NO_ERROR)
        self.assertFalse(client.memory.closed)
        # h2's client takes no frame after a GOAWAY (nor sends one): the
        # rest is written and read here.
        seen = len(client.memory.received())
        late = HeadersFrame(first + 2, flags=["END_HEADERS", "END_STREAM"])
        late.data = Encoder().encode([(b":method", b"GET"), (b":path", b"/late"),
                                      (b":scheme", b"http"), (b":authority", b"h")])
        client.memory.send(late.serialize())
        [node] = self.backend.pending()
        node.respond()
        self.network.flush()
        frames = _frames(client.memory.received()[seen:])
        [refused] = [f for f in frames if isinstance(f, RstStreamFrame)]
        self.assertEqual((refused.stream_id, refused.error_code),
                         (first + 2, ErrorCodes.REFUSED_STREAM))
        [headers] = [f for f in frames if isinstance(f, HeadersFrame)]
        self.assertEqual(headers.stream_id, first)
        self.assertIn((b":status", b"200"), client.conn.decoder.decode(headers.data, raw=True))
        self.assertIn("END_STREAM", frames[-1].flags)
        self.assertTrue(client.memory.closed)

    def test_total_deadline(self):
        router = self.router(http2_max_connection_time=100, http2_idle_timeout=1000)
        client = self.client(router)
        client.request()
        self.network.reactor.advance(100)
        self.network.flush()
        client.read()
        self.assertEqual(client.terminated, ErrorCodes.NO_ERROR)
        self.assertTrue(client.memory.closed)
        self.assertEqual(router.http2.counts.bounds, {"connection_deadline": 1})
        self.assertEqual(self.loggedEvents().count("http2_connection_deadline"), 1)


class StatsTests(HTTP2TestCase):
    def test_stats(self):
        router = self.router()
        client = self.client(router)
        client.request()
        client.request()
        fields = dict(router.statsFields())
        self.assertEqual(fields["http2"]["connections"], 1)
        self.assertEqual(fields["http2"]["open"], 1)
        self.assertEqual(fields["http2"]["streams"], 2)
        self.assertNotIn("http2", dict(self.router(http2=False).statsFields()))

    def test_metrics(self):
        router = self.router(http2_max_pings=1)
        client = self.client(router)
        client.request()
        client.send(PingFrame(0, opaque_data=b"12345678").serialize() * 2)
        page = metricsPage(router, "http")().decode()
        self.assertIn('txrouter_http2_streams_total{router="http"} 1.0', page)
        self.assertIn('txrouter_http2_bounds_total{bound="ping_flood",router="http"} 1.0', page)
        self.assertIn('txrouter_http2_connections_open{router="http"} 0.0', page)
        self.assertNotIn("http2", metricsPage(self.router(http2=False), "http")().decode())

    def test_preface_constant(self):
        self.assertEqual(PREFACE, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
