"""
From a router's configuration (L{txrouter.config}) to its running services:
the one path for the command line and for C{.tac} files.

A C{.tac} file::

    from twisted.application.service import Application
    from twisted.internet import reactor

    from txrouter.build import buildService
    from txrouter.config import HTTPRouterConfig

    application = Application("txrouter-http")
    buildService(
        HTTPRouterConfig(bind=["tcp:8080"], subscription_server=["127.0.0.1:7000"],
                         stats="tcp:9191:interface=127.0.0.1"),
        reactor,
    ).setServiceParent(application)

L{buildService} gives a L{RouterService} holding, besides the listeners:
the forwarder's services (the subscription servers with notify acks and
resubscription, the SIGHUP reload of a C{--cache-file}, or the
connections to a C{--cache-store}), the SIGUSR1
reopening of the C{--access-log}, the C{--stats} listener (with the
metrics and the stats page under C{--stats-http}), the C{--metrics}
listener, the
C{--http-to-https} listeners, and for the HTTPS and SSL routers the TLS
listeners with their contexts and SNI (L{buildTLS}), reloaded on SIGHUP.
What the router reads from files is read here: the mapping file, the
signing key, the C{--use-code} script, certificates and keys.  A mistake is a C{ValueError} whose message starts
with the option's name; L{checkConfig} finds every mistake the build would,
binding nothing, so that the command line reports it as a usage error.
"""

import functools
import os
import signal
import sys
import time

import attr
from twisted.application.service import MultiService
from twisted.logger import Logger

import txrouter
from txrouter.accesslog import AccessLog, JSONAccessLog, ReopenableFile
from txrouter.checks import HealthChecker, proxyHeaderFor
from txrouter.compiled import describe as describeBuild
from txrouter.config import (
    FastRouterConfig,
    HTTPRouterConfig,
    HTTPSRouterConfig,
    PtyRouterConfig,
    RawRouterConfig,
    SSLRouterConfig,
    TLSOptions,
    TunTapRouterConfig,
)
from txrouter.endpoints import checkServerEndpoint, parseServerEndpoint
from txrouter.privileges import Credentials, DropPrivileges
from txrouter.routers.fast import FastRouter
from txrouter.routers.http import HTTPRouter
from txrouter.routers.pty import PtyRouter, checkPrivileges
from txrouter.routers.raw import RawRouter
from txrouter.routers.redirect import RedirectFactory
from txrouter.routers.ssl import SSLRouter
from txrouter.routers.tuntap import DeviceService, GatewayService, TunTapRouter
from txrouter.unixcredentials import credentialsListening
from txrouter.routing.admission import DEFAULT_PORTS, SOURCE, AddressPolicy
from txrouter.routing.cache import CacheForwarder, InMemoryStore, MappingFileError, parseMapping
from txrouter.routing.code import CodeForwarder, loadCallable
from txrouter.routing.health import NodeHealth
from txrouter.routing.paths import PathForwarder
from txrouter.routing.static import StaticForwarder
from txrouter.routing.subscriptions import SubscriptionRegistry
from txrouter.reload import ConfigReload
from txrouter.service import Listener, RouterService, TLSListener
from txrouter.signals import OnSignal
from txrouter.socketfiles import socketFiles
from txrouter.systemd import SystemdNotifier, notifyAddress
from txrouter.spool import SpoolError, checkSpoolDirectory
from txrouter.stats.metrics import metricsPage
from txrouter.stats.server import MetricsFactory, StatsFactory, statsEndpoint, uwsgiAddressToEndpoint
from txrouter.subscription.addresses import uwsgiAddressOfEndpoint
from txrouter.subscription.client import readSigningKey
from txrouter.subscription.federation import DatagramSender, Resubscriber
from txrouter.subscription.server import DatagramListener, subscriptionServices
from txrouter.subscription.signing import SignatureChecker
from txrouter.tls.contexts import HTTP_PROTOCOLS, ContextPolicy
from txrouter.tls.handshake import DEFAULT_HANDSHAKE_TIMEOUT
from txrouter.tls.listener import ListenerContexts, defaultSessionContext
from txrouter.tls.sni import SNISelector, SubscriptionContexts
from txrouter.transports import listeningReactor
from txrouter.workers.pool import WorkerPool

