"""
What a router is configured with, as values: one frozen class per router
whose fields are its command-line options, dashes turned into underscores
(C{--subscription-server} is C{subscription_server}).

The command line (L{txrouter.tap}) only parses into these; L{txrouter.build}
turns one into the running services.  A C{.tac} file writes the same
values::

    HTTPRouterConfig(bind=["tcp:8080"], subscription_server=["127.0.0.1:7000"],
                     stats="tcp:9191:interface=127.0.0.1", keepalive=15)

Repeatable options are sequences.  Addresses and networks may be given as
on the command line (text) or already parsed; either way the value holds
them parsed, so a mistake is a C{ValueError} naming the option as soon as
the value is made.  Nothing here reads a file or binds a socket: what needs
that (endpoint strings, directories, key and mapping files) is checked by
L{txrouter.build.checkConfig}.
"""

import ipaddress
import os
import re
import typing
from numbers import Real

import attr

from txrouter.limits import MAX_KEY_LENGTH
from txrouter.privileges import groupId, userId
from txrouter.proxyprotocol import proxyProtocolWrapper
from txrouter.routing.admission import SOURCE, parseNetwork, parsePortRange
from txrouter.routing.balancing import ALGORITHMS
from txrouter.routing.health import DEFAULT_FALL, DEFAULT_RISE
from txrouter.routing.nodes import Node, parseNode
from txrouter.routing.subscriptions import DEFAULT_MAX_NODES, DEFAULT_MAX_POOLS, DEFAULT_TOLERANCE
from txrouter.storeurl import StoreURL, parseStoreURL
from txrouter.subscription.addresses import (
    DatagramAddress,
    parseDatagramAddress,
    uwsgiAddressOfEndpoint,
)
from txrouter.subscription.signing import DEFAULT_TOLERANCE as SIGN_TOLERANCE
from txrouter.subscription.signing import digestByName
from txrouter.tls.contexts import DEFAULT_VERIFY_DEPTH
from txrouter.tls.handshake import DEFAULT_HANDSHAKE_TIMEOUT
from txrouter.tls.specs import (
    SNISpec,
    TLSListenerSpec,
    parseHTTPS,
    parseSNI,
    parseSNIRegexp,
    parseSSLRouter,
    tcpEndpoint,
)
from txrouter.wire.tuntap import FirewallRule, RouteRule, parseFirewallRule, parseRouteRule
from txrouter.wire.uwsgi import MAX_DATASIZE

__all__ = [
    "MAPPERS",
    "ProcessOptions",
    "RouterConfig",
    "HTTPRouterConfig",
    "HTTPSRouterConfig",
    "FastRouterConfig",
    "RawRouterConfig",
    "SSLRouterConfig",
    "PtyRouterConfig",
    "TunTapRouterConfig",
    "TunTapSpec",
    "RedirectSpec",
]

#: C{--cache-ttl}'s default, in seconds.
_CACHE_TTL = 30.0

#: The options choosing how nodes are found besides C{--to}; a router
#: takes exactly one way.
MAPPERS = ("use-base", "use-pattern", "use-cache", "use-code", "subscription-server")


def _option(name: str) -> str:
    return "--" + name.replace("_", "-")


def _naming(option: str, parse):
    """
    C{parse}, with its C{ValueError} prefixed by C{option}.
    """
    def parsed(value):
        try:
            return parse(value)
        except ValueError as e:
            raise ValueError(f"{option}: {e}") from None

    return parsed


def _each(option: str, parse, kind=()):
    """
    A converter of a sequence into a tuple, C{parse} applied to each item
    that is not a C{kind} yet (a class or a tuple of classes).
    """
    parseOne = _naming(option, parse)

    def convert(values):
        if isinstance(values, (str, bytes)):
            raise ValueError(f"{option}: a list of values, not {values!r}")
        return tuple(value if isinstance(value, kind) else parseOne(value) for value in values)

    return convert


def _many(option: str, parse, kind=()):
    return attr.ib(default=(), converter=_each(option, parse, kind))


#: What L{parseNetwork} returns.
_NETWORKS = (ipaddress.IPv4Network, ipaddress.IPv6Network)


def _listenAddress(text: str) -> DatagramAddress:
    return parseDatagramAddress(text, listen=True)


def _nodeNetwork(value):
    return value if value == SOURCE else parseNetwork(value)


def _portRange(value) -> "tuple[int, int]":
    if isinstance(value, str):
        return parsePortRange(value)
    low, high = value
    return parsePortRange(f"{low}-{high}")


