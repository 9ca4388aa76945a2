"""
The sans-IO HTTP/2 parts: the frame guard (L{txrouter.wire.h2guard}) and
the request and response conversions (L{txrouter.wire.h2messages}).
"""

from hyperframe.frame import (
    ContinuationFrame,
    DataFrame,
    HeadersFrame,
    PingFrame,
    RstStreamFrame,
    SettingsFrame,
)
from hypothesis import given, strategies as st
from twisted.trial.unittest import SynchronousTestCase

from txrouter.wire.h2guard import PREFACE, BoundExceeded, FrameGuard
from txrouter.wire.h2messages import NodeResponseParser, errorResponse, requestHead, responseHeaders
from txrouter.wire.http1 import HTTPError, ResponseHeadParser


def _continuations(count: int, size: int = 0) -> bytes:
    frames = []
    for _ in range(count):
        frame = ContinuationFrame(1)
        frame.data = b"\x00" * size
        frames.append(frame.serialize())
    return b"".join(frames)


def _headers(size: int = 10, end: bool = False) -> bytes:
    frame = HeadersFrame(1, flags=["END_HEADERS"] if end else [])
    frame.data = b"\x00" * size
    return frame.serialize()


class FrameGuardTests(SynchronousTestCase):
    def feedAll(self, guard, data: bytes, step: int, now: float = 0.0) -> None:
        for offset in range(0, len(data), step):
            guard.feed(data[offset:offset + step], now)

    def test_ordinary_traffic_passes(self):
        guard = FrameGuard()
        data = DataFrame(1, data=b"x" * 16384).serialize()
        self.feedAll(guard, PREFACE + SettingsFrame(0).serialize() + _headers(end=True) + data, 7)

    def test_continuations(self):
        guard = FrameGuard(maxContinuations=3)
        guard.feed(PREFACE + _headers() + _continuations(3), 0)
        error = self.assertRaises(BoundExceeded, guard.feed, _continuations(1), 0)
        self.assertEqual(error.bound, "continuation_flood")

    def test_continuations_counted_per_block(self):
        guard = FrameGuard(maxContinuations=3)
        guard.feed(PREFACE + _headers() + _continuations(3), 0)
        guard.feed(_headers() + _continuations(3), 0)

    def test_block_size_before_its_payload(self):
        """
        A header block over the bound is refused at the frame header that
        takes it over, before its payload has come.
        """
        guard = FrameGuard(maxHeaderBlock=1000)
        guard.feed(PREFACE + _headers(600), 0)
        error = self.assertRaises(
            BoundExceeded, guard.feed, _continuations(1, 600)[:9], 0)
        self.assertEqual(error.bound, "header_block_too_large")

    def test_frame_size_at_its_header(self):
        """
        A frame longer than C{maxFrameSize} is refused at its header,
        before its payload has come; one of exactly that size passes.
        """
        guard = FrameGuard(maxFrameSize=16384)
        guard.feed(PREFACE + DataFrame(1, data=b"x" * 16384).serialize(), 0)
        error = self.assertRaises(
            BoundExceeded, guard.feed, DataFrame(1, data=b"x" * 16385).serialize()[:9], 0)
        self.assertEqual(error.bound, "frame_too_large")

    @given(st.integers(min_value=1, max_value=40))
    def test_any_split(self, step):
        """
        Where the bytes are cut makes no difference.
        """
        guard = FrameGuard(maxPings=3)
        pings = b"".join(PingFrame(0, opaque_data=b"12345678").serialize() for _ in range(4))
        with self.assertRaises(BoundExceeded) as caught:
            self.feedAll(guard, PREFACE + _headers(50, True) + pings, step)
        self.assertEqual(caught.exception.bound, "ping_flood")

    def test_rates_per_second(self):
        guard = FrameGuard(maxResets=2, maxSettings=1)
        reset = RstStreamFrame(1).serialize()
        guard.feed(PREFACE + reset + reset, 0.0)
        guard.feed(reset + reset, 1.0)
        self.assertRaises(BoundExceeded, guard.feed, reset, 1.5)
        guard = FrameGuard(maxSettings=1)
        ack = SettingsFrame(0, flags=["ACK"]).serialize()
        guard.feed(PREFACE + SettingsFrame(0).serialize() + ack + ack, 0.0)
        error = self.assertRaises(BoundExceeded, guard.feed, SettingsFrame(0).serialize(), 0.1)
        self.assertEqual(error.bound, "settings_flood")

    def test_zero_is_no_bound(self):
        guard = FrameGuard(maxContinuations=0, maxHeaderBlock=0, maxResets=0, maxPings=0)
        guard.feed(PREFACE + _headers() + _continuations(100, 1000), 0)
        guard.feed(RstStreamFrame(1).serialize() * 1000, 0)


