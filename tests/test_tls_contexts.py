"""
TLS contexts, SNI selection, client certificates and the handshake
deadline, on real handshakes: in memory between pyOpenSSL connections, over
Twisted's TLS protocol through iosim, and against the real C{openssl
s_client} on a listening port.
"""

import datetime
import os
import shutil
import subprocess
import tempfile
import warnings

import pytest
import pytest_twisted
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID
from OpenSSL import SSL
from OpenSSL.crypto import X509
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.interfaces import IHandshakeListener, IOpenSSLClientConnectionCreator
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import globalLogPublisher
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.test import iosim
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from tests.logs import named
from tests.tlspki import HandshakeFailed, PrivateCA, clientContext, handshake, served
from txrouter.tls.clientcert import clientCertificateVars, httpsVars, onelineName
from txrouter.tls.contexts import (
    HTTP_PROTOCOLS,
    ContextPolicy,
    buildContext,
    cipherList,
    sessionIDContext,
)
from txrouter.tls.credentials import loadCredentials
from txrouter.tls.handshake import PLAIN_HTTP_ANSWER, TLSServerFactory
from txrouter.tls.listener import ListenerContexts, defaultSessionContext
from txrouter.tls.sni import SNISelector, serverNameOf
from txrouter.tls.specs import TLSFiles, parseSNI, parseSNIRegexp

HTTPS = ContextPolicy(protocols=HTTP_PROTOCOLS)
WEAK = ("RC4", "DES", "NULL", "MD5", "EXP", "ADH", "AECDH", "anon")


class _PKI:
    """
    A CA, a default server certificate (C{default.local}), certificates
    for SNI names, client certificates, and a CA nobody trusts.
    """

    def __init__(self, directory) -> None:
        self.directory = directory
        self.ca = PrivateCA(directory)
        self.default = self.ca.issue("default", ["default.local"])
        self.exact = self.ca.issue("exact", ["exact.local"])
        self.wild = self.ca.issue("wild", ["wild.example.com"])
        self.sniDir = os.path.join(directory, "sni")
        os.mkdir(self.sniDir)
        self.inDir = self.ca.issue("indir.local", ["indir.local"], directory=self.sniDir)
        self.alice = self.ca.issue("alice", client=True, subject=x509.Name([
            x509.NameAttribute(NameOID.COUNTRY_NAME, "FR"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "x"),
            x509.NameAttribute(NameOID.COMMON_NAME, "alice"),
        ]))
        self.stranger = PrivateCA(directory, "stranger").issue("mallory", client=True)

    def files(self, issued=None, **kwargs) -> TLSFiles:
        issued = issued or self.default
        return TLSFiles(issued.certificatePath, issued.keyPath, **kwargs)

    def client(self, **kwargs):
        return clientContext(self.ca, **kwargs)


def _directory(testCase) -> str:
    """
    A new directory, removed after the test.
    """
    path = tempfile.mkdtemp(prefix="txrouter-tls-")
    testCase.addCleanup(shutil.rmtree, path, ignore_errors=True)
    return path


def _failure(testCase, serverContext, client, serverName=None) -> HandshakeFailed:
    return testCase.assertRaises(HandshakeFailed, handshake, serverContext, client, serverName)