def _absoluteDirectory(directory: str) -> str:
    if not directory.startswith(("/", "@")):
        raise ValueError(f"not absolute: {directory!r}")
    return directory


def _httpVar(item) -> "tuple[str, str]":
    if isinstance(item, str):
        key, eq, value = item.partition("=")
        if not eq or not key:
            raise ValueError(f"wants KEY=VALUE, not {item!r}")
        return key, value
    key, value = item
    return key, value


def _network(text: str) -> str:
    ipaddress.ip_network(text, strict=False)
    return text


def _algorithm(instance, attribute, value) -> None:
    if value not in ALGORITHMS:
        raise ValueError(f"{_option(attribute.name)}: one of {', '.join(ALGORITHMS)}, not {value!r}")


def _atLeast(low):
    def check(instance, attribute, value) -> None:
        if value is not None and (isinstance(value, bool) or not isinstance(value, Real)):
            raise TypeError(f"{_option(attribute.name)}: a number, not {value!r}")
        if value is not None and value < low:
            raise ValueError(f"{_option(attribute.name)}: must be at least {low}, not {value!r}")

    return check


def _aboveZero(instance, attribute, value) -> None:
    if value is not None and not value > 0:
        raise ValueError(f"{_option(attribute.name)}: must be above 0, not {value!r}")


#: What an HTTP check's path may be: an origin-form target (RFC 9112), no
#: space or control byte.
_CHECK_PATH = re.compile(r"/[!-~]*")


def _checkPath(instance, attribute, value) -> None:
    if not isinstance(value, str) or not _CHECK_PATH.fullmatch(value):
        raise ValueError(
            f"--check-path: a path starting with / without spaces or control bytes, not {value!r}")


def _between(low, high):
    def check(instance, attribute, value) -> None:
        if not low <= value <= high:
            raise ValueError(f"{_option(attribute.name)}: must be {low}..{high}, not {value!r}")

    return check


def _digestAndPath(instance, attribute, value) -> None:
    """
    A C{DIGEST:PATH} value (C{--subscriptions-sign-check},
    C{--resubscribe-sign}): the digest must be known.
    """
    if value is None:
        return
    option = _option(attribute.name)
    digest, colon, path = value.partition(":")
    if not colon or not path:
        raise ValueError(f"{option} wants DIGEST:PATH, not {value!r}")
    _naming(option, digestByName)(digest)


def _above(low):
    def check(instance, attribute, value) -> None:
        if not value > low:
            raise ValueError(f"{_option(attribute.name)}: must be more than {low}, not {value!r}")

    return check


def _seconds(default):
    return attr.ib(default=default, validator=_atLeast(0))


def _count(default):
    return attr.ib(default=default, validator=_atLeast(0))


def _flag():
    return attr.ib(default=False, converter=_toFlag)


def _toFlag(value) -> bool:
    """
    A flag's value: C{True}, C{False} (or the 1 and 0 C{usage.Options}
    gives); a string such as C{"no"} would be true, so it is refused.
    """
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    raise TypeError(f"a flag is True or False, not {value!r}")


#: An HTTP token (RFC 9110), as a method name must be.
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")


def _methods(value) -> "tuple[str, ...]":
    """
    C{--retry-methods}: C{GET,HEAD,...} (or a sequence of names), upper-cased;
    each must be an HTTP token.
    """
    names = value.split(",") if isinstance(value, str) else list(value)
    methods = []
    for name in names:
        name = (name.decode() if isinstance(name, bytes) else name).strip().upper()
        if not _TOKEN.fullmatch(name):
            raise ValueError(f"--retry-methods: {name!r} is not a method name")
        methods.append(name)
    return tuple(methods)


def cpuCount() -> int:
    """
    The cores this process may run on (C{--processes auto}).
    """
    return len(os.sched_getaffinity(0))


def _processes(value) -> int:
    """
    C{--processes}: a number of processes, at least 1, or C{auto}: as many
    as there are cores to run on.
    """
    if value == "auto":
        return cpuCount()
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise ValueError(f"--processes: a number or auto, not {value!r}") from None
    if number < 1:
        raise ValueError(f"--processes: at least 1, not {number}")
    return number


def _logFormat(instance, attribute, value) -> None:
    if value not in ("combined", "json"):
        raise ValueError(f"--log-format: {value!r} is not combined or json")


def _optional(option: str, parse):
    """
    An C{attr.ib} converter: L{None} kept, anything else parsed by C{parse}
    (a C{ValueError} prefixed by C{option}).
    """
    parseOne = _naming(option, parse)
    return lambda value: None if value is None else parseOne(value)


