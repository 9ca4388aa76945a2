"""
RouterReactor listening as a router does, for Twisted's conformance tests
(which name their reactor by its dotted name, imported as their test
classes are made).
"""

from txrouter.reactor import RouterReactor
from txrouter.transports import listeningReactor


class ListeningAsRouters(RouterReactor):
    """
    RouterReactor whose TCP, TLS and UNIX listeners are built as a router's
    are (L{listeningReactor}): Twisted's tests of listening ports and of
    the connections they accept then run on the hot path's transports.
    """

    def listenTCP(self, *args, **kwargs):
        return listeningReactor(self).listenTCP(*args, **kwargs)

    def listenSSL(self, *args, **kwargs):
        return listeningReactor(self).listenSSL(*args, **kwargs)

    def listenUNIX(self, *args, **kwargs):
        return listeningReactor(self).listenUNIX(*args, **kwargs)
