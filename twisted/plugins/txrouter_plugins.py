"""
twistd plugins for txrouter: one per router, and the subscriber.

Importing this file must stay cheap (twistd imports every plugin to list
them), so the routers' modules are only named here, loaded on use.
"""

from twisted.application.reactors import Reactor
from twisted.application.service import ServiceMaker

txrouterHTTP = ServiceMaker(
    "txrouter-http",
    "txrouter.tap.http",
    "HTTP router in front of uWSGI backends (uwsgi --http / --http-to).",
    "txrouter-http",
)

txrouterHTTPS = ServiceMaker(
    "txrouter-https",
    "txrouter.tap.https",
    "HTTPS router in front of uWSGI backends, with SNI (uwsgi --https / --sni).",
    "txrouter-https",
)

txrouterFast = ServiceMaker(
    "txrouter-fast",
    "txrouter.tap.fast",
    "uwsgi-protocol router behind nginx uwsgi_pass (uwsgi --fastrouter).",
    "txrouter-fast",
)

txrouterRaw = ServiceMaker(
    "txrouter-raw",
    "txrouter.tap.raw",
    "TCP router, bytes in and out, routed by listener (uwsgi --rawrouter).",
    "txrouter-raw",
)

txrouterSSL = ServiceMaker(
    "txrouter-ssl",
    "txrouter.tap.ssl",
    "TLS-terminating TCP router, routed by listener or SNI (uwsgi --sslrouter).",
    "txrouter-ssl",
)

txrouterPty = ServiceMaker(
    "txrouter-pty",
    "txrouter.tap.pty",
    "A command (a shell) on a new pseudo-terminal per client (uwsgi --forkptyrouter).",
    "txrouter-pty",
)

txrouterTuntap = ServiceMaker(
    "txrouter-tuntap",
    "txrouter.tap.tuntap",
    "IPv4 switch between jailed uWSGI instances over a tun device (uwsgi --tuntap-router).",
    "txrouter-tuntap",
)

txrouterSubscribe = ServiceMaker(
    "txrouter-subscribe",
    "txrouter.tap.subscribe",
    "Announce a backend to subscription servers (uwsgi --subscribe-to / --subscribe2).",
    "txrouter-subscribe",
)

txrouterReactor = Reactor(
    "txrouter",
    "txrouter.reactor",
    "epoll with lean event dispatch (what the txrouter plugins run on).",
)
