"""
Unix socket files (L{txrouter.socketfiles}): the umask while Twisted binds,
the owner after, the stale file replaced only when nothing listens, and a
file the router can no longer remove left without an error.
"""

import os
import socket
import stat

from twisted.internet.error import CannotListenError
from twisted.internet.protocol import DatagramProtocol, Factory, Protocol
from twisted.internet.testing import MemoryReactor
from twisted.trial.unittest import SynchronousTestCase

from txrouter.socketfiles import SocketFiles, clearStaleSocket, socketFiles
from txrouter.transports import listeningReactor


class RecordingReactor(MemoryReactor):
    """
    A memory reactor that also records the process's umask at each bind.
    """

    def __init__(self) -> None:
        super().__init__()
        self.umasks = []

    def _umask(self) -> int:
        mask = os.umask(0)
        os.umask(mask)
        return mask

    def listenUNIX(self, address, factory, backlog=50, mode=0o666, wantPID=0):
        self.umasks.append(self._umask())
        return super().listenUNIX(address, factory, backlog, mode, wantPID)

    def listenUNIXDatagram(self, address, protocol, maxPacketSize=8192, mode=0o666):
        self.umasks.append(self._umask())
        self.unixDatagrams = [(address, mode)]


class FakeSystem:
    def __init__(self) -> None:
        self.chowned = []

    def umask(self, mask):
        return os.umask(mask)

    def chown(self, path, uid, gid):
        self.chowned.append((path, uid, gid))


class SocketFilesTests(SynchronousTestCase):
    def setUp(self):
        self.directory = self.mktemp()
        os.mkdir(self.directory)
        self.path = os.path.join(self.directory, "r.sock")

    def test_mode_is_the_umask_while_binding(self):
        reactor, system = RecordingReactor(), FakeSystem()
        before = os.umask(0o022)
        self.addCleanup(os.umask, before)
        files = SocketFiles(reactor, mode=0o660, owner=(65534, None), system=system)
        files.listenUNIX(self.path, Factory(), mode=0o666)
        self.assertEqual(reactor.umasks, [0o117])
        self.assertEqual(reactor.unixServers[0][3], 0o660, "--chmod-socket beats mode=")
        self.assertEqual(system.chowned, [(self.path, 65534, -1)])
        self.assertEqual(os.umask(0o022), 0o022, "the umask is restored")

    def test_endpoint_mode_without_chmod_socket(self):
        reactor = RecordingReactor()
        SocketFiles(reactor, system=FakeSystem()).listenUNIX(self.path, Factory(), mode=0o600)
        self.assertEqual(reactor.umasks[-1], 0o177)
        self.assertEqual(reactor.unixServers[0][3], 0o600)

    def test_datagram(self):
        reactor, system = RecordingReactor(), FakeSystem()
        files = SocketFiles(reactor, mode=0o620, owner=(1, 2), system=system)
        files.listenUNIXDatagram(self.path, DatagramProtocol())
        self.assertEqual(reactor.umasks, [0o157])
        self.assertEqual(system.chowned, [(self.path, 1, 2)])

    def test_abstract_sockets_have_no_file(self):
        reactor, system = RecordingReactor(), FakeSystem()
        SocketFiles(reactor, mode=0o600, owner=(1, 2), system=system).listenUNIX(
            "\0abstract", Factory())
        self.assertEqual(system.chowned, [])

    def test_memory_reactors_are_left_alone(self):
        reactor = MemoryReactor()
        self.assertIs(socketFiles(reactor, 0o600), reactor)
        from twisted.internet import reactor as real

        self.assertIsInstance(socketFiles(listeningReactor(real), 0o600), SocketFiles)


class StaleSocketTests(SynchronousTestCase):
    def setUp(self):
        directory = self.mktemp()
        os.mkdir(directory)
        self.path = os.path.join(directory, "r.sock")

    def test_nothing_there(self):
        clearStaleSocket(self.path)

    def test_stale_socket_removed(self):
        for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
            with socket.socket(socket.AF_UNIX, kind) as left:
                left.bind(self.path)
            clearStaleSocket(self.path, kind)
            self.assertFalse(os.path.exists(self.path))

    def test_live_socket_kept(self):
        with socket.socket(socket.AF_UNIX) as live:
            live.bind(self.path)
            live.listen(1)
            error = self.assertRaises(CannotListenError, clearStaleSocket, self.path)
            self.assertIn("another process listens on it", str(error))
            self.assertTrue(stat.S_ISSOCK(os.lstat(self.path).st_mode))

    def test_live_datagram_socket_kept(self):
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as live:
            live.bind(self.path)
            self.assertRaises(CannotListenError, clearStaleSocket, self.path, socket.SOCK_DGRAM)

    def test_other_files_kept(self):
        with open(self.path, "w") as f:
            f.write("precious")
        error = self.assertRaises(CannotListenError, clearStaleSocket, self.path)
        self.assertIn("not a socket", str(error))
        with open(self.path) as f:
            self.assertEqual(f.read(), "precious")


class RemovalTests(SynchronousTestCase):
    def test_a_file_that_cannot_be_removed_is_kept_quietly(self):
        """
        Once the router runs as another user, its socket's directory may
        not let it remove the file: the port closes all the same, with a
        C{socket_file_kept} line instead of an error.
        """
        from twisted.internet import reactor

        directory = self.mktemp()
        os.mkdir(directory)
        path = os.path.join(directory, "r.sock")
        port = SocketFiles(reactor).listenUNIX(path, Factory.forProtocol(Protocol))
        removals = []

        def refuse(target):
            removals.append(target)
            raise PermissionError(13, "Permission denied")

        self.patch(os, "unlink", refuse)
        port.connectionLost(None)
        self.assertEqual(removals, [os.fsencode(path)])
        self.assertFalse(port.connected)
        self.assertTrue(os.path.exists(path))
        events = self.flushLoggedErrors()
        self.assertEqual(events, [])