class ContextDefaultsTests(SynchronousTestCase):
    """
    What every context accepts and refuses.
    """

    def setUp(self) -> None:
        self.pki = _PKI(_directory(self))
        self.context = buildContext(
            loadCredentials(self.pki.default.certificatePath, self.pki.default.keyPath),
            policy=HTTPS)

    def test_tls12_and_tls13_are_accepted(self):
        for version in (SSL.TLS1_2_VERSION, SSL.TLS1_3_VERSION):
            server, _ = handshake(self.context, self.pki.client(minimum=version, maximum=version))
            self.assertEqual(server.get_protocol_version(), {
                SSL.TLS1_2_VERSION: 0x303, SSL.TLS1_3_VERSION: 0x304}[version])

    def test_tls10_and_tls11_are_refused(self):
        """
        Even with a cipher list lowering OpenSSL's security level (which
        alone refuses them at its default level).
        """
        lowered = buildContext(
            loadCredentials(self.pki.default.certificatePath, self.pki.default.keyPath),
            ciphers="DEFAULT:@SECLEVEL=0")
        for context in (self.context, lowered):
            for version in (SSL.TLS1_VERSION, SSL.TLS1_1_VERSION):
                failure = _failure(self, context, self.pki.client(
                    maximum=version, ciphers=b"DEFAULT:@SECLEVEL=0"))
                self.assertEqual(failure.side, "server")
                self.assertIn("unsupported protocol", str(failure.error))

    def test_no_weak_suite_is_ever_offered(self):
        """
        The default list and a user list asking for everything weak both
        leave the weak suites out.
        """
        for ciphers in (None, "ALL:eNULL:RC4:3DES:DES:EXPORT:MD5:aNULL:@SECLEVEL=0"):
            context = buildContext(
                loadCredentials(self.pki.default.certificatePath, self.pki.default.keyPath),
                ciphers=ciphers)
            offered = SSL.Connection(context).get_cipher_list()
            self.assertTrue(offered)
            self.assertEqual([c for c in offered if any(w in c for w in WEAK)], [], ciphers)

    def test_a_list_of_weak_suites_only_is_refused_at_start(self):
        credentials = loadCredentials(self.pki.default.certificatePath, self.pki.default.keyPath)
        with self.assertRaises(ValueError) as e:
            buildContext(credentials, ciphers="RC4-SHA:DES-CBC3-SHA:NULL-SHA")
        self.assertIn("leaves no usable TLS 1.2 cipher", str(e.exception))
        self.assertTrue(cipherList("HIGH").endswith(b"!RC4:!DES:!3DES:!MD5"))

    def test_the_server_chooses_the_cipher(self):
        client = self.pki.client(maximum=SSL.TLS1_2_VERSION, ciphers=(
            b"ECDHE-ECDSA-AES128-SHA:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-ECDSA-AES256-GCM-SHA384"))
        server, _ = handshake(self.context, client)
        self.assertEqual(server.get_cipher_name(), "ECDHE-ECDSA-AES256-GCM-SHA384")

    def test_alpn_answers_http11(self):
        server, client = handshake(self.context, self.pki.client(protocols=[b"h2", b"http/1.1"]))
        self.assertEqual(client.get_alpn_proto_negotiated(), b"http/1.1")
        _, client = handshake(self.context, self.pki.client(protocols=[b"http/1.0"]))
        self.assertEqual(client.get_alpn_proto_negotiated(), b"http/1.0")

    def test_alpn_without_a_common_protocol_goes_on_without_alpn(self):
        _, client = handshake(self.context, self.pki.client(protocols=[b"h2"]))
        self.assertEqual(client.get_alpn_proto_negotiated(), b"")

    def test_no_alpn_for_the_ssl_router(self):
        context = buildContext(
            loadCredentials(self.pki.default.certificatePath, self.pki.default.keyPath))
        _, client = handshake(context, self.pki.client(protocols=[b"http/1.1"]))
        self.assertEqual(client.get_alpn_proto_negotiated(), b"")

    def test_renegotiation_is_refused(self):
        """
        (OpenSSL 3 refuses a client's renegotiation by default too; the
        context's C{OP_NO_RENEGOTIATION} makes it so whatever the build.)
        """
        server, client = handshake(self.context, self.pki.client(maximum=SSL.TLS1_2_VERSION))
        self.assertTrue(client.renegotiate())
        self.assertRaises(SSL.WantReadError, client.do_handshake)
        server.bio_write(client.bio_read(65536))
        self.assertRaises(SSL.WantReadError, server.recv, 1024)
        client.bio_write(server.bio_read(65536))
        with self.assertRaises(SSL.Error) as e:
            client.recv(1024)
        self.assertIn("no renegotiation", str(e.exception))
        self.assertEqual(server.total_renegotiations(), 0)

    def test_long_session_contexts_are_hashed_to_fit(self):
        self.assertEqual(sessionIDContext("http-:8443"), b"http-:8443")
        self.assertEqual(len(sessionIDContext("http-" + "a" * 100)), 32)
        self.assertEqual(defaultSessionContext("sslrouter", "127.0.0.1:8443"),
                         "sslrouter-127.0.0.1:8443")


class ClientCertificateTests(SynchronousTestCase):
    """
    A client CA: required (uWSGI's C{!}) or only asked for.
    """

    def setUp(self) -> None:
        directory = _directory(self)
        self.pki = _PKI(directory)

    def _context(self, required: bool):
        return buildContext(loadCredentials(
            self.pki.default.certificatePath, self.pki.default.keyPath, self.pki.ca.path, required))

    def test_required_refuses_a_client_without_one(self):
        failure = _failure(self, self._context(True), self.pki.client())
        self.assertIn("peer did not return a certificate", str(failure.error))

    def test_optional_lets_a_client_without_one_in(self):
        server, _ = handshake(self._context(False), self.pki.client())
        self.assertIsNone(server.get_peer_certificate())

    def test_a_certificate_of_the_ca_is_accepted_either_way(self):
        for required in (True, False):
            server, _ = handshake(self._context(required), self.pki.client(client=self.pki.alice))
            self.assertEqual(server.get_peer_certificate(as_cryptography=True),
                             self.pki.alice.certificate)

    def test_a_certificate_of_another_ca_is_refused_either_way(self):
        for required in (True, False):
            failure = _failure(self, self._context(required),
                               self.pki.client(client=self.pki.stranger))
            self.assertEqual(failure.side, "server")
            self.assertIn("certificate verify failed", str(failure.error))

    def test_the_ca_is_named_in_the_request(self):
        _, client = handshake(self._context(False), self.pki.client())
        self.assertEqual([n.CN for n in client.get_client_ca_list()], ["txrouter test CA"])


