"""
C{twistd txrouter-https}: the HTTP router with TLS listeners, from the
command line.

The options are C{txrouter-http}'s, uWSGI's TLS listeners (C{--https},
C{--https2}), C{--https-export-cert}, C{--https-session-context}, and the
TLS options the SSL router shares (L{txrouter.tap.common.TLSOptions});
see C{docs/https-router.md}.
"""

from txrouter.config import HTTPSRouterConfig
from txrouter.tap import http
from txrouter.tap.common import TLSOptions, makeRouterService
from txrouter.tls.specs import parseHTTPS2


class Options(TLSOptions, http.Options):
    """
    The options of C{txrouter-https}.
    """

    configClass = HTTPSRouterConfig
    plugin = "txrouter-https"

    synopsis = "--https ADDR,CRT,KEY[,CIPHERS[,CA]] --to NODE [--to NODE ...] [options]"
    longdesc = (
        "An HTTPS router in front of uWSGI (uwsgi protocol) backends, a drop-in for"
        " `uwsgi --https ADDR,CRT,KEY --http-to NODE`: uWSGI's --https, --https2,"
        " --sni, --sni-regexp, --sni-dir and client CAs, with TLS 1.2+ only, no weak"
        " suites, a handshake deadline and SNI names checked before use. --bind"
        " endpoint strings (tcp:, ssl:, tls:) may be added."
    )

    optFlags = [
        ["https-export-cert", None,
         "Also send a client certificate in PEM as HTTPS_CC."],
    ]

    optParameters = [
        ["https-session-context", None, None,
         "The TLS session-id context of every --https listener (default: http-ADDR)."],
    ]

    def __init__(self) -> None:
        super().__init__()
        self["https"] = []

    def opt_https(self, value: str) -> None:
        """
        ADDR,CRT,KEY[,CIPHERS[,CA]]: a TLS listener (repeatable); a CA
        prefixed with ! requires a client certificate.
        """
        self["https"].append(value)

    def opt_https2(self, value: str) -> None:
        """
        addr=ADDR,cert=CRT,key=KEY[,ciphers=...][,clientca=[!]CA]: a TLS
        listener in uWSGI's key=value form (repeatable).
        """
        self.tlsListener("https", parseHTTPS2, value)


def makeService(options, reactor=None):
    """
    Build the HTTPS router service described by parsed L{Options}.
    """
    return makeRouterService(options, reactor)
