"""
The listening sockets a pool binds and its workers inherit.

The pool binds every listener of the router's configuration as the router
would (the same endpoint strings, parsed by Twisted), but accepts on none:
its workers do, each on its own copy of every socket.  A worker builds the
same router, and each of its listeners, about to bind, takes the inherited
socket of the same kind and requested address instead (L{InheritedListeners},
through L{txrouter.transports.listeningReactor}).

A socket handed over by systemd (a C{systemd:} endpoint) is passed on at
the descriptor number systemd gave it, where the worker's C{systemd:}
endpoint finds it again.
"""

import attr
from twisted.internet.defer import maybeDeferred
from twisted.internet.protocol import ServerFactory

from txrouter.early import OpenedEarly
from txrouter.endpoints import parseServerEndpoint
from txrouter.tls.specs import listenArguments

__all__ = ["BoundListeners", "BoundSocket", "InheritedListeners", "listenerDescriptions"]


@attr.frozen
class BoundSocket:
    """
    One listening socket of the pool.

    @ivar kind: C{tcp} (TCP, TLS on TCP), C{unix}, or C{systemd} (a
        socket systemd handed over).
    @ivar address: what the listener asked for: C{(port, interface)} for
        TCP (port 0 included, as asked), the path for UNIX, the inherited
        descriptor number for C{systemd}.
    @ivar fd: its descriptor in the pool.
    @ivar family: its address family.
    """

    kind: str
    address: object
    fd: int
    family: int


def listenerDescriptions(config) -> "list[str]":
    """
    The endpoint strings of the listeners of a router's configuration:
    C{--bind}, then C{--http-to-https} (the TLS listeners given in uWSGI's
    spelling are bound by L{BoundListeners} too).
    """
    return list(config.bind) + [spec.endpoint for spec in getattr(config, "http_to_https", ())]


class _Binding:
    """
    A reactor that binds what an endpoint asks for, TLS as plain TCP (TLS
    is the workers' business), and keeps every socket without accepting on
    it.
    """

    def __init__(self, reactor) -> None:
        self._reactor = reactor
        self.bound = []

    def __getattr__(self, name):
        return getattr(self._reactor, name)

    def listenTCP(self, port, factory, backlog=50, interface=""):
        return self._keep("tcp", (port, interface),
                          self._reactor.listenTCP(port, factory, backlog, interface))

    def listenSSL(self, port, factory, contextFactory, backlog=50, interface=""):
        return self.listenTCP(port, factory, backlog, interface)

    def listenUNIX(self, address, factory, backlog=50, mode=0o666, wantPID=0):
        return self._keep("unix", address,
                          self._reactor.listenUNIX(address, factory, backlog, mode, wantPID))

    def adoptStreamPort(self, fileDescriptor, addressFamily, factory):
        return self._keep("systemd", fileDescriptor,
                          self._reactor.adoptStreamPort(fileDescriptor, addressFamily, factory))

    def _keep(self, kind: str, address, port):
        port.stopReading()
        self.bound.append((BoundSocket(kind, address, port.fileno(), port.socket.family), port))
        return port


class _AcceptsNothing(ServerFactory):
    """
    The factory of the pool's listeners, which never accept.
    """

    noisy = False


class BoundListeners(OpenedEarly):
    """
    Binds the listeners of a router's configuration (while twistd may
    still run as root) and accepts on none of them.

    @ivar sockets: the L{BoundSocket}s, once open.
    """

    def __init__(self, reactor, config) -> None:
        self.reactor = reactor
        self.config = config
        self.sockets = []
        self._ports = []

    @property
    def opened(self) -> bool:
        return bool(self._ports)

    def _open(self) -> None:
        binding = _Binding(self.reactor)
        factory = _AcceptsNothing()
        for description in listenerDescriptions(self.config):
            outcome = []
            parseServerEndpoint(binding, description).listen(factory).addBoth(outcome.append)
            if outcome and hasattr(outcome[0], "raiseException"):
                self._close()
                outcome[0].raiseException()
        for spec in self.config.tlsListeners():
            port, interface = listenArguments(spec.address)
            binding.listenTCP(port, factory, interface=interface)
        self.sockets = [bound for bound, port in binding.bound]
        self._ports = [port for bound, port in binding.bound]

    def _close(self):
        ports, self._ports = self._ports, []
        return [maybeDeferred(port.stopListening) for port in ports]

    def stopService(self):
        super().stopService()
        self._close()


class InheritedListeners:
    """
    A worker's inherited listening sockets, each taken once by the
    listener asking for its kind and address.

    @ivar admission: what the ports on them ask before accepting (a
        L{txrouter.workers.balance.SessionBalance}), or L{None}.
    """

    def __init__(self, sockets, admission=None) -> None:
        """
        @param sockets: L{BoundSocket}s, with the worker's descriptors.
        """
        self._left = list(sockets)
        self.admission = admission

    def take(self, kind: str, address) -> "tuple[int, int] | None":
        """
        The descriptor and family of the socket bound for a listener of
        C{kind} at C{address}, or L{None} if there is none (the listener
        binds then, as a stats listener of the worker's own).
        """
        for bound in self._left:
            if bound.kind == kind and bound.address == address:
                self._left.remove(bound)
                return bound.fd, bound.family
        return None

    def left(self) -> list:
        """
        The sockets no listener took.
        """
        return list(self._left)

