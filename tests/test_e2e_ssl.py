"""
C{twistd txrouter-ssl} end to end: TLS clients (Python's C{ssl}, curl)
through the SSL router to TCP nodes run by the test (an echo node, nodes
that greet first), routed by listener and by SNI name, and a PROXY v2
header carrying the SNI name to a node.
"""

import pathlib
import socket
import ssl

import pytest

from tests.realpeers import TWISTD_COMMAND, Process, curl, free_port, wait_for_tcp, wait_until
from tests.test_e2e_raw import assert_echoed_byte_exact, node, read_line, withProject
from tests.tlspki import PrivateCA

pytestmark = pytest.mark.e2e

MIB = 1 << 20

#: Bytes each way in the big round trip.
BIG = 20 * MIB


def txrouter_ssl(tmp_path, port: int, certificate, args) -> Process:
    """
    C{twistd -n txrouter-ssl --sslrouter 127.0.0.1:PORT,CRT,KEY ARGS};
    returns once the port accepts.
    """
    process = Process(
        [*TWISTD_COMMAND, "-n", "--pidfile=", "txrouter-ssl",
         "--sslrouter", f"127.0.0.1:{port},{certificate.certificatePath},{certificate.keyPath}",
         *args],
        pathlib.Path(tmp_path) / f"txrouter-ssl-{port}.log", env=withProject(),
    )
    try:
        wait_for_tcp(port, 20, process=process)
    except BaseException:
        process.stop()
        raise
    return process


def client(ca: PrivateCA, port: int, name: str) -> ssl.SSLSocket:
    """
    A TLS client of 127.0.0.1:C{port} checking the certificate for
    C{name}, which it sends as its SNI name.
    """
    context = ssl.create_default_context(cafile=ca.path)
    sock = socket.create_connection(("127.0.0.1", port), timeout=60)
    return context.wrap_socket(sock, server_hostname=name)


def test_a_20_mib_round_trip_byte_exact(tmp_path):
    ca = PrivateCA(tmp_path)
    certificate = ca.issue("server", ["ssl.local"])
    port = free_port()
    with node(tmp_path, "echo") as echo, \
            txrouter_ssl(tmp_path, port, certificate, ["--to", echo.address]):
        with client(ca, port, "ssl.local") as sock:
            # An SSL socket is not safe to read and write from two
            # threads at once in every Python; here the sender only
            # writes and the reader only reads, which OpenSSL 1.1.1+
            # allows.  No half-close: TLS has none here.
            assert_echoed_byte_exact(sock, BIG, half_close=False)


def test_a_node_fin_ends_the_tls_connection_cleanly(tmp_path):
    """
    A node's FIN ends the client's TLS connection with C{close_notify}
    after the node's bytes, not with a TCP FIN beneath TLS (a truncation
    to the client); bytes the client sends meanwhile cost the router no
    traceback.
    """
    ca = PrivateCA(tmp_path)
    certificate = ca.issue("server", ["ssl.local"])
    port = free_port()
    with node(tmp_path, "fin") as fin, \
            txrouter_ssl(tmp_path, port, certificate, ["--to", fin.address]) as router:
        context = ssl.create_default_context(cafile=ca.path)
        sock = socket.create_connection(("127.0.0.1", port), timeout=60)
        with context.wrap_socket(sock, server_hostname="ssl.local",
                                 suppress_ragged_eofs=False) as tls:
            assert read_line(tls) == b"bye\n"
            try:
                tls.sendall(b"more\n")
            except OSError:
                pass
            assert tls.recv(100) == b""
        wait_for_tcp(port, 20, process=router)
    assert "Traceback" not in router.log()
    assert "Unhandled Error" not in router.log()


