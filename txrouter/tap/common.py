"""
What the command lines of every router share: listeners, timeouts, and the
ways to find nodes (forwarders), which every router offers alike.

The options only parse into a configuration value (L{txrouter.config}),
each option becoming the field of the same name; L{txrouter.build} makes
the services, for the command line as for a C{.tac} file.  uWSGI picks the
first configured mapper and silently ignores the others (reference section
3.3); here configuring two is a usage error.
"""

import sys

import attr
from twisted.python import usage

from txrouter.build import buildService, checkConfig
from txrouter.tap.files import absolutePaths, namingFiles, withFiles
from txrouter.tap.mistakes import explain, refuseAbbreviations, reportStartupErrors, stopWith
from txrouter.routing.balancing import ALGORITHMS
from txrouter.routing.health import DEFAULT_FALL, DEFAULT_RISE
from txrouter.routing.subscriptions import DEFAULT_MAX_NODES, DEFAULT_MAX_POOLS, DEFAULT_TOLERANCE
from txrouter.subscription.signing import DEFAULT_TOLERANCE as SIGN_TOLERANCE


def positive(value: str) -> float:
    number = float(value)
    if number < 0:
        raise ValueError(f"must not be negative: {value!r}")
    return number


def count(value: str) -> int:
    number = int(value)
    if number < 0:
        raise ValueError(f"must not be negative: {value!r}")
    return number


def byte(value: str) -> int:
    number = int(value)
    if not 0 <= number <= 255:
        raise ValueError(f"must be 0..255: {value!r}")
    return number


def processes(value: str):
    """
    A C{--processes} value: a positive number, or C{auto}.
    """
    if value == "auto":
        return value
    number = int(value)
    if number < 1:
        raise ValueError(f"must be at least 1: {value!r}")
    return number


def logFormat(value: str) -> str:
    if value not in ("combined", "json"):
        raise ValueError(f"--log-format: {value!r} is not combined or json")
    return value


def algorithm(value: str) -> str:
    """
    A C{--subscription-algo} name.
    """
    if value not in ALGORITHMS:
        raise ValueError(f"one of {', '.join(ALGORITHMS)}, not {value!r}")
    return value


#: The repeatable subscription options, each collected in a list.
_SUBSCRIPTION_LISTS = (
    "subscription-server", "subscription-allow", "subscription-node-network",
    "subscription-node-ports", "subscription-node-dir", "resubscribe",
    "proxy-protocol-from",
)


@attr.frozen
class ConfigRereader:
    """
    Reads a command line and its config files again into a configuration
    value (L{ConfigOptions.rereader}); a value, so that a C{--processes}
    pool can hand it to its workers.

    @ivar kind: the L{ConfigOptions} class of the command line.
    @ivar argv: its arguments.
    @ivar paths: the config files it names.
    """

    kind: type
    argv: tuple
    paths: tuple

    def __call__(self):
        options = self.kind()
        options.logIgnoredKeys = False
        options.checkFiles = False
        try:
            options.parseOptions(list(self.argv))
        except usage.UsageError as e:
            raise ValueError(str(e)) from None
        return options.config