__all__ = [
    "MappingFile",
    "buildAccessLog",
    "buildForwarder",
    "buildPtyService",
    "buildRouter",
    "buildService",
    "buildTLS",
    "buildTunTapService",
    "checkConfig",
    "statsAddresses",
    "subscriptionForwarder",
]

log = Logger(namespace="txrouter.build")


def buildService(config, reactor, reread=None, worker=None) -> MultiService:
    """
    The service running the router C{config} describes: with
    C{processes} above 1, the L{WorkerPool} binding its listeners and
    running that many worker processes, each of which builds the router
    here again, as a C{worker}.

    @param config: an L{HTTPRouterConfig}, a L{FastRouterConfig}, a
        L{RawRouterConfig} (or one of their TLS kin), or a
        L{PtyRouterConfig}.
    @param reactor: the reactor everything runs on (under twistd, the
        global one; in tests, a C{MemoryReactorClock}).
    @param reread: for a router with nodes, a callable of no argument
        giving the configuration as it is now (read from its files again;
        raising C{ValueError} for a mistake), called on SIGHUP to swap the
        nodes, fallbacks and forwarder (L{txrouter.reload}); L{None}: SIGHUP
        reads the C{--cache-file} again, if there is one.
    @param worker: in a worker process, where its listening sockets and
        its subscriptions come from (a L{txrouter.workers.worker.WorkerSide}):
        its listeners adopt the sockets the pool bound, and its
        subscription servers hear what the pool forwards.
    @raise ValueError: a mistake in C{config}; the message starts with the
        option's name.

    After the router's own services come, when asked, the systemd
    notifier (C{$NOTIFY_SOCKET}: C{READY=1}, C{STOPPING=1}) and, last, the
    switch to C{--uid}/C{--gid} (L{DropPrivileges}): everything is bound
    and opened before it, in twistd's privileged phase.

    It logs which build of txrouter runs (C{txrouter_build}: pure Python,
    or which modules are compiled by mypyc; L{txrouter.compiled}).
    """
    log.info("txrouter_build: txrouter {version}, {build}", event="txrouter_build",
             version=txrouter.__version__, build=describeBuild())
    credentials = Credentials.of(config.uid, config.gid)
    service = _buildRouterService(config, reactor, reread, worker)
    notify = notifyAddress()
    if notify is not None:
        SystemdNotifier(reactor, notify).setServiceParent(service)
    if credentials is not None:
        DropPrivileges(credentials).setServiceParent(service)
    return service


def _buildRouterService(config, reactor, reread=None, worker=None):
    if isinstance(config, PtyRouterConfig):
        return buildPtyService(config, reactor)
    if isinstance(config, TunTapRouterConfig):
        return buildTunTapService(config, reactor)
    _checkPlaces(config)
    files = socketFilesOf(config)
    if config.processes > 1:
        return WorkerPool(reactor, config, files, reread)
    inherited = None
    if worker is not None:
        # The pool made the listeners' socket files; the worker's own
        # stats sockets are in the pool's private directory.
        inherited = worker.listeners
        files = socketFiles
    forwarder, mapping, services = _forwarderParts(config, reactor, files(reactor), worker)
    accessLog, logServices = buildAccessLog(config, reactor)
    tls = buildTLS(config, reactor, forwarder)
    router = buildRouter(config, reactor, forwarder, accessLog)
    wrap = config.proxyProtocolWrapper(reactor)
    service = RouterService(
        reactor, router, config.bind, config.graceful_timeout, cheap=config.cheap,
        wrap=wrap, tlsListeners=tls.listeners,
        handshakeTimeout=getattr(config, "tls_handshake_timeout", DEFAULT_HANDSHAKE_TIMEOUT),
        socketFiles=files if inherited is None else (lambda listening: listening),
        inherited=inherited,
    )
    checker = None
    if router.health is not None:
        checker = HealthChecker(
            reactor, router.health, config.check_interval, config.check_timeout, config.check_path,
            proxyHeaderFor(_sendProxy(config)),
        )
    if mapping is not None or reread is not None:
        reload = ConfigReload(
            service, config, lambda new, health: _reloadedNodes(new, reactor, health),
            mapping, reread, checker,
        )
        services.append(OnSignal(reactor, signal.SIGHUP, reload))
    redirects = _redirects(config, reactor, wrap, inherited)
    for extra in services + logServices + tls.services + redirects:
        extra.setServiceParent(service)
    if checker is not None:
        checker.setServiceParent(service)
    metrics = metricsPage(router, config.statsName)
    if config.stats:
        stats = _checked(
            "--stats", service.serveStats, files(reactor), config.stats, config.statsName,
            statsAddresses(config), http=config.stats_http, minified=config.stats_minified,
        )
        stats.factory.metrics = metrics
        stats.factory.shortName = config.statsName
    if config.metrics:
        endpoint = _checked("--metrics", statsEndpoint, files(reactor), config.metrics)
        Listener(endpoint, MetricsFactory(reactor, metrics), f"--metrics {config.metrics}").setServiceParent(service)
    return service


