"""
The systemd notifier (L{txrouter.systemd}) on a datagram socket made here.
"""

import os
import socket

from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from txrouter.build import buildService
from txrouter.config import FastRouterConfig
from txrouter.privileges import DropPrivileges
from txrouter.systemd import NOTIFY_SOCKET, SystemdNotifier, notifyAddress


class NotifyAddressTests(SynchronousTestCase):
    def test_addresses(self):
        self.assertIsNone(notifyAddress({}))
        self.assertIsNone(notifyAddress({NOTIFY_SOCKET: ""}))
        self.assertEqual(notifyAddress({NOTIFY_SOCKET: "/run/systemd/notify"}), "/run/systemd/notify")
        self.assertEqual(notifyAddress({NOTIFY_SOCKET: "@abc"}), "\0abc")


class NotifierTests(SynchronousTestCase):
    def setUp(self):
        directory = self.mktemp()
        os.mkdir(directory)
        self.path = os.path.join(directory, "notify")
        self.systemd = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.addCleanup(self.systemd.close)
        self.systemd.bind(self.path)
        self.systemd.setblocking(False)

    def test_ready_when_running_then_stopping(self):
        self.patch(os, "environ", dict(os.environ, NOTIFY_SOCKET=self.path))
        reactor = MemoryReactorClock()
        notifier = SystemdNotifier(reactor, self.path)
        notifier.privilegedStartService()
        self.assertNotIn(NOTIFY_SOCKET, os.environ, "no child speaks for the router")
        notifier.startService()
        self.assertRaises(BlockingIOError, self.systemd.recv, 100)
        reactor.run()
        self.assertEqual(self.systemd.recv(100), b"READY=1\nSTATUS=listening")
        notifier.stopService()
        self.assertEqual(self.systemd.recv(100), b"STOPPING=1\nSTATUS=draining")

    def test_nobody_listening_is_logged_not_raised(self):
        events = []
        from twisted.logger import globalLogPublisher

        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        notifier = SystemdNotifier(MemoryReactorClock(), self.path + ".missing")
        notifier.privilegedStartService()
        notifier.startService()
        notifier.stopService()
        self.assertEqual([e["event"] for e in events if e.get("event", "").startswith("systemd")],
                         ["systemd_notify_failed"])


class BuildTests(SynchronousTestCase):
    def test_before_the_switch_after_the_listeners(self):
        self.patch(os, "environ", dict(os.environ, NOTIFY_SOCKET="@x"))
        self.patch(os, "geteuid", lambda: 0)
        service = buildService(
            FastRouterConfig(bind=["tcp:8000"], to=["127.0.0.1:3031"], uid=65534),
            MemoryReactorClock())
        children = list(service)
        self.assertIsInstance(children[-2], SystemdNotifier)
        self.assertEqual(children[-2].address, "\0x")
        self.assertIsInstance(children[-1], DropPrivileges)
