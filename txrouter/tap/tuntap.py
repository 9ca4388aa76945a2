"""
C{twistd txrouter-tuntap}: the TunTap router from the command line, with
uWSGI's option names (C{--tuntap-router "DEV SOCKET [STATS [GATEWAY]]"},
C{--tuntap-router-firewall-in}/C{-out}, C{--tuntap-router-route},
C{--tuntap-router-stats}).  See C{docs/tuntap-router.md}.
"""


from txrouter.config import TunTapRouterConfig
from txrouter.tap.common import ConfigOptions, ProcessOptions, makeRouterService

_REPEATED = ("tuntap-router", "tuntap-router-firewall-in", "tuntap-router-firewall-out",
             "tuntap-router-route")


class Options(ProcessOptions, ConfigOptions):
    """
    The options of C{txrouter-tuntap}.

    """

    configClass = TunTapRouterConfig
    plugin = "txrouter-tuntap"

    synopsis = '--tuntap-router "DEV SOCKET [STATS [GATEWAY]]" [options]'
    longdesc = (
        "Switches IPv4 packets between jailed uWSGI instances"
        " (`uwsgi --tuntap-device \"uwsgi0 SOCKET\"`) and a tun device, under"
        " firewall and route rules: a drop-in for `uwsgi --tuntap-router`."
        " Needs CAP_NET_ADMIN; whoever can connect to SOCKET joins the network."
    )

    optFlags = [
        ["stats-minified", None, "Stats JSON without whitespace."],
    ]

    optParameters = [
        ["tuntap-router-stats", None, None,
         "Stats address for the routers whose --tuntap-router names none."],
        ["tuntap-use-credentials", None, None,
         "true: read each peer's pid, uid and gid when it connects (shown in the"
         " stats); MODULE:FUNCTION: also assign its address, FUNCTION(pid, uid, gid)"
         " returning an IPv4 address or None to refuse it."],
    ]

    def __init__(self) -> None:
        super().__init__()
        for name in _REPEATED:
            self[name] = []

    def opt_tuntap_router(self, value: str) -> None:
        """
        "DEV SOCKET [STATS [GATEWAY]]": the tun device, the unix socket of the
        peers, a stats address, a UDP IP:PORT for routes (repeatable).
        """
        self["tuntap-router"].append(value)

    def opt_tuntap_router_firewall_in(self, value: str) -> None:
        """
        "allow|deny SRC[/BITS] DST[/BITS]", or a bare allow|deny: a rule for
        packets to peers; first match wins, default allow (repeatable).
        """
        self["tuntap-router-firewall-in"].append(value)

    def opt_tuntap_router_firewall_out(self, value: str) -> None:
        """
        "allow|deny SRC[/BITS] DST[/BITS]", or a bare allow|deny: a rule for
        packets from peers; first match wins, default allow (repeatable).
        """
        self["tuntap-router-firewall-out"].append(value)

    def opt_tuntap_router_route(self, value: str) -> None:
        """
        "SRC[/BITS] DST[/BITS] IP:PORT": matching packets from peers go as UDP
        datagrams from the gateway socket (repeatable).
        """
        self["tuntap-router-route"].append(value)



def makeService(options, reactor=None):
    """
    Build the TunTap router service described by parsed L{Options}.
    """
    return makeRouterService(options, reactor)
