"""
The forkpty router's parts: the uwsgi-mode frame parser (examples and
fuzzing), the command line, the root check, and a session against a fake
reactor whose C{spawnProcess} records the child (on a real pseudo-terminal,
so that window sizes can be read back).
"""

import fcntl
import os
import signal
import struct
import termios

import pytest
from hypothesis import given, strategies as st
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure
from twisted.internet.error import ConnectionDone, ProcessDone, ProcessExitedAlready
from twisted.trial.unittest import SynchronousTestCase

from txrouter.build import buildService
from txrouter.config import PtyRouterConfig
from txrouter.routers.pty import PtyRouter, checkPrivileges, commandLine
from txrouter.wire.ptyframes import (
    COLS,
    DATA,
    ROWS,
    Input,
    PtyFrameError,
    PtyFrameParser,
    Signal,
    WindowCols,
    WindowRows,
    encodeFrame,
)


def data(payload: bytes) -> bytes:
    return encodeFrame(DATA, len(payload), payload)


class FrameParserTests(SynchronousTestCase):
    """
    L{PtyFrameParser} reads what C{uwsgi --pty-uconnect} writes.
    """

    def test_what_the_uwsgi_client_sends(self):
        """
        The window size (rows then columns) at connect, then one data frame
        per read of the terminal; a signal frame names its signal.
        """
        stream = encodeFrame(ROWS, 50) + encodeFrame(COLS, 132) + data(b"ls\r") + encodeFrame(2)
        self.assertEqual(
            PtyFrameParser().feed(stream),
            [WindowRows(50), WindowCols(132), Input(b"ls\r"), Signal(2)],
        )

    def test_payload_streamed_as_it_comes(self):
        """
        A data frame's payload is given as it arrives, not held whole.
        """
        parser = PtyFrameParser()
        frame = data(b"x" * 1000)
        self.assertEqual(parser.feed(frame[:2]), [])
        self.assertEqual(parser.feed(frame[2:10]), [Input(b"x" * 6)])
        self.assertEqual(parser.feed(frame[10:]), [Input(b"x" * 994)])

    def test_empty_data_frame(self):
        self.assertEqual(PtyFrameParser().feed(data(b"") + data(b"a")), [Input(b"a")])

    def test_unknown_modifier2_refused_for_good(self):
        """
        A modifier2 that is neither data, a window size nor a signal (1 to
        99) is refused; so is everything after it.
        """
        parser = PtyFrameParser()
        with self.assertRaises(PtyFrameError) as caught:
            parser.feed(data(b"a") + encodeFrame(200))
        self.assertEqual(caught.exception.event, "bad_pty_frame")
        self.assertRaises(PtyFrameError, parser.feed, data(b"b"))

    @given(
        st.lists(st.one_of(
            st.binary(max_size=300).map(lambda payload: ("data", payload)),
            st.integers(0, 65535).map(lambda n: ("rows", n)),
            st.integers(0, 65535).map(lambda n: ("cols", n)),
            st.integers(1, 99).map(lambda n: ("signal", n)),
        ), max_size=20),
        st.lists(st.integers(1, 50), max_size=40),
    )
    def test_any_split_same_events(self, frames, cuts):
        """
        However the stream is cut into reads, the same events come out (the
        input bytes joined).
        """
        stream, expected, pending = b"", [], b""
        for kind, value in frames:
            if kind == "data":
                stream += data(value)
                pending += value
                continue
            if pending:
                expected.append(Input(pending))
                pending = b""
            if kind == "rows":
                stream += encodeFrame(ROWS, value)
                expected.append(WindowRows(value))
            elif kind == "cols":
                stream += encodeFrame(COLS, value)
                expected.append(WindowCols(value))
            else:
                stream += encodeFrame(value)
                expected.append(Signal(value))
        if pending:
            expected.append(Input(pending))
        parser, events, offset = PtyFrameParser(), [], 0
        for cut in cuts + [len(stream)]:
            for event in parser.feed(stream[offset:offset + cut]):
                if events and type(event) is Input and type(events[-1]) is Input:
                    events[-1] = Input(events[-1].data + event.data)
                else:
                    events.append(event)
            offset += cut
        self.assertEqual(events, expected)

    @given(st.lists(st.binary(max_size=64), max_size=30))
    def test_any_bytes_bounded(self, chunks):
        """
        Whatever the bytes, the parser gives events or L{PtyFrameError},
        never more input than it was fed, and keeps at most a partial
        header between feeds.
        """
        parser = PtyFrameParser()
        fed = given_back = 0
        for chunk in chunks:
            fed += len(chunk)
            try:
                events = parser.feed(chunk)
            except PtyFrameError:
                return
            given_back += sum(len(e.data) for e in events if type(e) is Input)
            self.assertLess(len(parser._header), 4)
            self.assertLessEqual(given_back, fed)


