"""
C{twistd txrouter-https} end to end: a test CA made by the test, real uWSGI
workers echoing their environ, and curl, C{openssl s_client} and pyOpenSSL
clients (for SNI names no command-line client sends).

One router serves the module's tests: a listener with SNI (C{--sni},
C{--sni-regexp}, C{--sni-dir}), a listener requiring a client certificate
(C{!CA}), a C{--https2} listener, and a C{--http-to-https} listener.
"""

import json
import os
import pathlib
import select
import shutil
import signal
import socket
import subprocess

import attr
import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID
from OpenSSL import SSL

from tests.realpeers import (
    ROOT,
    TWISTD_COMMAND,
    Process,
    curl,
    free_port,
    uwsgi_worker,
    wait_for_tcp,
    wait_until,
)
from tests.tlspki import PrivateCA, clientContext

pytestmark = pytest.mark.e2e


@attr.define
class Site:
    """
    The module's router and what the tests need to reach it.
    """

    directory: pathlib.Path
    ca: PrivateCA
    alice: object
    sniDir: pathlib.Path
    router: Process
    sniPort: int
    clientPort: int
    https2Port: int
    redirectPort: int


def _withProject() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    directory = tmp_path_factory.mktemp("https")
    ca = PrivateCA(directory)
    default = ca.issue("default", ["default.local"])
    exact = ca.issue("exact", ["exact.local"])
    wild = ca.issue("wild", ["api.example.com"])
    sniDir = directory / "sni"
    sniDir.mkdir()
    ca.issue("indir.local", ["indir.local"], directory=sniDir)
    ca.issue("public.local", ["public.local"], directory=sniDir)
    # Decoys outside the directory, where a name with / or .. would lead.
    ca.issue("decoy", ["decoy"])
    (directory / "a").mkdir()
    ca.issue("b", ["b"], directory=directory / "a")
    alice = ca.issue("alice", client=True, subject=x509.Name([
        x509.NameAttribute(NameOID.COUNTRY_NAME, "FR"),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "x"),
        x509.NameAttribute(NameOID.COMMON_NAME, "alice"),
    ]))
    sock = str(directory / "app.sock")
    ports = [free_port() for _ in range(4)]
    pair = f"{default.certificatePath},{default.keyPath}"
    command = [
        *TWISTD_COMMAND, "-n", "--pidfile=", "txrouter-https",
        "--https", f"127.0.0.1:{ports[0]},{pair}",
        "--https", f"127.0.0.1:{ports[1]},{pair},,!{ca.path}",
        "--https2", f"addr=127.0.0.1:{ports[2]},cert={default.certificatePath},"
                    f"key={default.keyPath},clientca={ca.path}",
        "--sni", f"exact.local {exact.certificatePath},{exact.keyPath}",
        "--sni-regexp", rf"\.example\.com$ {wild.certificatePath},{wild.keyPath}",
        "--sni-dir", str(sniDir),
        "--https-export-cert",
        "--http-to-https", f"127.0.0.1:{ports[3]},{ports[0]}",
        "--to", sock,
    ]
    with uwsgi_worker(directory, sock), \
            Process(command, directory / "router.log", env=_withProject()) as router:
        for port in ports:
            wait_for_tcp(port, 20, process=router)
        yield Site(directory, ca, alice, sniDir, router, *ports)


def _environ(result) -> dict:
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def _curl(site, name: str, port: int, *args):
    return curl("--cacert", site.ca.path, "--resolve", f"{name}:{port}:127.0.0.1",
                *args, f"https://{name}:{port}/path?q=1")


def _served(port: int, serverName: "bytes | None") -> x509.Certificate:
    """
    The certificate the router serves a pyOpenSSL client sending
    C{serverName} (any bytes) as its SNI name.
    """
    context = SSL.Context(SSL.TLS_CLIENT_METHOD)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        connection = SSL.Connection(context, sock)
        if serverName is not None:
            connection.set_tlsext_host_name(serverName)
        connection.set_connect_state()
        while True:
            try:
                connection.do_handshake()
                break
            except SSL.WantReadError:
                if not select.select([sock], [], [], 10)[0]:
                    raise TimeoutError("no answer to the handshake") from None
        certificate = connection.get_peer_certificate(as_cryptography=True)
        connection.shutdown()
    return certificate


