"""
Root's privileges given up once everything is bound: uWSGI's C{--uid} and
C{--gid}.

A router started as root (to bind port 80, to open a tun device, to
create a socket in C{/run}) binds and opens everything in twistd's
privileged phase, then L{DropPrivileges} clears the supplementary groups,
sets the group, then the user: all before the reactor runs, so before the
first client is accepted.  The supplementary groups are cleared, not set
to the user's (uWSGI calls C{initgroups()} unless given
C{--no-initgroups}; twistd's own C{--uid} does too): the router needs no
group but the one it is given.
"""

import grp
import os
import pwd

import attr
from twisted.application.service import Service
from twisted.logger import Logger

__all__ = ["Credentials", "DropPrivileges", "groupId", "userId"]

log = Logger(namespace="txrouter.privileges")


def userId(value) -> int:
    """
    The user id a C{--uid} value names: a number, or a user name.

    @raise ValueError: no such user.
    """
    if isinstance(value, int):
        return _nonNegative(value)
    if value.isdigit():
        return int(value)
    try:
        return pwd.getpwnam(value).pw_uid
    except KeyError:
        raise ValueError(f"no such user: {value!r}") from None


def groupId(value) -> int:
    """
    The group id a C{--gid} value names: a number, or a group name.

    @raise ValueError: no such group.
    """
    if isinstance(value, int):
        return _nonNegative(value)
    if value.isdigit():
        return int(value)
    try:
        return grp.getgrnam(value).gr_gid
    except KeyError:
        raise ValueError(f"no such group: {value!r}") from None


def _nonNegative(number: int) -> int:
    if number < 0:
        raise ValueError(f"must not be negative: {number}")
    return number


@attr.frozen
class Credentials:
    """
    The user and group a router runs as once everything is bound.

    @ivar uid: the user id, or L{None} to keep the user.
    @ivar gid: the group id; with a C{uid} and no group given, the user's
        primary group (uWSGI keeps root's group then).
    """

    uid: "int | None"
    gid: "int | None"

    @classmethod
    def of(cls, uid: "int | None", gid: "int | None", euid: "int | None" = None,
           egid: "int | None" = None):
        """
        The credentials C{--uid} and C{--gid} ask for, or L{None} for
        none, or when the router already runs as them (a configuration
        checked again after the switch, or a service manager that started
        it as that user).

        @param euid: the router's effective user id (default: this
            process's).
        @param egid: the router's effective group id (default: this
            process's).
        @raise ValueError: switching needs root and the router is not
            root, or a user id without a group has no passwd entry to find
            its group in; the message starts with the option's name.
        """
        if uid is None and gid is None:
            return None
        option = "--uid" if uid is not None else "--gid"
        if euid is None:
            euid = os.geteuid()
        if egid is None:
            egid = os.getegid()
        if euid != 0 and uid in (None, euid) and gid in (None, egid):
            return None
        if euid != 0:
            raise ValueError(
                f"{option}: switching users needs root (the router runs as uid {euid});"
                f" start it as root, or leave {option} out"
            )
        if uid is not None and gid is None:
            try:
                gid = pwd.getpwuid(uid).pw_gid
            except KeyError:
                raise ValueError(f"--uid: user {uid} has no passwd entry; give --gid too") from None
        return cls(uid, gid)

    def switch(self, system=os) -> None:
        """
        Clear the supplementary groups, then set the group, then the user
        (real, effective and saved ids: root cannot be regained).

        @param system: what makes the system calls (C{os}; a fake in
            tests).
        """
        system.setgroups([])
        if self.gid is not None:
            system.setgid(self.gid)
        if self.uid is not None:
            system.setuid(self.uid)


class DropPrivileges(Service):
    """
    Switch to L{Credentials} once the services before it are open.

    It must be the last child of the router's service: in twistd's
    privileged phase (C{privilegedStartService}, before the reactor runs),
    its siblings bind and open in order, then it switches; started without
    that phase (a test, a service added to a running application), it
    switches in C{startService}, after its siblings opened.

    @ivar switched: whether the switch was made.
    """

    switched = False

    def __init__(self, credentials: Credentials, system=os) -> None:
        self.credentials = credentials
        self.system = system

    def privilegedStartService(self) -> None:
        super().privilegedStartService()
        self._switch()

    def startService(self) -> None:
        super().startService()
        self._switch()

    def _switch(self) -> None:
        if self.switched:
            return
        self.credentials.switch(self.system)
        self.switched = True
        log.info(
            "privileges_dropped: running as uid {uid}, gid {gid}, no supplementary groups",
            event="privileges_dropped", uid=self.system.getuid(), gid=self.system.getgid(),
        )