class CommandAndPrivilegeTests(SynchronousTestCase):
    def test_command_line_as_uwsgi(self):
        """
        A command with a space runs through /bin/sh -c; one without is
        executed alone.
        """
        self.assertEqual(commandLine("/bin/sh"), ["/bin/sh"])
        self.assertEqual(commandLine("top -b"), ["/bin/sh", "-c", "top -b"])

    def test_root_refused_without_allow_root_or_uid(self):
        self.assertRaises(ValueError, checkPrivileges, False, None, euid=0)
        self.assertRaises(ValueError, checkPrivileges, False, 0, euid=0)
        checkPrivileges(True, None, euid=0)
        checkPrivileges(False, 1000, euid=0)
        checkPrivileges(False, None, euid=1000)

    def test_config_needs_bind(self):
        self.assertRaises(ValueError, PtyRouterConfig)
        self.assertRaises(ValueError, PtyRouterConfig, bind=["unix:/x"], rows=0)

    def test_build_gives_a_service_over_the_router(self):
        service = buildService(
            PtyRouterConfig(bind=["unix:/nonexistent/x.sock"], allow_root=True, rows=40,
                            uwsgi_framed=True),
            MemoryReactorClock(),
        )
        self.assertIsInstance(service.router, PtyRouter)
        self.assertEqual((service.router.rows, service.router.uwsgiFramed), (40, True))


class FakeProcess(StringTransport):
    """
    The C{IProcessTransport} of a spawned child: what is written to its
    terminal, the signals it was sent.
    """

    pid = 4242

    def __init__(self, protocol, argv, usePTY) -> None:
        super().__init__()
        self.protocol = protocol
        self.argv = argv
        self.fd, slave, _ = usePTY
        os.close(slave)
        self.signals = []
        self.exited = False

    def signalProcess(self, number):
        if self.exited:
            raise ProcessExitedAlready()
        self.signals.append(number)

    def end(self):
        """
        The child exits and its terminal is closed.
        """
        self.exited = True
        os.close(self.fd)
        self.protocol.processEnded(Failure(ProcessDone(0)))


class SpawningReactor(MemoryReactorClock):
    def __init__(self) -> None:
        super().__init__()
        self.processes = []

    def spawnProcess(self, protocol, executable, args=(), env={}, path=None, uid=None,
                     gid=None, usePTY=0, childFDs=None):
        assert usePTY and executable == args[0]
        process = FakeProcess(protocol, args, usePTY)
        protocol.makeConnection(process)
        self.processes.append(process)
        return process


def windowSize(fd):
    rows, cols, _, _ = struct.unpack("HHHH", fcntl.ioctl(fd, termios.TIOCGWINSZ, b"\0" * 8))
    return rows, cols