def checkConfig(config):
    """
    Find the mistakes L{buildService} would, binding and starting nothing:
    endpoint strings that name no endpoint, directories where temporary
    files cannot be created, a mapping file, signing key or C{--use-code}
    that cannot be read, an access log that cannot be opened.

    @return: C{config}, with its C{--use-code} callable loaded (so that a
        script runs once).
    @raise ValueError: the first mistake; the message starts with the
        option's name.
    """
    Credentials.of(config.uid, config.gid)
    if isinstance(config, PtyRouterConfig):
        _checkPtyConfig(config)
        return config
    if isinstance(config, TunTapRouterConfig):
        if isinstance(config.tuntap_use_credentials, str) and config.tuntap_use_credentials != "true":
            config = attr.evolve(config, tuntap_use_credentials=_checked(
                "--tuntap-use-credentials", loadCallable, config.tuntap_use_credentials))
        buildTunTapService(config, _WallClock())
        return config
    _checkPlaces(config)
    buildTLS(config, _WallClock())
    if config.use_cache and config.cache_file:
        MappingFile(config.cache_file, InMemoryStore()).read()
    if config.cache_store is not None and config.cache_store.ca is not None:
        _checked("--cache-store", _checkReadable, config.cache_store.ca)
    if config.resubscribe_sign:
        _checked("--resubscribe-sign", readSigningKey, config.resubscribe_sign)
    if config.subscriptions_sign_check:
        _checked("--subscriptions-sign-check", _checkKeyDirectory,
                 config.subscriptions_sign_check.partition(":")[2])
    if isinstance(config, HTTPRouterConfig) and config.access_log not in (None, "-"):
        _checked("--access-log", _openAccessLog, config.access_log).close()
    if isinstance(config.use_code, str):
        config = attr.evolve(config, use_code=_checked("--use-code", loadCallable, config.use_code))
    return config


def buildPtyService(config: PtyRouterConfig, reactor) -> RouterService:
    """
    The forkpty router's service: its listeners over one L{PtyRouter}.

    @raise ValueError: an endpoint string names no endpoint, or the router
        runs as root without C{--allow-root} or C{--uid}.
    """
    _checkPtyConfig(config)
    router = PtyRouter(
        reactor, command=config.command, rows=config.rows, cols=config.cols,
        timeout=config.timeout, uwsgi_framed=config.uwsgi_framed,
        max_sessions=config.max_sessions,
    )
    return RouterService(reactor, router, config.bind, config.graceful_timeout,
                         socketFiles=socketFilesOf(config))


