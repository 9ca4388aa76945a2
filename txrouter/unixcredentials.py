"""
UNIX listeners whose connections say who sent what they read: the
C{SCM_CREDENTIALS} (process id, user id, group id) the kernel attaches to
the bytes each peer writes.

uWSGI's TunTap router reads them from the C{uwsgi-tuntap} handshake its
clients send once they have dropped their privileges (so C{SO_PEERCRED},
recorded at C{connect} while the client was still root, would name root).
Twisted's UNIX transports receive ancillary data but pass on only
descriptors (C{SCM_RIGHTS}) and log the rest; the transport here passes
credentials to its protocol, which provides L{ICredentialsReceiver}.

C{SO_PASSCRED} is set on the listening socket, and Linux gives it to every
accepted socket, so the kernel attaches credentials from a peer's first
byte on, whether or not the peer sends them explicitly.
"""

import socket
import struct

from twisted.internet import main, unix
from twisted.python import sendmsg
from twisted.python.util import untilConcludes
from zope.interface import Interface

__all__ = ["ICredentialsReceiver", "credentialsListening"]

_UCRED = struct.Struct("3i")


class ICredentialsReceiver(Interface):
    """
    A protocol told who wrote the bytes it is about to receive.
    """

    def credentialsReceived(pid: int, uid: int, gid: int) -> None:
        """
        The bytes given to the next C{dataReceived} were written by process
        C{pid}, running as C{uid} and C{gid} (as the kernel saw it).
        """


class _CredentialsServer(unix.Server):
    """
    An accepted UNIX connection that reads with C{recvmsg} and hands the
    credentials of what it read to its protocol before the bytes.
    """

    def doRead(self):
        try:
            data, ancillary, flags = untilConcludes(
                sendmsg.recvmsg, self.socket, self.bufferSize, _UCRED.size)
        except BlockingIOError:
            return None
        except OSError:
            return main.CONNECTION_LOST
        for level, kind, payload in ancillary if data else ():
            # (The end of the stream comes with empty credentials.)
            if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                self.protocol.credentialsReceived(*_UCRED.unpack(payload[:_UCRED.size]))
        return self._dataReceived(data)


class _CredentialsPort(unix.Port):
    transport = _CredentialsServer

    def createInternetSocket(self):
        listening = super().createInternetSocket()
        listening.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        return listening


class _CredentialsListening:
    """
    A reactor whose C{listenUNIX} makes credential-reading ports; anything
    else is the wrapped reactor's.
    """

    def __init__(self, reactor) -> None:
        self._reactor = reactor

    def __getattr__(self, name):
        return getattr(self._reactor, name)

    def listenUNIX(self, address, factory, backlog=50, mode=0o666, wantPID=0):
        listening = _CredentialsPort(address, factory, backlog, mode, self._reactor, wantPID)
        listening.startListening()
        return listening


def credentialsListening(reactor):
    """
    The reactor to give C{serverFromString} for UNIX listeners whose
    protocols (L{ICredentialsReceiver}s) learn their peers' credentials.
    """
    return _CredentialsListening(reactor)