def _commonName(certificate) -> str:
    return certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value


def _sClient(port: int, *args) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", *args],
        input=b"", capture_output=True, timeout=30,
    )


@pytest.mark.parametrize("name", ["exact.local", "api.example.com", "indir.local"])
def test_curl_gets_the_certificate_of_its_sni_name(site, name):
    """
    curl checks the certificate against the name it asked for: --sni,
    --sni-regexp and --sni-dir each serve theirs; the worker sees HTTPS.
    """
    environ = _environ(_curl(site, name, site.sniPort))
    assert environ["HTTPS"] == "on"
    assert environ["HTTP_HOST"] == f"{name}:{site.sniPort}"
    assert environ["REQUEST_URI"] == "/path?q=1"
    assert "HTTPS_DN" not in environ


def test_no_sni_name_gets_the_listener_certificate(site):
    result = _sClient(site.sniPort)
    assert b"CN=default.local" in result.stdout or b"CN = default.local" in result.stdout
    for name, expected in [("exact.local", "exact.local"), ("unknown.local", "default.local")]:
        result = _sClient(site.sniPort, "-servername", name)
        assert f"CN = {expected}".encode() in result.stdout, result.stdout


@pytest.mark.parametrize(
    "name, expected",
    [(b"../decoy", "default.local"), (b"a/b", "default.local"), (b"a" * 255, "default.local"),
     (b"a" * 256, "default.local"), (b"PUBLIC.LOCAL", "public.local"),
     (b"public.local.", "public.local"), (b"sni/../decoy", "default.local"),
     (b"decoy", "default.local")],
)
def test_hostile_names_never_reach_outside_the_directory(site, name, expected):
    assert _commonName(_served(site.sniPort, name)) == expected


@pytest.mark.parametrize(
    "args",
    [("-tls1",), ("-tls1_1",), ("-tls1_2", "-cipher", "DES-CBC3-SHA:@SECLEVEL=0"),
     ("-tls1_2", "-cipher", "RC4-SHA:NULL-SHA:@SECLEVEL=0")],
)
def test_old_protocols_and_weak_suites_are_refused(site, args):
    result = _sClient(site.sniPort, *args)
    assert b"BEGIN CERTIFICATE" not in result.stdout
    assert b"Cipher is (NONE)" in result.stdout or result.returncode != 0


def test_curl_tls10_and_tls11_are_refused(site):
    result = _curl(site, "exact.local", site.sniPort, "--tlsv1.0", "--tls-max", "1.1")
    assert result.returncode != 0
    result = _curl(site, "exact.local", site.sniPort, "--tlsv1.2", "--tls-max", "1.2")
    assert result.returncode == 0, result.stderr


def test_client_certificate_vars_reach_the_worker_exactly(site):
    from cryptography.hazmat.primitives.serialization import Encoding

    for port in (site.clientPort, site.https2Port):
        environ = _environ(_curl(site, "default.local", port, "--cert", site.alice.certificatePath,
                                 "--key", site.alice.keyPath))
        assert environ["HTTPS"] == "on"
        assert environ["HTTPS_DN"] == "/C=FR/O=x/CN=alice"
        # uWSGI hands bytes to Python as latin-1 text (PEP 3333).
        assert environ["HTTPS_CLIENT_CERTIFICATE"].encode("latin-1") \
            == site.alice.certificate.public_bytes(Encoding.DER)
        assert environ["HTTPS_CC"].encode() == site.alice.certificate.public_bytes(Encoding.PEM)


def test_a_required_client_certificate_refuses_a_client_without_one(site):
    result = _curl(site, "default.local", site.clientPort)
    assert result.returncode != 0
    assert b"REMOTE_ADDR" not in result.stdout
    # The optional listener (--https2 clientca= without !) lets it in.
    assert "HTTPS_DN" not in _environ(_curl(site, "default.local", site.https2Port))


