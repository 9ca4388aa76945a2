"""
The access log's file is reopened on SIGUSR1, so that logrotate can move it
(C{postrotate kill -USR1 PID}) and the next lines start a new file.
"""

import os
import shutil
import signal
import tempfile
from types import SimpleNamespace

from twisted.internet.testing import MemoryReactorClock
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from tests.logs import named
from txrouter.accesslog import ReopenableFile
from txrouter.build import buildService
from txrouter.config import HTTPRouterConfig
from txrouter.signals import OnSignal


class ImmediateReactor:
    """
    Runs what a signal handler hands the reactor at once.
    """

    def callFromThread(self, f, *args, **kwargs):
        f(*args, **kwargs)


class ThreadedMemoryReactor(MemoryReactorClock):
    """
    A memory reactor that runs what a signal handler hands it on its next
    turn (C{advance}).
    """

    def callFromThread(self, f, *args, **kwargs):
        self.callLater(0, f, *args, **kwargs)


def temporaryPath(case) -> str:
    """
    A path in a directory of its own, removed when C{case} is over.
    """
    directory = tempfile.mkdtemp()
    case.addCleanup(shutil.rmtree, directory)
    return os.path.join(directory, "access.log")


def head(target: bytes):
    return SimpleNamespace(
        method=b"GET", target=target, version=b"HTTP/1.1", headers=[(b"User-Agent", b"curl")],
    )


class ReopenableFileTests(SynchronousTestCase):
    def setUp(self):
        self.path = temporaryPath(self)
        self.file = ReopenableFile(self.path)
        self.addCleanup(self.file.close)

    def test_lines_after_a_reopen_go_to_a_new_file_at_the_path(self):
        self.file.write("one\n")
        os.rename(self.path, self.path + ".1")
        self.file.write("two\n")
        self.file.reopen()
        self.file.write("three\n")
        with open(self.path + ".1") as f:
            self.assertEqual(f.read(), "one\ntwo\n")
        with open(self.path) as f:
            self.assertEqual(f.read(), "three\n")

    def test_it_appends_to_an_existing_file(self):
        self.file.write("one\n")
        self.file.reopen()
        self.file.write("two\n")
        with open(self.path) as f:
            self.assertEqual(f.read(), "one\ntwo\n")

    def test_the_bytes_of_a_request_are_written_as_they_came(self):
        self.file.write(b"caf\xc3\xa9 \xff\n".decode("latin-1"))
        with open(self.path, "rb") as f:
            self.assertEqual(f.read(), b"caf\xc3\xa9 \xff\n")

    def test_a_failed_reopen_keeps_the_old_file(self):
        events = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        self.file.write("one\n")
        os.rename(self.path, self.path + ".1")
        self.file.path = os.path.join(self.path, "not-a-directory", "log")
        self.file.reopen()
        self.file.write("two\n")
        with open(self.path + ".1") as f:
            self.assertEqual(f.read(), "one\ntwo\n")
        [failure] = named(events, "access_log_reopen_failed")
        self.assertIn("still writing to the old file", failure["log_format"])


class OnSignalTests(SynchronousTestCase):
    def test_the_signal_calls_the_action_while_running(self):
        calls = []
        service = OnSignal(ImmediateReactor(), signal.SIGUSR1, lambda: calls.append("reopen"))
        before = signal.getsignal(signal.SIGUSR1)
        service.startService()
        try:
            signal.raise_signal(signal.SIGUSR1)
        finally:
            service.stopService()
        self.assertEqual(calls, ["reopen"])
        self.assertIs(signal.getsignal(signal.SIGUSR1), before)

    def test_the_previous_handler_is_still_called(self):
        """
        twistd logging to a file rotates its log on SIGUSR1: that goes on.
        """
        calls = []
        previous = signal.signal(signal.SIGUSR1, lambda signum, frame: calls.append("twistd"))
        self.addCleanup(signal.signal, signal.SIGUSR1, previous)
        service = OnSignal(ImmediateReactor(), signal.SIGUSR1, lambda: calls.append("ours"))
        service.startService()
        self.addCleanup(service.stopService)
        signal.raise_signal(signal.SIGUSR1)
        self.assertEqual(sorted(calls), ["ours", "twistd"])

    def test_a_failing_action_is_logged(self):
        events = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        service = OnSignal(ImmediateReactor(), signal.SIGHUP, lambda: 1 / 0)
        service.startService()
        self.addCleanup(service.stopService)
        signal.raise_signal(signal.SIGHUP)
        [failure] = named(events, "signal_action_failed")
        self.assertEqual(failure["signal"], "SIGHUP")
        self.flushLoggedErrors(ZeroDivisionError)


class BuiltAccessLogTests(SynchronousTestCase):
    def test_sigusr1_moves_the_router_to_a_new_file(self):
        """
        The router built with C{access_log} logs to the path; after a
        rename and SIGUSR1 (what logrotate does), its next line is in a
        new file at the path.
        """
        path = temporaryPath(self)
        reactor = ThreadedMemoryReactor()
        service = buildService(
            HTTPRouterConfig(bind=["tcp:0"], to=["/run/a.sock"], access_log=path), reactor,
        )
        accessLog = service.router.accessLog
        [reopener] = [child for child in service if isinstance(child, OnSignal)]
        self.assertEqual(reopener.signum, signal.SIGUSR1)
        reopener.startService()
        self.addCleanup(reopener.stopService)
        accessLog.log(b"10.0.0.1", head(b"/before"), 200, 5)
        os.rename(path, path + ".1")
        signal.raise_signal(signal.SIGUSR1)
        reactor.advance(0)
        accessLog.log(b"10.0.0.1", head(b"/after"), 200, 5)
        with open(path + ".1") as f:
            rotated = f.read()
        with open(path) as f:
            current = f.read()
        self.assertIn('"GET /before HTTP/1.1" 200 5', rotated)
        self.assertNotIn("/after", rotated)
        self.assertIn('"GET /after HTTP/1.1" 200 5', current)