GET = [(b":method", b"GET"), (b":path", b"/a?b"), (b":scheme", b"https"),
       (b":authority", b"example.com")]


class RequestHeadTests(SynchronousTestCase):
    def refusal(self, headers, **limits) -> HTTPError:
        return self.assertRaises(HTTPError, requestHead, headers, **limits)

    def test_head(self):
        head = requestHead(GET + [(b"accept", b"*/*")])
        self.assertEqual((head.method, head.path, head.version, head.host),
                         (b"GET", b"/a?b", b"HTTP/2", b"example.com"))
        self.assertEqual(head.headers, [(b"host", b"example.com"), (b"accept", b"*/*")])

    def test_refusals(self):
        cases = [
            (GET[:1] + [(b":authority", b"h")], 400, "bad_target"),
            ([(b":method", b"GET"), (b":path", b"x"), (b":authority", b"h")], 400, "bad_target"),
            ([(b":method", b"GET"), (b":path", b"/")], 400, "missing_host"),
            ([(b":method", b"CONNECT"), (b":authority", b"h:1")], 405, "connect_refused"),
            (GET + [(b"host", b"other")], 400, "host_mismatch"),
            ([(b":method", b"GET"), (b":path", b"/"), (b":authority", b"a b")], 400, "bad_host"),
            (GET + [(b"content-length", b"x")], 400, "bad_content_length"),
            (GET + [(b"x", b"a\x01")], 400, "bad_header_value"),
            ([(b":method", b"PUT"), (b":path", b"*"), (b":authority", b"h")], 400, "bad_target"),
        ]
        for headers, status, event in cases:
            error = self.refusal(headers)
            self.assertEqual((error.status, error.event), (status, event), headers)

    def test_limits(self):
        self.assertEqual(self.refusal(GET + [(b"x", b"1")] * 3, maxHeaders=3).status, 431)
        self.assertEqual(self.refusal(GET + [(b"x", b"1" * 100)], maxHeadSize=100).status, 431)
        self.assertEqual(self.refusal(
            [(b":method", b"GET"), (b":path", b"/" * 100), (b":authority", b"h")],
            maxRequestLine=50).status, 414)


class ResponseTests(SynchronousTestCase):
    def test_headers(self):
        parser = ResponseHeadParser()
        head = parser.feed(
            b"HTTP/1.1 200 OK\r\nContent-Type: a\r\nConnection: x-hop, close\r\nX-Hop: 1\r\n"
            b"Keep-Alive: 5\r\nTransfer-Encoding: chunked\r\nUpgrade: z\r\nSet-Cookie: c\r\n\r\n")
        self.assertEqual(responseHeaders(head), [
            (b":status", b"200"), (b"content-type", b"a"), (b"set-cookie", b"c"),
        ])

    def test_nul_in_a_value(self):
        head = ResponseHeadParser().feed(b"HTTP/1.1 200 OK\r\nX: a\x00b\r\n\r\n")
        self.assertEqual(self.assertRaises(HTTPError, responseHeaders, head).status, 502)

    def test_a_transfer_coding_other_than_chunked(self):
        """
        HTTP/2 carries no transfer coding: a body in one the router does
        not decode (anything but a lone C{chunked}) cannot reach a stream;
        removing the header alone would hand the client coded bytes as its
        content.
        """
        for coding in (b"gzip, chunked", b"identity"):
            head = ResponseHeadParser().feed(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: %s\r\n\r\n" % coding)
            error = self.assertRaises(HTTPError, responseHeaders, head)
            self.assertEqual((error.status, error.event), (502, "bad_response"))

    def test_node_answering_in_http2(self):
        """
        A uWSGI application asked in C{HTTP/2} answers in it: the nodes'
        parser of HTTP/2 streams takes that status line; the HTTP/1.1 one
        does not.
        """
        raw = b"HTTP/2 204 No Content\r\n\r\n"
        self.assertEqual(NodeResponseParser().feed(raw).status, 204)
        self.assertRaises(HTTPError, ResponseHeadParser().feed, raw)

    def test_error_response(self):
        headers, body = errorResponse(413, "too big")
        self.assertEqual(headers[0], (b":status", b"413"))
        self.assertEqual(dict(headers)[b"content-length"], b"%d" % len(body))