def buildTunTapService(config: TunTapRouterConfig, reactor) -> MultiService:
    """
    The TunTap routers' service: for each C{--tuntap-router}, its device,
    its peers' unix listener, its stats listener and its UDP gateway.
    Nothing is opened until it starts.

    @raise ValueError: a stats address names no endpoint.
    """
    service = MultiService()
    credentials = config.tuntap_use_credentials
    if isinstance(credentials, str) and credentials != "true":
        credentials = _checked("--tuntap-use-credentials", loadCallable, credentials)
    files = socketFilesOf(config)
    for spec in config.tuntap_router:
        router = TunTapRouter(
            firewall_in=config.tuntap_router_firewall_in,
            firewall_out=config.tuntap_router_firewall_out,
            routes=config.tuntap_router_route,
            credentials=credentials not in (None, False),
            addressFor=credentials if callable(credentials) else None,
        )
        DeviceService(reactor, spec.device, router).setServiceParent(service)
        listening = files(credentialsListening(reactor) if router.credentials else reactor)
        socket = parseServerEndpoint(listening, uwsgiAddressToEndpoint(spec.socket))
        Listener(socket, router, f"--tuntap-router {spec.socket}").setServiceParent(service)
        stats = spec.stats or config.tuntap_router_stats
        if stats:
            endpoint = _checked("--tuntap-router-stats", statsEndpoint, files(reactor), stats)
            factory = StatsFactory(reactor, router.statsDocument, minified=config.stats_minified)
            Listener(endpoint, factory, f"--tuntap-router-stats {stats}").setServiceParent(service)
        if spec.gateway:
            GatewayService(reactor, spec.gateway, router).setServiceParent(service)
    return service


def _checkPtyConfig(config: PtyRouterConfig) -> None:
    for description in config.bind:
        _checked("--bind", checkServerEndpoint, description)
    checkPrivileges(config.allow_root, config.uid)


def _checkReadable(path: str) -> None:
    try:
        with open(path, "rb"):
            pass
    except OSError as e:
        raise ValueError(f"{path}: {e.strerror}") from None


def _checkKeyDirectory(directory: str) -> None:
    """
    The directory of the subscribers' public keys must be one: a typo
    would otherwise refuse every signed announce, as C{no_public_key}.
    """
    if not os.path.isdir(directory):
        raise ValueError(f"{directory}: no such directory (of the subscribers' public keys)")


def _checkPlaces(config) -> None:
    """
    Check the endpoint strings and the spool directories.
    """
    for description in config.bind:
        _checked("--bind", checkServerEndpoint, description)
    if config.stats is not None:
        _checked("--stats", checkServerEndpoint, config.stats, statsEndpoint)
    if config.metrics is not None:
        _checked("--metrics", checkServerEndpoint, config.metrics, statsEndpoint)
    for name, directory in _spoolDirectories(config):
        _checked(name, checkSpoolDirectory, directory)


def _checked(option: str, call, *args, **kwargs):
    """
    C{call(*args, **kwargs)}, with the message of a C{ValueError} it
    raises prefixed by C{option}.
    """
    try:
        return call(*args, **kwargs)
    except (ValueError, SpoolError) as e:
        raise ValueError(f"{option}: {e}") from None


def _spoolDirectories(config) -> "list[tuple[str, str]]":
    """
    The directories the router will create temporary files in, with their
    options.  The HTTP router uses both whenever given (a de-chunked body
    is spooled in C{--post-buffering-dir} when there is no C{--spool-dir});
    the FastRouter uses C{--post-buffering-dir} only with C{--post-buffering}.
    """
    if isinstance(config, HTTPRouterConfig):
        candidates = [("--spool-dir", config.spool_dir),
                      ("--post-buffering-dir", config.post_buffering_dir)]
    elif config.post_buffering:
        candidates = [("--post-buffering-dir", config.post_buffering_dir)]
    else:
        candidates = []
    return [(name, directory) for name, directory in candidates if directory is not None]


# The router