class SessionTests(SynchronousTestCase):
    """
    A L{PtySession} between a client's L{StringTransport} and a fake child.
    """

    def connect(self, **options):
        self.reactor = SpawningReactor()
        self.router = PtyRouter(self.reactor, **options)
        session = self.router.buildProtocol(None)
        client = StringTransport()
        session.makeConnection(client)
        process = self.reactor.processes[-1]
        self.addCleanup(lambda: process.exited or os.close(process.fd))
        return session, client, process

    def test_raw_bytes_both_ways_on_a_sized_window(self):
        session, client, process = self.connect(command="top -b", rows=30, cols=100)
        self.assertEqual(process.argv, ["/bin/sh", "-c", "top -b"])
        self.assertEqual(windowSize(process.fd), (30, 100))
        session.dataReceived(b"\x00\x05\x00\x64echo\n")
        self.assertEqual(process.value(), b"\x00\x05\x00\x64echo\n")
        process.protocol.childDataReceived(1, b"out")
        self.assertEqual(client.value(), b"out")

    def test_back_pressure_both_ways(self):
        """
        Each side's transport pauses the other's reading.
        """
        session, client, process = self.connect()
        client.producer.pauseProducing()
        self.assertEqual(process.producerState, "paused")
        client.producer.resumeProducing()
        self.assertEqual(process.producerState, "producing")
        process.producer.pauseProducing()
        self.assertEqual(client.producerState, "paused")

    def test_uwsgi_frames(self):
        """
        Data frames reach the terminal, window frames resize it, other
        frames signal the child.
        """
        session, client, process = self.connect(uwsgi_framed=True)
        session.dataReceived(encodeFrame(ROWS, 50) + encodeFrame(COLS, 132) + data(b"ls\r"))
        session.dataReceived(encodeFrame(signal.SIGINT))
        self.assertEqual(process.value(), b"ls\r")
        self.assertEqual(windowSize(process.fd), (50, 132))
        self.assertEqual(process.signals, [signal.SIGINT])

    def test_bad_frame_hangs_up(self):
        session, client, process = self.connect(uwsgi_framed=True)
        session.dataReceived(encodeFrame(200))
        self.assertEqual(process.signals, [signal.SIGHUP])
        self.assertTrue(process.disconnecting)
        process.end()
        self.assertTrue(client.disconnecting)

    def test_client_gone_hup_then_kill(self):
        """
        The client goes: SIGHUP and the terminal closed, SIGKILL after the
        grace; the session ends once the child is reaped.
        """
        session, client, process = self.connect(hangup_grace=3)
        session.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(process.signals, [signal.SIGHUP])
        self.assertTrue(process.disconnecting)
        self.reactor.advance(2.9)
        self.assertEqual(process.signals, [signal.SIGHUP])
        self.reactor.advance(0.1)
        self.assertEqual(process.signals, [signal.SIGHUP, signal.SIGKILL])
        self.assertIn(session, self.router.sessions)
        process.end()
        self.assertEqual(self.router.sessions, set())
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_command_exits_client_closed_after_output(self):
        session, client, process = self.connect()
        process.protocol.childDataReceived(1, b"bye")
        process.end()
        self.assertEqual(client.value(), b"bye")
        self.assertTrue(client.disconnecting)
        self.assertEqual(process.signals, [])
        session.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(self.router.sessions, set())
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_idle_timeout(self):
        """
        Bytes either way put the deadline back; a session idle for
        C{timeout} seconds is hung up.
        """
        session, client, process = self.connect(timeout=10)
        self.reactor.advance(6)
        session.dataReceived(b"a")
        self.reactor.advance(6)
        process.protocol.childDataReceived(1, b"b")
        self.reactor.advance(9)
        self.assertEqual(process.signals, [])
        self.reactor.advance(1)
        self.assertEqual(process.signals, [signal.SIGHUP])

    def test_max_sessions(self):
        session, client, process = self.connect(max_sessions=1)
        self.assertIsNone(self.router.buildProtocol(None))
        process.end()
        session.connectionLost(Failure(ConnectionDone()))
        self.assertIsNotNone(self.router.buildProtocol(None))

    def test_drain_hangs_up_and_waits_for_the_children(self):
        session, client, process = self.connect()
        drained = self.router.drain(30)
        self.assertEqual(process.signals, [signal.SIGHUP])
        self.assertNoResult(drained)
        process.end()
        session.connectionLost(Failure(ConnectionDone()))
        self.successResultOf(drained)
        self.assertIsNone(self.router.buildProtocol(None))

    def test_drain_timeout_kills_and_cuts(self):
        session, client, process = self.connect(hangup_grace=60)
        drained = self.router.drain(5)
        self.reactor.advance(5)
        self.assertEqual(process.signals, [signal.SIGHUP, signal.SIGKILL])
        self.assertTrue(client.disconnecting)
        process.end()
        session.connectionLost(Failure(ConnectionDone()))
        self.successResultOf(drained)


def test_a_pty_listener_is_private_by_default():
    """
    Whoever connects gets a shell: a unix socket is made 0600 unless its
    mode is given, and a TCP listener must be on a loopback interface.
    """
    from txrouter.config import PtyRouterConfig

    assert PtyRouterConfig(bind=["unix:/run/p.sock"]).bind == ("unix:/run/p.sock:mode=600",)
    assert PtyRouterConfig(bind=["unix:/run/p.sock:mode=660"]).bind == ("unix:/run/p.sock:mode=660",)
    assert PtyRouterConfig(bind=["tcp:7000:interface=127.0.0.1"]).bind == (
        "tcp:7000:interface=127.0.0.1",)
    assert PtyRouterConfig(bind=[r"tcp6:7000:interface=\:\:1"]).bind
    for open_ in ("tcp:7000", "tcp:7000:interface=0.0.0.0", r"tcp6:7000:interface=\:\:"):
        with pytest.raises(ValueError, match="would give a shell to anyone"):
            PtyRouterConfig(bind=[open_])
