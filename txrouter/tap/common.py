"""
What the command lines of every router share: listeners, timeouts, and the
ways to find nodes (forwarders), which every router offers alike.

uWSGI picks the first configured mapper and silently ignores the others
(reference section 3.3); here configuring two is a usage error.
"""

import signal
import sys

from twisted.application.service import Service
from twisted.python import usage

from txrouter.endpoints import checkServerEndpoint
from txrouter.routing.admission import (
    DEFAULT_PORTS,
    SOURCE,
    AddressPolicy,
    parseNetwork,
    parsePortRange,
)
from txrouter.routing.balancing import ALGORITHMS
from txrouter.routing.cache import CacheForwarder, InMemoryStore, MappingFileError
from txrouter.routing.code import CodeForwarder, loadCallable
from txrouter.routing.nodes import BadNodeAddress, parseNode
from txrouter.routing.paths import PathForwarder
from txrouter.routing.subscriptions import (
    DEFAULT_MAX_NODES,
    DEFAULT_MAX_POOLS,
    DEFAULT_TOLERANCE,
    SubscriptionRegistry,
)
from txrouter.service import RouterService
from txrouter.spool import SpoolError, checkSpoolDirectory
from txrouter.stats.server import statsEndpoint
from txrouter.subscription.addresses import parseDatagramAddress, uwsgiAddressOfEndpoint
from txrouter.subscription.federation import DatagramSender, Resubscriber
from txrouter.subscription.server import subscriptionServices
from txrouter.subscription.signing import DEFAULT_TOLERANCE as SIGN_TOLERANCE
from txrouter.subscription.signing import SignatureChecker, digestByName, sign


def positive(value: str) -> float:
    number = float(value)
    if number < 0:
        raise ValueError("must not be negative")
    return number


def count(value: str) -> int:
    number = int(value)
    if number < 0:
        raise ValueError("must not be negative")
    return number


def byte(value: str) -> int:
    number = int(value)
    if not 0 <= number <= 255:
        raise ValueError("must be 0..255")
    return number


def algorithm(value: str) -> str:
    """
    A C{--subscription-algo} name.
    """
    if value not in ALGORITHMS:
        raise ValueError(f"one of {', '.join(ALGORITHMS)}")
    return value


#: The mapper options, one of which (or C{--to}) a router needs.
MAPPERS = ("use-base", "use-pattern", "use-cache", "use-code", "subscription-server")

#: The repeatable subscription options, each collected in a list.
_SUBSCRIPTION_LISTS = (
    "subscription-server", "subscription-allow", "subscription-node-network",
    "subscription-node-ports", "subscription-node-dir", "resubscribe",
)


