"""
C{twistd txrouter-https --http2} end to end, with real uWSGI workers: curl
over TLS (ALPN C{h2}) and with prior knowledge on a plain listener, a
hundred streams on one connection, 20 MiB up and down with the router's
memory bounded, and a hand-built hostile frame sequence per attack, each
hitting its bound (C{GOAWAY ENHANCE_YOUR_CALM}, the connection closed, the
stats counting it) while other connections are served.
"""

import hashlib
import json
import os
import signal
import socket
import subprocess

import attr
import pytest
from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.errors import ErrorCodes
from h2.events import ConnectionTerminated, DataReceived, ResponseReceived, StreamEnded
from hpack import Encoder
from hyperframe.frame import (
    ContinuationFrame,
    Frame,
    HeadersFrame,
    PingFrame,
    RstStreamFrame,
    SettingsFrame,
)

from tests.realpeers import (
    ROOT,
    TWISTD_COMMAND,
    Process,
    RSSSampler,
    curl,
    free_port,
    uwsgi_worker,
    wait_for_tcp,
    wait_until,
)
from tests.tlspki import PrivateCA

pytestmark = pytest.mark.e2e

MIB = 1 << 20
SIZE = 20 * MIB


@attr.define
class Site:
    directory: object
    ca: PrivateCA
    router: Process
    tlsPort: int
    plainPort: int
    statsPort: int


def _withProject() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    directory = tmp_path_factory.mktemp("http2")
    ca = PrivateCA(directory)
    issued = ca.issue("default", ["h2.local"])
    sock = str(directory / "app.sock")
    tlsPort, plainPort, statsPort = free_port(), free_port(), free_port()
    command = [
        *TWISTD_COMMAND, "-n", "--pidfile=", "txrouter-https",
        "--https", f"127.0.0.1:{tlsPort},{issued.certificatePath},{issued.keyPath}",
        "--bind", f"tcp:{plainPort}:interface=127.0.0.1",
        "--stats", f"127.0.0.1:{statsPort}",
        "--http2", "--http2-max-resets", "20", "--http2-max-pings", "10",
        "--http2-max-settings", "10", "--http2-max-continuations", "8",
        "--http2-max-header-list-size", "65536",
        "--to", sock,
    ]
    with uwsgi_worker(directory, sock, processes=4), \
            Process(command, directory / "router.log", env=_withProject()) as router:
        for port in (tlsPort, plainPort, statsPort):
            wait_for_tcp(port, 20, process=router)
        yield Site(directory, ca, router, tlsPort, plainPort, statsPort)


def _stats(site) -> dict:
    with socket.create_connection(("127.0.0.1", site.statsPort), timeout=10) as s:
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
    return json.loads(b"".join(chunks))


class Client:
    """
    An HTTP/2 client on a real socket (h2c, prior knowledge).
    """

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=20)
        self.conn = H2Connection(H2Configuration(client_side=True, header_encoding=None))
        self.conn.initiate_connection()
        self.sock.sendall(self.conn.data_to_send())
        self.headers, self.bodies, self.ended = {}, {}, set()
        self.terminated = None
        self.closed = False

    def request(self, path: bytes, end: bool = True) -> int:
        streamID = self.conn.get_next_available_stream_id()
        self.conn.send_headers(streamID, [
            (b":method", b"GET"), (b":path", path), (b":scheme", b"http"),
            (b":authority", b"h2.local"),
        ], end_stream=end)
        return streamID

    def flush(self) -> None:
        self.sock.sendall(self.conn.data_to_send())

    def readUntil(self, done) -> None:
        while not done() and not self.closed:
            try:
                data = self.sock.recv(65536)
            except ConnectionResetError:
                data = b""
            if not data:
                self.closed = True
                break
            for event in self.conn.receive_data(data):
                if isinstance(event, ResponseReceived):
                    self.headers[event.stream_id] = dict(event.headers)
                elif isinstance(event, DataReceived):
                    self.bodies[event.stream_id] = self.bodies.get(event.stream_id, b"") + event.data
                    self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                elif isinstance(event, StreamEnded):
                    self.ended.add(event.stream_id)
                elif isinstance(event, ConnectionTerminated):
                    self.terminated = event.error_code
            out = self.conn.data_to_send()
            if out:
                self.sock.sendall(out)

    def close(self) -> None:
        self.sock.close()


