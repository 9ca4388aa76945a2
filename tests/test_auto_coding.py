"""
C{--auto-chunked} and C{--auto-gzip}: close-delimited response bodies sent
chunked (and gzipped when the application asks) to HTTP/1.1 clients, so
that their connection carries the next request (reference section 5.6).
"""

import gzip

from hypothesis import given
from hypothesis import strategies as st
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from txrouter.routers.http import HTTPRouter
from txrouter.routing.nodes import parseNode
from txrouter.testing import MemoryNetwork, UwsgiWSGIBackend
from txrouter.wire.coding import ChunkedBody, GzipChunkedBody, bodyCoding
from txrouter.wire.http1 import ChunkedDecoder


def unchunked(body: bytes) -> bytes:
    decoder = ChunkedDecoder()
    data = b"".join(decoder.feed(body))
    assert decoder.done and not decoder.leftover
    return data


def noLength(environ, start_response):
    """
    A response without a length, gzip asked for on C{/gz}.
    """
    headers = [("Content-Type", "text/plain")]
    if environ["PATH_INFO"] == "/gz":
        headers.append(("uWSGI-Encoding", "gzip"))
    start_response("200 OK", headers)
    return [b"hello ", b"world " * 50]


class AutoCodingTests(SynchronousTestCase):
    def setUp(self):
        self.network = MemoryNetwork()
        self.backend = UwsgiWSGIBackend(noLength)
        self.network.addBackend(("127.0.0.1", 3031), self.backend)
        self.events = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    def exchange(self, requests: bytes, **options):
        router = HTTPRouter(
            self.network.reactor, [parseNode("127.0.0.1:3031")], server_name="vm",
            keepalive=5, **options,
        )
        client = self.network.connect(router, peer=("127.0.0.1", 40000))
        client.send(requests)
        return client

    def test_without_options_the_body_ends_at_close(self):
        client = self.exchange(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
        response = client.received()
        self.assertIn(b"Connection: close\r\n", response)
        self.assertNotIn(b"Transfer-Encoding", response)
        self.assertTrue(response.endswith(b"hello " + b"world " * 50))
        self.assertTrue(client.closed)

    def test_auto_chunked_keeps_the_connection_for_the_next_request(self):
        request = b"GET / HTTP/1.1\r\nHost: h\r\n\r\n"
        client = self.exchange(request, auto_chunked=True)
        client.send(request)
        response = client.received()
        self.assertEqual(response.count(b"HTTP/1.1 200 OK\r\n"), 2)
        self.assertFalse(client.closed)
        first = response.split(b"HTTP/1.1 200 OK\r\n")[1]
        head, _, body = first.partition(b"\r\n\r\n")
        self.assertIn(b"Transfer-Encoding: chunked", head)
        self.assertNotIn(b"Connection: close", head)
        self.assertEqual(unchunked(body), b"hello " + b"world " * 50)

    def test_an_http_1_0_client_gets_the_body_as_it_is(self):
        client = self.exchange(b"GET / HTTP/1.0\r\nHost: h\r\n\r\n", auto_chunked=True)
        response = client.received()
        self.assertNotIn(b"Transfer-Encoding", response)
        self.assertTrue(client.closed)

    def test_auto_gzip_when_the_app_asks_and_the_client_accepts(self):
        client = self.exchange(
            b"GET /gz HTTP/1.1\r\nHost: h\r\nAccept-Encoding: deflate, gzip\r\n\r\n",
            auto_gzip=True,
        )
        head, _, body = client.received().partition(b"\r\n\r\n")
        self.assertIn(b"Content-Encoding: gzip\r\nTransfer-Encoding: chunked", head)
        # uWSGI leaves the application's header in, and so does txrouter.
        self.assertIn(b"uWSGI-Encoding: gzip", head)
        self.assertEqual(gzip.decompress(unchunked(body)), b"hello " + b"world " * 50)
        self.assertFalse(client.closed)

    def test_a_transfer_coded_body_is_not_coded_again(self):
        """
        A response with a C{Transfer-Encoding} other than a lone
        C{chunked} (which ends when its node closes) is relayed as it is
        and the connection closed: chunking it again would give the
        client two C{Transfer-Encoding} fields and a body chunked twice.
        """
        def transferCoded(environ, start_response):
            start_response("200 OK", [("Transfer-Encoding", "gzip, chunked")])
            return [b"5\r\nhello\r\n0\r\n\r\n"]

        self.backend.application = transferCoded
        client = self.exchange(b"GET /gz HTTP/1.1\r\nHost: h\r\nAccept-Encoding: gzip\r\n\r\n",
                               auto_chunked=True, auto_gzip=True)
        head, _, body = client.received().partition(b"\r\n\r\n")
        self.assertEqual(head.count(b"Transfer-Encoding"), 1, head)
        self.assertEqual(body, b"5\r\nhello\r\n0\r\n\r\n")
        self.assertTrue(client.closed)

    def test_a_transfer_coded_body_says_connection_close(self):
        """
        A response in a transfer coding other than a lone C{chunked} ends
        when its node closes, and the router closes after it: it says
        C{Connection: close} (once, if the node's head said so already).
        """
        for extra in ([], [("Connection", "close")]):
            def transferCoded(environ, start_response, extra=extra):
                start_response("200 OK", [("Transfer-Encoding", "gzip"), *extra])
                return [b"coded"]

            self.backend.application = transferCoded
            client = self.exchange(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
            head, _, body = client.received().partition(b"\r\n\r\n")
            self.assertEqual(body, b"coded")
            self.assertEqual(head.lower().count(b"\r\nconnection: close"), 1, head)
            self.assertTrue(client.closed)

    def test_no_gzip_unless_asked_and_accepted(self):
        for path, accept in [(b"/", b"gzip"), (b"/gz", b"identity"), (b"/gz", b"gzip;q=0")]:
            client = self.exchange(
                b"GET %s HTTP/1.1\r\nHost: h\r\nAccept-Encoding: %s\r\n\r\n" % (path, accept),
                auto_gzip=True,
            )
            response = client.received()
            self.assertNotIn(b"Content-Encoding", response, (path, accept))
            self.assertTrue(response.endswith(b"world "))


@given(st.lists(st.binary(max_size=300), max_size=8))
def test_chunked_bodies_decode_to_what_was_encoded(pieces):
    coding = ChunkedBody()
    body = b"".join(coding.encode(piece) for piece in pieces) + coding.finish()
    assert unchunked(body) == b"".join(pieces)


@given(st.lists(st.binary(max_size=300), max_size=8))
def test_gzip_bodies_decompress_to_what_was_encoded(pieces):
    coding = GzipChunkedBody()
    body = b"".join(coding.encode(piece) for piece in pieces) + coding.finish()
    assert gzip.decompress(unchunked(body)) == b"".join(pieces)


def test_each_gzip_piece_is_flushed_at_once():
    """
    A streamed response is not held back by the compressor: each piece
    decompresses as soon as it is sent.
    """
    import zlib

    coding = GzipChunkedBody()
    decompressor = zlib.decompressobj(31)
    out = decompressor.decompress(unchunked(coding.encode(b"event: 1\n\n") + b"0\r\n\r\n"))
    assert out == b"event: 1\n\n"


def test_a_coding_is_chosen_only_when_asked():
    asks = [(b"uWSGI-Encoding", b"gzip")]
    accepts = [(b"Accept-Encoding", b"br, GZIP")]
    assert isinstance(bodyCoding(accepts, asks, False, True), GzipChunkedBody)
    assert bodyCoding(accepts, asks, False, False) is None
    assert type(bodyCoding(accepts, [], True, True)) is ChunkedBody
    assert type(bodyCoding(accepts, asks + [(b"Content-Encoding", b"br")], True, True)) is ChunkedBody
    assert bodyCoding(accepts, asks + [(b"Transfer-Encoding", b"identity")], True, True) is None
