"""
The SSL router: TLS in, TCP out (uWSGI's C{--sslrouter}).

It is the raw router (L{txrouter.routers.raw}) behind TLS listeners: the
listener terminates TLS (L{txrouter.tls}: the contexts, SNI, the handshake
deadline) and the decrypted bytes are relayed to a node in plain TCP, both
ways, through the same relay and lifecycle.  A connection's key is its
listener's address as given (C{--sslrouter 127.0.0.1:8443,...} routes by
C{127.0.0.1:8443}) or, with C{sni} (uWSGI's C{--sslrouter-sni}), the SNI
name the client sent, checked and lower-cased
(L{txrouter.tls.sni.serverNameOf}); a client that sent no usable name is
routed by the listener's key.

The node is chosen and connected once the handshake is done: the SNI name
is known then, and a node that speaks first (SMTP, IMAP over implicit TLS)
greets the client at once.  uWSGI connects only after the first decrypted
client bytes, so such protocols do not work behind it.

TLS has no half-close in Twisted's TLS layer: a node's FIN ends the TLS
connection (C{close_notify}, then the close) after the bytes before it,
and a client's C{close_notify} ends the whole relay, as in uWSGI.
"""

from twisted.internet.interfaces import IHandshakeListener
from twisted.protocols.tls import TLSMemoryBIOProtocol
from zope.interface import implementer

from txrouter.routers.raw import RawListenerFactory, RawRouter, RawSession
from txrouter.tls.sni import serverNameOf

__all__ = ["SSLRouter", "SSLSession"]


class SSLRouter(RawRouter):
    """
    A configured SSL router: the raw router's options, and C{sni}.
    """

    def __init__(self, reactor, nodes=(), *, sni: bool = False, **raw) -> None:
        """
        @param sni: route by the client's SNI name.
        @param raw: the keyword arguments of L{RawRouter}.
        """
        RawRouter.__init__(self, reactor, nodes, **raw)
        self.sni = sni

    def listenerFactory(self, description: str) -> RawListenerFactory:
        factory = RawRouter.listenerFactory(self, description)
        factory.protocol = SSLSession
        return factory

    def buildProtocol(self, addr):
        return SSLSession(self, self.key)


@implementer(IHandshakeListener)
class SSLSession(RawSession):
    """
    One client of a TLS listener relayed to one node, from the end of its
    handshake.  On a plain listener (a C{--bind tcp:}), it is a
    L{RawSession}.
    """

    _waitingForHandshake = False

    def connectionMade(self) -> None:
        self._waitingForHandshake = isinstance(self.transport, TLSMemoryBIOProtocol)
        RawSession.connectionMade(self)

    def dispatch(self) -> None:
        if not self._waitingForHandshake:
            RawSession.dispatch(self)

    def handshakeCompleted(self) -> None:
        """
        The key is known (the SNI name, with C{sni}): choose and connect
        the node.
        """
        if not self._waitingForHandshake or self.finished:
            return
        self._waitingForHandshake = False
        if self.router.sni:
            self.key = serverNameOf(self.transport) or self.key
        self.dispatch()

    def nodeReadConnectionLost(self) -> None:
        """
        The node's FIN ends a TLS connection: Twisted's TLS layer cannot
        half-close (its C{loseWriteConnection} is the TCP socket's, which
        would truncate the TLS stream under it).
        """
        if isinstance(self.transport, TLSMemoryBIOProtocol):
            if not self.finished and self._greeting is None:
                self._end()
                self.transport.loseConnection()
                return
        RawSession.nodeReadConnectionLost(self)
