"""
txrouter: uWSGI's dedicated routers on Twisted.

The package is layered (see ``docs/design.md``): ``wire`` holds sans-IO codecs,
``routing`` decides which node serves a request, ``upstream`` talks to nodes,
``routers`` holds the client-facing protocols, ``service`` and ``tap`` build
runnable services.
"""

__version__ = "0.1.0"