class RouterOptions(usage.Options):
    """
    The options every router has.  Subclasses add their own and call
    L{RouterOptions.postOptions}.
    """

    #: uWSGI's name of the router: the stats document lists the listeners
    #: under it.
    statsName = "router"
    #: What the listeners speak, for the C{proto} of resubscriptions
    #: (L{None}: uwsgi).
    listenerProto = None

    optFlags = [
        ["fallback-on-no-key", None,
         "Send requests whose key maps to no node to the --fallback nodes too."],
        ["use-cache", None,
         "Find nodes in a key/value store (filled by --cache-file): values"
         " ADDR[,MODIFIER1], several joined by | for round robin."],
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
        ["use-code", None, None,
         "Route by a Python function: MODULE:CALLABLE (or uWSGI's"
         " MOD1:SCRIPT:FUNC) gets the key, returns ADDR[,MODIFIER1], a list,"
         " None or a Deferred."],
        ["code-timeout", None, 5.0,
         "Seconds a --use-code Deferred may take (504 after).", positive],
        ["gracetime", None, 30.0,
         "Seconds a --to node that failed to connect is left out.", positive],
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
        ["graceful-timeout", None, 30.0,
         "On SIGTERM/SIGINT: seconds in-flight requests get to finish.", positive],
        ["stats", None, None,
         "Write the stats JSON to whoever connects here: an endpoint string"
         " (tcp:9191, unix:/run/r.stats) or uWSGI's host:port or path."],
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
         "Seconds a signed announce's unix timestamp may be old.", count],
        ["resubscribe-sign", None, None,
         "Sign --resubscribe announces: DIGEST:PRIVATE_KEY_FILE."],
        ["resubscribe-address", None, None,
         "The address --resubscribe announces (default: the first --bind's)."],
    ]

    def __init__(self) -> None:
        super().__init__()
        self["bind"] = []
        self["to"] = []
        self["fallback"] = []
        for name in _SUBSCRIPTION_LISTS:
            self[name] = []

    def opt_bind(self, description: str) -> None:
        """
        Listen on this Twisted server endpoint (repeatable), e.g. tcp:8080.
        """
        _parsed(checkServerEndpoint, description, "--bind")
        self["bind"].append(description)

    def opt_to(self, address: str) -> None:
        """
        A backend node (repeatable; round robin): host:port, :port, /path,
        @abstract, tcp:HOST:PORT or unix:PATH.
        """
        self["to"].append(_node(address))

    def opt_fallback(self, address: str) -> None:
        """
        A fallback node (repeatable), tried in order after a failed connect.
        """
        self["fallback"].append(_node(address))

    def opt_subscription_server(self, address: str) -> None:
        """
        Hear subscriptions on this datagram socket (repeatable): ip:port or
        :port (UDP), /path or @name (unix datagram).
        """
        self["subscription-server"].append(
            _parsed(_listenAddress, address, "--subscription-server")
        )

    def opt_subscription_allow(self, network: str) -> None:
        """
        Hear UDP subscriptions only from this address or CIDR network
        (repeatable; default: from anyone).
        """
        self["subscription-allow"].append(_parsed(parseNetwork, network, "--subscription-allow"))

    def opt_subscription_node_network(self, network: str) -> None:
        """
        Subscribed TCP nodes may be in this CIDR network (repeatable;
        'source' is the subscriber's own address, the default).
        """
        if network != SOURCE:
            network = _parsed(parseNetwork, network, "--subscription-node-network")
        self["subscription-node-network"].append(network)

    def opt_subscription_node_ports(self, ports: str) -> None:
        """
        Subscribed TCP nodes may use these ports, PORT or LOW-HIGH
        (repeatable; default 1024-65535).
        """
        self["subscription-node-ports"].append(
            _parsed(parsePortRange, ports, "--subscription-node-ports")
        )

    def opt_subscription_node_dir(self, directory: str) -> None:
        """
        Subscribed unix socket nodes may be inside this absolute directory;
        @PREFIX admits abstract names starting with it (repeatable;
        default: no unix socket node).
        """
        if not directory.startswith(("/", "@")):
            raise usage.UsageError(f"--subscription-node-dir: not absolute: {directory!r}")
        self["subscription-node-dir"].append(directory)

    def opt_resubscribe(self, address: str) -> None:
        """
        Announce the pools accepted here to this subscription server too
        (repeatable): ip:port, /path or @name.
        """
        self["resubscribe"].append(_parsed(parseDatagramAddress, address, "--resubscribe"))

    def postOptions(self) -> None:
        self._checkSubscriptionOptions()
        if not self["bind"]:
            raise usage.UsageError("at least one --bind is required")
        chosen = [name for name in MAPPERS if self[name]] + (["to"] if self["to"] else [])
        if len(chosen) > 1:
            raise usage.UsageError(
                "choose one way to find nodes, not " + ", ".join("--" + n for n in chosen)
            )
        if not chosen:
            raise usage.UsageError(
                "no nodes: give --to NODE or one of " + ", ".join("--" + n for n in MAPPERS)
            )
        if self["use-cache"] and not self["cache-file"]:
            raise usage.UsageError("--use-cache needs --cache-file (or build it in a .tac)")
        if self["name-separator-strip"]:
            for name in ("use-base", "use-pattern", "use-code", "cache-file"):
                if self[name]:
                    self[name] = self[name].strip(":")
        if self["use-pattern"] and "%s" not in self["use-pattern"]:
            raise usage.UsageError("--use-pattern needs %s where the key goes")
        if self["use-code"]:
            try:
                self["use-code"] = loadCallable(self["use-code"])
            except ValueError as e:
                raise usage.UsageError(f"--use-code: {e}")
        for option in self.spoolDirectoryOptions():
            try:
                checkSpoolDirectory(self[option])
            except SpoolError as e:
                raise usage.UsageError(f"--{option}: {e}")
        if self["stats"] is not None:
            _parsed(_checkStatsAddress, self["stats"], "--stats")

    def spoolDirectoryOptions(self) -> list:
        """
        The options naming a directory the router will create temporary
        files in, checked at start-up (as the router's constructor does)
        so that a mistake is a usage error.
        """
        if self["post-buffering"] and self["post-buffering-dir"] is not None:
            return ["post-buffering-dir"]
        return []

    def _checkSubscriptionOptions(self) -> None:
        """
        Read the signing options' files and check their digests now, so
        that a mistake stops start-up.
        """
        if self["subscriptions-sign-check"]:
            self["subscriptions-sign-check"] = _digestAnd(
                self["subscriptions-sign-check"], "--subscriptions-sign-check"
            )
        if self["resubscribe-sign"]:
            digest, path = _digestAnd(self["resubscribe-sign"], "--resubscribe-sign")
            try:
                with open(path, "rb") as f:
                    pem = f.read()
                sign(b"", digest, pem)
            except (OSError, ValueError, TypeError) as e:
                raise usage.UsageError(f"--resubscribe-sign: {path}: {e}")
            self["resubscribe-sign"] = (digest, pem)
        if self["resubscribe"] and not self["subscription-server"]:
            raise usage.UsageError("--resubscribe needs a --subscription-server")
        if self["resubscribe"] and not self["resubscribe-address"]:
            first = self["bind"][0] if self["bind"] else None
            self["resubscribe-address"] = first and uwsgiAddressOfEndpoint(first)
            if not self["resubscribe-address"]:
                raise usage.UsageError(
                    "--resubscribe: the first --bind has no uWSGI address;"
                    " give --resubscribe-address"
                )