def _hostile(site, raw: bytes) -> Client:
    """
    Send C{raw} after the preface on a fresh connection; read until the
    router closes it.
    """
    client = Client(site.plainPort)
    client.sock.sendall(raw)
    client.readUntil(lambda: False)
    return client


def _curlEnviron(*args) -> dict:
    result = curl(*args)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_curl_over_tls_negotiates_h2(site):
    """
    curl offers h2 by ALPN and gets it; the worker sees an HTTP/2 request
    over HTTPS.
    """
    result = curl("--http2", "--cacert", site.ca.path, "--resolve",
                  f"h2.local:{site.tlsPort}:127.0.0.1", "-w", "\n%{http_version}",
                  f"https://h2.local:{site.tlsPort}/tls?q=1")
    assert result.returncode == 0, result.stderr
    body, _, version = result.stdout.rpartition(b"\n")
    assert version == b"2"
    environ = json.loads(body)
    assert environ["SERVER_PROTOCOL"] == "HTTP/2"
    assert environ["HTTPS"] == "on"
    assert environ["REQUEST_URI"] == "/tls?q=1"


def test_curl_over_tls_http11_still(site):
    result = curl("--http1.1", "--cacert", site.ca.path, "--resolve",
                  f"h2.local:{site.tlsPort}:127.0.0.1", "-o", os.devnull,
                  "-w", "%{http_version}", f"https://h2.local:{site.tlsPort}/")
    assert result.stdout == b"1.1", result.stderr


def test_curl_prior_knowledge(site):
    environ = _curlEnviron("--http2-prior-knowledge", f"http://127.0.0.1:{site.plainPort}/pk")
    assert environ["SERVER_PROTOCOL"] == "HTTP/2"
    assert environ["PATH_INFO"] == "/pk"
    # An HTTP/1.1 client of the same listener, and one asking to upgrade
    # to h2c (not done: answered in HTTP/1.1).
    result = curl("--http2", "-o", os.devnull, "-w", "%{http_version}",
                  f"http://127.0.0.1:{site.plainPort}/")
    assert result.stdout == b"1.1"


def test_hundred_streams_on_one_connection(site):
    """
    A hundred streams opened at once on one connection are each answered
    with their own request's answer.
    """
    client = Client(site.plainPort)
    client.readUntil(lambda: client.conn.remote_settings.max_concurrent_streams == 100)
    streams = {client.request(b"/slow/0.05?n=%d" % i): i for i in range(100)}
    client.flush()
    # Four workers take 50 ms per request: the router has them all under
    # way at once, not one after the other.
    wait_until(lambda: _stats(site)["requests"]["in_flight"] >= 50, "50 requests in flight")
    client.readUntil(lambda: len(client.ended) == 100)
    assert len(client.ended) == 100
    for streamID, i in streams.items():
        assert client.headers[streamID][b":status"] == b"200"
        assert json.loads(client.bodies[streamID])["QUERY_STRING"] == f"n={i}"
    client.close()


def test_h2load(site):
    """
    h2load (nghttp2-client): 4 connections of 25 concurrent streams, every
    request answered 200.
    """
    result = subprocess.run(
        ["h2load", "-n", "2000", "-c", "4", "-m", "25", f"http://127.0.0.1:{site.plainPort}/"],
        capture_output=True, text=True, timeout=120,
    )
    assert "2000 succeeded, 0 failed, 0 errored" in result.stdout, result.stdout
    assert "status codes: 2000 2xx" in result.stdout, result.stdout


def test_download_and_upload_with_memory_bounded(site, tmp_path):
    """
    20 MiB down to a client reading at a fifth of its pace and 20 MiB up:
    both whole, and the router's memory grows by far less than they are.
    """
    url = f"http://127.0.0.1:{site.plainPort}"
    with RSSSampler(site.router.pid) as sampler:
        result = curl("--http2-prior-knowledge", "--limit-rate", "8M", "-o", os.devnull,
                      "-w", "%{http_code} %{size_download}", f"{url}/bytes/{SIZE}", timeout=60)
        assert result.stdout == b"200 %d" % SIZE, result.stderr
        upload = tmp_path / "upload"
        payload = os.urandom(MIB) * 20
        upload.write_bytes(payload)
        environ = _curlEnviron("--http2-prior-knowledge", "--data-binary", f"@{upload}",
                               f"{url}/upload")
    assert environ["body_len"] == SIZE
    assert environ["body_sha256"] == hashlib.sha256(payload).hexdigest()
    grown = sampler.peak_kib - sampler.start_kib
    assert grown < 8 * 1024, (sampler.start_kib, sampler.peak_kib)


