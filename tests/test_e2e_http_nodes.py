"""
HTTP nodes end to end: a plain HTTP server (Python's C{http.server}, run
from this file) that is no uWSGI, announced with C{twistd txrouter-subscribe
--proto http} to C{twistd txrouter-http}; curl gets its answers through the
router over one keep-alive connection, and a websocket client its echo.

Run as a script (C{python tests/test_e2e_http_nodes.py PORT}), this file is
that server: C{GET} answers with the request it got as JSON (path and
headers), C{Connection: close} when asked to close, as servers do; a
websocket upgrade gets its 101 and the frames it sends echoed.
"""

import base64
import hashlib
import http.server
import json
import os
import signal
import socket
import sys

import pytest

if __name__ != "__main__":
    from tests.realpeers import Process, curl, free_port, wait_for_tcp
    from tests.subpeers import free_udp_port, stats, txrouter, wait_for_log
    from tests.test_e2e_subscriber import KEY, heard, stopped, subscriber

pytestmark = pytest.mark.e2e

_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def websocketAccept(key: str) -> str:
    """
    The C{Sec-WebSocket-Accept} answering C{key} (RFC 6455, 4.2.2).
    """
    return base64.b64encode(hashlib.sha1((key + _GUID).encode()).digest()).decode()


def frame(opcode: int, payload: bytes, mask: bytes = b"") -> bytes:
    """
    One final websocket frame; masked (as clients send them) with C{mask}.
    """
    size = len(payload)
    bit = 0x80 if mask else 0
    if size < 126:
        head = bytes([0x80 | opcode, bit | size])
    elif size < 1 << 16:
        head = bytes([0x80 | opcode, bit | 126]) + size.to_bytes(2, "big")
    else:
        head = bytes([0x80 | opcode, bit | 127]) + size.to_bytes(8, "big")
    if mask:
        payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return head + mask + payload


def readFrame(stream):
    """
    C{(opcode, masked, payload)} of the next frame, unmasked; L{None} at EOF.
    """
    head = stream.read(2)
    if len(head) < 2:
        return None
    size = head[1] & 0x7F
    if size == 126:
        size = int.from_bytes(stream.read(2), "big")
    elif size == 127:
        size = int.from_bytes(stream.read(8), "big")
    masked = bool(head[1] & 0x80)
    mask = stream.read(4) if masked else b""
    payload = stream.read(size)
    if masked:
        payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return head[0] & 0x0F, masked, payload


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        if self.headers.get("Upgrade", "").lower() == "websocket":
            self._websocket()
            return
        body = json.dumps({
            "path": self.path, "headers": list(self.headers.items()),
            "peer_port": self.client_address[1],
        }).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Keep-Alive", "timeout=5")
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def _websocket(self):
        self.send_response(101)
        self.send_header("Upgrade", "websocket")
        self.send_header("Connection", "Upgrade")
        self.send_header("Sec-WebSocket-Accept", websocketAccept(self.headers["Sec-WebSocket-Key"]))
        self.end_headers()
        self.close_connection = True
        while True:
            received = readFrame(self.rfile)
            if received is None:
                return
            opcode, masked, payload = received
            if not masked or opcode == 8:
                self.wfile.write(frame(8, b""))
                return
            self.wfile.write(frame(opcode, payload))


def serve(port: int) -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), _Handler)
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    server.serve_forever()


@pytest.fixture(scope="module")
def routed(tmp_path_factory):
    """
    The HTTP server, txrouter-http (keep-alive, a subscription server,
    stats) and the subscriber announcing the server as C{KEY} with
    C{--proto http}; yields C{(router port, stats port, node address)} once
    the router has the node.
    """
    tmp = tmp_path_factory.mktemp("http-nodes")
    nodePort, port, statsPort, udp = free_port(), free_port(), free_port(), free_udp_port()
    node = f"127.0.0.1:{nodePort}"
    with Process([sys.executable, __file__, nodePort], tmp / "node.log") as server:
        wait_for_tcp(nodePort, process=server)
        with txrouter(tmp, "http", port, [
            "--subscription-server", f"127.0.0.1:{udp}", "--keepalive", "15",
            "--stats", f"127.0.0.1:{statsPort}",
        ]) as router, subscriber(tmp, [f"127.0.0.1:{udp}"], node, "--proto", "http") as announcer:
            heard(router, announcer, f"{KEY} => new node: {node} (http)")
            yield port, statsPort, node
            stopped(announcer, signal.SIGTERM)
            wait_for_log(router, f"{KEY} => removed node: {node} (unsubscribed)", timeout=5)
            assert "Traceback" not in router.log()