def _checkStatsAddress(address: str) -> None:
    """
    Parse a C{--stats} address as the router will, binding nothing.
    """
    checkServerEndpoint(address, statsEndpoint)


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


def _listenAddress(address: str):
    return parseDatagramAddress(address, listen=True)


def _parsed(parse, value: str, option: str):
    try:
        return parse(value)
    except ValueError as e:
        raise usage.UsageError(f"{option}: {e}")


def _digestAnd(value: str, option: str) -> "tuple[str, str]":
    digest, colon, path = value.partition(":")
    if not colon or not path:
        raise usage.UsageError(f"{option} wants DIGEST:PATH, not {value!r}")
    _parsed(digestByName, digest, option)
    return digest, path


def _node(address: str):
    try:
        return parseNode(address)
    except BadNodeAddress as e:
        raise usage.UsageError(str(e))


class ReloadOnHangup(Service):
    """
    Call C{reload} on SIGHUP while running; a failed reload is logged and
    the old state kept.
    """

    def __init__(self, reactor, reload) -> None:
        self.reactor = reactor
        self.reload = reload
        self._previous = None

    def startService(self) -> None:
        super().startService()
        self._previous = signal.signal(signal.SIGHUP, self._hangup)

    def stopService(self):
        if self._previous is not None:
            signal.signal(signal.SIGHUP, self._previous)
            self._previous = None
        return super().stopService()

    def _hangup(self, signum, frame) -> None:
        self.reactor.callFromThread(self._reload)

    def _reload(self) -> None:
        from twisted.logger import Logger

        try:
            self.reload()
        except MappingFileError as e:
            Logger(namespace="txrouter.cache").error(
                "cache_file_refused: {error}; keeping the previous mapping",
                event="cache_file_refused", error=str(e),
            )


def buildForwarder(options, reactor):
    """
    The forwarder the options describe (L{None} for the static C{--to} one,
    which each router builds itself) and the services it needs.

    @return: C{(forwarder, services)}.
    """
    if options["use-base"]:
        return PathForwarder.fromBase(options["use-base"]), []
    if options["use-pattern"]:
        return PathForwarder(options["use-pattern"]), []
    if options["use-code"]:
        return CodeForwarder(options["use-code"], reactor, options["code-timeout"]), []
    if options["use-cache"]:
        try:
            store = InMemoryStore(path=options["cache-file"])
        except MappingFileError as e:
            raise usage.UsageError(str(e))
        return CacheForwarder(store), [ReloadOnHangup(reactor, store.reload)]
    if options["subscription-server"]:
        return subscriptionForwarder(options, reactor)
    return None, []