class CredentialsTests(SynchronousTestCase):
    """
    File problems are ValueErrors naming the file and the problem.
    """

    def setUp(self) -> None:
        self.directory = _directory(self)
        self.pki = _PKI(self.directory)

    def _error(self, certificate, key, ca=None) -> str:
        with self.assertRaises(ValueError) as e:
            loadCredentials(certificate, key, ca)
        return str(e.exception)

    def _write(self, name: str, data: bytes) -> str:
        path = os.path.join(self.directory, name)
        with open(path, "wb") as f:
            f.write(data)
        return path

    def test_missing_files(self):
        missing = os.path.join(self.directory, "missing.crt")
        self.assertEqual(self._error(missing, self.pki.default.keyPath),
                         f"{missing}: no such certificate file")
        self.assertIn("no such key file", self._error(self.pki.default.certificatePath, missing))
        self.assertIn("no such client CA file", self._error(
            self.pki.default.certificatePath, self.pki.default.keyPath, missing))

    def test_not_pem(self):
        garbage = self._write("garbage.crt", b"\x30\x82 not pem")
        self.assertEqual(self._error(garbage, self.pki.default.keyPath),
                         f"{garbage}: not a PEM certificate file (no BEGIN CERTIFICATE line)")
        self.assertIn(f"{garbage}: not a PEM private key file",
                      self._error(self.pki.default.certificatePath, garbage))
        broken = self._write("broken.crt", b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
        self.assertIn(f"{broken}: a broken PEM certificate", self._error(broken, self.pki.default.keyPath))

    def test_a_directory(self):
        self.assertIn("a directory, not a certificate file",
                      self._error(self.directory, self.pki.default.keyPath))

    def test_key_of_another_certificate(self):
        self.assertEqual(
            self._error(self.pki.default.certificatePath, self.pki.exact.keyPath),
            f"{self.pki.exact.keyPath}: this key does not match the certificate in"
            f" {self.pki.default.certificatePath}")

    def test_encrypted_key(self):
        from cryptography.hazmat.primitives import serialization

        encrypted = self._write("encrypted.key", self.pki.default.key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret")))
        self.assertEqual(self._error(self.pki.default.certificatePath, encrypted),
                         f"{encrypted}: the key is encrypted (give it without a passphrase)")

    def test_unreadable(self):
        os.chmod(self.pki.default.keyPath, 0)
        if os.geteuid() != 0:
            error = self._error(self.pki.default.certificatePath, self.pki.default.keyPath)
        else:
            # Root reads everything: read as nobody for the time of the
            # check, everything but the key readable to it.
            for path in (self.pki.default.certificatePath, self.pki.default.keyPath):
                os.chmod(os.path.dirname(path), 0o755)
            os.chmod(self.pki.default.certificatePath, 0o644)
            os.seteuid(65534)
            try:
                error = self._error(self.pki.default.certificatePath, self.pki.default.keyPath)
            finally:
                os.seteuid(0)
        self.assertEqual(
            error, f"{self.pki.default.keyPath}: the key file cannot be read (permission denied)")

    def test_an_expired_certificate_is_a_warning_at_start(self):
        now = datetime.datetime.now(datetime.timezone.utc)
        old = self.pki.ca.issue("old", ["old.local"], notBefore=now - datetime.timedelta(days=9),
                                notAfter=now - datetime.timedelta(days=1))
        events = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        ListenerContexts(TLSFiles(old.certificatePath, old.keyPath), "http-:8443", Clock())
        # Clock() is at 1970: the certificate is not valid yet then.
        [warning] = named(events, "tls_certificate_not_valid")
        self.assertIn(f"{old.certificatePath}: the certificate is not valid before", warning["warning"])
        clock = Clock()
        clock.advance(now.timestamp())
        del events[:]
        ListenerContexts(TLSFiles(old.certificatePath, old.keyPath), "http-:8443", clock)
        [warning] = named(events, "tls_certificate_not_valid")
        self.assertIn(f"{old.certificatePath}: the certificate expired on", warning["warning"])


def _nowClock() -> Clock:
    clock = Clock()
    clock.advance(datetime.datetime.now(datetime.timezone.utc).timestamp())
    return clock


class SNITests(SynchronousTestCase):
    """
    The certificate served for a name: C{--sni}, then C{--sni-regexp}, then
    C{--sni-dir}, else the listener's.
    """

    def setUp(self) -> None:
        directory = _directory(self)
        self.pki = pki = _PKI(directory)
        self.clock = _nowClock()
        self.selector = SNISelector(
            names=[parseSNI(f"EXACT.local {pki.exact.certificatePath},{pki.exact.keyPath}")],
            patterns=[parseSNIRegexp(
                rf"\.example\.com$ {pki.wild.certificatePath},{pki.wild.keyPath}")],
            directory=pki.sniDir, policy=HTTPS, clock=self.clock)
        self.listener = ListenerContexts(
            pki.files(), "http-:8443", self.clock, self.selector, HTTPS)

    def _served(self, name) -> str:
        server, _ = handshake(self.listener.currentContext(), self.pki.client(), name)
        return served(server)

    def test_exact_regexp_directory_and_default(self):
        self.assertEqual(self._served(b"exact.local"), "exact.local")
        self.assertEqual(self._served(b"Exact.LOCAL."), "exact.local")
        self.assertEqual(self._served(b"wild.example.com"), "wild.example.com")
        self.assertEqual(self._served(b"other.example.com"), "wild.example.com")
        self.assertEqual(self._served(b"indir.local"), "indir.local")
        self.assertEqual(self._served(b"unknown.local"), "default.local")
        self.assertEqual(self._served(None), "default.local")

    def test_names_that_fail_the_check_get_the_default(self):
        shutil.copy(self.pki.exact.certificatePath, os.path.join(self.pki.directory, "decoy.crt"))
        shutil.copy(self.pki.exact.keyPath, os.path.join(self.pki.directory, "decoy.key"))
        for name in (b"../decoy", b"a/b", b"sni/../indir.local"):
            self.assertEqual(self._served(name), "default.local", name)

    def test_a_directory_context_is_built_once(self):
        first = self.selector.contextFor(b"indir.local")
        self.assertIs(self.selector.contextFor(b"indir.local"), first)

    def test_a_name_added_to_the_directory_is_found_after_the_rescan_interval(self):
        self.assertEqual(self._served(b"late.local"), "default.local")
        self.pki.ca.issue("late.local", ["late.local"], directory=self.pki.sniDir)
        self.assertEqual(self._served(b"late.local"), "default.local")
        self.clock.advance(10)
        self.assertEqual(self._served(b"late.local"), "late.local")

    def test_a_broken_directory_entry_is_logged_and_served_the_default(self):
        events = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        shutil.copy(self.pki.exact.certificatePath, os.path.join(self.pki.sniDir, "bad.local.crt"))
        shutil.copy(self.pki.wild.keyPath, os.path.join(self.pki.sniDir, "bad.local.key"))
        self.assertEqual(self._served(b"bad.local"), "default.local")
        self.assertEqual(self._served(b"bad.local"), "default.local")
        [failed] = named(events, "sni_context_failed")
        self.assertIn("does not match the certificate", failed["reason"])

    def test_the_sni_context_brings_its_client_certificate_mode(self):
        pki = self.pki
        selector = SNISelector(names=[parseSNI(
            f"exact.local {pki.exact.certificatePath},{pki.exact.keyPath},,!{pki.ca.path}")],
            clock=self.clock)
        listener = ListenerContexts(pki.files(), "http-:8443", self.clock, selector)
        handshake(listener.currentContext(), pki.client(), b"default.local")
        failure = _failure(self, listener.currentContext(), pki.client(), b"exact.local")
        self.assertIn("peer did not return a certificate", str(failure.error))
        server, _ = handshake(listener.currentContext(), pki.client(client=pki.alice), b"exact.local")
        self.assertEqual(served(server), "exact.local")

    def test_reload_reads_the_files_again(self):
        pki = self.pki
        self.assertEqual(self._served(b"exact.local"), "exact.local")
        shutil.copy(pki.wild.certificatePath, pki.exact.certificatePath)
        shutil.copy(pki.wild.keyPath, pki.exact.keyPath)
        self.assertEqual(self._served(b"exact.local"), "exact.local")
        self.selector.reload()
        self.assertEqual(self._served(b"exact.local"), "wild.example.com")

    def test_a_failed_reload_keeps_the_contexts_in_use(self):
        os.unlink(self.pki.exact.keyPath)
        with self.assertRaises(ValueError) as e:
            self.selector.reload()
        self.assertIn("--sni exact.local: ", str(e.exception))
        self.assertEqual(self._served(b"exact.local"), "exact.local")
        os.unlink(self.pki.default.keyPath)
        self.assertRaises(ValueError, self.listener.reload)
        self.assertEqual(self._served(None), "default.local")

    def test_start_errors_name_the_option(self):
        with self.assertRaises(ValueError) as e:
            SNISelector(names=[parseSNI("x.local /nope.crt,/nope.key")], clock=self.clock)
        self.assertEqual(str(e.exception), "--sni x.local: /nope.crt: no such certificate file")
        with self.assertRaises(ValueError) as e:
            SNISelector(directory="/nonexistent/dir", clock=self.clock)
        self.assertEqual(str(e.exception), "--sni-dir: /nonexistent/dir: not a directory")


class TicketTests(SynchronousTestCase):
    """
    Session tickets resume a session until the listener's context (and its
    ticket key) is made again.
    """

    def test_a_ticket_resumes_until_the_key_changes(self):
        directory = _directory(self)
        pki = _PKI(directory)
        clock = _nowClock()
        listener = ListenerContexts(pki.files(), "http-:8443", clock,
                                    policy=ContextPolicy(sessionLifetime=600))
        client = pki.client(maximum=SSL.TLS1_2_VERSION)
        _, first = handshake(listener.currentContext(), client)

        latest = [first]

        def resumed() -> bool:
            # A client resumes with the session it got last, as a browser
            # does (an abbreviated TLS 1.2 handshake keeps the master key).
            _, again = handshake(listener.currentContext(), client, session=latest[0].get_session())
            latest[0] = again
            return again.master_key() == first.master_key()

        self.assertTrue(resumed())
        clock.advance(599)
        self.assertTrue(resumed())
        clock.advance(1)
        self.assertFalse(resumed())


# Twisted's TLS protocol, through iosim.

@implementer(IOpenSSLClientConnectionCreator)
class _Client:
    def __init__(self, context, serverName=None) -> None:
        self.context, self.serverName = context, serverName

    def clientConnectionForTLS(self, protocol):
        connection = SSL.Connection(self.context)
        if self.serverName is not None:
            connection.set_tlsext_host_name(self.serverName)
        return connection


@implementer(IHandshakeListener)
class _Recorder(Protocol):
    instances = None

    def connectionMade(self) -> None:
        self.handshook = False
        self.lost = None
        if self.instances is not None:
            self.instances.append(self)

    def handshakeCompleted(self) -> None:
        self.handshook = True
        self.vars = httpsVars(self.transport)

    def connectionLost(self, reason) -> None:
        self.lost = reason


class _Loopback:
    """
    A TLSServerFactory and a client, connected through iosim on a clock.
    """

    def __init__(self, listener, client, serverName=None, timeout=10.0) -> None:
        self.clock = Clock()
        self.serverProtocols = []
        recorder = type("Recorder", (_Recorder,), {"instances": self.serverProtocols})
        self.factory = TLSServerFactory(
            listener, False, Factory.forProtocol(recorder), clock=self.clock,
            handshakeTimeout=timeout)
        self.clientFactory = TLSMemoryBIOFactory(
            _Client(client, serverName), True, Factory.forProtocol(_Recorder), self.clock)

    def connect(self):
        peer = IPv4Address("TCP", "10.1.2.3", 40000)
        server = self.factory.buildProtocol(peer)
        client = self.clientFactory.buildProtocol(None)
        pump = iosim.connect(server, iosim.FakeTransport(server, True, peerAddress=peer),
                             client, iosim.makeFakeClient(client), clock=self.clock)
        return server, client, pump


class TwistedTLSTests(SynchronousTestCase):
    """
    The pieces behind Twisted's TLS protocol: the routing key, the vars, the
    log lines, the deadline.
    """

    def setUp(self) -> None:
        directory = _directory(self)
        self.pki = pki = _PKI(directory)
        self.events = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)
        clock = _nowClock()
        self.selector = SNISelector(
            names=[parseSNI(f"exact.local {pki.exact.certificatePath},{pki.exact.keyPath}")],
            clock=clock)
        self.listener = ListenerContexts(
            pki.files(clientCA=pki.ca.path), "http-:8443", clock, self.selector, HTTPS)

    def test_the_sni_name_is_read_back_canonical(self):
        for sent, expected in [(b"EXACT.local.", b"exact.local"), (b"Other.Local", b"other.local"),
                               (b"../decoy", None), (None, None)]:
            loop = _Loopback(self.listener, self.pki.client(), sent)
            server, _, _ = loop.connect()
            [wrapped] = loop.serverProtocols
            self.assertTrue(wrapped.handshook)
            self.assertEqual(serverNameOf(wrapped.transport), expected)
        self.assertIsNone(serverNameOf(StringTransport()))

    def test_vars_of_a_client_certificate(self):
        loop = _Loopback(self.listener, self.pki.client(client=self.pki.alice), b"default.local")
        loop.connect()
        [wrapped] = loop.serverProtocols
        certificate = self.pki.alice.certificate
        self.assertEqual(httpsVars(wrapped.transport), [
            (b"HTTPS", b"on"),
            (b"HTTPS_CLIENT_CERTIFICATE", certificate.public_bytes(Encoding.DER)),
            (b"HTTPS_DN", b"/C=FR/O=x/CN=alice"),
        ])
        self.assertEqual(clientCertificateVars(wrapped.transport, exportCertificate=True)[2],
                         (b"HTTPS_CC", certificate.public_bytes(Encoding.PEM)))

    def test_no_client_certificate_no_vars(self):
        loop = _Loopback(self.listener, self.pki.client(), b"default.local")
        loop.connect()
        [wrapped] = loop.serverProtocols
        self.assertEqual(httpsVars(wrapped.transport, True), [(b"HTTPS", b"on")])
        self.assertEqual(clientCertificateVars(StringTransport()), [])

    def test_a_failed_handshake_is_logged_with_the_client_and_the_reason(self):
        loop = _Loopback(self.listener, self.pki.client(
            maximum=SSL.TLS1_1_VERSION, ciphers=b"DEFAULT:@SECLEVEL=0"))
        server, _, pump = loop.connect()
        pump.flush()
        [line] = named(self.events, "tls_handshake_failed")
        self.assertEqual(line["client"], "10.1.2.3:40000")
        self.assertIn("unsupported protocol", line["reason"])
        [wrapped] = loop.serverProtocols
        self.assertFalse(wrapped.handshook)
        self.assertIsNotNone(wrapped.lost)

    def test_a_client_cert_refusal_is_logged(self):
        loop = _Loopback(self.listener, self.pki.client(client=self.pki.stranger))
        _, _, pump = loop.connect()
        pump.flush()
        [line] = named(self.events, "tls_handshake_failed")
        self.assertIn("certificate verify failed", line["reason"])

    def test_a_stalled_handshake_is_cut_at_the_deadline_and_logged(self):
        loop = _Loopback(self.listener, self.pki.client())
        server = loop.factory.buildProtocol(IPv4Address("TCP", "10.9.9.9", 5555))
        transport = StringTransport(peerAddress=IPv4Address("TCP", "10.9.9.9", 5555))
        server.makeConnection(transport)
        server.dataReceived(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")  # half a ClientHello
        loop.clock.advance(9.9)
        self.assertFalse(transport.disconnecting)
        loop.clock.advance(0.1)
        self.assertTrue(transport.disconnecting)
        [line] = named(self.events, "tls_handshake_timeout")
        self.assertEqual(line["client"], "10.9.9.9:5555")
        self.assertEqual(line["timeout"], 10.0)
        server.connectionLost(None)
        self.assertEqual(named(self.events, "tls_handshake_failed"), [])

    def test_a_finished_handshake_has_no_deadline(self):
        loop = _Loopback(self.listener, self.pki.client())
        _, _, pump = loop.connect()
        [wrapped] = loop.serverProtocols
        self.assertTrue(wrapped.handshook)
        loop.clock.advance(3600)
        pump.flush()
        self.assertIsNone(wrapped.lost)
        self.assertEqual(named(self.events, "tls_handshake_timeout"), [])

    def test_a_client_that_closes_before_a_byte_is_not_logged(self):
        loop = _Loopback(self.listener, self.pki.client())
        server = loop.factory.buildProtocol(IPv4Address("TCP", "10.9.9.9", 5555))
        server.makeConnection(StringTransport())
        server.connectionLost(None)
        loop.clock.advance(60)
        self.assertEqual([e for e in self.events if e.get("event", "").startswith("tls_")], [])

    def test_a_client_that_closes_mid_handshake_is_logged(self):
        loop = _Loopback(self.listener, self.pki.client())
        server = loop.factory.buildProtocol(IPv4Address("TCP", "10.9.9.9", 5555))
        server.makeConnection(StringTransport(peerAddress=IPv4Address("TCP", "10.9.9.9", 5555)))
        server.dataReceived(b"\x16\x03\x01\x02\x00")
        server.connectionLost(None)
        [line] = named(self.events, "tls_handshake_failed")
        self.assertEqual(line["reason"], "connection closed by the client during the handshake")

    def _plainClient(self, answersPlainHTTP=None):
        """
        A server protocol of a factory whose router answers plain HTTP or
        not (L{None}: it says nothing, as the SSL router), on a
        StringTransport.
        """
        loop = _Loopback(self.listener, self.pki.client())
        if answersPlainHTTP is not None:
            loop.factory.wrappedFactory.answersPlainHTTP = answersPlainHTTP
        peer = IPv4Address("TCP", "10.9.9.9", 5555)
        server = loop.factory.buildProtocol(peer)
        transport = StringTransport(peerAddress=peer)
        server.makeConnection(transport)
        return loop, server, transport

    def test_plain_http_gets_a_400_in_the_clear_and_one_line(self):
        loop, server, transport = self._plainClient(answersPlainHTTP=True)
        server.dataReceived(b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n")
        self.assertEqual(transport.value(), PLAIN_HTTP_ANSWER)
        self.assertTrue(PLAIN_HTTP_ANSWER.startswith(b"HTTP/1.1 400 Bad Request\r\n"))
        self.assertIn(b"use https://", PLAIN_HTTP_ANSWER)
        self.assertTrue(transport.disconnecting)
        server.dataReceived(b"more body bytes")
        server.connectionLost(None)
        loop.clock.advance(60)
        [line] = named(self.events, "http_on_tls_port")
        self.assertEqual((line["client"], line["status"], line["log_level"].name),
                         ("10.9.9.9:5555", 400, "info"))
        self.assertEqual([e["event"] for e in self.events if e.get("event")], ["http_on_tls_port"])
        [wrapped] = loop.serverProtocols
        self.assertIsNotNone(wrapped.lost)

    def test_a_request_line_sent_a_byte_at_a_time_is_seen(self):
        _, server, transport = self._plainClient(answersPlainHTTP=True)
        for byte in b"POST":
            server.dataReceived(bytes([byte]))
            self.assertEqual(transport.value(), b"")
        server.dataReceived(b" /upload HTTP/1.1\r\n")
        self.assertEqual(transport.value(), PLAIN_HTTP_ANSWER)

    def test_a_router_that_speaks_no_http_only_closes(self):
        for answers in (None, False):
            self.events.clear()
            _, server, transport = self._plainClient(answers)
            server.dataReceived(b"GET / HTTP/1.1\r\n\r\n")
            self.assertEqual(transport.value(), b"")
            self.assertTrue(transport.disconnecting)
            [line] = named(self.events, "http_on_tls_port")
            self.assertIsNone(line["status"])

    def test_bytes_that_are_no_request_line_go_to_tls(self):
        for first in (b"SSH-2.0-OpenSSH_9.6 Ubuntu\r\n", b"get / HTTP/1.1\r\n", b"\x00" * 40):
            self.events.clear()
            _, server, transport = self._plainClient(answersPlainHTTP=True)
            server.dataReceived(first)
            server.connectionLost(None)
            self.assertNotIn(b"HTTP/1.1 400", transport.value())
            self.assertEqual(named(self.events, "http_on_tls_port"), [])
            self.assertEqual(len(named(self.events, "tls_handshake_failed")), 1)

    def test_the_factory_is_for_listeners(self):
        self.assertRaises(ValueError, TLSServerFactory, self.listener, True,
                          Factory.forProtocol(Protocol), clock=Clock())


class OnelineNameTests(SynchronousTestCase):
    """
    HTTPS_DN is OpenSSL's X509_NAME_oneline (pyOpenSSL's X509Name repr is
    the oracle).
    """

    def _oracle(self, name: x509.Name) -> str:
        directory = _directory(self)
        issued = PrivateCA(directory).issue("n", subject=name, client=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            text = repr(X509.from_cryptography(issued.certificate).get_subject())
        return text[len("<X509Name object '"):-len("'>")]

    def test_names_as_openssl_writes_them(self):
        from cryptography.x509.name import _ASN1Type

        names = [
            x509.Name([]),
            x509.Name([x509.NameAttribute(NameOID.COUNTRY_NAME, "FR"),
                       x509.NameAttribute(NameOID.ORGANIZATION_NAME, "x"),
                       x509.NameAttribute(NameOID.COMMON_NAME, "name")]),
            x509.Name([x509.NameAttribute(oid, "vv") for oid in (
                NameOID.STATE_OR_PROVINCE_NAME, NameOID.LOCALITY_NAME,
                NameOID.ORGANIZATIONAL_UNIT_NAME, NameOID.EMAIL_ADDRESS, NameOID.SERIAL_NUMBER,
                NameOID.SURNAME, NameOID.GIVEN_NAME, NameOID.TITLE, NameOID.DOMAIN_COMPONENT,
                NameOID.USER_ID, NameOID.STREET_ADDRESS, NameOID.POSTAL_CODE, NameOID.PSEUDONYM,
                NameOID.DN_QUALIFIER, NameOID.GENERATION_QUALIFIER, NameOID.INITIALS,
                NameOID.BUSINESS_CATEGORY, NameOID.JURISDICTION_COUNTRY_NAME,
                NameOID.JURISDICTION_STATE_OR_PROVINCE_NAME, NameOID.JURISDICTION_LOCALITY_NAME,
                NameOID.ORGANIZATION_IDENTIFIER, x509.ObjectIdentifier("1.2.3.4.5.6789"),
            )]),
            x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Zoë / \\ = \"q\" \x7f")]),
            x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "".join(map(chr, range(32, 96)))),
                       x509.NameAttribute(NameOID.ORGANIZATION_NAME, "".join(map(chr, range(96, 127))))]),
            x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bmp é", _ASN1Type.BMPString)]),
            x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "uni", _ASN1Type.UniversalString)]),
            x509.Name([x509.RelativeDistinguishedName([
                x509.NameAttribute(NameOID.COMMON_NAME, "a"),
                x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "b")])]),
        ]
        for name in names:
            self.assertEqual(onelineName(name), self._oracle(name), name)


