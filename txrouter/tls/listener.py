"""
The TLS side of one listener: its own context, SNI, and a session-ticket
key that changes.

OpenSSL encrypts session tickets with a key it draws at random when a
context is made, and keeps it for the context's life; the key of the
listener's context is the one used, whichever context SNI switches to.
L{ListenerContexts} makes that context again (from the certificates
already in memory) once it is C{sessionLifetime} seconds old, so a stolen
ticket key opens at most that much traffic; connections made before keep
their context.  A ticket from before the change no longer resumes: that
client makes a full handshake.

It is what Twisted's C{TLSMemoryBIOFactory} takes as its context factory
(an C{IOpenSSLServerConnectionCreator}).
"""

import datetime

from OpenSSL import SSL
from twisted.internet.interfaces import IOpenSSLServerConnectionCreator
from twisted.logger import Logger
from zope.interface import implementer

from txrouter.tls.contexts import ContextPolicy, buildContext, sessionIDContext
from txrouter.tls.credentials import loadCredentials, validityWarnings

__all__ = ["ListenerContexts", "defaultSessionContext"]

log = Logger(namespace="txrouter.tls")


def defaultSessionContext(router: str, address: str) -> str:
    """
    uWSGI's session-id context of a listener when none is given
    (C{--https-session-context}, C{--sslrouter-session-context}): the
    router's short name, C{-}, the address as given (C{http-:8443},
    C{sslrouter-127.0.0.1:8443}).
    """
    return f"{router}-{address}"


def _now(clock) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(clock.seconds(), datetime.timezone.utc)


@implementer(IOpenSSLServerConnectionCreator)
class ListenerContexts:
    """
    The contexts of one TLS listener (C{--https}, C{--sslrouter}...).
    """

    def __init__(
        self,
        files,
        sessionContext: str,
        clock,
        selector=None,
        policy: ContextPolicy = ContextPolicy(),
    ) -> None:
        """
        Read and check the files now.

        @param files: a L{txrouter.tls.specs.TLSFiles}.
        @param sessionContext: the session-id context (see
            L{defaultSessionContext}).
        @param clock: an C{IReactorTime}, for the ticket key's age and the
            certificate's validity.
        @param selector: the router's L{txrouter.tls.sni.SNISelector}, or
            L{None}: no SNI contexts.
        @raise ValueError: a file is wrong, or the cipher list leaves
            nothing; the message names the file.
        """
        self._files = files
        self._sessionContext = sessionIDContext(sessionContext)
        self._clock = clock
        self._selector = selector
        self._policy = policy
        self.reload()

    def reload(self) -> None:
        """
        Read the files again and make a new context (SIGHUP).

        @raise ValueError: as the constructor; the context in use is then
            kept.
        """
        files = self._files
        credentials = loadCredentials(
            files.certificate, files.key, files.clientCA, files.clientCertificateRequired)
        for warning in validityWarnings(credentials, _now(self._clock)):
            log.warn("tls_certificate_not_valid: {warning}",
                     event="tls_certificate_not_valid", warning=warning)
        context = self._build(credentials)
        self._credentials = credentials
        self._context = context

    def _build(self, credentials) -> SSL.Context:
        onServerName = self._selector.onServerName if self._selector is not None else None
        context = buildContext(
            credentials, self._files.ciphers, self._sessionContext, self._policy, onServerName)
        self._expires = self._clock.seconds() + self._policy.sessionLifetime
        return context

    def currentContext(self) -> SSL.Context:
        """
        The context new connections get: made again, with a new ticket
        key, once the current one is C{sessionLifetime} seconds old.
        """
        if self._clock.seconds() >= self._expires:
            self._context = self._build(self._credentials)
        return self._context

    def serverConnectionForTLS(self, tlsProtocol) -> SSL.Connection:
        """
        A connection for one accepted client.
        """
        return SSL.Connection(self.currentContext(), None)
