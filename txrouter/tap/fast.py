"""
C{twistd txrouter-fast}: the FastRouter from the command line.

Option names are uWSGI's C{--fastrouter-*} names without the prefix
(C{--fastrouter-to} is C{--to}, C{--fastrouter-use-pattern} is
C{--use-pattern}); see C{docs/fastrouter.md}.
"""

from txrouter.config import FastRouterConfig
from txrouter.tap.common import RouterOptions, count, makeRouterService
from txrouter.wire.uwsgi import MAX_DATASIZE


class Options(RouterOptions):
    """
    The options of C{txrouter-fast}.
    """

    configClass = FastRouterConfig
    plugin = "txrouter-fast"

    synopsis = "--bind ENDPOINT (--to NODE ... | --use-pattern P | --use-base D | ...) [options]"
    longdesc = (
        "A uwsgi-protocol router (uwsgi in, uwsgi out) between nginx uwsgi_pass"
        " and uWSGI instances, a drop-in for `uwsgi --fastrouter ADDR`. Requests"
        " are routed by UWSGI_FASTROUTER_KEY, else HTTP_HOST, else SERVER_NAME."
    )

    optFlags = [
        ["keep-modifiers", None,
         "Forward the client's modifier1/modifier2 to nodes that do not set"
         " their own (uWSGI forces them to 0)."],
    ]

    optParameters = [
        ["force-key", None, None, "Route every request by this key (uWSGI 2.1's --fastrouter-force-key)."],
        ["buffer-size", None, MAX_DATASIZE,
         "Largest uwsgi vars block accepted from a client (at most 65535).", count],
    ]


def makeService(options, reactor=None):
    """
    Build the FastRouter service described by parsed L{Options}.
    """
    return makeRouterService(options, reactor)