# Real sockets: many stalled clients, and the openssl command line.

class _Listening:
    def __init__(self, testCase, handshakeTimeout=10.0) -> None:
        from twisted.internet import reactor

        directory = _directory(testCase)
        self.pki = pki = _PKI(directory)
        clock = reactor
        self.selector = SNISelector(
            names=[parseSNI(f"exact.local {pki.exact.certificatePath},{pki.exact.keyPath}")],
            directory=pki.sniDir, clock=clock, policy=HTTPS)
        self.listener = ListenerContexts(
            pki.files(clientCA=pki.ca.path), "http-127.0.0.1", clock, self.selector, HTTPS)
        self.protocols = []
        recorder = type("Recorder", (_Recorder,), {"instances": self.protocols})
        self.factory = TLSServerFactory(self.listener, False, Factory.forProtocol(recorder),
                                        clock=reactor, handshakeTimeout=handshakeTimeout)
        self.port = reactor.listenTCP(0, self.factory, interface="127.0.0.1")
        testCase.addCleanup(self.port.stopListening)
        self.number = self.port.getHost().port


def _waitFor(check, timeout: float = 15.0) -> Deferred:
    from twisted.internet import reactor
    from twisted.internet.task import deferLater

    @inlineCallbacks
    def poll():
        deadline = reactor.seconds() + timeout
        while not check():
            if reactor.seconds() > deadline:
                raise AssertionError(f"timed out waiting for {check.__doc__ or check}")
            yield deferLater(reactor, 0.02, lambda: None)

    return poll()