def test_curl_gets_the_http_nodes_answers_over_one_keep_alive_connection(routed):
    port, statsPort, node = routed
    result = curl(
        "-H", f"Host: {KEY}", "-H", "X-Forwarded-For: 6.6.6.6",
        "-w", "\n%{http_code} %{num_connects}\n",
        f"http://127.0.0.1:{port}/first?a=1", f"http://127.0.0.1:{port}/second",
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.decode().splitlines()
    first, second = json.loads(lines[0]), json.loads(lines[2])
    # Two 200s, the second over the connection the first opened.
    assert (lines[1], lines[3]) == ("200 1", "200 0")
    assert (first["path"], second["path"]) == ("/first?a=1", "/second")
    headers = {name.lower(): value for name, value in first["headers"]}
    assert headers["host"] == KEY
    assert headers["connection"] == "close"
    assert headers["x-forwarded-for"] == "127.0.0.1"
    assert headers["x-forwarded-proto"] == "http"
    [pool] = stats(statsPort)["subscriptions"]
    [entry] = pool["nodes"]
    assert (entry["name"], entry["proto"], entry["requests"]) == (node, "h", 2)


def test_curl_sees_no_hop_by_hop_header_of_the_node(routed):
    port, _, _ = routed
    result = curl("-sS", "-D", "-", "-o", "/dev/null", "-H", f"Host: {KEY}",
                  f"http://127.0.0.1:{port}/")
    head = result.stdout.decode().lower()
    assert head.startswith("http/1.1 200")
    assert "keep-alive:" not in head
    assert "connection: close" not in head


def test_a_websocket_through_the_router(routed):
    """
    The handshake is answered 101 by the node with the right accept key,
    and one masked text frame comes back echoed (unmasked, from the node).
    """
    port, _, _ = routed
    key = base64.b64encode(os.urandom(16)).decode()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall((
            f"GET /chat HTTP/1.1\r\nHost: {KEY}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode())
        stream = sock.makefile("rb")
        status = stream.readline()
        headers = {}
        for line in iter(stream.readline, b"\r\n"):
            name, _, value = line.decode().partition(":")
            headers[name.strip().lower()] = value.strip()
        assert status.startswith(b"HTTP/1.1 101 ")
        assert headers["sec-websocket-accept"] == websocketAccept(key)
        assert (headers["upgrade"].lower(), headers["connection"].lower()) == ("websocket", "upgrade")
        sock.sendall(frame(1, "héllo through txrouter".encode(), mask=os.urandom(4)))
        assert readFrame(stream) == (1, False, "héllo through txrouter".encode())
        sock.sendall(frame(8, b"", mask=os.urandom(4)))
        assert readFrame(stream)[0] == 8


if __name__ == "__main__":
    serve(int(sys.argv[1]))


def test_node_keepalive_sends_the_next_requests_over_the_kept_connection(tmp_path):
    """
    With C{--node-keepalive}, five clients one after the other reach the
    node over one connection (the node sees one peer port), and the stats
    count the four reuses.
    """
    nodePort, port, statsPort = free_port(), free_port(), free_port()
    with Process([sys.executable, __file__, nodePort], tmp_path / "node.log") as server:
        wait_for_tcp(nodePort, process=server)
        with txrouter(tmp_path, "http", port, [
            "--to", f"http://127.0.0.1:{nodePort}", "--node-keepalive", "2",
            "--stats", f"127.0.0.1:{statsPort}",
        ]) as router:
            answers = []
            for index in range(5):
                result = curl(f"http://127.0.0.1:{port}/{index}")
                assert result.returncode == 0, result.stderr
                answers.append(json.loads(result.stdout))
            assert len({answer["peer_port"] for answer in answers}) == 1
            headers = {name.lower(): value for name, value in answers[0]["headers"]}
            assert headers["connection"] == "keep-alive"
            assert stats(statsPort)["node_keepalive"] == {"idle": 1, "reused": 4}
            assert "Traceback" not in router.log()
