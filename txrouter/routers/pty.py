"""
The forkpty router: a command on a new pseudo-terminal for every client
(uWSGI's C{--forkptyrouter} and C{--forkptyurouter}, reference section 8).

Each accepted connection spawns the command (C{/bin/sh} by default; a
command containing a space runs as C{/bin/sh -c COMMAND}, as uWSGI) with
C{reactor.spawnProcess(..., usePTY=...)} on a terminal opened here with the
configured window size already set, so the command never sees a 0x0
window.  Bytes go both ways with back-pressure: the client's connection
pauses the terminal's reading when it cannot keep up, and the other way
round.  The terminal's output is always relayed raw.  In uwsgi mode
(C{uwsgi_framed}), the client's bytes are the frames of
L{txrouter.wire.ptyframes}: data for the terminal, window rows and columns
(C{TIOCSWINSZ} on the terminal), signals for the child.

A session ends on every path with its child reaped and its terminal
closed:

  - the client goes away, or sends a frame that is refused: the child gets
    C{SIGHUP} (and the terminal is closed, which hangs it up too), then
    C{SIGKILL} if it is still there after C{hangup_grace} seconds;
  - the command exits: the client is closed once the command's last output
    is written to it;
  - nothing moves either way for C{timeout} seconds: as if the client had
    gone;
  - the router stops (L{PtyRouter.drain}): every session is hung up alike.

The spawned commands get the router's environment and working directory,
as uWSGI's do.  Who may connect gets a shell as the router's user (or
C{uid}/C{gid}): L{checkPrivileges} refuses to serve root shells unless
asked.
"""

import fcntl
import os
import signal
import struct
import termios

from twisted.internet.defer import Deferred, succeed
from twisted.internet.error import ProcessExitedAlready
from twisted.internet.interfaces import IPushProducer
from twisted.internet.protocol import ProcessProtocol, Protocol, ServerFactory
from twisted.logger import Logger
from zope.interface import implementer

from txrouter.wire.ptyframes import Input, PtyFrameError, PtyFrameParser, Signal, WindowCols

__all__ = ["PtyRouter", "PtySession", "checkPrivileges", "commandLine", "setWindowSize"]

log = Logger(namespace="txrouter.pty")

#: Seconds a hung-up child has before it is killed.
HANGUP_GRACE = 3.0

_WINSIZE = struct.Struct("HHHH")


def commandLine(command: str) -> "list[str]":
    """
    The argv of C{command} as uWSGI runs it: a command containing a space
    is C{/bin/sh -c COMMAND}, any other is executed as is, with no
    argument.
    """
    if " " in command:
        return ["/bin/sh", "-c", command]
    return [command]


def setWindowSize(fd: int, rows: int, cols: int) -> None:
    """
    Set the window size of the terminal C{fd} (C{TIOCSWINSZ}); its
    foreground process group gets C{SIGWINCH}.
    """
    fcntl.ioctl(fd, termios.TIOCSWINSZ, _WINSIZE.pack(rows, cols, 0, 0))


def checkPrivileges(allow_root: bool, uid: "int | None", euid: "int | None" = None) -> None:
    """
    Refuse to give whoever connects a root shell by mistake: a router
    running as root must be given C{allow_root}, or a C{uid} other than 0
    for the commands.

    @param euid: the router's effective user id (default: this process's).
    @raise ValueError: it would.
    """
    if euid is None:
        euid = os.geteuid()
    if euid == 0 and not allow_root and (uid is None or uid == 0):
        raise ValueError(
            "--allow-root: running as root, every client would get a root shell;"
            " give --uid USER for the commands, or --allow-root if that is meant"
        )


def openTerminal(rows: int, cols: int) -> "tuple[int, int, str]":
    """
    A new pseudo-terminal with a C{rows}x{cols} window: its master and slave
    descriptors and the slave's name, as C{spawnProcess}'s C{usePTY} takes
    them.
    """
    master, slave = os.openpty()
    try:
        setWindowSize(master, rows, cols)
        return master, slave, os.ttyname(slave)
    except BaseException:
        os.close(master)
        os.close(slave)
        raise