def _socketMode(value) -> int:
    """
    A C{--chmod-socket} mode: octal text (C{660}) or a number; empty text
    (uWSGI's bare C{--chmod-socket}) is C{666}.
    """
    if isinstance(value, str):
        text = value.strip() or "666"
        try:
            value = int(text, 8)
        except ValueError:
            raise ValueError(f"{text!r} is not an octal mode such as 660") from None
    if not 0 <= value <= 0o777:
        raise ValueError(f"{oct(value)} is not a mode between 000 and 777")
    return value


def _socketOwner(value) -> "tuple[int, int | None]":
    """
    A C{--chown-socket} owner: C{USER[:GROUP]} (names or numbers), or a
    C{(uid, gid)} pair; no group keeps the file's.
    """
    if isinstance(value, str):
        user, colon, group = value.partition(":")
        if not user or (colon and not group):
            raise ValueError(f"{value!r}: give USER or USER:GROUP")
        return userId(user), groupId(group) if colon else None
    uid, gid = value
    return userId(uid), None if gid is None else groupId(gid)


@attr.frozen(kw_only=True, slots=False)
class ProcessOptions:
    """
    The options about the router's process and its socket files, which
    every router takes (C{docs/operations.md}): a mix-in of each router's
    configuration.

    @ivar uid: the user to run as once everything is bound (a name or
        number; L{None}: stay).
    @ivar gid: the group to run as (L{None}: the C{uid}'s primary group,
        or stay).
    @ivar chmod_socket: the mode of every unix socket file the router
        binds, instead of the endpoint's (L{None}: the endpoint's, 666 by
        default).
    @ivar chown_socket: the C{(uid, gid)} owner of those files (C{gid}
        L{None}: keep the group).
    """

    uid: "int | None" = attr.ib(default=None, converter=_optional("--uid", userId))
    gid: "int | None" = attr.ib(default=None, converter=_optional("--gid", groupId))
    chmod_socket: "int | None" = attr.ib(
        default=None, converter=_optional("--chmod-socket", _socketMode))
    chown_socket: "tuple[int, int | None] | None" = attr.ib(
        default=None, converter=_optional("--chown-socket", _socketOwner))


