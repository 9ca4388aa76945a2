"""
C{twistd txrouter-ssl}: the SSL router (TLS in, TCP out) from the command
line.

The options are C{txrouter-raw}'s, uWSGI's TLS listeners (C{--sslrouter},
C{--sslrouter2}), C{--sslrouter-session-context}, C{--sslrouter-sni}, and
the TLS options the HTTPS router shares
(L{txrouter.tap.common.TLSOptions}); see C{docs/ssl-router.md}.
"""

from txrouter.config import SSLRouterConfig
from txrouter.tap import raw
from txrouter.tap.common import TLSOptions, makeRouterService
from txrouter.tls.specs import parseSSLRouter2


class Options(TLSOptions, raw.Options):
    """
    The options of C{txrouter-ssl}.
    """

    configClass = SSLRouterConfig
    plugin = "txrouter-ssl"

    synopsis = "--sslrouter ADDR,CRT,KEY[,CIPHERS[,CA]] (--to NODE ... | ...) [options]"
    longdesc = (
        "A TLS-terminating TCP router, a drop-in for `uwsgi --sslrouter ADDR,CRT,KEY`:"
        " the decrypted bytes go to a TCP node chosen by the listener's address or,"
        " with --sslrouter-sni, by the client's SNI name; the node is connected once"
        " the handshake is done. uWSGI's --sni options apply."
    )

    optFlags = [
        ["sslrouter-sni", None, "Route by the client's SNI name instead of the listener's address."],
    ]

    optParameters = [
        ["sslrouter-session-context", None, None,
         "The TLS session-id context of every --sslrouter listener (default: sslrouter-ADDR)."],
    ]

    def __init__(self) -> None:
        super().__init__()
        self["sslrouter"] = []

    def opt_sslrouter(self, value: str) -> None:
        """
        ADDR,CRT,KEY[,CIPHERS[,CA]]: a TLS listener (repeatable); a CA
        prefixed with ! requires a client certificate.
        """
        self["sslrouter"].append(value)

    def opt_sslrouter2(self, value: str) -> None:
        """
        addr=ADDR,cert=CRT,key=KEY[,ciphers=...][,clientca=[!]CA]: a TLS
        listener in uWSGI's key=value form (repeatable).
        """
        self.tlsListener("sslrouter", parseSSLRouter2, value)


def makeService(options, reactor=None):
    """
    Build the SSL router service described by parsed L{Options}.
    """
    return makeRouterService(options, reactor)