class PtyRouter(ServerFactory):
    """
    The factory of a forkpty router's listeners; every option of
    C{twistd txrouter-pty} is a keyword argument of the same name.

    @ivar sessions: the sessions not over yet (client connected, or child
        not yet reaped).
    @ivar forwarder: L{None}: there are no nodes (cheap mode does not
        apply).
    """

    noisy = False
    forwarder = None
    draining = False

    def __init__(
        self,
        reactor,
        *,
        command: str = "/bin/sh",
        rows: int = 24,
        cols: int = 80,
        timeout: float = 60.0,
        uwsgi_framed: bool = False,
        max_sessions: int = 0,
        uid: "int | None" = None,
        gid: "int | None" = None,
        hangup_grace: float = HANGUP_GRACE,
        openTerminal=openTerminal,
    ) -> None:
        """
        @param command: what each client runs (see L{commandLine}).
        @param rows: the window's rows until the client sets them.
        @param cols: the window's columns until the client sets them.
        @param timeout: idle seconds (no byte either way) before a session
            is hung up; 0 for none.
        @param uwsgi_framed: the clients send uwsgi frames
            (C{--forkptyurouter}, C{uwsgi --pty-uconnect}), not raw bytes.
        @param max_sessions: the most sessions at once (0: no limit); a
            client beyond it is closed at once.
        @param uid: the user the commands run as (L{None}: the router's).
        @param gid: the group the commands run as (L{None}: the router's).
        @param hangup_grace: seconds between a child's C{SIGHUP} and its
            C{SIGKILL}.
        @param openTerminal: makes the pseudo-terminals (tests give their
            own).
        """
        self.reactor = reactor
        self.argv = commandLine(command)
        self.rows = rows
        self.cols = cols
        self.timeout = timeout
        self.uwsgiFramed = uwsgi_framed
        self.maxSessions = max_sessions
        self.uid = uid
        self.gid = gid
        self.hangupGrace = hangup_grace
        self.openTerminal = openTerminal
        self.sessions = set()
        self._drainWaiters = []

    def buildProtocol(self, addr):
        """
        A session, or L{None} (the connection is closed) past
        C{max_sessions} or while draining.
        """
        if self.draining:
            return None
        if self.maxSessions and len(self.sessions) >= self.maxSessions:
            log.warn(
                "pty_session_refused: {count} sessions already (--max-sessions)",
                event="pty_session_refused", count=len(self.sessions),
            )
            return None
        return PtySession(self)

    def spawn(self, processProtocol):
        """
        Spawn the command for C{processProtocol} on a new terminal.

        @return: its C{IProcessTransport}.
        """
        master, slave, name = self.openTerminal(self.rows, self.cols)
        try:
            return self.reactor.spawnProcess(
                processProtocol, self.argv[0], self.argv, env=None,
                uid=self.uid, gid=self.gid, usePTY=(master, slave, name),
            )
        except BaseException:
            os.close(master)
            os.close(slave)
            raise

    def drain(self, timeout: float):
        """
        Hang every session up (their children get C{SIGHUP}, then
        C{SIGKILL}); listeners must already have stopped accepting.

        @param timeout: seconds after which the clients still connected are
            aborted.
        @return: a Deferred that fires when every child is reaped and every
            client gone.
        """
        self.draining = True
        for session in list(self.sessions):
            session.hangUp("router_stopping")
        if not self.sessions:
            return succeed(None)
        waiter = Deferred()
        self._drainWaiters.append(waiter)
        call = self.reactor.callLater(timeout, self._abortAll)
        waiter.addBoth(lambda result: (call.active() and call.cancel(), result)[1])
        return waiter

    def _abortAll(self) -> None:
        for session in list(self.sessions):
            session.abort()

    def sessionEnded(self, session) -> None:
        """
        Called by a session once its client is gone and its child reaped.
        """
        self.sessions.discard(session)
        if self.draining and not self.sessions:
            waiters, self._drainWaiters = self._drainWaiters, []
            for waiter in waiters:
                waiter.callback(None)


@implementer(IPushProducer)
class _Pauses:
    """
    The producer a transport registers on behalf of another: pausing and
    resuming reach C{target}; stopping does nothing, the session ends both
    sides itself.
    """

    def __init__(self, target) -> None:
        self.target = target

    def pauseProducing(self) -> None:
        self.target.pauseProducing()

    def resumeProducing(self) -> None:
        self.target.resumeProducing()

    def stopProducing(self) -> None:
        pass


class _Terminal(ProcessProtocol):
    """
    The child's side of a L{PtySession}.
    """

    def __init__(self, session: "PtySession") -> None:
        self.session = session

    def childDataReceived(self, childFD: int, data: bytes) -> None:
        self.session.outputReceived(data)

    def processEnded(self, reason) -> None:
        self.session.childEnded(reason.value)