class _Cleanups:
    """
    What a real-reactor test undoes at its end (these tests run on
    pytest-twisted's reactor, like the project's other real-socket tests,
    not trial's, which cannot spin a reactor pytest-twisted already runs).
    """

    def __init__(self) -> None:
        self._calls = []

    def addCleanup(self, f, *args, **kwargs) -> None:
        self._calls.append((f, args, kwargs))

    @inlineCallbacks
    def run(self):
        while self._calls:
            f, args, kwargs = self._calls.pop()
            yield f(*args, **kwargs)


@pytest.fixture
def cleanups():
    done = _Cleanups()
    yield done
    pytest_twisted.blockon(done.run())


def _stall(cleanups, listening, count: int):
    from twisted.internet import reactor
    from twisted.internet.endpoints import TCP4ClientEndpoint

    endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", listening.number)

    @inlineCallbacks
    def connect():
        stalled = []
        for _ in range(count):
            protocol = yield endpoint.connect(Factory.forProtocol(_Stalling))
            cleanups.addCleanup(protocol.transport.abortConnection)
            stalled.append(protocol)
        yield _waitFor(lambda: len(listening.protocols) >= count)
        return stalled

    return connect()


@pytest_twisted.inlineCallbacks
def test_stalled_clients_do_not_delay_others(cleanups):
    """
    200 clients stopped half-way through their ClientHello, accepted and
    waiting: a normal client gets its handshake all the same.
    """
    from twisted.internet import reactor
    from twisted.internet.endpoints import TCP4ClientEndpoint, wrapClientTLS

    listening = _Listening(cleanups, handshakeTimeout=3600)
    stalled = yield _stall(cleanups, listening, 200)
    done = []
    recorder = type("Client", (_Recorder,), {
        "handshakeCompleted": lambda self: done.append(True)})
    endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", listening.number)
    normal = yield wrapClientTLS(_Client(listening.pki.client(), b"exact.local"),
                                 endpoint).connect(Factory.forProtocol(recorder))
    cleanups.addCleanup(normal.transport.abortConnection)
    yield _waitFor(lambda: done)
    assert [p for p in stalled if p.lost is not None] == []