def buildRouter(config, reactor, forwarder=None, accessLog=None):
    """
    The router C{config} describes (the factory its listeners share).

    @param forwarder: an C{IForwarder}, or L{None} for the static one over
        C{config.to}.
    @param accessLog: an L{AccessLog} for the HTTP router, or L{None}.
    """
    health = None
    if config.check_interval is not None:
        health = NodeHealth(
            reactor, config.to, config.fallback, config.check_fall, config.check_rise,
        )
    shared = dict(
        health=health,
        forwarder=forwarder,
        fallback=config.fallback,
        fallback_on_no_key=config.fallback_on_no_key,
        max_retries=config.max_retries,
        gracetime=config.gracetime,
        max_fails=config.max_fails,
        algo=config.algo,
        timeout=config.timeout,
        connect_timeout=config.connect_timeout,
        harakiri=config.harakiri,
        post_buffering=config.post_buffering,
        post_buffering_dir=config.post_buffering_dir,
        limit_post=config.limit_post,
        min_body_rate=config.min_body_rate,
        retry_methods=config.retry_methods,
        silent_errors=config.silent_errors,
        quiet=config.quiet,
    )
    if isinstance(config, HTTPRouterConfig):
        return HTTPRouter(
            reactor,
            config.to,
            headers_timeout=config.headers_timeout,
            body_timeout=config.body_timeout,
            keepalive=config.keepalive,
            buffer_size=config.buffer_size,
            modifier1=config.modifier1,
            modifier2=config.modifier2,
            http_vars=config.http_var,
            chunked_input=config.chunked_input,
            spool_memory=config.spool_memory,
            spool_dir=config.spool_dir,
            trust_forwarded_from=config.trust_forwarded_from,
            server_name=config.server_name,
            max_request_line=config.max_request_line,
            max_headers=config.max_headers,
            max_head_size=config.max_head_size,
            max_response_head_size=config.max_response_head_size,
            access_log=accessLog,
            websocket_timeout=config.websocket_timeout,
            auto_chunked=config.auto_chunked,
            auto_gzip=config.auto_gzip,
            manage_expect=config.manage_expect,
            raw_body=config.raw_body,
            manage_source=config.manage_source,
            manage_rtsp=config.manage_rtsp,
            node_keepalive=config.node_keepalive,
            node_keepalive_timeout=config.node_keepalive_timeout,
            send_proxy=_sendProxy(config),
            https_export_cert=getattr(config, "https_export_cert", False),
            http2=config.http2,
            http2_max_streams=config.http2_max_streams,
            http2_max_resets=config.http2_max_resets,
            http2_max_header_block=config.http2_max_header_block,
            http2_max_continuations=config.http2_max_continuations,
            http2_header_table_size=config.http2_header_table_size,
            http2_max_header_list_size=config.http2_max_header_list_size,
            http2_max_pings=config.http2_max_pings,
            http2_max_settings=config.http2_max_settings,
            http2_idle_timeout=config.http2_idle_timeout,
            http2_max_connection_time=config.http2_max_connection_time,
            http2_window=config.http2_window,
            **shared,
        )
    if isinstance(config, FastRouterConfig):
        return FastRouter(
            reactor,
            config.to,
            force_key=config.force_key,
            keep_modifiers=config.keep_modifiers,
            buffer_size=config.buffer_size,
            **shared,
        )
    if isinstance(config, RawRouterConfig):
        raw = dict(key=config.key, xclient=config.xclient, send_proxy=_sendProxy(config), **shared)
        if isinstance(config, SSLRouterConfig):
            return SSLRouter(reactor, config.to, sni=config.sslrouter_sni, **raw)
        return RawRouter(reactor, config.to, **raw)
    raise TypeError(f"not a router configuration: {config!r}")


def _sendProxy(config) -> int:
    """
    The PROXY protocol version C{--send-proxy}/C{--send-proxy-v2} ask
    for, 0 for none (and for the FastRouter, which has neither).
    """
    if getattr(config, "send_proxy_v2", False):
        return 2
    return 1 if getattr(config, "send_proxy", False) else 0


# TLS


@attr.frozen
class TLSSetup:
    """
    What L{buildTLS} makes.

    @ivar listeners: the L{TLSListener}s of C{--https} or C{--sslrouter}.
    @ivar selector: the L{SNISelector} every listener shares, or L{None}.
    @ivar services: the SIGHUP reload, if there is something to reload.
    """

    listeners: tuple = ()
    selector: "SNISelector | None" = None
    services: list = attr.ib(factory=list)


class _WallClock:
    """
    The clock of L{checkConfig}, which has no reactor: certificates are
    checked against the time now.
    """

    seconds = staticmethod(time.time)