class ConfigOptions(usage.Options):
    """
    A command line that parses into a configuration value
    (L{txrouter.config}): each option is the field of the same name, and
    every mistake is one usage error naming the option.  Subclasses name
    their L{configClass} and call L{ConfigOptions.postOptions}.

    C{--config FILE.toml} and C{--ini FILE.ini} (L{txrouter.tap.files})
    are read first: their options go before the command line's, so that
    the command line wins (a repeatable option given on the command line
    replaces the file's values).

    @ivar config: once parsed, the L{configClass} value the options make.
    @ivar argv: the arguments parsed, as given but for the config files'
        paths, made absolute (twistd may change directory before a
        SIGHUP reads them again).
    @ivar files: the L{txrouter.tap.files.FileArguments} read.
    """

    optParameters = [
        ["config", None, None,
         "Read options from this TOML file: the long options' names as keys, an"
         " array for a repeatable option, true/false for a flag. The command line"
         " wins. Read again on SIGHUP (see docs/operations.md)."],
        ["ini", None, None,
         "Read the router options of this uWSGI ini file's [uwsgi] section"
         " (FILE:SECTION for another), in uWSGI's names (http-to, fastrouter-use-pattern...)."
         " The command line wins. Read again on SIGHUP."],
    ]

    #: The configuration value; its fields are the options' names with
    #: underscores.
    configClass = None
    config = None
    argv = ()
    files = ()
    #: The twistd plugin these are the options of (for uWSGI's names in
    #: C{--ini}).
    plugin = None
    #: Options that take a value or none (C{--keepalive [N]}).
    optionalValues = ()
    #: Whether the keys of an ini file left aside are logged (once: not
    #: again when SIGHUP reads the file again).
    logIgnoredKeys = True
    #: Whether the files and endpoints the options name are checked
    #: (L{checkConfig}); not when SIGHUP reads the config files again:
    #: what a reload uses is checked as it is built, and the rest (a
    #: certificate, the access log), which needs a restart, may no longer
    #: be readable by the user the router switched to.
    checkFiles = True
    _origins = None

    def __init__(self) -> None:
        super().__init__()
        # An opt_ method's docstring keeps its lines' indentation, which
        # the help would show inside the text.
        self.docs = {name: " ".join(doc.split()) if doc else doc
                     for name, doc in self.docs.items()}

    def parseOptions(self, options=None) -> None:
        """
        Parse C{options} (C{sys.argv}'s by default) after the config files
        they name, every mistake said in one line that names the option
        (L{txrouter.tap.mistakes}) or the file and its key.  Run by twistd,
        a mistake ends the run with that line alone, not the whole help
        before it.
        """
        options = absolutePaths(sys.argv[1:] if options is None else options)
        self.argv = tuple(options)
        try:
            read = withFiles(self, options, self.logIgnoredKeys)
            self.files, self._origins = read.files, read.origins
            options = self.rewriteArguments(read.arguments)
            refuseAbbreviations(self, options)
            usage.Options.parseOptions(self, options)
        except usage.UsageError as e:
            reason = explain(self, options, str(e))
            if self.parent is not None:
                stopWith(self, reason)
            raise usage.UsageError(reason) from None
        if self.parent is not None:
            reportStartupErrors(self)

    def rewriteArguments(self, arguments: list) -> list:
        """
        The arguments as C{usage.Options} will parse them: a router whose
        options take an optional value spells them out here.
        """
        return arguments

    def fromFiles(self, reason: str) -> str:
        """
        C{reason}, with the file and key of each option it names that a
        config file gave (L{txrouter.tap.files.namingFiles}).
        """
        return namingFiles(self._origins or {}, reason)

    def rereader(self):
        """
        A function reading the config files and the command line again
        into a new configuration value (for SIGHUP), or L{None} if no file
        was given.  It raises C{ValueError} naming the file and key of a
        mistake.
        """
        if not self.files:
            return None
        return ConfigRereader(type(self), tuple(self.argv),
                              tuple(read.path for read in self.files))

    def parseArgs(self, *arguments) -> None:
        """
        A router takes options only.
        """
        if arguments:
            raise usage.UsageError(f"unexpected argument {arguments[0]!r}")

    def postOptions(self) -> None:
        """
        Make L{config}, the configuration value the options describe, and
        check it as the build will (endpoints, directories, files), so
        that every mistake is a usage error.
        """
        values = {field.name: self[field.name.replace("_", "-")]
                  for field in attr.fields(self.configClass)}
        try:
            self.config = self.configClass(**values)
            if self.checkFiles:
                self.config = checkConfig(self.config)
        except ValueError as e:
            raise usage.UsageError(self.fromFiles(str(e)))


class ProcessOptions(usage.Options):
    """
    The options about the router's process and socket files that every
    router takes (L{txrouter.config.ProcessOptions}), mixed into each
    router's options.  They come after the plugin's name; twistd's own
    C{-u}/C{--uid} and C{-g}/C{--gid}, before it, are refused with them.
    """

    optParameters = [
        ["uid", None, None,
         "Once every socket is bound, run as this user (name or number; the"
         " router must be root), with no supplementary groups (uWSGI's --uid)."],
        ["gid", None, None,
         "Once every socket is bound, run as this group (default with --uid:"
         " the user's primary group)."],
        ["chmod-socket", None, None,
         "The mode of every unix socket file, octal (660; '' is 666), set"
         " before the file exists; it beats an endpoint's mode=."],
        ["chown-socket", None, None,
         "The owner of every unix socket file: USER[:GROUP] (names or numbers)."],
    ]

    def postOptions(self) -> None:
        twistd = self.parent
        if twistd is not None and (self["uid"] or self["gid"]):
            given = [f"twistd's {option}" for option in ("--uid", "--gid") if twistd.get(option[2:])]
            if given:
                raise usage.UsageError(
                    f"{' and '.join(given)} (before the plugin name) and the router's --uid/--gid"
                    " (after it) both switch users: give the router's alone"
                )
        super().postOptions()