class PtySession(Protocol):
    """
    One client and the command it runs on its own terminal.

    @ivar process: the child's C{IProcessTransport} (its C{fd} is the
        terminal's master side).
    @ivar parser: the L{PtyFrameParser} in uwsgi mode, else L{None}.
    @ivar clientGone: the client's connection is lost.
    @ivar childGone: the child is reaped and its terminal closed.
    """

    process = None
    parser = None
    clientGone = False
    childGone = True
    _hungUp = False
    _idle = None
    _kill = None

    def __init__(self, router: PtyRouter) -> None:
        self.router = router
        self.rows = router.rows
        self.cols = router.cols

    # The client

    def connectionMade(self) -> None:
        router = self.router
        router.sessions.add(self)
        if router.uwsgiFramed:
            self.parser = PtyFrameParser()
        try:
            self.process = router.spawn(_Terminal(self))
        except Exception as e:
            log.error("pty_spawn_failed: {error}", event="pty_spawn_failed", error=str(e))
            self.transport.loseConnection()
            return
        self.childGone = False
        self.transport.registerProducer(_Pauses(self.process), True)
        self.process.registerProducer(_Pauses(self.transport), True)
        if router.timeout:
            self._idle = router.reactor.callLater(router.timeout, self._timedOut)

    def dataReceived(self, data: bytes) -> None:
        if self._hungUp or self.childGone:
            return
        self._touch()
        if self.parser is None:
            self.process.write(data)
            return
        try:
            events = self.parser.feed(data)
        except PtyFrameError as e:
            log.warn("{event}: {detail}", event=e.event, detail=e.detail)
            self.hangUp(e.event)
            return
        for event in events:
            self._apply(event)

    def _apply(self, event) -> None:
        kind = type(event)
        if kind is Input:
            self.process.write(event.data)
        elif kind is Signal:
            self._signal(event.number)
        else:
            if kind is WindowCols:
                self.cols = event.cols
            else:
                self.rows = event.rows
            try:
                setWindowSize(self.process.fd, self.rows, self.cols)
            except OSError:
                pass  # the terminal is closing: its child is going too

    def connectionLost(self, reason) -> None:
        self.clientGone = True
        self.hangUp("client_gone")
        self._maybeEnded()

    # The child

    def outputReceived(self, data: bytes) -> None:
        if not self.clientGone:
            self._touch()
            self.transport.write(data)

    def childEnded(self, reason) -> None:
        """
        The child is reaped and its terminal closed: the client is closed
        after the output it was sent.
        """
        self.childGone = True
        self._cancelTimers()
        if not self.clientGone:
            self.transport.unregisterProducer()
            self.transport.loseConnection()
        self._maybeEnded()

    # Ending

    def hangUp(self, why: str) -> None:
        """
        End the session: the child gets C{SIGHUP} and its terminal is
        closed, then C{SIGKILL} after the router's C{hangup_grace}; the
        client is closed once the child is reaped.
        """
        if self._hungUp:
            return
        self._hungUp = True
        if self._idle is not None and self._idle.active():
            self._idle.cancel()
        if self.childGone:
            if not self.clientGone:
                self.transport.loseConnection()
            return
        log.info("pty_hangup: {why}, pid {pid}", event="pty_hangup", why=why, pid=self.process.pid)
        self._signal(signal.SIGHUP)
        self.process.unregisterProducer()
        self.process.loseConnection()
        self._kill = self.router.reactor.callLater(self.router.hangupGrace, self._killChild)

    def abort(self) -> None:
        """
        End the session now: the child is killed, the client cut.
        """
        self.hangUp("aborted")
        if not self.childGone:
            self._signal(signal.SIGKILL)
        if not self.clientGone:
            self.transport.abortConnection()

    def _killChild(self) -> None:
        self._kill = None
        log.warn(
            "pty_kill: pid {pid} still there {grace} s after SIGHUP",
            event="pty_kill", pid=self.process.pid, grace=self.router.hangupGrace,
        )
        self._signal(signal.SIGKILL)

    def _signal(self, number: int) -> None:
        if self.childGone:
            return
        try:
            self.process.signalProcess(number)
        except (ProcessExitedAlready, OSError):
            pass

    def _timedOut(self) -> None:
        self._idle = None
        log.info("pty_timeout: idle for {timeout} s", event="pty_timeout", timeout=self.router.timeout)
        self.hangUp("timeout")

    def _touch(self) -> None:
        if self._idle is not None:
            self._idle.reset(self.router.timeout)

    def _cancelTimers(self) -> None:
        for call in (self._idle, self._kill):
            if call is not None and call.active():
                call.cancel()
        self._idle = self._kill = None

    def _maybeEnded(self) -> None:
        if self.clientGone and self.childGone:
            self._cancelTimers()
            self.router.sessionEnded(self)