def buildTLS(config, reactor, forwarder=None) -> TLSSetup:
    """
    The TLS listeners of an HTTPS or SSL router configuration, their
    contexts (the files read and checked now) and SNI, with one policy;
    nothing for other routers.

    Subscribers' contexts (C{sni_key}, C{sni_crt}, C{sni_ca}) are served
    only with C{--subscription-sni}, a C{--subscription-sni-dir} and a
    subscription registry as the forwarder.

    @param forwarder: the router's forwarder (L{buildForwarder}).
    @raise ValueError: a file, cipher list or directory that cannot be
        used; the message starts with the option's name.
    """
    if not isinstance(config, TLSOptions):
        return TLSSetup()
    if isinstance(config, HTTPSRouterConfig):
        protocols = (b"h2",) + HTTP_PROTOCOLS if config.http2 else HTTP_PROTOCOLS
        policy = ContextPolicy(protocols=protocols, verifyDepth=config.ssl_verify_depth)
        specs, option, name = config.https, "--https", "http"
        sessionContext = config.https_session_context
    else:
        policy = ContextPolicy(verifyDepth=config.ssl_verify_depth)
        specs, option, name = config.sslrouter, "--sslrouter", "sslrouter"
        sessionContext = config.sslrouter_session_context
    subscriptions = None
    if config.subscription_sni_dir:
        lookup = getattr(forwarder, "sniForName", None) if config.subscription_sni else None
        subscriptions = _checked(
            "--subscription-sni-dir", SubscriptionContexts,
            lookup or (lambda serverName: None), config.subscription_sni_dir,
            config.sni_dir_ciphers, policy, reactor,
        )
    selector = SNISelector(
        config.sni, config.sni_regexp, config.sni_dir, config.sni_dir_ciphers, subscriptions,
        policy, reactor, dotsplit=config.subscription_dotsplit,
    )
    listeners = []
    for spec in specs:
        contexts = _checked(
            f"{option} {spec.address}", ListenerContexts, spec.files,
            sessionContext or defaultSessionContext(name, spec.address), reactor, selector, policy,
        )
        listeners.append(TLSListener(spec.address, contexts, option))
    reload = TLSReload(selector, [listener.contexts for listener in listeners])
    return TLSSetup(tuple(listeners), selector, [OnSignal(reactor, signal.SIGHUP, reload)])


class TLSReload:
    """
    SIGHUP for the TLS side: every certificate, key and CA file read again
    (the SNI selector's, then each listener's).  A reload that fails keeps
    the contexts in use, says why (C{tls_reload_refused}) and the router
    goes on serving.
    """

    def __init__(self, selector: SNISelector, listeners) -> None:
        self.selector = selector
        self.listeners = listeners

    def __call__(self) -> None:
        try:
            self.selector.reload()
            for listener in self.listeners:
                listener.reload()
        except ValueError as e:
            log.error(
                "tls_reload_refused: {error}; keeping the contexts in use",
                event="tls_reload_refused", error=str(e),
            )
        else:
            log.info("tls_reloaded: certificates read again", event="tls_reloaded")


def _redirects(config, reactor, wrap, inherited=None) -> list:
    """
    The C{--http-to-https} listeners (never paused by cheap mode: they
    need no node).
    """
    specs = getattr(config, "http_to_https", ())
    if not specs:
        return []
    listening = listeningReactor(reactor, wrap, inherited=inherited)
    timeout = config.headers_timeout if config.headers_timeout is not None else config.timeout
    return [
        Listener(parseServerEndpoint(listening, spec.endpoint),
                 RedirectFactory(reactor, spec.port, timeout), f"--http-to-https {spec.endpoint}")
        for spec in specs
    ]


# The access log


def buildAccessLog(config, reactor) -> "tuple[AccessLog | None, list]":
    """
    The HTTP router's C{--access-log} (combined, or JSON lines with
    C{--log-format json}), and the service that reopens its
    file on SIGUSR1 (logrotate's C{postrotate kill -USR1}); C{-} is
    standard output, never reopened.

    @return: C{(accessLog, services)}; C{(None, [])} without one.
    @raise ValueError: the file cannot be opened for appending.
    """
    path = getattr(config, "access_log", None)
    if not path:
        return None, []
    kind = JSONAccessLog if config.log_format == "json" else AccessLog
    if path == "-":
        return kind(sys.stdout, reactor), []
    file = _checked("--access-log", _openAccessLog, path)
    return kind(file, reactor), [OnSignal(reactor, signal.SIGUSR1, file.reopen)]