def test_a_certificate_of_another_ca_is_refused(site, tmp_path):
    mallory = PrivateCA(tmp_path, "other").issue("mallory", client=True)
    result = _curl(site, "default.local", site.clientPort,
                   "--cert", mallory.certificatePath, "--key", mallory.keyPath)
    assert result.returncode != 0
    wait_until(lambda: "tls_handshake_failed" in site.router.log(),
               "the refused handshake logged", 10, site.router)


def test_http_to_https_answers_301_with_a_length(site):
    with socket.create_connection(("127.0.0.1", site.redirectPort), timeout=10) as sock:
        sock.sendall(b"GET /a/b?c=1 HTTP/1.1\r\nHost: r.local:8080\r\n\r\n")
        response = b""
        while True:
            data = sock.recv(65536)
            if not data:
                break
            response += data
    head, _, body = response.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    assert lines[0] == b"HTTP/1.1 301 Moved Permanently"
    headers = dict(line.split(b": ", 1) for line in lines[1:])
    assert headers[b"Location"] == b"https://r.local:%d/a/b?c=1" % site.sniPort
    assert int(headers[b"Content-Length"]) == len(body) > 0
    result = curl("-s", "-o", "/dev/null", "-w", "%{http_code} %{redirect_url}",
                  f"http://127.0.0.1:{site.redirectPort}/x", "-H", "Host: h.local")
    assert result.stdout == b"301 https://h.local:%d/x" % site.sniPort


def test_plain_http_to_the_tls_port_gets_a_400_saying_so(site):
    """
    C{curl http://} to an HTTPS port (nginx's "plain HTTP request was sent
    to HTTPS port"): a readable 400 in the clear and a log line, and the
    port serves HTTPS right after.
    """
    result = curl("-s", "-i", f"http://127.0.0.1:{site.sniPort}/path")
    assert result.returncode == 0, result.stderr
    head, _, body = result.stdout.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    assert lines[0] == b"HTTP/1.1 400 Bad Request"
    assert b"Content-Type: text/plain; charset=utf-8" in lines
    assert b"Connection: close" in lines
    assert b"plain HTTP request was sent to a TLS port: use https://" in body
    wait_until(lambda: "http_on_tls_port: 400" in site.router.log(),
               "the plain HTTP request logged", 10, site.router)
    assert "Traceback" not in site.router.log()
    assert _environ(_curl(site, "exact.local", site.sniPort))["HTTPS"] == "on"


def test_sighup_reads_a_changed_sni_dir_certificate(site):
    before = _served(site.sniPort, b"indir.local")
    staging = site.directory / "staging"
    staging.mkdir()
    site.ca.issue("indir.local", ["indir.local"], directory=staging)
    for suffix in (".crt", ".key"):
        shutil.move(staging / f"indir.local{suffix}", site.sniDir / f"indir.local{suffix}")
    # The context built before stays in use until the reload.
    assert _served(site.sniPort, b"indir.local").serial_number == before.serial_number
    site.router.signal(signal.SIGHUP)
    wait_until(lambda: _served(site.sniPort, b"indir.local").serial_number != before.serial_number,
               "the new certificate served after SIGHUP", 10, site.router)
    assert "tls_reloaded" in site.router.log()
    # curl still trusts it (the same CA).
    assert _environ(_curl(site, "indir.local", site.sniPort))["HTTPS"] == "on"