@pytest_twisted.inlineCallbacks
def test_stalled_clients_are_cut_at_the_deadline(cleanups):
    listening = _Listening(cleanups, handshakeTimeout=0.2)
    events = []
    globalLogPublisher.addObserver(events.append)
    cleanups.addCleanup(globalLogPublisher.removeObserver, events.append)
    stalled = yield _stall(cleanups, listening, 30)
    yield _waitFor(lambda: all(p.lost is not None for p in stalled))
    # The log budget: 20 lines, the others counted when the window ends.
    assert len(named(events, "tls_handshake_timeout")) == 20


@pytest.mark.skipif(shutil.which("openssl") is None, reason="no openssl command")
@pytest_twisted.inlineCallbacks
def test_openssl_s_client(cleanups):
    """
    The real C{openssl s_client}: SNI picks the certificate, TLS 1.0 and
    1.1 and 3DES are refused, a client certificate reaches the vars.
    """
    from twisted.internet.threads import deferToThread

    openssl = shutil.which("openssl")
    listening = _Listening(cleanups)
    pki = listening.pki

    def sClient(*arguments, brief=True):
        # In a thread: a reactor run by pytest-twisted reaps no child.
        command = [
            openssl, "s_client", "-connect", f"127.0.0.1:{listening.number}",
            "-CAfile", pki.ca.path, "-verify_return_error", *(["-brief"] if brief else []),
            *arguments,
        ]
        done = deferToThread(
            subprocess.run, command, input=b"", capture_output=True, timeout=30,
            env={"PATH": os.environ.get("PATH", "")},
        )
        return done.addCallback(lambda r: (r.stdout, r.stderr, r.returncode))

    out, err, code = yield sClient("-servername", "exact.local")
    assert code == 0, err
    assert b"Peer certificate: CN = exact.local" in err + out
    out, err, code = yield sClient("-servername", "indir.local")
    assert b"Peer certificate: CN = indir.local" in err + out
    out, err, code = yield sClient("-servername", "nobody.local")
    assert b"Peer certificate: CN = default.local" in err + out
    out, err, code = yield sClient("-servername", "../indir.local")
    assert b"Peer certificate: CN = default.local" in err + out
    out, err, code = yield sClient("-alpn", "h2,http/1.1", brief=False)
    assert b"ALPN protocol: http/1.1" in out
    for refused in (["-tls1", "-cipher", "DEFAULT:@SECLEVEL=0"],
                    ["-tls1_1", "-cipher", "DEFAULT:@SECLEVEL=0"],
                    ["-tls1_2", "-cipher", "ECDHE-ECDSA-DES-CBC3-SHA:DES-CBC3-SHA:@SECLEVEL=0"],
                    ["-tls1_2", "-cipher", "RC4-SHA:@SECLEVEL=0"]):
        out, err, code = yield sClient(*refused)
        assert code != 0, refused
        assert b"Protocol version:" not in err + out, refused
    out, err, code = yield sClient("-cert", pki.alice.certificatePath,
                                   "-key", pki.alice.keyPath, "-servername", "default.local")
    assert code == 0, err
    certified = [dict(p.vars) for p in listening.protocols
                 if p.handshook and b"HTTPS_DN" in dict(p.vars)]
    assert [v[b"HTTPS_DN"] for v in certified] == [b"/C=FR/O=x/CN=alice"]
    assert certified[0][b"HTTPS_CLIENT_CERTIFICATE"] == \
        pki.alice.certificate.public_bytes(Encoding.DER)


class _Stalling(Protocol):
    """
    A client that sends half a ClientHello and waits.
    """

    lost = None

    def connectionMade(self) -> None:
        self.transport.write(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")

    def connectionLost(self, reason) -> None:
        self.lost = reason