def _openAccessLog(path: str) -> ReopenableFile:
    try:
        return ReopenableFile(path)
    except OSError as e:
        raise ValueError(f"{path}: {e.strerror}") from None


# Forwarders


class MappingFile:
    """
    A C{--cache-file}: its content fills a store, now and on each
    L{reload} (SIGHUP).

    @ivar path: the file.
    @ivar store: the L{InMemoryStore} it fills.
    """

    def __init__(self, path: str, store: InMemoryStore) -> None:
        self.path = path
        self.store = store

    def read(self) -> "dict[bytes, str]":
        """
        The file's mapping, every value checked.

        @raise MappingFileError: the file cannot be read, or has a bad line
            (C{--cache-file: FILE:LINE: reason}).
        """
        try:
            with open(self.path, "rb") as f:
                data = f.read()
        except OSError as e:
            raise MappingFileError(f"--cache-file: {self.path}: {e.strerror}") from None
        try:
            return parseMapping(data, self.path)
        except MappingFileError as e:
            raise MappingFileError(f"--cache-file: {e}") from None

    def load(self) -> None:
        """
        Replace the store's whole mapping with the file's.

        @raise MappingFileError: as L{read}; the store is left as it was.
        """
        mapping = self.read()
        self.store.replace(mapping)
        log.info(
            "cache_file_loaded: {count} keys from {path}",
            event="cache_file_loaded", count=len(mapping), path=self.path,
        )

    def reload(self) -> None:
        """
        L{load}, keeping the current mapping if the file is refused (logged
        as C{cache_file_refused}).
        """
        try:
            self.load()
        except MappingFileError as e:
            log.error(
                "cache_file_refused: {error}; keeping the previous mapping",
                event="cache_file_refused", error=str(e),
            )


def socketFilesOf(config):
    """
    What makes a reactor whose unix listeners get the socket files
    C{--chmod-socket} and C{--chown-socket} ask for (and a stale file
    replaced): L{txrouter.socketfiles.socketFiles} with them.
    """
    return functools.partial(socketFiles, mode=config.chmod_socket, owner=config.chown_socket)


def buildForwarder(config, reactor, listening=None, worker=None) -> tuple:
    """
    The forwarder C{config} chooses (L{None} for the static one over the
    C{--to} nodes, which the router builds itself) and the services it
    needs.

    @param listening: the reactor the subscription servers bind with
        (default: C{reactor}).
    @param worker: in a worker process, a L{txrouter.workers.worker.WorkerSide},
        whose subscriptions the subscription registry hears.
    @return: C{(forwarder, services)}.
    @raise ValueError: a mapping file, script or key that cannot be used.
    """
    forwarder, mapping, services = _forwarderParts(config, reactor, listening, worker)
    if mapping is not None:
        services.append(OnSignal(reactor, signal.SIGHUP, mapping.reload))
    return forwarder, services


def _forwarderParts(config, reactor, listening=None, worker=None) -> tuple:
    """
    L{buildForwarder}'s forwarder and services, and apart the
    L{MappingFile} of C{--use-cache} (or L{None}), whose reloading is the
    caller's.

    @return: C{(forwarder, mapping, services)}.
    """
    if config.use_base:
        return PathForwarder.fromBase(config.use_base), None, []
    if config.use_pattern:
        return PathForwarder(config.use_pattern), None, []
    if config.use_code:
        function = config.use_code
        if isinstance(function, str):
            function = _checked("--use-code", loadCallable, function)
        return CodeForwarder(function, reactor, config.code_timeout), None, []
    if config.use_cache and config.cache_store is not None:
        # Imported here, not at the top: txredisapi imports the global
        # reactor, which twistd installs after the options are parsed.
        from txrouter.redisclient import redisStore

        store, service = redisStore(config.cache_store, reactor, config.cache_ttl)
        return CacheForwarder(store, reactor), None, [
            service, OnSignal(reactor, signal.SIGHUP, store.refreshAll)]
    if config.use_cache:
        store = InMemoryStore()
        mappingFile = MappingFile(config.cache_file, store)
        mappingFile.load()
        return CacheForwarder(store), mappingFile, []
    if config.subscription_server:
        registry, services = subscriptionForwarder(config, reactor, listening, worker)
        return registry, None, services
    return None, None, []