def test_start_up_mistakes_are_usage_errors_naming_the_file(tmp_path):
    ca = PrivateCA(tmp_path)
    good = ca.issue("good", ["good.local"])
    other = ca.issue("other", ["other.local"])
    (tmp_path / "notpem.crt").write_text("hello")
    cases = [
        (["--https", f"127.0.0.1:0,{tmp_path / 'none.crt'},{good.keyPath}"], "none.crt"),
        (["--https", f"127.0.0.1:0,{good.certificatePath},{other.keyPath}"], "does not match"),
        (["--https", f"127.0.0.1:0,{tmp_path / 'notpem.crt'},{good.keyPath}"], "notpem.crt"),
        (["--https", f"127.0.0.1:0,{good.certificatePath},{good.keyPath},,{tmp_path}/none.ca"],
         "none.ca"),
        (["--https2", "addr=127.0.0.1:0,cert=x,key=y,clientcert=z"], "--https2"),
        (["--https", f"127.0.0.1:0,{good.certificatePath},{good.keyPath},RC4-SHA"], "cipher"),
        (["--sni-dir", str(tmp_path / "nodir"), "--https",
          f"127.0.0.1:0,{good.certificatePath},{good.keyPath}"], "--sni-dir"),
        (["--sni", f"x.local {tmp_path / 'none.crt'},{good.keyPath}", "--https",
          f"127.0.0.1:0,{good.certificatePath},{good.keyPath}"], "--sni x.local"),
        ([], "--https"),
    ]
    for args, expected in cases:
        result = subprocess.run(
            [*TWISTD_COMMAND, "-n", "--pidfile=", "txrouter-https", "--to", "/x.sock", *args],
            capture_output=True, text=True, timeout=60, cwd=ROOT, env=_withProject(),
        )
        output = result.stdout + result.stderr
        assert result.returncode != 0, args
        assert expected in output, (args, output)
        assert "Traceback" not in output, output


def test_a_signed_subscription_with_sni_vars_creates_a_context(tmp_path):
    """
    A real C{uwsgi --subscribe2} signed with SHA1 and carrying C{sni_key}
    and C{sni_crt} inside the C{--subscription-sni-dir}: curl then gets
    that certificate for the subscription's name and the worker's answer;
    a subscriber naming files outside the directory gets no context (the
    listener's certificate, which curl refuses for that name).
    """
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    from tests.subpeers import free_udp_port, subscribing_worker

    ca = PrivateCA(tmp_path)
    default = ca.issue("default", ["default.local"])
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    good = ca.issue("signed.local", ["signed.local"], directory=allowed)
    outside = ca.issue("outside.local", ["outside.local"])
    port, udp = free_port(), free_udp_port()
    keys = tmp_path / "keys"
    keys.mkdir()
    for name in ("signed.local", "outside.local"):
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        (tmp_path / f"{name}.pem").write_bytes(key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption()))
        # The key file of KEY:PORT is KEY_PORT.pem, as uWSGI names it.
        (keys / f"{name}_{port}.pem").write_bytes(key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    command = [
        *TWISTD_COMMAND, "-n", "--pidfile=", "txrouter-https",
        "--https", f"127.0.0.1:{port},{default.certificatePath},{default.keyPath}",
        "--subscription-server", f"127.0.0.1:{udp}", "--subscription-sni",
        "--subscription-sni-dir", str(allowed), "--subscriptions-sign-check", f"SHA1:{keys}",
        "--subscription-node-dir", str(tmp_path),
    ]

    def subscribe(name, issued):
        sock = str(tmp_path / f"{name}.sock")
        return subscribing_worker(tmp_path, sock, [
            "--subscribe2",
            # uWSGI's keys carry the port of the Host; the SNI name is the
            # key without it.
            f"server=127.0.0.1:{udp},key={name}:{port},addr={sock},"
            f"sign=SHA1:{tmp_path / f'{name}.pem'},"
            f"sni_key={issued.keyPath},sni_crt={issued.certificatePath}"], name)

    def ask(name):
        return curl("--cacert", ca.path, "--resolve", f"{name}:{port}:127.0.0.1",
                    f"https://{name}:{port}/")

    with Process(command, tmp_path / "router.log", env=_withProject()) as router:
        wait_for_tcp(port, 20, process=router)
        with subscribe("signed.local", good), subscribe("outside.local", outside):
            wait_until(lambda: ask("signed.local").returncode == 0,
                       "the subscription's certificate served", 20, router)
            assert _environ(ask("signed.local"))["WORKER"] == "signed.local"
            wait_for = f"subscription_node_added: outside.local:{port}"
            wait_until(lambda: wait_for in router.log(), "outside.local subscribed", 20, router)
            result = ask("outside.local")
            assert result.returncode != 0
            assert _commonName(_served(port, b"outside.local")) == "default.local"
            assert "sni_context_failed" in router.log()
