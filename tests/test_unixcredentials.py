"""
L{txrouter.unixcredentials}: a UNIX listener whose connections tell their
protocol who wrote what they read, on real sockets driven by hand.
"""

import os
import socket
import struct

from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from txrouter.unixcredentials import ICredentialsReceiver, credentialsListening


@implementer(ICredentialsReceiver)
class Recording(Protocol):
    def __init__(self, events):
        self.events = events

    def credentialsReceived(self, pid, uid, gid):
        self.events.append(("credentials", pid, uid, gid))

    def dataReceived(self, data):
        self.events.append(("data", data))


class CredentialsListeningTests(SynchronousTestCase):
    def setUp(self):
        self.events = []
        self.path = self.mktemp()
        reactor = MemoryReactorClock()
        self.port = credentialsListening(reactor).listenUNIX(
            self.path, Factory.forProtocol(lambda: Recording(self.events)))
        self.addCleanup(self.port.connectionLost, None)

    def accept(self):
        client = socket.socket(socket.AF_UNIX)
        self.addCleanup(client.close)
        client.connect(self.path)
        self.port.doRead()
        [server] = [reader for reader in self.port.reactor.readers if reader is not self.port]
        self.addCleanup(server.socket.close)
        return client, server

    def test_passedWithoutAsking(self):
        """
        Bytes a client writes plainly arrive with its pid, uid and gid,
        before the bytes themselves: the listening socket's C{SO_PASSCRED}
        reaches the accepted one.
        """
        client, server = self.accept()
        client.send(b"uwsgi-tuntap")
        server.doRead()
        self.assertEqual(self.events, [("credentials", os.getpid(), os.getuid(), os.getgid()),
                                       ("data", b"uwsgi-tuntap")])

    def test_explicit(self):
        """
        Credentials a client sends with C{SCM_CREDENTIALS} (as uWSGI's
        C{uwsgi_pass_cred} does) are those passed on.
        """
        client, server = self.accept()
        ucred = struct.pack("3i", os.getpid(), os.getuid(), os.getgid())
        client.sendmsg([b"hello"], [(socket.SOL_SOCKET, socket.SCM_CREDENTIALS, ucred)])
        server.doRead()
        self.assertEqual(self.events[-1], ("data", b"hello"))
        self.assertEqual(self.events[0][1:], (os.getpid(), os.getuid(), os.getgid()))

    def test_closedWithoutBytes(self):
        """
        A client that closes without writing says nothing of itself (the
        kernel's empty credentials at the end of the stream are not passed
        on) and the connection is lost.
        """
        client, server = self.accept()
        client.close()
        self.assertIsNotNone(server.doRead())
        self.assertEqual(self.events, [])
