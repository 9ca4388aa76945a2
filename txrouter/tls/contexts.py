"""
OpenSSL contexts with safe defaults, built from checked L{Credentials}.

Every context a router builds (a listener's, an SNI name's) gets:

  - TLS 1.2 and 1.3 only (uWSGI 2.0 still accepts TLS 1.1 and, with
    C{--ssl-enable-tlsv1}, 1.0);
  - for TLS 1.2, the cipher list given (C{CIPHERS}) or L{DEFAULT_CIPHERS},
    with L{EXCLUDED_CIPHERS} always appended: an OpenSSL C{!} removes a
    suite for good, so RC4, DES, 3DES, NULL, EXPORT, anonymous and MD5
    suites stay out whatever the list says (a list of nothing else is a
    start-up error).  TLS 1.3's suites are OpenSSL's, all of them sound;
  - the server's cipher order (uWSGI: only when C{CIPHERS} is given);
  - no compression (CRIME);
  - no renegotiation: C{OP_NO_RENEGOTIATION}, which every OpenSSL the
    supported pyOpenSSL runs on has (OpenSSL 3 also refuses
    client-initiated renegotiation by default; TLS 1.3 has none);
  - session tickets on, and OpenSSL's session-id cache off, as uWSGI (no
    per-session memory on the server).  OpenSSL gives each context a random
    ticket key when it is made and never changes it; rotating it is
    L{txrouter.tls.listener}'s job, by making the listener's context again
    every C{sessionLifetime} seconds, the tickets' lifetime too;
  - a session-id context (see L{sessionIDContext}), which OpenSSL wants
    for resuming sessions with client certificates;
  - ALPN: the first of C{protocols} the client offers; a client offering
    none of them gets no ALPN answer and goes on (uWSGI answers no ALPN at
    all); no C{protocols} (the SSL router): ALPN ignored;
  - client certificates, with a CA file: asked for, checked against it
    (depth C{--ssl-verify-depth}), a bad one refused; with C{required}
    (uWSGI's C{!}), a client without one refused.

Key exchange is ECDHE (TLS 1.3's groups): unlike uWSGI, DH parameters
appended to the certificate file are not read.
"""

import hashlib

import attr
from OpenSSL import SSL
from OpenSSL.crypto import X509

from txrouter.tls.credentials import Credentials

__all__ = [
    "DEFAULT_CIPHERS",
    "EXCLUDED_CIPHERS",
    "HTTP_PROTOCOLS",
    "DEFAULT_VERIFY_DEPTH",
    "DEFAULT_SESSION_LIFETIME",
    "ContextPolicy",
    "cipherList",
    "sessionIDContext",
    "buildContext",
]

#: The TLS 1.2 suites offered when no C{CIPHERS} is given: forward-secret
#: AEAD first, then forward-secret CBC for old clients.
DEFAULT_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20:ECDHE+AES"

#: Appended to every cipher list.
EXCLUDED_CIPHERS = "!aNULL:!eNULL:!EXPORT:!RC4:!DES:!3DES:!MD5"

#: What the HTTPS router answers ALPN with.
HTTP_PROTOCOLS = (b"http/1.1", b"http/1.0")

#: uWSGI's C{--ssl-verify-depth} default: client certificates signed by
#: the CA itself.
DEFAULT_VERIFY_DEPTH = 1

#: Seconds a session ticket, and the key that encrypts it, live.
DEFAULT_SESSION_LIFETIME = 3600

#: OpenSSL's limit on a session-id context (C{SSL_MAX_SID_CTX_LENGTH}).
_MAX_SESSION_ID_CONTEXT = 32

_OPTIONS = SSL.OP_NO_COMPRESSION | SSL.OP_CIPHER_SERVER_PREFERENCE | SSL.OP_NO_RENEGOTIATION