def _ownPorts(binds) -> set:
    """
    The TCP ports the router listens on, which subscribed loopback nodes
    must not use.
    """
    ports = set()
    for description in binds:
        address = uwsgiAddressOfEndpoint(description)
        if address and not address.startswith(("/", "@")):
            ports.add(int(address.rpartition(":")[2]))
    return ports


def subscriptionForwarder(options, reactor):
    """
    The subscription registry the options describe, and its services: the
    subscription servers, with notify acks and resubscription if asked.

    @return: C{(registry, services)}.
    """
    checker = None
    if options["subscriptions-sign-check"]:
        digest, directory = options["subscriptions-sign-check"]
        checker = SignatureChecker(
            digest, directory, options["subscriptions-sign-check-tolerance"], clock=reactor,
        )
    policy = AddressPolicy(
        networks=options["subscription-node-network"] or (SOURCE,),
        ports=options["subscription-node-ports"] or DEFAULT_PORTS,
        directories=options["subscription-node-dir"],
        ownPorts=_ownPorts(options["bind"]),
    )
    registry = SubscriptionRegistry(
        reactor,
        algo=options["subscription-algo"],
        tolerance=options["subscription-tolerance"],
        dotsplit=options["subscription-dotsplit"],
        fallback_key=options["subscription-fallback-key"],
        max_pools=options["subscription-max-pools"],
        max_nodes=options["subscription-max-nodes"],
        allow=options["subscription-allow"],
        address_policy=policy,
        sign_check=checker,
        notify=options["subscription-notify"],
        sni=options["subscription-sni"],
        pending_timeout=options["connect-timeout"] or options["timeout"],
    )
    sender = None
    if options["subscription-notify"] or options["resubscribe"]:
        sender = DatagramSender()
    resubscriber = None
    if options["resubscribe"]:
        resubscriber = Resubscriber(
            reactor, options["resubscribe"], options["resubscribe-address"], sender,
            options["resubscribe-sign"] or None,
            proto=options.listenerProto,
        )
    services = subscriptionServices(
        reactor, options["subscription-server"], registry, resubscriber, sender,
    )
    return registry, services


def routingArguments(options, reactor) -> "tuple[dict, list]":
    """
    The router constructor arguments every router shares, and the services
    that go with them.
    """
    forwarder, services = buildForwarder(options, reactor)
    return dict(
        forwarder=forwarder,
        fallback=options["fallback"],
        fallback_on_no_key=options["fallback-on-no-key"],
        max_retries=options["max-retries"],
        gracetime=options["gracetime"],
        timeout=options["timeout"],
        connect_timeout=options["connect-timeout"],
        harakiri=options["harakiri"],
        post_buffering=options["post-buffering"],
        post_buffering_dir=options["post-buffering-dir"],
        limit_post=options["limit-post"],
        silent_errors=options["silent-errors"],
        quiet=options["quiet"],
    ), services


def routerService(options, reactor, router, services=()):
    """
    The service running C{router} on the options' listeners, with cheap
    mode if asked and the forwarder's own services.
    """
    try:
        service = RouterService(
            reactor, router, options["bind"], options["graceful-timeout"], cheap=options["cheap"],
        )
    except ValueError as e:
        raise usage.UsageError(f"--cheap: {e}")
    for extra in services:
        extra.setServiceParent(service)
    if options["stats"]:
        try:
            service.serveStats(
                reactor, options["stats"], options.statsName, statsAddresses(options),
                http=options["stats-http"], minified=options["stats-minified"],
            )
        except ValueError as e:
            raise usage.UsageError(f"--stats: {e}")
    return service


def statsAddresses(options) -> list:
    """
    The addresses the stats document lists, as uWSGI does: the listeners,
    then the subscription servers, in uWSGI's spelling where there is one.
    """
    binds = [uwsgiAddressOfEndpoint(description) or description for description in options["bind"]]
    return binds + [address.text for address in options["subscription-server"]]