def _reloadedNodes(config, reactor, health) -> tuple:
    """
    The forwarder, mapping file and nodes' health of a configuration read
    again (L{ConfigReload}): the static forwarder over C{to} is made here,
    as the router makes its own at start.

    @param health: the running L{NodeHealth}, or L{None} without checks.
    """
    forwarder, mapping, _ = _forwarderParts(config, reactor)
    if health is not None:
        health = health.forNodes(config.to, config.fallback)
    if forwarder is None:
        forwarder = StaticForwarder(
            config.to, reactor, config.gracetime, config.max_fails, config.algo, health,
        )
    return forwarder, mapping, health


def subscriptionForwarder(config, reactor, listening=None, worker=None) -> tuple:
    """
    The subscription registry C{config} describes, and its services: the
    subscription servers, with notify acks and resubscription if asked.

    @param worker: in a worker process, a L{txrouter.workers.worker.WorkerSide}:
        its subscription servers hear the datagrams the pool forwards
        instead of binding, and only its first worker acknowledges
        (C{notify}) and resubscribes, so that the pool does each once.

    @return: C{(registry, services)}.
    @raise ValueError: the C{--resubscribe-sign} key cannot be used.
    """
    checker = None
    if config.subscriptions_sign_check:
        digest, _, directory = config.subscriptions_sign_check.partition(":")
        checker = SignatureChecker(
            digest, directory, config.subscriptions_sign_check_tolerance, clock=reactor,
        )
    policy = AddressPolicy(
        networks=config.subscription_node_network or (SOURCE,),
        ports=config.subscription_node_ports or DEFAULT_PORTS,
        directories=config.subscription_node_dir,
        ownPorts=_ownPorts(config),
    )
    registry = SubscriptionRegistry(
        reactor,
        algo=config.subscription_algo,
        tolerance=config.subscription_tolerance,
        dotsplit=config.subscription_dotsplit,
        fallback_key=config.subscription_fallback_key,
        max_pools=config.subscription_max_pools,
        max_nodes=config.subscription_max_nodes,
        allow=config.subscription_allow,
        address_policy=policy,
        sign_check=checker,
        notify=config.subscription_notify,
        sni=config.subscription_sni,
        pending_timeout=config.connect_timeout or config.timeout,
    )
    speaks = worker is None or worker.index == 0
    sender = None
    if speaks and (config.subscription_notify or config.resubscribe):
        sender = DatagramSender()
    resubscriber = None
    if speaks and config.resubscribe:
        sign = None
        if config.resubscribe_sign:
            sign = _checked("--resubscribe-sign", readSigningKey, config.resubscribe_sign)
        resubscriber = Resubscriber(
            reactor, config.resubscribe, config.announcedAddress(), sender, sign,
            proto=config.listenerProto,
        )
    services = subscriptionServices(
        reactor, config.subscription_server, registry, resubscriber, sender, listening,
        listen=worker.datagramListener if worker is not None else DatagramListener,
    )
    return registry, services


def _ownPorts(config) -> set:
    """
    The TCP ports the router listens on, which subscribed loopback nodes
    must not use.
    """
    addresses = [uwsgiAddressOfEndpoint(description) for description in config.bind]
    addresses += [spec.address for spec in config.tlsListeners()]
    ports = set()
    for address in addresses:
        if address and not address.startswith(("/", "@")):
            ports.add(int(address.rpartition(":")[2]))
    return ports


def statsAddresses(config) -> list:
    """
    The addresses the stats document lists, as uWSGI does: the listeners,
    then the subscription servers, in uWSGI's spelling where there is one.
    """
    return config.listenerAddresses() + [address.text for address in config.subscription_server]
