"""
C{twistd txrouter-raw}: the raw TCP router from the command line.

Option names are uWSGI's C{--rawrouter-*} names without the prefix
(C{--rawrouter-to} is C{--to}, C{--rawrouter-max-retries} is
C{--max-retries}, C{--rawrouter-xclient} is C{--xclient}); see
C{docs/raw-router.md}.
"""

from txrouter.config import RawRouterConfig
from txrouter.tap.common import RouterOptions, makeRouterService


class Options(RouterOptions):
    """
    The options of C{txrouter-raw}.
    """

    configClass = RawRouterConfig
    plugin = "txrouter-raw"

    synopsis = "--bind ENDPOINT (--to NODE ... | --subscription-server ADDR | ...) [options]"
    longdesc = (
        "A TCP router (bytes in, bytes out), a drop-in for `uwsgi --rawrouter ADDR`."
        " Each connection is routed by the address of the listener that accepted"
        " it (uWSGI's spelling of --bind: tcp:9100:interface=127.0.0.1 is"
        " 127.0.0.1:9100, tcp:9100 is :9100), or by --key. The request-body"
        " options of the other routers (--post-buffering, --limit-post,"
        " --min-body-rate, --retry-methods) do not apply."
    )

    optFlags = [
        ["xclient", None,
         "Withhold the node's greeting line and send it XCLIENT ADDR=<client address>"
         " (Postfix; uWSGI's --rawrouter-xclient)."],
        ["send-proxy", None, "Send nodes a PROXY protocol v1 header naming the client."],
        ["send-proxy-v2", None,
         "Send nodes a PROXY protocol v2 header naming the client (and the TLS"
         " server name it asked for, when known)."],
    ]

    optParameters = [
        ["key", None, None, "Route every connection by this key instead of its listener's address."],
    ]


def makeService(options, reactor=None):
    """
    Build the raw router service described by parsed L{Options}.
    """
    return makeRouterService(options, reactor)