@attr.frozen(kw_only=True)
class RouterConfig(ProcessOptions):
    """
    The options every router shares (C{docs/routing-options.md}).

    @cvar statsName: uWSGI's name of the router, under which the stats
        document lists its addresses.
    @cvar listenerProto: what the listeners speak, for the C{proto} of
        resubscriptions (L{None}: uwsgi).
    """

    statsName: typing.ClassVar[str] = "router"
    listenerProto: typing.ClassVar["bytes | None"] = None

    bind: "tuple[str, ...]" = attr.ib(default=(), converter=_each("--bind", str, str))
    to: "tuple[Node, ...]" = _many("--to", parseNode, Node)
    fallback: "tuple[Node, ...]" = _many("--fallback", parseNode, Node)
    fallback_on_no_key: bool = _flag()
    use_base: "str | None" = None
    use_pattern: "str | None" = None
    use_cache: bool = _flag()
    cache_file: "str | None" = None
    cache_store: "StoreURL | None" = attr.ib(
        default=None,
        converter=attr.converters.optional(_naming("--cache-store", parseStoreURL)),
    )
    cache_ttl: float = attr.ib(default=_CACHE_TTL, converter=float, validator=_above(0))
    use_code: "str | typing.Callable | None" = None
    code_timeout: float = _seconds(5.0)
    name_separator_strip: bool = _flag()
    gracetime: float = _seconds(30.0)
    max_fails: int = attr.ib(default=1, validator=_atLeast(1))
    algo: "str | None" = attr.ib(default=None, validator=attr.validators.optional(_algorithm))
    max_retries: int = _count(3)
    timeout: float = _seconds(60.0)
    connect_timeout: "float | None" = _seconds(None)
    harakiri: float = _seconds(0)
    post_buffering: int = _count(0)
    post_buffering_dir: "str | None" = None
    limit_post: int = _count(0)
    min_body_rate: float = attr.ib(default=500.0, converter=float, validator=_atLeast(0))
    retry_methods: "tuple[str, ...]" = attr.ib(
        default=("GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"), converter=_methods,
    )
    graceful_timeout: float = _seconds(30.0)
    processes: int = attr.ib(default=1, converter=_processes)
    cheap: bool = _flag()
    check_interval: "float | None" = attr.ib(default=None, validator=_aboveZero)
    check_timeout: "float | None" = attr.ib(default=None, validator=_aboveZero)
    check_fall: int = attr.ib(default=DEFAULT_FALL, validator=_atLeast(1))
    check_rise: int = attr.ib(default=DEFAULT_RISE, validator=_atLeast(1))
    check_path: str = attr.ib(default="/", validator=_checkPath)
    silent_errors: bool = _flag()
    quiet: bool = _flag()
    stats: "str | None" = None
    stats_http: bool = _flag()
    stats_minified: bool = _flag()
    metrics: "str | None" = None
    log_format: str = attr.ib(default="combined", validator=_logFormat)
    subscription_server: "tuple[DatagramAddress, ...]" = _many(
        "--subscription-server", _listenAddress, DatagramAddress)
    subscription_algo: str = attr.ib(default="wrr", validator=_algorithm)
    subscription_tolerance: float = _seconds(DEFAULT_TOLERANCE)
    subscription_fallback_key: "str | None" = None
    subscription_max_pools: int = _count(DEFAULT_MAX_POOLS)
    subscription_max_nodes: int = _count(DEFAULT_MAX_NODES)
    subscription_dotsplit: bool = _flag()
    subscription_notify: bool = _flag()
    subscription_sni: bool = _flag()
    subscription_allow: tuple = _many("--subscription-allow", parseNetwork, _NETWORKS)
    subscription_node_network: tuple = _many(
        "--subscription-node-network", _nodeNetwork, _NETWORKS)
    subscription_node_ports: "tuple[tuple[int, int], ...]" = _many(
        "--subscription-node-ports", _portRange)
    subscription_node_dir: "tuple[str, ...]" = _many("--subscription-node-dir", _absoluteDirectory)
    subscriptions_sign_check: "str | None" = attr.ib(default=None, validator=_digestAndPath)
    subscriptions_sign_check_tolerance: int = _count(SIGN_TOLERANCE)
    resubscribe: "tuple[DatagramAddress, ...]" = _many(
        "--resubscribe", parseDatagramAddress, DatagramAddress)
    resubscribe_sign: "str | None" = attr.ib(default=None, validator=_digestAndPath)
    resubscribe_address: "str | None" = None
    enable_proxy_protocol: bool = _flag()
    proxy_protocol_from: "tuple[str, ...]" = _many("--proxy-protocol-from", str, str)
    proxy_protocol_timeout: float = attr.ib(default=5.0, converter=float, validator=_atLeast(0))

    def __attrs_post_init__(self) -> None:
        if self.name_separator_strip:
            # uwsgiconf renders values between ':' separators.
            for name in ("use_base", "use_pattern", "use_code", "cache_file"):
                value = getattr(self, name)
                if isinstance(value, str):
                    object.__setattr__(self, name, value.strip(":"))
        self._checkNodes()
        self._checkHealthChecks()
        self._checkResubscription()
        self.proxyProtocolWrapper(None)

    def proxyProtocolWrapper(self, reactor):
        """
        The wrapping of the listeners' factories the PROXY protocol options
        ask for (L{txrouter.proxyprotocol.proxyProtocolWrapper}), or
        L{None}.

        @raise ValueError: the options do not go together.
        """
        return proxyProtocolWrapper(
            reactor, self.enable_proxy_protocol, self.proxy_protocol_from,
            self.proxy_protocol_timeout, getattr(self, "http_stud_prefix", ()),
        )

    def mappers(self) -> "list[str]":
        """
        The options of the ways to find nodes that are set.
        """
        chosen = [name for name in MAPPERS if getattr(self, name.replace("-", "_"))]
        return chosen + (["to"] if self.to else [])

    #: The options that open listeners, for the message of a router
    #: without one.
    listenerOptions: typing.ClassVar["tuple[str, ...]"] = ("--bind",)

    def tlsListeners(self) -> "tuple[TLSListenerSpec, ...]":
        """
        The TLS listeners given in uWSGI's spelling (C{--https},
        C{--sslrouter}...), besides the C{--bind} endpoints; none here.
        """
        return ()

    def listenerAddresses(self) -> "list[str]":
        """
        Every listener's address, C{--bind} first, in uWSGI's spelling where
        there is one (the endpoint string otherwise): what the stats
        document lists and C{--resubscribe} announces.
        """
        binds = [uwsgiAddressOfEndpoint(description) or description for description in self.bind]
        return binds + [spec.address for spec in self.tlsListeners()]

    def _checkNodes(self) -> None:
        if not self.bind and not self.tlsListeners():
            raise ValueError(
                "at least one " + " or ".join(self.listenerOptions) + " is required")
        chosen = self.mappers()
        if len(chosen) > 1:
            raise ValueError("choose one way to find nodes, not " + ", ".join("--" + n for n in chosen))
        if not chosen:
            raise ValueError(
                "no nodes: give --to NODE or one of " + ", ".join("--" + n for n in MAPPERS)
            )
        self._checkCache()
        if self.use_pattern and "%s" not in self.use_pattern:
            raise ValueError("--use-pattern needs %s where the key goes")
        if self.cheap and chosen[0] not in ("to", "subscription-server"):
            raise ValueError(
                f"--cheap: --{chosen[0]} cannot tell when a node is available;"
                " cheap mode needs --to or --subscription-server"
            )

    def _checkHealthChecks(self) -> None:
        if self.check_interval is None:
            if self.check_timeout is not None:
                raise ValueError("--check-timeout needs --check-interval")
            return
        if not (self.to or self.fallback):
            raise ValueError(
                "--check-interval checks the --to and --fallback nodes, and there is none")

    def _checkCache(self) -> None:
        if self.use_cache and self.cache_file and self.cache_store:
            raise ValueError(
                "--cache-file: the --cache-store is filled with txrouter-cache import FILE,"
                " not read from a file by the router"
            )
        if self.use_cache and not (self.cache_file or self.cache_store):
            raise ValueError("--use-cache needs --cache-file or --cache-store (or build it in a .tac)")
        if self.cache_store and not self.use_cache:
            raise ValueError("--cache-store: give --use-cache too")
        if self.cache_ttl != _CACHE_TTL and not self.cache_store:
            raise ValueError("--cache-ttl: only a --cache-store's values are read again")

    def _checkResubscription(self) -> None:
        if not self.resubscribe:
            return
        if not self.subscription_server:
            raise ValueError("--resubscribe needs a --subscription-server")
        if not self.announcedAddress():
            raise ValueError(
                "--resubscribe: the first listener has no uWSGI address; give --resubscribe-address"
            )

    def announcedAddress(self) -> "str | None":
        """
        The address C{--resubscribe} announces: C{--resubscribe-address},
        else the uWSGI spelling of the first C{--bind} (or, without one, of
        the first TLS listener).
        """
        if self.resubscribe_address:
            return self.resubscribe_address
        if self.bind:
            return uwsgiAddressOfEndpoint(self.bind[0])
        return self.tlsListeners()[0].address


