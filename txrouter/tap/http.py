"""
C{twistd txrouter-http}: the HTTP router from the command line.

Option names are uWSGI's C{--http-*} names without the C{http-} prefix
(C{--http-to} is C{--to}, C{--http-keepalive} is C{--keepalive}); the
options uWSGI does not have are marked as such in C{docs/http-router.md}.
"""

from txrouter.config import HTTPRouterConfig
from txrouter.tap.common import RouterOptions, byte, count, makeRouterService, positive


class Options(RouterOptions):
    """
    The options of C{txrouter-http}.
    """

    configClass = HTTPRouterConfig
    plugin = "txrouter-http"
    optionalValues = ("keepalive", "manage-expect")

    synopsis = "--bind ENDPOINT --to NODE [--to NODE ...] [options]"
    longdesc = (
        "An HTTP/1.1 router in front of uWSGI (uwsgi protocol) backends, a"
        " drop-in for `uwsgi --http ADDR --http-to NODE`. Listeners are Twisted"
        " endpoint strings (tcp:8080, tcp:8080:interface=127.0.0.1,"
        " unix:/run/r.sock, ssl:...). Nodes are uWSGI addresses (host:port,"
        " :port, /path/to.sock, @abstract) or tcp:/unix: endpoint strings."
    )

    optFlags = [
        ["chunked-input", None,
         "Pass chunked request bodies through still chunked, as uWSGI's"
         " --http-chunked-input (the backend de-chunks). Default: de-chunk"
         " and send CONTENT_LENGTH, as nginx does."],
        ["auto-chunked", None,
         "Send a response body without a length chunked to HTTP/1.1 clients,"
         " so their connection stays open (uWSGI's --http-auto-chunked)."],
        ["auto-gzip", None,
         "Gzip (and chunk) a response body without a length when the app sends"
         " uWSGI-Encoding: gzip and the client accepts gzip (--http-auto-gzip)."],
        ["raw-body", None,
         "Send what follows the head of a request without Content-Length or"
         " Transfer-Encoding to the node until the client closes (--http-raw-body)."],
        ["manage-source", None,
         "The same for SOURCE requests only: Icecast streams (--http-manage-source)."],
        ["manage-rtsp", None,
         "Take RTSP/1.0 requests, routed by the host of their rtsp:// target, and"
         " relay both ways what follows their head (--http-manage-rtsp)."],
        ["send-proxy", None,
         "Send HTTP nodes a PROXY protocol v1 header naming the client."],
        ["send-proxy-v2", None,
         "Send HTTP nodes a PROXY protocol v2 header naming the client."],
        ["websockets", None,
         "Accepted for uWSGI's --http-websockets; a 101 answer always opens a"
         " tunnel here."],
        ["http2", None,
         "Also serve HTTP/2: h2 by ALPN on TLS listeners, prior knowledge (h2c)"
         " on plain ones; each stream is one node request (docs/http2.md)."],
    ]

    optParameters = [
        ["headers-timeout", None, None,
         "Total seconds allowed to receive a request head (default: --timeout).",
         positive],
        ["body-timeout", None, None,
         "Idle seconds allowed between request body reads (default: --timeout).",
         positive],
        ["keepalive-timeout", None, 0,
         "Same as --keepalive N.", positive],
        ["buffer-size", None, 4096,
         "Largest uwsgi vars block sent to a backend; set it to the workers'"
         " --buffer-size. Larger requests get 431.", count],
        ["modifier1", None, 0, "uwsgi modifier1 sent to backends (when non-zero).", byte],
        ["modifier2", None, 0, "uwsgi modifier2 sent to backends (when non-zero).", byte],
        ["spool-memory", None, 1 << 20,
         "Bytes of a de-chunked body kept in memory before it moves to an"
         " unlinked temporary file.", count],
        ["spool-dir", None, None,
         "Directory for the temporary files of --spool-memory (default:"
         " --post-buffering-dir, else $TMPDIR)."],
        ["server-name", None, None,
         "SERVER_NAME sent to backends (default: the machine's hostname, as uWSGI)."],
        ["max-request-line", None, 8192, "Longest request line (414 above).", count],
        ["max-headers", None, 100, "Most header lines in a request (431 above).", count],
        ["max-head-size", None, 65536, "Largest request head in bytes (431 above).", count],
        ["max-response-head-size", None, 65536,
         "Largest response head a node may send, in bytes (502 above).", count],
        ["manage-expect", None, None,
         "[N] Answer an Expect other than 100-continue with 417 and, with N, a"
         " body over N bytes that waits for 100 Continue with 413 (uWSGI's"
         " --http-manage-expect [N]).", count],
        ["node-keepalive", None, 0,
         "Keep up to N idle connections per HTTP node open for later requests"
         " (nginx's keepalive); 0 closes each after its response.", count],
        ["node-keepalive-timeout", None, 4.0,
         "Seconds an idle HTTP node connection is kept.", positive],
        ["websocket-timeout", None, None,
         "Idle seconds (neither side sending) before a tunnel opened by a 101"
         " answer (a websocket) is closed (default: --timeout).", positive],
        ["http2-max-streams", None, 100,
         "HTTP/2: streams a client may have open at once"
         " (SETTINGS_MAX_CONCURRENT_STREAMS).", count],
        ["http2-max-resets", None, 100,
         "HTTP/2: streams a client may reset per second (rapid reset); past it,"
         " GOAWAY ENHANCE_YOUR_CALM and close. 0: no bound.", count],
        ["http2-max-header-block", None, 65536,
         "HTTP/2: bytes of one compressed header block (HEADERS and its"
         " CONTINUATION frames); past it, GOAWAY and close. 0: no bound.", count],
        ["http2-max-continuations", None, 32,
         "HTTP/2: CONTINUATION frames in one header block (CONTINUATION flood);"
         " past it, GOAWAY and close. 0: no bound.", count],
        ["http2-header-table-size", None, 4096,
         "HTTP/2: the HPACK dynamic table's size (SETTINGS_HEADER_TABLE_SIZE).", count],
        ["http2-max-header-list-size", None, 131072,
         "HTTP/2: decoded size of a header list (SETTINGS_MAX_HEADER_LIST_SIZE);"
         " past it (an HPACK bomb), GOAWAY and close.", count],
        ["http2-max-pings", None, 10,
         "HTTP/2: PING frames a client may send per second; past it, GOAWAY and"
         " close. 0: no bound.", count],
        ["http2-max-settings", None, 10,
         "HTTP/2: SETTINGS frames a client may send per second; past it, GOAWAY"
         " and close. 0: no bound.", count],
        ["http2-idle-timeout", None, None,
         "HTTP/2: seconds a connection without a stream stays open (default:"
         " --keepalive, else --timeout).", positive],
        ["http2-max-connection-time", None, 3600.0,
         "HTTP/2: seconds after which a connection takes no new stream (GOAWAY)"
         " and closes once its streams are done. 0: no limit.", positive],
        ["http2-window", None, 65535,
         "HTTP/2: request body bytes a stream may have in the router before its"
         " node takes them (SETTINGS_INITIAL_WINDOW_SIZE, at least 65535).", count],
        ["access-log", None, None,
         "Write a combined-format access log to this file (reopened on SIGUSR1,"
         " for logrotate), or - for stdout."],
    ]

    def __init__(self) -> None:
        super().__init__()
        self["http-var"] = []
        self["http-stud-prefix"] = []
        self["trust-forwarded-from"] = []
        self["http-to-https"] = []
        self["keepalive"] = 0

    def opt_http_to_https(self, value: str) -> None:
        """
        ADDR[,PORT]: a plain listener answering every request with a 301 to
        https://HOST[:PORT]REQUEST_URI (repeatable).
        """
        self["http-to-https"].append(value)

    def opt_http_var(self, item: str) -> None:
        """
        Add the uwsgi var KEY=VALUE to every request (repeatable).
        """
        self["http-var"].append(item)

    def opt_trust_forwarded_from(self, network: str) -> None:
        """
        Pass the client's X-Forwarded-*/Forwarded headers on only from this
        address or CIDR network (repeatable). Others are dropped.
        """
        self["trust-forwarded-from"].append(network)

    def opt_http_stud_prefix(self, address: str) -> None:
        """
        Connections from this IPv4 address (a TLS terminator such as stud
        or hitch, repeatable) start with uWSGI's 5-byte client address
        prefix, and count as HTTPS.
        """
        self["http-stud-prefix"].append(address)

    def opt_http_websockets(self) -> None:
        """
        uWSGI's spelling of --websockets.
        """
        self["websockets"] = 1

    def opt_keepalive(self) -> None:
        """
        [N] Keep client connections open between requests, N idle seconds
        (default: --timeout), as uWSGI's --http-keepalive [N].
        """
        self["keepalive"] = -1

    def rewriteArguments(self, options: list) -> list:
        """
        Accept C{--keepalive}, C{--keepalive N} and C{--keepalive=N}, and
        C{--manage-expect} with or without its N (bare: no size limit).
        """
        rewritten = []
        options = list(options)
        while options:
            arg = options.pop(0)
            if arg.startswith("--keepalive="):
                rewritten += ["--keepalive-timeout", arg.partition("=")[2]]
            elif arg == "--keepalive" and options and _isNumber(options[0]):
                rewritten += ["--keepalive-timeout", options.pop(0)]
            elif arg == "--manage-expect" and not (options and _isNumber(options[0])):
                rewritten += ["--manage-expect", "0"]
            else:
                rewritten.append(arg)
        return rewritten

    def postOptions(self) -> None:
        if self["keepalive-timeout"]:
            self["keepalive"] = self["keepalive-timeout"]
        elif self["keepalive"] == -1:
            self["keepalive"] = self["timeout"]
        super().postOptions()


def _isNumber(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def makeService(options, reactor=None):
    """
    Build the router service described by parsed L{Options}.
    """
    return makeRouterService(options, reactor)
