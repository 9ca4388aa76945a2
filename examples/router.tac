"""
The HTTP router built from Python: run with `twistd -r txrouter -ny examples/router.tac`.

Its nodes are the two uWSGI workers ./scripts/demo starts (run it first, in
another terminal), and it listens on 127.0.0.1:8080; the environment can
say otherwise:

    TXROUTER_BIND=tcp:9000:interface=127.0.0.1 TXROUTER_NODES="/run/a.sock /run/b.sock" \
        twistd -r txrouter -ny examples/router.tac

This is the same router as

    twistd -n txrouter-http --bind tcp:8080:interface=127.0.0.1 \
        --to /tmp/txrouter-demo/app1.sock --to /tmp/txrouter-demo/app2.sock \
        --keepalive 15 --access-log -

Most of the router's options are keyword arguments of HTTPRouter with the same
name (dashes become underscores); the listeners', the forwarders' and
--stats's are not (docs/tac.md, "Plain constructors", lists them).  To
write every option as on the command line, use txrouter.config's
HTTPRouterConfig and txrouter.build.buildService (docs/tac.md).
"""

import os
import sys

from twisted.application.service import Application
from twisted.internet import reactor

from txrouter.accesslog import AccessLog
from txrouter.routers.http import HTTPRouter
from txrouter.routing.nodes import parseNode
from txrouter.service import RouterService

BIND = os.environ.get("TXROUTER_BIND", "tcp:8080:interface=127.0.0.1")
NODES = os.environ.get(
    "TXROUTER_NODES", "/tmp/txrouter-demo/app1.sock /tmp/txrouter-demo/app2.sock",
).split()

router = HTTPRouter(
    reactor,
    [parseNode(node) for node in NODES],
    keepalive=15,
    access_log=AccessLog(sys.stdout, reactor),
)
application = Application("txrouter-http")
RouterService(reactor, router, [BIND]).setServiceParent(application)