class RouterOptions(ProcessOptions, ConfigOptions):
    """
    The options every router that has nodes takes.
    """

    optFlags = [
        ["fallback-on-no-key", None,
         "Send requests whose key maps to no node to the --fallback nodes too."],
        ["use-cache", None,
         "Find nodes in a key/value store (--cache-file or --cache-store):"
         " values ADDR[,MODIFIER1], several joined by | for round robin."],
        ["name-separator-strip", None,
         "Strip leading and trailing ':' from forwarder values, as uwsgiconf"
         " does when it renders them."],
        ["cheap", None,
         "Stop accepting clients while no node is available; resume when one is."],
        ["silent-errors", None,
         "Close the connection without a response on errors, as uWSGI does,"
         " instead of a short 4xx/5xx answer."],
        ["quiet", None, "Do not log failed connects to nodes."],
        ["subscription-dotsplit", None,
         "A key without a pool tries its dot suffixes: a.b.com, then .b.com, .com."],
        ["subscription-notify", None,
         "Acknowledge new nodes to the unix socket their 'notify' var names"
         " (it must be inside a --subscription-node-dir)."],
        ["subscription-sni", None,
         "Keep the sni_key/sni_crt/sni_ca vars of subscriptions (ignored otherwise)."],
        ["stats-http", None, "Serve --stats over HTTP (uWSGI's --stats-http)."],
        ["stats-minified", None, "Write the --stats JSON without whitespace."],
        ["enable-proxy-protocol", None,
         "Read a PROXY protocol v1/v2 header from the --proxy-protocol-from"
         " sources (required from them); its addresses become the client's."],
    ]

    optParameters = [
        ["use-base", None, None,
         "Route KEY to the unix socket DIR+KEY (the key is checked: no '/', '..',"
         " control bytes; at most 255 bytes)."],
        ["use-pattern", None, None,
         "Route KEY to the unix socket PATTERN with every %s replaced by KEY"
         " (the key is checked as for --use-base)."],
        ["cache-file", None, None,
         "Mapping file for --use-cache: KEY VALUE per line; reloaded on SIGHUP."],
        ["cache-store", None, None,
         "The shared store of --use-cache, a Redis server a fleet of routers"
         " reads: redis://HOST:PORT/DB?prefix=P, rediss://... (TLS) or"
         " unix:///PATH?db=N (filled with txrouter-cache)."],
        ["cache-ttl", None, 30.0,
         "Seconds a --cache-store value is served before it is read again from"
         " Redis (changes announced by txrouter-cache or keyspace"
         " notifications are followed at once).", positive],
        ["use-code", None, None,
         "Route by a Python function: MODULE:CALLABLE (or uWSGI's"
         " MOD1:SCRIPT:FUNC) gets the key, returns ADDR[,MODIFIER1], a list,"
         " None or a Deferred."],
        ["code-timeout", None, 5.0,
         "Seconds a --use-code Deferred may take (504 after).", positive],
        ["gracetime", None, 30.0,
         "Seconds a --to node that failed to connect is left out.", positive],
        ["max-fails", None, 1,
         "Failed connects within --gracetime that put a --to node in quarantine.", count],
        ["check-interval", None, None,
         "Probe each --to and --fallback node every S seconds (a connect; an HTTP"
         " GET for http:// nodes) and take those failing out of rotation"
         " (default: no checks).", positive],
        ["check-timeout", None, None,
         "Seconds a probe may take (default: --check-interval).", positive],
        ["check-fall", None, DEFAULT_FALL,
         "Failed probes in a row that take a node out (HAProxy's fall).", count],
        ["check-rise", None, DEFAULT_RISE,
         "Passed probes in a row that bring it back, or end its quarantine"
         " (HAProxy's rise).", count],
        ["check-path", None, "/",
         "The path an http:// node is asked for; a status below 500 passes."],
        ["algo", None, None,
         "Balancing of the --to nodes: wrr, lrc, wlrc or iphash (default: round"
         " robin, as uWSGI).", algorithm],
        ["max-retries", None, 3,
         "Connect retries per request (so up to N+1 attempts).", count],
        ["timeout", None, 60.0,
         "Idle timeout, in seconds, for client and backend connections.", positive],
        ["connect-timeout", None, None,
         "Seconds allowed to connect to a node (default: --timeout).", positive],
        ["harakiri", None, 0,
         "Seconds a backend may take for a whole response before it is cut"
         " (504 if nothing was sent yet); 0 for no limit.", positive],
        ["post-buffering", None, 0,
         "Read request bodies whole before connecting to a node: up to N bytes"
         " in memory, larger ones in an unlinked temporary file; 0 streams.", count],
        ["post-buffering-dir", None, None,
         "Directory for post-buffering temporary files (default: $TMPDIR)."],
        ["limit-post", None, 0,
         "Largest request body in bytes (413 above); 0 for no limit.", count],
        ["min-body-rate", None, 500,
         "Bytes per second a request body must average after its first"
         " body/idle timeout (408 body_too_slow below); 0 for no minimum.", positive],
        ["retry-methods", None, "GET,HEAD,OPTIONS,TRACE,PUT,DELETE",
         "Methods of the requests sent to the next node when theirs closes"
         " before answering (with an empty or buffered body)."],
        ["graceful-timeout", None, 30.0,
         "On SIGTERM/SIGINT: seconds in-flight requests get to finish.", positive],
        ["processes", None, 1,
         "Router processes sharing the listeners (uWSGI's --http-processes,"
         " --fastrouter-processes...); auto: one per core. twistd's process binds,"
         " watches and restarts them.", processes],
        ["stats", None, None,
         "Write the stats JSON to whoever connects here: an endpoint string"
         " (tcp:9191, unix:/run/r.stats) or uWSGI's host:port or path."],
        ["metrics", None, None,
         "Serve Prometheus metrics at /metrics here: an endpoint string"
         " (tcp:9100:interface=127.0.0.1) or host:port."],
        ["log-format", None, "combined",
         "The access log's format: combined (Apache's and nginx's) or json"
         " (one object per line; for twistd's own log in JSON, give twistd"
         " --logger txrouter.logging.jsonLogger).", logFormat],
        ["subscription-algo", None, "wrr",
         "Balancing of subscribed pools: wrr, lrc, wlrc or iphash.", algorithm],
        ["subscription-tolerance", None, DEFAULT_TOLERANCE,
         "Seconds a subscribed node lives without an announce.", positive],
        ["subscription-fallback-key", None, None,
         "The pool for keys that have none (ignored with --subscription-dotsplit)."],
        ["subscription-max-pools", None, DEFAULT_MAX_POOLS,
         "Most subscribed pools (keys); announces of more are refused.", count],
        ["subscription-max-nodes", None, DEFAULT_MAX_NODES,
         "Most nodes per subscribed pool.", count],
        ["subscriptions-sign-check", None, None,
         "Accept only signed announces: DIGEST:DIR, public keys in DIR/<key>.pem."],
        ["subscriptions-sign-check-tolerance", None, SIGN_TOLERANCE,
         "Seconds a signed announce's unix timestamp may be behind or ahead of"
         " the router's clock.", count],
        ["resubscribe-sign", None, None,
         "Sign --resubscribe announces: DIGEST:PRIVATE_KEY_FILE."],
        ["resubscribe-address", None, None,
         "The address --resubscribe announces (default: the first --bind's)."],
        ["proxy-protocol-timeout", None, 5.0,
         "Seconds a --proxy-protocol-from source has to send its PROXY header.", positive],
    ]

    def __init__(self) -> None:
        super().__init__()
        self["bind"] = []
        self["to"] = []
        self["fallback"] = []
        for name in _SUBSCRIPTION_LISTS:
            self[name] = []

    def opt_proxy_protocol_from(self, network: str) -> None:
        """
        A source allowed, and required, to send a PROXY header with
        --enable-proxy-protocol (repeatable): an address, a CIDR network, or
        unix (every client of a unix-socket listener).
        """
        self["proxy-protocol-from"].append(network)

    def opt_bind(self, description: str) -> None:
        """
        Listen on this Twisted server endpoint (repeatable), e.g. tcp:8080.
        """
        self["bind"].append(description)

    def opt_to(self, address: str) -> None:
        """
        A backend node (repeatable; round robin): host:port, [v6]:port,
        :port, /path, @abstract, tcp:HOST:PORT, unix:PATH, or
        http://HOST:PORT for one that speaks plain HTTP (the HTTP routers).
        """
        self["to"].append(address)

    def opt_fallback(self, address: str) -> None:
        """
        A fallback node (repeatable), tried in order after a failed connect;
        spelled as --to.
        """
        self["fallback"].append(address)

    def opt_subscription_server(self, address: str) -> None:
        """
        Hear subscriptions on this datagram socket (repeatable): ip:port or
        :port (UDP), /path or @name (unix datagram).
        """
        self["subscription-server"].append(address)

    def opt_subscription_allow(self, network: str) -> None:
        """
        Hear UDP subscriptions only from this address or CIDR network
        (repeatable; default: from anyone).
        """
        self["subscription-allow"].append(network)

    def opt_subscription_node_network(self, network: str) -> None:
        """
        Subscribed TCP nodes may be in this CIDR network (repeatable;
        'source' is the subscriber's own address, the default).
        """
        self["subscription-node-network"].append(network)

    def opt_subscription_node_ports(self, ports: str) -> None:
        """
        Subscribed TCP nodes may use these ports, PORT or LOW-HIGH
        (repeatable; default 1024-65535).
        """
        self["subscription-node-ports"].append(ports)

    def opt_subscription_node_dir(self, directory: str) -> None:
        """
        Subscribed unix socket nodes may be inside this absolute directory;
        @PREFIX admits abstract names starting with it (repeatable;
        default: no unix socket node).
        """
        self["subscription-node-dir"].append(directory)

    def opt_resubscribe(self, address: str) -> None:
        """
        Announce the pools accepted here to this subscription server too
        (repeatable): ip:port, /path or @name.
        """
        self["resubscribe"].append(address)

