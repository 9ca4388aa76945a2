"""
The privilege switch (L{txrouter.privileges}) against a fake system: what
C{--uid} and C{--gid} ask for, the order of the calls, and when the switch
happens among the router's services.  C{tests/test_e2e_privileges.py} checks
a real process.
"""

import grp
import pwd

from twisted.application.service import MultiService, Service
from twisted.internet.testing import MemoryReactorClock
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from txrouter.build import buildService
from txrouter.config import FastRouterConfig, HTTPRouterConfig, PtyRouterConfig
from txrouter.privileges import Credentials, DropPrivileges, groupId, userId
from txrouter.tap import http

NOBODY = pwd.getpwnam("nobody")
NOGROUP = grp.getgrnam("nogroup").gr_gid


class FakeSystem:
    """
    Records the credential calls in order.
    """

    def __init__(self, calls) -> None:
        self.calls = calls

    def setgroups(self, groups):
        self.calls.append(("setgroups", groups))

    def setgid(self, gid):
        self.calls.append(("setgid", gid))

    def setuid(self, uid):
        self.calls.append(("setuid", uid))

    def getuid(self):
        return 1

    def getgid(self):
        return 2


class Opening(Service):
    """
    A sibling that opens something, as a listener does.
    """

    def __init__(self, calls, name) -> None:
        self.calls = calls
        self.label = name

    def privilegedStartService(self):
        self.calls.append(("open", self.label))


class CredentialsTests(SynchronousTestCase):
    def test_names_and_numbers(self):
        self.assertEqual(userId("nobody"), NOBODY.pw_uid)
        self.assertEqual(userId("123"), 123)
        self.assertEqual(groupId("nogroup"), NOGROUP)
        self.assertRaises(ValueError, userId, "no-such-user-here")
        self.assertRaises(ValueError, groupId, "no-such-group-here")

    def test_nothing_asked(self):
        self.assertIsNone(Credentials.of(None, None, euid=1000, egid=1000))

    def test_uid_alone_takes_the_users_primary_group(self):
        self.assertEqual(Credentials.of(NOBODY.pw_uid, None, euid=0),
                         Credentials(NOBODY.pw_uid, NOBODY.pw_gid))

    def test_gid_alone_keeps_the_user(self):
        self.assertEqual(Credentials.of(None, NOGROUP, euid=0), Credentials(None, NOGROUP))

    def test_a_uid_without_a_passwd_entry_needs_a_gid(self):
        error = self.assertRaises(ValueError, Credentials.of, 4000000, None, euid=0)
        self.assertIn("--uid: user 4000000 has no passwd entry", str(error))
        self.assertEqual(Credentials.of(4000000, 5, euid=0), Credentials(4000000, 5))

    def test_not_root(self):
        error = self.assertRaises(ValueError, Credentials.of, 65534, None, euid=1000, egid=1000)
        self.assertTrue(str(error).startswith("--uid: switching users needs root"), error)
        error = self.assertRaises(ValueError, Credentials.of, None, 65534, euid=1000, egid=1000)
        self.assertTrue(str(error).startswith("--gid: "), error)

    def test_already_switched(self):
        """
        Nothing to do, not an error, for a router already running as the
        user and group asked (its configuration checked again after the
        switch, or started as that user).
        """
        self.assertIsNone(Credentials.of(65534, 65534, euid=65534, egid=65534))
        self.assertIsNone(Credentials.of(65534, None, euid=65534, egid=1))
        self.assertRaises(ValueError, Credentials.of, 65534, 2, euid=65534, egid=1)

    def test_groups_cleared_then_group_then_user(self):
        calls = []
        Credentials(7, 8).switch(FakeSystem(calls))
        self.assertEqual(calls, [("setgroups", []), ("setgid", 8), ("setuid", 7)])

    def test_group_alone(self):
        calls = []
        Credentials(None, 8).switch(FakeSystem(calls))
        self.assertEqual(calls, [("setgroups", []), ("setgid", 8)])