def test_sslrouter_sni_routes_two_names_to_two_nodes(tmp_path):
    """
    With C{--sslrouter-sni} the key is the SNI name; the nodes greet first,
    so the client hears its node before it sends a byte (the node is
    connected at the end of the handshake).
    """
    ca = PrivateCA(tmp_path)
    certificate = ca.issue("server", ["a.local", "b.local"])
    port = free_port()
    with node(tmp_path, "greet", "A") as a, node(tmp_path, "greet", "B") as b:
        mapping = tmp_path / "map"
        mapping.write_text(f"a.local {a.address}\nb.local {b.address}\n")
        with txrouter_ssl(tmp_path, port, certificate,
                          ["--sslrouter-sni", "--use-cache", "--cache-file", str(mapping)]):
            for name, expected in [("a.local", b"hello from A\n"), ("b.local", b"hello from B\n"),
                                   ("A.LOCAL", b"hello from A\n")]:
                with client(ca, port, name) as sock:
                    assert read_line(sock) == expected
                    sock.sendall(b"ping\n")
                    assert read_line(sock) == b"ping\n"


def test_without_sni_routing_the_key_is_the_listener_address(tmp_path):
    ca = PrivateCA(tmp_path)
    certificate = ca.issue("server", ["ssl.local"])
    port = free_port()
    with node(tmp_path, "greet", "L") as greeter:
        mapping = tmp_path / "map"
        mapping.write_text(f"127.0.0.1:{port} {greeter.address}\n")
        with txrouter_ssl(tmp_path, port, certificate,
                          ["--use-cache", "--cache-file", str(mapping)]):
            with client(ca, port, "ssl.local") as sock:
                assert read_line(sock) == b"hello from L\n"


PROXY_NODE = r"""
import socket, sys
server = socket.socket()
server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
server.bind(("127.0.0.1", int(sys.argv[1])))
server.listen(8)
while True:
    conn, _ = server.accept()
    with conn:
        data = b""
        while len(data) < 16 or len(data) < 16 + int.from_bytes(data[14:16], "big"):
            chunk = conn.recv(4096)
            if not chunk:
                break
            data += chunk
        conn.sendall(data[:16 + int.from_bytes(data[14:16], "big")].hex().encode() + b"\n")
"""


def test_send_proxy_v2_carries_the_sni_name(tmp_path):
    import sys

    ca = PrivateCA(tmp_path)
    certificate = ca.issue("server", ["named.local"])
    port, nodePort = free_port(), free_port()
    with Process([sys.executable, "-c", PROXY_NODE, nodePort], tmp_path / "proxy-node.log") as n:
        wait_for_tcp(nodePort, 15, process=n)
        with txrouter_ssl(tmp_path, port, certificate,
                          ["--to", f"127.0.0.1:{nodePort}", "--send-proxy-v2"]):
            with client(ca, port, "named.local") as sock:
                header = bytes.fromhex(read_line(sock).strip().decode())
    assert header.startswith(b"\r\n\r\n\x00\r\nQUIT\n\x21\x11")
    # PP2_TYPE_AUTHORITY (0x02) with the name.
    assert b"\x02\x00\x0bnamed.local" in header


def test_plain_http_is_closed_with_a_log_line_and_no_answer(tmp_path):
    """
    C{curl http://} to an SSL router's port: the SSL router speaks no HTTP
    to its clients, so it answers nothing, closes, and logs why; TLS
    clients are served right after.
    """
    ca = PrivateCA(tmp_path)
    certificate = ca.issue("server", ["ssl.local"])
    port = free_port()
    with node(tmp_path, "echo") as echo, \
            txrouter_ssl(tmp_path, port, certificate, ["--to", echo.address]) as router:
        result = curl("-s", "-i", f"http://127.0.0.1:{port}/")
        assert result.returncode != 0
        assert result.stdout == b""
        wait_until(lambda: "http_on_tls_port:" in router.log(),
                   "the plain HTTP request logged", 10, router)
        assert "http_on_tls_port: 400" not in router.log()
        with client(ca, port, "ssl.local") as sock:
            sock.sendall(b"ping\n")
            assert read_line(sock) == b"ping\n"
    assert "Traceback" not in router.log()