@attr.frozen
class RedirectSpec:
    """
    One C{--http-to-https ADDR[,PORT]} listener.

    @ivar address: the address as given, in uWSGI's form (C{:80},
        C{127.0.0.1:8080}, C{[::1]:8080}).
    @ivar endpoint: the Twisted TCP server endpoint description for it.
    @ivar port: the port written into the C{Location} (L{None}: none, the
        HTTPS default 443).
    """

    address: str
    endpoint: str
    port: "int | None" = None


def parseRedirect(value: str) -> RedirectSpec:
    """
    C{ADDR[,PORT]}, as uWSGI's C{--http-to-https}.

    @raise ValueError: C{ADDR} is not C{[HOST]:PORT}, or C{PORT} not a
        port.
    """
    address, comma, port = value.partition(",")
    if comma:
        if not (port.isascii() and port.isdigit()) or not 0 < int(port) <= 65535:
            raise ValueError(f"{port!r} is not a port")
    return RedirectSpec(address, tcpEndpoint(address), int(port) if comma else None)


@attr.frozen(kw_only=True)
class HTTPRouterConfig(RouterConfig):
    """
    C{twistd txrouter-http}'s options (C{docs/http-router.md}).

    @ivar keepalive: idle seconds between two requests of a connection, 0
        for no keep-alive (the command line's bare C{--keepalive} is
        C{--timeout}'s value).
    @ivar access_log: a file path, or C{-} for standard output.
    """

    statsName: typing.ClassVar[str] = "http"
    listenerProto: typing.ClassVar["bytes | None"] = b"http"

    chunked_input: bool = _flag()
    headers_timeout: "float | None" = _seconds(None)
    body_timeout: "float | None" = _seconds(None)
    keepalive: float = _seconds(0)
    buffer_size: int = _count(4096)
    modifier1: int = attr.ib(default=0, validator=_between(0, 255))
    modifier2: int = attr.ib(default=0, validator=_between(0, 255))
    spool_memory: int = _count(1 << 20)
    spool_dir: "str | None" = None
    server_name: "str | None" = None
    max_request_line: int = _count(8192)
    max_headers: int = _count(100)
    # uwsgi var values are 16-bit: a longer head could not be sent.
    max_head_size: int = attr.ib(default=65536, validator=_between(1, 65536))
    max_response_head_size: int = attr.ib(default=65536, validator=_atLeast(1))
    access_log: "str | None" = None
    websocket_timeout: "float | None" = _seconds(None)
    # uWSGI's --http-websockets: a 101 always opens a tunnel here.
    websockets: bool = _flag()
    auto_chunked: bool = _flag()
    auto_gzip: bool = _flag()
    manage_expect: "int | None" = _count(None)
    raw_body: bool = _flag()
    manage_source: bool = _flag()
    manage_rtsp: bool = _flag()
    node_keepalive: int = _count(0)
    node_keepalive_timeout: float = _seconds(4.0)
    http_var: "tuple[tuple[str, str], ...]" = _many("--http-var", _httpVar)
    trust_forwarded_from: "tuple[str, ...]" = _many("--trust-forwarded-from", _network)
    http_stud_prefix: "tuple[str, ...]" = _many("--http-stud-prefix", str, str)
    send_proxy: bool = _flag()
    send_proxy_v2: bool = _flag()
    http_to_https: "tuple[RedirectSpec, ...]" = _many(
        "--http-to-https", lambda value: parseRedirect(value), RedirectSpec)
    # HTTP/2 (docs/http2.md); a bound of 0 is none.
    http2: bool = _flag()
    http2_max_streams: int = attr.ib(default=100, validator=_between(1, 2**31 - 1))
    http2_max_resets: int = _count(100)
    http2_max_header_block: int = _count(65536)
    http2_max_continuations: int = _count(32)
    http2_header_table_size: int = attr.ib(default=4096, validator=_between(0, 2**31 - 1))
    http2_max_header_list_size: int = attr.ib(default=131072, validator=_between(1, 2**31 - 1))
    http2_max_pings: int = _count(10)
    http2_max_settings: int = _count(10)
    http2_idle_timeout: "float | None" = _seconds(None)
    http2_max_connection_time: float = _seconds(3600.0)
    http2_window: int = attr.ib(default=65535, validator=_between(65535, 2**31 - 1))

    def __attrs_post_init__(self) -> None:
        RouterConfig.__attrs_post_init__(self)
        _checkSendProxy(self)
        if (self.send_proxy or self.send_proxy_v2) and self.node_keepalive:
            raise ValueError(
                "--send-proxy: a kept node connection (--node-keepalive) would carry"
                " other clients' requests under the first client's PROXY header"
            )