@attr.frozen
class ContextPolicy:
    """
    What every context of one router shares.

    @ivar protocols: the ALPN protocols answered, preferred first; empty:
        no ALPN.
    @ivar verifyDepth: how many CA certificates above a client certificate
        may be checked (C{--ssl-verify-depth}).
    @ivar sessionLifetime: seconds a session ticket (and its key) lives.
    """

    protocols: tuple = ()
    verifyDepth: int = DEFAULT_VERIFY_DEPTH
    sessionLifetime: int = DEFAULT_SESSION_LIFETIME


def cipherList(ciphers: "str | None" = None) -> bytes:
    """
    The OpenSSL cipher list set for C{ciphers} (L{None}: the default):
    C{ciphers} followed by L{EXCLUDED_CIPHERS}.
    """
    return f"{ciphers or DEFAULT_CIPHERS}:{EXCLUDED_CIPHERS}".encode("ascii")


def sessionIDContext(name: str) -> bytes:
    """
    The session-id context for C{name}: its bytes, or, beyond OpenSSL's
    32 bytes (where uWSGI's call fails and sessions lose their context),
    the first 32 bytes of its SHA-256 digest.
    """
    raw = name.encode("utf-8")
    if len(raw) <= _MAX_SESSION_ID_CONTEXT:
        return raw
    return hashlib.sha256(raw).digest()[:_MAX_SESSION_ID_CONTEXT]


def _selectProtocol(protocols: tuple):
    def select(connection, offered):
        for protocol in protocols:
            if protocol in offered:
                return protocol
        return SSL.NO_OVERLAPPING_PROTOCOLS

    return select


def buildContext(
    credentials: Credentials,
    ciphers: "str | None" = None,
    sessionContext: bytes = b"txrouter",
    policy: ContextPolicy = ContextPolicy(),
    onServerName=None,
) -> SSL.Context:
    """
    A server context serving C{credentials}, with the defaults of this
    module.

    @param ciphers: the TLS 1.2 cipher list asked for, or L{None}.
    @param sessionContext: from L{sessionIDContext}.
    @param onServerName: called with the C{OpenSSL.SSL.Connection} once
        its ClientHello's server name is known, or L{None}.
    @raise ValueError: C{ciphers} leaves no usable cipher, or is not ASCII.
    """
    if ciphers is not None and not ciphers.isascii():
        raise ValueError(f"cipher list {ciphers!r} is not ASCII")
    context = SSL.Context(SSL.TLS_SERVER_METHOD)
    context.set_min_proto_version(SSL.TLS1_2_VERSION)
    context.set_options(_OPTIONS)
    context.set_mode(SSL.MODE_RELEASE_BUFFERS)
    context.use_certificate(credentials.certificate)
    context.use_privatekey(credentials.key)
    for certificate in credentials.chain[1:]:
        context.add_extra_chain_cert(certificate)
    context.check_privatekey()
    context.set_session_id(sessionContext)
    context.set_session_cache_mode(SSL.SESS_CACHE_OFF)
    context.set_timeout(policy.sessionLifetime)
    if credentials.clientCAs:
        store = context.get_cert_store()
        for ca in credentials.clientCAs:
            # X509Store.add_cert takes pyOpenSSL's own certificate type only.
            store.add_cert(X509.from_cryptography(ca))
            context.add_client_ca(ca)
        mode = SSL.VERIFY_PEER
        if credentials.clientCertificateRequired:
            mode |= SSL.VERIFY_FAIL_IF_NO_PEER_CERT
        context.set_verify(mode)
        context.set_verify_depth(policy.verifyDepth)
    if onServerName is not None:
        context.set_tlsext_servername_callback(onServerName)
    if policy.protocols:
        context.set_alpn_select_callback(_selectProtocol(tuple(policy.protocols)))
    # Last: pyOpenSSL treats a context whose cipher list is set as used.
    try:
        context.set_cipher_list(cipherList(ciphers))
    except SSL.Error:
        raise ValueError(
            f"cipher list {ciphers!r} leaves no usable TLS 1.2 cipher once"
            f" {EXCLUDED_CIPHERS} is applied") from None
    return context