class DropPrivilegesTests(SynchronousTestCase):
    def service(self, calls):
        parent = MultiService()
        Opening(calls, "listener").setServiceParent(parent)
        Opening(calls, "stats").setServiceParent(parent)
        DropPrivileges(Credentials(7, 8), FakeSystem(calls)).setServiceParent(parent)
        return parent

    def test_after_its_siblings_opened_in_the_privileged_phase(self):
        calls = []
        parent = self.service(calls)
        parent.privilegedStartService()
        self.assertEqual(calls, [("open", "listener"), ("open", "stats"),
                                 ("setgroups", []), ("setgid", 8), ("setuid", 7)])
        parent.startService()
        self.assertEqual(len(calls), 5, "switched once")

    def test_in_startService_without_the_privileged_phase(self):
        calls = []
        self.service(calls).startService()
        self.assertEqual(calls[-1], ("setuid", 7))


class BuildTests(SynchronousTestCase):
    def test_the_switch_is_the_last_service(self):
        """
        After the listeners, the stats and metrics listeners and the
        subscription sockets: everything the router binds.
        """
        self.patch(Credentials.of.__func__, "__defaults__", (0, 0))
        config = HTTPRouterConfig(
            bind=["tcp:80"], subscription_server=["127.0.0.1:7000"], stats="127.0.0.1:9191",
            metrics="127.0.0.1:9100", uid="nobody",
        )
        service = buildService(config, MemoryReactorClock())
        children = list(service)
        self.assertIsInstance(children[-1], DropPrivileges)
        self.assertEqual(children[-1].credentials, Credentials(NOBODY.pw_uid, NOBODY.pw_gid))
        self.assertEqual(sum(isinstance(child, DropPrivileges) for child in children), 1)

    def test_pty_commands_run_as_the_router(self):
        """
        The pty router switches itself; its commands inherit the user
        instead of being switched to it one by one.
        """
        self.patch(Credentials.of.__func__, "__defaults__", (0, 0))
        service = buildService(PtyRouterConfig(bind=["unix:/x"], uid=65534), MemoryReactorClock())
        self.assertIsNone(service.router.uid)
        self.assertIsInstance(list(service)[-1], DropPrivileges)

    def test_no_switch_asked(self):
        service = buildService(FastRouterConfig(bind=["tcp:8000"], to=["127.0.0.1:3031"]),
                               MemoryReactorClock())
        self.assertFalse(any(isinstance(child, DropPrivileges) for child in service))


class CommandLineTests(SynchronousTestCase):
    def test_options(self):
        self.patch(Credentials.of.__func__, "__defaults__", (0, 0))
        options = http.Options()
        options.parseOptions(["--bind", "tcp:80", "--to", "127.0.0.1:3031", "--uid", "nobody",
                              "--gid", "nogroup", "--chmod-socket", "660",
                              "--chown-socket", "nobody:nogroup"])
        config = options.config
        self.assertEqual((config.uid, config.gid), (NOBODY.pw_uid, NOGROUP))
        self.assertEqual(config.chmod_socket, 0o660)
        self.assertEqual(config.chown_socket, (NOBODY.pw_uid, NOGROUP))

    def test_bare_chmod_socket_is_666(self):
        config = HTTPRouterConfig(bind=["tcp:80"], to=["127.0.0.1:1"], chmod_socket="")
        self.assertEqual(config.chmod_socket, 0o666)

    def test_mistakes(self):
        for arguments, message in [
            (["--chmod-socket", "8"], "--chmod-socket: '8' is not an octal mode"),
            (["--chmod-socket", "1777"], "--chmod-socket: 0o1777 is not a mode"),
            (["--chown-socket", "nobody:"], "--chown-socket: 'nobody:': give USER or USER:GROUP"),
            (["--chown-socket", "no-such-user-here"], "--chown-socket: no such user"),
            (["--uid", "no-such-user-here"], "--uid: no such user"),
            (["--gid", "no-such-group-here"], "--gid: no such group"),
        ]:
            options = http.Options()
            error = self.assertRaises(
                usage.UsageError, options.parseOptions,
                ["--bind", "tcp:8080", "--to", "127.0.0.1:1", *arguments])
            self.assertIn(message, str(error))