@attr.frozen(kw_only=True)
class FastRouterConfig(RouterConfig):
    """
    C{twistd txrouter-fast}'s options (C{docs/fastrouter.md}).
    """

    statsName: typing.ClassVar[str] = "fastrouter"

    keep_modifiers: bool = _flag()
    force_key: "str | None" = None
    buffer_size: int = attr.ib(default=MAX_DATASIZE, validator=_between(0, MAX_DATASIZE))


@attr.frozen(kw_only=True)
class RawRouterConfig(RouterConfig):
    """
    C{twistd txrouter-raw}'s options (C{docs/raw-router.md}).

    A raw connection has no request body: the body options every other
    router takes (C{post_buffering}, C{post_buffering_dir},
    C{limit_post}, C{min_body_rate}, C{retry_methods}) are refused if set
    to anything but their defaults.

    @ivar key: route every connection by this key instead of its
        listener's bind address.
    @ivar xclient: tell nodes the client's address with an SMTP XCLIENT
        command after their greeting.
    """

    statsName: typing.ClassVar[str] = "rawrouter"

    key: "str | None" = None
    xclient: bool = _flag()
    send_proxy: bool = _flag()
    send_proxy_v2: bool = _flag()

    def __attrs_post_init__(self) -> None:
        RouterConfig.__attrs_post_init__(self)
        _checkSendProxy(self)
        if self.key is not None and not 0 < len(self.key.encode()) <= MAX_KEY_LENGTH:
            raise ValueError(f"--key: 1 to {MAX_KEY_LENGTH} bytes, not {len(self.key.encode())}")
        for field in _BODY_FIELDS:
            if getattr(self, field.name) != field.default:
                raise ValueError(
                    f"{_option(field.name)}: does not apply to the raw router"
                    " (it relays bytes: there is no request body)"
                )


def _checkSendProxy(config) -> None:
    if config.send_proxy and config.send_proxy_v2:
        raise ValueError("choose --send-proxy or --send-proxy-v2, not both")


#: The fields of L{RouterConfig} about request bodies.
_BODY_FIELDS = tuple(
    field for field in attr.fields(RouterConfig)
    if field.name in ("post_buffering", "post_buffering_dir", "limit_post",
                      "min_body_rate", "retry_methods")
)


def _directory(path: str) -> str:
    if not path:
        raise ValueError("empty")
    return path


