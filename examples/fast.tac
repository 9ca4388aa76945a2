"""
The FastRouter built from Python: run with `twistd -r txrouter -ny examples/fast.tac`.

What runs first: uWSGI instances on the sockets of the store below
(./scripts/demo starts app1.sock; start the two app2 instances with
`uwsgi --plugin python3 --socket /tmp/txrouter-demo/app2a.sock --wsgi-file
examples/hello.py`, and app2b.sock likewise), and nginx in front (curl
speaks HTTP, this router uwsgi).  It listens on 127.0.0.1:3017, or where
TXROUTER_BIND says (an endpoint string).

nginx passes requests to it (`uwsgi_pass 127.0.0.1:3017;` with Debian's
uwsgi_params), and it routes them by host to each application's uWSGI
instance, as

    twistd -n txrouter-fast --bind tcp:3017:interface=127.0.0.1 \
        --use-cache --cache-file apps.map \
        --post-buffering 65536 --post-buffering-dir /var/tmp --limit-post 104857600

would with an apps.map of the same two lines; here the key/value store is
filled from Python, and can be changed while the router runs (from an admin
endpoint, a timer, a subscription of your own...).  It also refuses bodies
over 100 MiB (limit_post).

Most of the router's options are keyword arguments of FastRouter with the same
name (dashes become underscores); the listeners', the forwarders' and
--stats's are not (docs/tac.md, "Plain constructors", lists them).  To
write every option as on the command line, use txrouter.config's
FastRouterConfig and txrouter.build.buildService (docs/tac.md).
"""

import os

from twisted.application.service import Application
from twisted.internet import reactor

from txrouter.routers.fast import FastRouter
from txrouter.routing.cache import CacheForwarder, InMemoryStore
from txrouter.service import RouterService

store = InMemoryStore({
    "app1.example.com": "/tmp/txrouter-demo/app1.sock",
    # Two instances, balanced round robin; modifier1 0 for both.
    "app2.example.com": "/tmp/txrouter-demo/app2a.sock|/tmp/txrouter-demo/app2b.sock,0",
})

router = FastRouter(
    reactor,
    forwarder=CacheForwarder(store, reactor),
    post_buffering=65536,
    post_buffering_dir="/var/tmp",
    limit_post=100 << 20,
)
application = Application("txrouter-fast")
BIND = os.environ.get("TXROUTER_BIND", "tcp:3017:interface=127.0.0.1")
RouterService(reactor, router, [BIND]).setServiceParent(application)
