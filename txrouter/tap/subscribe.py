"""
C{twistd txrouter-subscribe}: announce a backend to subscription servers.

What C{uwsgi --subscribe2 server=...,key=...,addr=...} does for a uWSGI
instance, for a backend that is not one: the node joins the key's pool on
every C{--subscribe-to} server while this runs, and leaves when it stops.
Option names are those of uWSGI's C{--subscribe2} keys (C{addr} is
C{--address}, C{sign} is C{--sign}, ...) and of its global options
(C{--subscribe-freq} is C{--frequency}); see C{docs/subscriptions.md}.
"""

import sys

from twisted.python import usage

from txrouter.subscription.addresses import parseDatagramAddress
from txrouter.subscription.client import (
    DEFAULT_FREQUENCY,
    PROTOCOLS,
    SubscriberService,
    nodeSubscription,
    readSigningKey,
)
from txrouter.tap.common import algorithm, byte, count, runningReactor
from txrouter.tap.mistakes import parseInOneLine


def protocol(value: str) -> str:
    if value not in PROTOCOLS:
        raise ValueError(f"must be uwsgi or http, not {value!r}")
    return value


def frequency(value: str) -> float:
    number = float(value)
    if not number > 0:
        raise ValueError(f"must be above 0: {value!r}")
    return number


class Options(usage.Options):
    """
    The options of C{txrouter-subscribe}.
    """

    synopsis = (
        "--subscribe-to SERVER [--subscribe-to SERVER ...] --key KEY --address ADDR [options]"
    )
    longdesc = (
        "Announce a backend that does not subscribe itself (a uWSGI instance"
        " without --subscribe-to, or any server speaking what the routers send"
        " it: the uwsgi protocol, for the FastRouter and the HTTP router; plain"
        " HTTP, for the HTTP router, with --proto http) to"
        " uWSGI or txrouter subscription servers: a subscribe datagram at start"
        " and every --frequency seconds, signed with --sign, and an unsubscribe"
        " on stop (SIGINT, SIGTERM). The datagrams are those uWSGI 2.0.21's"
        " client sends."
    )

    optParameters = [
        ["key", None, None,
         "The pool to join, exact bytes: the Host name requests carry (with :port if they"
         " carry one)."],
        ["address", None, None,
         "Where routers reach the backend, in uWSGI's spelling: ip:port, :port (the"
         " subscriber's own IP, for a txrouter server), /path/to.sock or @abstract."],
        ["frequency", None, DEFAULT_FREQUENCY,
         "Seconds between announces (uWSGI's --subscribe-freq); keep it well under the"
         " routers' --subscription-tolerance (17).", frequency],
        ["weight", None, 0, "The node's weight for wrr/wlrc (0 counts as 1).", count],
        ["modifier1", None, 0, "The modifier1 routers write on requests to the node.", byte],
        ["modifier2", None, 0, "The modifier2 routers write on requests to the node.", byte],
        ["backup", None, None,
         "Backup level (uWSGI 2.1's backup; 0 for a primary): serves only while no"
         " lower level is there. uWSGI 2.0.21 ignores it.", count],
        ["cores", None, 1, "The cores value announced (informational, shown in stats).", count],
        ["sign", None, None,
         "Sign every announce: DIGEST:PRIVATE_KEY_FILE (e.g. SHA256:/etc/keys/k.pem);"
         " the servers check with DIR/<key>.pem."],
        ["notify", None, None,
         "A unix datagram socket path where a router acknowledges the new node"
         " (uWSGI's --subscription-notify-socket)."],
        ["sni-key", None, None, "TLS key for the key's SNI name (a path on the router host)."],
        ["sni-crt", None, None, "TLS certificate for the key's SNI name (likewise)."],
        ["sni-ca", None, None, "TLS client CA for the key's SNI name (likewise)."],
        ["algo", None, None,
         "Balancing of a pool this node creates (uWSGI 2.1's algo): wrr, lrc, wlrc or"
         " iphash. uWSGI 2.0.21 ignores it.", algorithm],
        ["proto", None, "uwsgi",
         "What the backend speaks: uwsgi, or http (a plain HTTP server: announced with"
         " uWSGI 2.1's proto=http, and sent HTTP/1.1 requests by txrouter-http and"
         " uWSGI 2.1's HTTP router; uWSGI 2.0.21 ignores it).", protocol],
    ]

    def __init__(self) -> None:
        super().__init__()
        self["subscribe-to"] = []

    def parseOptions(self, options=None) -> None:
        """
        Parse C{options} (C{sys.argv}'s by default), a mistake said in one
        line, as the routers' (L{txrouter.tap.mistakes}).
        """
        parseInOneLine(self, list(sys.argv[1:] if options is None else options))

    def opt_subscribe_to(self, server: str) -> None:
        """
        A subscription server to announce to (repeatable): ip:port, /path or @name.
        """
        try:
            self["subscribe-to"].append(parseDatagramAddress(server))
        except ValueError as e:
            raise usage.UsageError(f"--subscribe-to: {e}")

    def announceArguments(self) -> dict:
        """
        The announce's keyword arguments, as L{nodeSubscription} and
        L{SubscriberService} take them.
        """
        return dict(
            key=self["key"],
            address=self["address"],
            weight=self["weight"],
            modifier1=self["modifier1"],
            modifier2=self["modifier2"],
            backup=self["backup"],
            cores=self["cores"],
            notify=self["notify"],
            sni_key=self["sni-key"],
            sni_crt=self["sni-crt"],
            sni_ca=self["sni-ca"],
            algo=self["algo"],
            proto=self["proto"],
        )

    def postOptions(self) -> None:
        if not self["subscribe-to"]:
            raise usage.UsageError("at least one --subscribe-to SERVER is required")
        for name in ("key", "address"):
            if not self[name]:
                raise usage.UsageError(f"--{name} is required")
        try:
            nodeSubscription(**self.announceArguments())
        except ValueError as e:
            raise usage.UsageError(str(e))
        if self["sign"]:
            try:
                self["sign"] = readSigningKey(self["sign"])
            except ValueError as e:
                raise usage.UsageError(f"--sign: {e}")


def makeService(options, reactor=None):
    """
    The L{SubscriberService} described by parsed L{Options}.
    """
    if reactor is None:
        reactor = runningReactor()
    return SubscriberService(
        reactor,
        options["subscribe-to"],
        frequency=options["frequency"],
        sign=options["sign"] or None,
        **options.announceArguments(),
    )