@attr.frozen(kw_only=True, slots=False)
class TLSOptions:
    """
    The TLS options the HTTPS and SSL routers share (C{docs/https-router.md}):
    SNI contexts, client-certificate depth, the handshake deadline.  A
    mix-in of L{HTTPSRouterConfig} and L{SSLRouterConfig}.

    @ivar sni: C{--sni}, parsed (L{txrouter.tls.specs.SNISpec}s).
    @ivar sni_regexp: C{--sni-regexp}, parsed.
    @ivar subscription_sni_dir: where subscribers' C{sni_*} files may be.
    """

    sni: "tuple[SNISpec, ...]" = _many("--sni", parseSNI, SNISpec)
    sni_regexp: "tuple[SNISpec, ...]" = _many("--sni-regexp", parseSNIRegexp, SNISpec)
    sni_dir: "str | None" = None
    sni_dir_ciphers: "str | None" = None
    ssl_verify_depth: int = attr.ib(default=DEFAULT_VERIFY_DEPTH, validator=_between(0, 100))
    tls_handshake_timeout: float = attr.ib(
        default=DEFAULT_HANDSHAKE_TIMEOUT, converter=float, validator=_atLeast(0))
    subscription_sni_dir: "tuple[str, ...]" = _many("--subscription-sni-dir", _directory, str)


@attr.frozen(kw_only=True)
class HTTPSRouterConfig(HTTPRouterConfig, TLSOptions):
    """
    C{twistd txrouter-https}'s options (C{docs/https-router.md}): the HTTP
    router's, its TLS listeners and the TLS options.

    @ivar https: the TLS listeners (C{--https} and C{--https2}), parsed
        (L{txrouter.tls.specs.TLSListenerSpec}s); text is read as
        C{--https}'s C{ADDR,CRT,KEY[,CIPHERS[,CA]]}.
    @ivar https_session_context: the TLS session-id context of every
        listener (L{None}: uWSGI's C{http-ADDR}).
    """

    listenerOptions: typing.ClassVar["tuple[str, ...]"] = ("--bind", "--https")

    https: "tuple[TLSListenerSpec, ...]" = _many("--https", parseHTTPS, TLSListenerSpec)
    https_export_cert: bool = _flag()
    https_session_context: "str | None" = None

    def tlsListeners(self) -> "tuple[TLSListenerSpec, ...]":
        return self.https


@attr.frozen(kw_only=True)
class SSLRouterConfig(RawRouterConfig, TLSOptions):
    """
    C{twistd txrouter-ssl}'s options (C{docs/ssl-router.md}): the raw
    router's, its TLS listeners and the TLS options.

    @ivar sslrouter: the TLS listeners (C{--sslrouter} and
        C{--sslrouter2}), parsed; text is read as C{--sslrouter}'s form.
    @ivar sslrouter_session_context: the TLS session-id context of every
        listener (L{None}: uWSGI's C{sslrouter-ADDR}).
    @ivar sslrouter_sni: route by the client's SNI name instead of the
        listener's address.
    """

    statsName: typing.ClassVar[str] = "sslrouter"
    listenerOptions: typing.ClassVar["tuple[str, ...]"] = ("--bind", "--sslrouter")

    sslrouter: "tuple[TLSListenerSpec, ...]" = _many(
        "--sslrouter", parseSSLRouter, TLSListenerSpec)
    sslrouter_session_context: "str | None" = None
    sslrouter_sni: bool = _flag()

    def tlsListeners(self) -> "tuple[TLSListenerSpec, ...]":
        return self.sslrouter


@attr.frozen(kw_only=True)
class PtyRouterConfig(ProcessOptions):
    """
    C{twistd txrouter-pty}'s options (C{docs/pty-router.md}): a command on
    a new pseudo-terminal for each client.  It has no nodes, so none of
    L{RouterConfig}'s options.

    @ivar command: what each client runs; with a space, C{/bin/sh -c
        COMMAND}.
    @ivar uwsgi_framed: the clients send uwsgi frames (uWSGI's
        C{--forkptyurouter}, C{uwsgi --pty-uconnect}).
    @ivar timeout: idle seconds before a session is hung up; 0 for none.
    @ivar max_sessions: the most sessions at once; 0 for no limit.
    @ivar uid: the user the router, so the commands, run as once its
        listeners are bound (L{ProcessOptions}).
    """

    statsName: typing.ClassVar[str] = "forkptyrouter"

    bind: "tuple[str, ...]" = attr.ib(default=(), converter=_each("--bind", str, str))
    command: str = "/bin/sh"
    rows: int = attr.ib(default=24, validator=_between(1, 65535))
    cols: int = attr.ib(default=80, validator=_between(1, 65535))
    timeout: float = _seconds(60.0)
    uwsgi_framed: bool = _flag()
    max_sessions: int = _count(0)
    allow_root: bool = _flag()
    graceful_timeout: float = _seconds(30.0)

    def __attrs_post_init__(self) -> None:
        if not self.bind:
            raise ValueError("at least one --bind is required")
        if not self.command.strip():
            raise ValueError("--command: empty")
        object.__setattr__(self, "bind", tuple(_privateShellListener(b) for b in self.bind))