class TLSOptions(usage.Options):
    """
    The TLS options the HTTPS and SSL routers share (SNI, client
    certificates, the handshake deadline), mixed into their L{RouterOptions}
    (C{docs/https-router.md}).
    """

    optParameters = [
        ["sni-dir", None, None,
         "Look certificates up by SNI name: DIR/NAME.crt and DIR/NAME.key (and"
         " DIR/NAME.ca, client CAs asked for), only inside DIR."],
        ["sni-dir-ciphers", None, None,
         "The TLS 1.2 cipher list of --sni-dir contexts and of subscribers' ones."],
        ["ssl-verify-depth", None, 1,
         "How many CA certificates above a client certificate are checked.", count],
        ["tls-handshake-timeout", None, 10.0,
         "Seconds a client has to finish its TLS handshake; 0: no limit.", positive],
    ]

    def __init__(self) -> None:
        super().__init__()
        self["sni"] = []
        self["sni-regexp"] = []
        self["subscription-sni-dir"] = []

    def opt_sni(self, value: str) -> None:
        """
        "NAME CRT,KEY[,CIPHERS[,CA]]": the certificate for the SNI name NAME
        (repeatable); a CA prefixed with ! requires a client certificate.
        """
        self["sni"].append(value)

    def opt_sni_regexp(self, value: str) -> None:
        """
        "REGEXP CRT,KEY[,CIPHERS[,CA]]": the certificate for the SNI names
        REGEXP is found in (repeatable, first match wins).
        """
        self["sni-regexp"].append(value)

    def opt_subscription_sni_dir(self, directory: str) -> None:
        """
        With --subscription-sni, subscribers' sni_key/sni_crt/sni_ca files
        are used only inside this directory (repeatable).
        """
        self["subscription-sni-dir"].append(directory)

    def tlsListener(self, option: str, parse, value: str) -> None:
        """
        Add the TLS listener C{value} (C{--https2}, C{--sslrouter2}: parsed
        here by C{parse}) to the listeners of C{option}.

        @raise usage.UsageError: C{value} is not one.
        """
        try:
            self[option].append(parse(value))
        except ValueError as e:
            raise usage.UsageError(str(e))


def makeRouterService(options, reactor=None):
    """
    The router service of parsed L{RouterOptions}: L{buildService} on their
    L{RouterOptions.config}, on the running reactor by default, reading
    their config files again on SIGHUP.
    """
    if reactor is None:
        reactor = runningReactor()
    try:
        return buildService(options.config, reactor, reread=options.rereader())
    except ValueError as e:
        raise usage.UsageError(options.fromFiles(str(e)))


def runningReactor():
    """
    The global reactor for twistd to run a plugin's service on: if no
    reactor is installed yet (twistd was given no C{--reactor}), first
    install L{txrouter.reactor.RouterReactor} where epoll exists.
    """
    if "twisted.internet.reactor" not in sys.modules:
        try:
            from txrouter.reactor import install
        except ImportError:
            pass
        else:
            install()
    from twisted.internet import reactor

    return reactor

