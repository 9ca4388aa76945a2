"""
What a client gets from each router when its node misbehaves, in one table
(issue 11's test class (a)): a node that resets before or after reading
the request, stalls, answers garbage, an oversized or ambiguous head, a
truncated or malformed body, or bytes past the end of its response.  The HTTP router is
tried with a uwsgi node and with an HTTP node; the FastRouter, which relays
a node's bytes verbatim for nginx to judge, with a uwsgi node.
"""

import pytest
from twisted.internet.protocol import Protocol, ServerFactory
from twisted.logger import globalLogPublisher

from tests.logs import named
from txrouter.routers.fast import FastRouter
from txrouter.routers.http import HTTPRouter
from txrouter.routing.nodes import parseNode
from txrouter.testing import MemoryNetwork
from txrouter.wire.uwsgi import encodePacket

TIMEOUT = 30

BEHAVIOURS = {
    "resets_at_once": None,
    "closes_after_the_request": b"",
    "stalls": "stall",
    "answers_garbage": b"\x00\x01 garbage\r\n\r\n",
    "oversized_head": b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * 70000 + b"\r\n\r\n",
    "too_many_headers": b"HTTP/1.1 200 OK\r\n" + b"X: y\r\n" * 1001 + b"\r\n",
    "content_length_and_chunked": (
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
    ),
    "truncated_body": b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc",
    "surplus_bytes": b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\n\r\n",
    "surplus_after_no_body": b"HTTP/1.1 204 No Content\r\n\r\nHTTP/1.1 200 OK\r\n\r\n",
    "bad_first_chunk": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n+5\r\nhello\r\n0\r\n\r\n",
    "interim_storm": (
        b"HTTP/1.1 103 Early Hints\r\n\r\n" * 5000 + b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    ),
}


class HostileNode(ServerFactory):
    """
    A node that does one of L{BEHAVIOURS} to every connection.
    """

    def __init__(self, behaviour: str) -> None:
        self.script = BEHAVIOURS[behaviour]

    def buildProtocol(self, addr):
        script = self.script

        class Hostile(Protocol):
            def connectionMade(self):
                if script is None:
                    self.transport.abortConnection()

            def dataReceived(self, data):
                if script == "stall" or script is None:
                    return
                self.transport.write(script)
                self.transport.loseConnection()

        return Hostile()


# behaviour: (status the client gets, event logged, what else is true)
#   "closed": the client's connection is closed after what it got
#   "partial": the client got the head and part of the body, then a close
#   "verbatim": the FastRouter relayed the node's bytes as they were
HTTP_ROUTER = {
    "resets_at_once": (502, "backend_closed", "closed"),
    "closes_after_the_request": (502, "backend_closed", "closed"),
    "stalls": (504, "backend_timeout", "closed"),
    "answers_garbage": (502, "bad_response", "closed"),
    "oversized_head": (502, "response_head_too_large", "closed"),
    "too_many_headers": (502, "response_too_many_headers", "closed"),
    "content_length_and_chunked": (502, "response_cl_te", "closed"),
    "truncated_body": (200, "response_truncated", "partial"),
    "bad_first_chunk": (502, "response_truncated", "closed"),
    "surplus_bytes": (200, "response_surplus", "closed"),
    "surplus_after_no_body": (204, "response_surplus", "closed"),
}

FASTROUTER = {
    "resets_at_once": (502, "backend_closed", "closed"),
    "closes_after_the_request": (502, "backend_closed", "closed"),
    "stalls": (504, "backend_timeout", "closed"),
    "answers_garbage": (None, None, "verbatim"),
    "oversized_head": (200, None, "verbatim"),
    "too_many_headers": (200, None, "verbatim"),
    "content_length_and_chunked": (200, None, "verbatim"),
    "truncated_body": (200, None, "verbatim"),
    "bad_first_chunk": (200, None, "verbatim"),
    "surplus_bytes": (200, None, "verbatim"),
    "surplus_after_no_body": (204, None, "verbatim"),
    "interim_storm": (103, None, "verbatim"),
}


@pytest.fixture
def events():
    seen = []
    globalLogPublisher.addObserver(seen.append)
    yield seen
    globalLogPublisher.removeObserver(seen.append)


def statusOf(response: bytes):
    try:
        return int(response.split(b" ", 2)[1])
    except (IndexError, ValueError):
        return None


def run(router, network, request: bytes):
    client = network.connect(router)
    client.send(request)
    network.reactor.advance(TIMEOUT + 1)
    network.flush()
    return client


@pytest.mark.parametrize("behaviour", sorted(HTTP_ROUTER))
@pytest.mark.parametrize("node", ["127.0.0.1:3050", "http://127.0.0.1:3050"])
@pytest.mark.parametrize("method", [b"GET", b"POST"])
def test_the_http_router(behaviour, node, method, events):
    network = MemoryNetwork()
    network.addBackend(("127.0.0.1", 3050), HostileNode(behaviour))
    router = HTTPRouter(network.reactor, [parseNode(node)], keepalive=60, timeout=TIMEOUT)
    body = b"x" if method == b"POST" else b""
    client = run(router, network, b"%s / HTTP/1.1\r\nHost: h\r\nContent-Length: %d\r\n\r\n%s"
                 % (method, len(body), body))
    status, event, then = HTTP_ROUTER[behaviour]
    received = client.received()
    assert statusOf(received) == status, received[:200]
    assert named(events, event), [e.get("event") for e in events]
    assert received.count(b"HTTP/1.1 ") == 1, "one response, nothing past it"
    if then == "partial":
        assert received.endswith(b"abc")
    else:
        # The router closes after it, and says so.
        head = received.partition(b"\r\n\r\n")[0].lower()
        assert head.count(b"\r\nconnection: close") == 1, head[:200]
    assert client.closed
    assert not [e for e in events if e.get("log_failure")], "no traceback"


@pytest.mark.parametrize("behaviour", sorted(FASTROUTER))
def test_the_fastrouter(behaviour, events):
    network = MemoryNetwork()
    network.addBackend(("127.0.0.1", 3050), HostileNode(behaviour))
    router = FastRouter(network.reactor, [parseNode("127.0.0.1:3050")], timeout=TIMEOUT)
    client = run(router, network, encodePacket([(b"REQUEST_METHOD", b"GET"), (b"HTTP_HOST", b"h")]))
    status, event, then = FASTROUTER[behaviour]
    received = client.received()
    if then == "verbatim":
        assert received == BEHAVIOURS[behaviour]
    else:
        assert statusOf(received) == status, received[:200]
        assert named(events, event)
    assert client.closed
    assert not [e for e in events if e.get("log_failure")], "no traceback"


@pytest.mark.parametrize("node", ["127.0.0.1:3050", "http://127.0.0.1:3050"])
def test_an_interim_storm(node, events):
    """
    Thousands of interim (1xx) heads in one read, then the response: the
    HTTP router relays each and then the response, with no traceback
    (it once recursed once per interim head, to a C{RecursionError}).
    """
    network = MemoryNetwork()
    network.addBackend(("127.0.0.1", 3050), HostileNode("interim_storm"))
    router = HTTPRouter(network.reactor, [parseNode(node)], keepalive=60, timeout=TIMEOUT)
    client = run(router, network, b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
    received = client.received()
    assert received.count(b"HTTP/1.1 103 Early Hints\r\n\r\n") == 5000
    assert received.endswith(b"\r\n\r\nok"), received[-200:]
    assert b"HTTP/1.1 200 OK\r\n" in received
    assert not [e for e in events if e.get("log_failure")], "no traceback"