#: The interface of a Twisted TCP endpoint string (colons escaped).
_INTERFACE = re.compile(r"(?:^|:)interface=((?:\\:|[^:])*)")


def _privateShellListener(description: str) -> str:
    """
    A pty router's listener gives a shell to whoever connects, with no
    authentication: a C{unix:} socket gets mode 0600 unless its
    description gives one (Twisted's default is 0666), and a TCP listener
    must be on a loopback interface.

    @raise ValueError: a TCP listener reachable from other hosts.
    """
    kind, _, rest = description.partition(":")
    if kind == "unix" and "mode=" not in rest:
        return description + ":mode=600"
    if kind in ("tcp", "tcp6"):
        given = _INTERFACE.search(rest)
        interface = given.group(1).replace("\\:", ":") if given else ""
        if not (interface.startswith("127.") or interface in ("::1", "localhost")):
            raise ValueError(
                f"--bind: {description!r} would give a shell to anyone who reaches it: bind a"
                " unix: socket, or tcp:PORT:interface=127.0.0.1"
            )
    return description


@attr.frozen
class TunTapSpec:
    """
    One C{--tuntap-router "DEV SOCKET [STATS [GATEWAY]]"}: the tun device,
    the unix socket peers connect to, its stats address and its UDP
    gateway address (C{IP:PORT}), as uWSGI's.
    """

    device: str
    socket: str
    stats: "str | None" = None
    gateway: "str | None" = None


def parseTunTapSpec(value: str) -> TunTapSpec:
    words = value.split()
    if not 2 <= len(words) <= 4:
        raise ValueError(f"{value!r}: give DEV SOCKET [STATS [GATEWAY]]")
    if not 0 < len(words[0].encode()) < 16:
        raise ValueError(f"{words[0]!r}: a device name is 1 to 15 bytes")
    if len(words) == 4:
        host, colon, port = words[3].rpartition(":")
        if not colon or not port.isdigit():
            raise ValueError(f"{words[3]!r}: the gateway is a UDP address, IP:PORT")
    return TunTapSpec(*words)


@attr.frozen(kw_only=True)
class TunTapRouterConfig(ProcessOptions):
    """
    C{twistd txrouter-tuntap}'s options (C{docs/tuntap-router.md}), named
    as uWSGI's: IPv4 packets switched between peers on a unix socket and a
    tun device, under firewall and route rules.
    """

    statsName: typing.ClassVar[str] = "tuntap"

    tuntap_router: "tuple[TunTapSpec, ...]" = _many("--tuntap-router", parseTunTapSpec, TunTapSpec)
    tuntap_router_firewall_in: "tuple[FirewallRule, ...]" = _many(
        "--tuntap-router-firewall-in", parseFirewallRule, FirewallRule)
    tuntap_router_firewall_out: "tuple[FirewallRule, ...]" = _many(
        "--tuntap-router-firewall-out", parseFirewallRule, FirewallRule)
    tuntap_router_route: "tuple[RouteRule, ...]" = _many(
        "--tuntap-router-route", parseRouteRule, RouteRule)
    tuntap_router_stats: "str | None" = None
    tuntap_use_credentials: "str | typing.Callable | None" = None
    stats_minified: bool = _flag()

    def __attrs_post_init__(self) -> None:
        if not self.tuntap_router:
            raise ValueError("--tuntap-router: at least one is required (DEV SOCKET)")
        credentials = self.tuntap_use_credentials
        if isinstance(credentials, str) and credentials != "true" and ":" not in credentials:
            raise ValueError(
                f"--tuntap-use-credentials: {credentials!r}: give true, or the MODULE:FUNCTION"
                " that assigns a peer its address from (pid, uid, gid)")
        if self.tuntap_router_route and not all(spec.gateway for spec in self.tuntap_router):
            raise ValueError(
                "--tuntap-router-route: routed packets leave from a gateway socket;"
                " give every --tuntap-router its GATEWAY (DEV SOCKET STATS GATEWAY)")