@pytest.mark.parametrize("bound", [
    "rapid_reset", "continuation_flood", "header_list_too_large", "ping_flood",
    "settings_flood",
])
def test_attack_hits_its_bound(site, bound):
    """
    A hand-built hostile frame sequence per attack: the router answers
    C{GOAWAY ENHANCE_YOUR_CALM} and closes, counts the bound in its stats,
    logs it, and serves another connection meanwhile.
    """
    encoder = Encoder()
    request = [(b":method", b"GET"), (b":path", b"/"), (b":scheme", b"http"),
               (b":authority", b"h2.local")]
    if bound == "rapid_reset":
        raw = b""
        for i in range(25):
            headers = HeadersFrame(1 + 2 * i, flags=["END_HEADERS", "END_STREAM"])
            headers.data = encoder.encode(request)
            raw += headers.serialize() + RstStreamFrame(1 + 2 * i, error_code=8).serialize()
    elif bound == "continuation_flood":
        headers = HeadersFrame(1)
        headers.data = encoder.encode(request)
        raw = headers.serialize()
        for _ in range(50):
            continuation = ContinuationFrame(1)
            continuation.data = b""
            raw += continuation.serialize()
    elif bound == "header_list_too_large":
        headers = HeadersFrame(1, flags=["END_HEADERS", "END_STREAM"])
        headers.data = encoder.encode(request + [(b"x-bomb", b"a" * 3000)] * 1000)
        assert len(headers.data) < 5000
        raw = headers.serialize()
    elif bound == "ping_flood":
        raw = b"".join(PingFrame(0, opaque_data=b"%08d" % i).serialize() for i in range(100))
    else:
        raw = b"".join(SettingsFrame(0, settings={4: 65535}).serialize() for _ in range(100))
    before = _stats(site)["http2"]["bounds"].get(bound, 0)
    bystander = Client(site.plainPort)
    attacker = _hostile(site, raw)
    assert attacker.terminated == ErrorCodes.ENHANCE_YOUR_CALM
    assert attacker.closed
    attacker.close()
    assert _stats(site)["http2"]["bounds"][bound] == before + 1
    wait_until(lambda: f"http2_{bound}" in site.router.log(), f"the http2_{bound} line")
    streamID = bystander.request(b"/bystander")
    bystander.flush()
    bystander.readUntil(lambda: streamID in bystander.ended)
    assert bystander.headers[streamID][b":status"] == b"200"
    bystander.close()


def test_sigterm_drains_with_goaway(tmp_path):
    """
    SIGTERM: the client gets C{GOAWAY NO_ERROR}, its stream in flight is
    still answered, then the connection closes and the router exits.
    """
    sock, port = str(tmp_path / "app.sock"), free_port()
    command = [*TWISTD_COMMAND, "-n", "--pidfile=", "txrouter-http", "--bind",
               f"tcp:{port}:interface=127.0.0.1", "--http2", "--to", sock]
    with uwsgi_worker(tmp_path, sock), \
            Process(command, tmp_path / "router.log", env=_withProject()) as router:
        wait_for_tcp(port, 20, process=router)
        client = Client(port)
        go = tmp_path / "go"
        streamID = client.request(b"/hold?file=%s" % str(go).encode())
        client.flush()
        client.readUntil(lambda: client.conn.remote_settings.max_concurrent_streams == 100)
        wait_until(lambda: "holding" in (tmp_path / "worker.log").read_text(),
                   "the request at the worker")
        router.signal(signal.SIGTERM)
        client.readUntil(lambda: client.terminated is not None)
        assert client.terminated == ErrorCodes.NO_ERROR
        go.write_text("")
        # h2's client takes no frame after GOAWAY: the rest is read raw.
        rest = b""
        while chunk := client.sock.recv(65536):
            rest += chunk
        frames = []
        while rest:
            frame, length = Frame.parse_frame_header(memoryview(rest[:9]))
            frame.parse_body(memoryview(rest[9:9 + length]))
            frames.append(frame)
            rest = rest[9 + length:]
        assert [f.stream_id for f in frames if isinstance(f, HeadersFrame)] == [streamID]
        assert "END_STREAM" in frames[-1].flags
        assert router.wait(20) == -signal.SIGTERM
