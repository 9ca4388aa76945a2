"""
Node health from active checks (C{--check-interval}): which nodes answer
their probes now, by HAProxy's C{fall}/C{rise} rule.

The probes themselves are L{txrouter.checks}' (they do I/O); this module
only counts their outcomes:

 - a node is up until C{fall} probes in a row failed, then down (out of
   rotation) until C{rise} probes in a row passed (HAProxy's C{fall} and
   C{rise}, with HAProxy's defaults, 3 and 2);
 - every node starts up, as HAProxy's servers do: a router started before
   its nodes is not refused by checks that have not run yet;
 - a node a client's request found dead (the static forwarder's quarantine,
   L{restart}) needs C{rise} passes in a row from then on to be confirmed
   up: its quarantine then ends at once instead of after C{--gracetime}
   (HAProxy's C{observe} with C{on-error mark-down} does the same);
 - each change is logged once: C{node_check_failed} when a node goes down,
   C{node_check_passed} when it comes back (or its quarantine ends), with
   the node and the reason.

Time comes from an injected C{IReactorTime}.
"""

from twisted.logger import Logger
from zope.interface import implementer

from txrouter.routing.interfaces import IStatsSource

log = Logger(namespace="txrouter.routing.health")

#: HAProxy's default C{fall}: failed probes in a row that take a node out.
DEFAULT_FALL = 3

#: HAProxy's default C{rise}: passed probes in a row that bring it back.
DEFAULT_RISE = 2


class NodeCheck:
    """
    What the checks know of one node.

    @ivar node: the node.
    @ivar role: C{"to"} or C{"fallback"}, the option it was given with.
    @ivar up: the checks let it serve.
    @ivar fails: probes failed in a row.
    @ivar passes: probes passed in a row (since the last L{NodeHealth.restart}).
    @ivar since: when L{up} last changed (the clock's seconds), 0 never.
    @ivar reason: what the last probe found.
    """

    def __init__(self, node, role: str) -> None:
        self.node = node
        self.role = role
        self.up = True
        self.fails = 0
        self.passes = 0
        self.since = 0.0
        self.reason = None


@implementer(IStatsSource)
class NodeHealth:
    """
    The up/down state the checks give each checked node, and who wants to
    hear of its changes.

    @ivar nodes: the checked nodes, C{--to} then C{--fallback} ones.
    @ivar fall: failed probes in a row that take a node out.
    @ivar rise: passed probes in a row that bring it back.
    """

    def __init__(self, clock, to=(), fallback=(), fall: int = DEFAULT_FALL,
                 rise: int = DEFAULT_RISE) -> None:
        self.clock = clock
        self.fall = max(fall, 1)
        self.rise = max(rise, 1)
        self._checks = {}
        for role, nodes in (("to", to), ("fallback", fallback)):
            for node in nodes:
                self._checks.setdefault(node, NodeCheck(node, role))
        self.nodes = list(self._checks)
        self._down = set()
        self._watchers = []

    def forNodes(self, to=(), fallback=()) -> "NodeHealth":
        """
        The health of another list of nodes (SIGHUP's reload), with the same
        clock and rules: a node of both lists keeps what the checks know of
        it (down stays down until C{rise} passes); a new one starts up.
        """
        health = NodeHealth(self.clock, to, fallback, self.fall, self.rise)
        for node, check in health._checks.items():
            known = self._checks.get(node)
            if known is None:
                continue
            check.up, check.fails, check.passes = known.up, known.fails, known.passes
            check.since, check.reason = known.since, known.reason
            if not known.up:
                health._down.add(node)
        return health

    def isDown(self, node) -> bool:
        """
        Whether the checks took C{node} out of rotation.
        """
        return node in self._down

    def watch(self, callback) -> None:
        """
        Call C{callback(node, up)} when C{node} goes down (C{up} false), comes
        back, or is confirmed up by C{rise} passes after a L{restart}
        (C{up} true).  A callback that returns true on a confirmation says
        the node was out of rotation and is back (its quarantine is over),
        which is logged.
        """
        self._watchers.append(callback)

    def restart(self, node) -> None:
        """
        A client's request found C{node} dead (it was put in quarantine): its
        passes count again from 0, so that C{rise} passes confirm it is back.
        """
        check = self._checks.get(node)
        if check is not None:
            check.passes = 0

    def passed(self, node, reason: str) -> None:
        """
        A probe of C{node} passed; C{reason} says what it found (C{connected},
        C{status 200}).
        """
        check = self._checks[node]
        check.fails = 0
        check.passes += 1
        check.reason = reason
        if check.passes != self.rise:
            return
        if not check.up:
            check.up = True
            check.since = self.clock.seconds()
            self._down.discard(node)
            log.info(
                "node_check_passed: {node} is up again ({reason}, {passes} checks passed in a row)",
                event="node_check_passed", node=node.name, reason=reason, passes=check.passes,
            )
            self._tell(node, True)
        elif self._tell(node, True):
            log.info(
                "node_check_passed: {node} is out of quarantine ({reason}, {passes} checks"
                " passed in a row)",
                event="node_check_passed", node=node.name,
                reason=f"{reason}; quarantine over", passes=check.passes,
            )

    def failed(self, node, reason: str) -> None:
        """
        A probe of C{node} failed for C{reason} (C{connect timed out},
        C{status 503}).
        """
        check = self._checks[node]
        check.passes = 0
        check.fails += 1
        check.reason = reason
        if check.up and check.fails >= self.fall:
            check.up = False
            check.since = self.clock.seconds()
            self._down.add(node)
            log.warn(
                "node_check_failed: {node} is down ({reason}, {fails} checks failed in a row)",
                event="node_check_failed", node=node.name, reason=reason, fails=check.fails,
            )
            self._tell(node, False)

    def _tell(self, node, up: bool) -> bool:
        told = False
        for callback in list(self._watchers):
            told = bool(callback(node, up)) or told
        return told

    def statsFields(self):
        """
        C{node_checks} (a txrouter key): each checked node, its role, state
        (C{up}, C{down}), the unix time of its last change (0: none),
        failed and passed probes in a row, and what the last probe found.
        """
        return [(
            "node_checks",
            [
                {
                    "name": check.node.name,
                    "role": check.role,
                    "state": "up" if check.up else "down",
                    "since": int(check.since),
                    "fails": check.fails,
                    "passes": check.passes,
                    "reason": check.reason,
                }
                for check in self._checks.values()
            ],
        )]
