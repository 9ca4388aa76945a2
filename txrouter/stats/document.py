"""
The stats JSON document, with the keys and nesting of uWSGI 2.0.21's
corerouter stats (reference section 10.1), always valid and escaped JSON.

Each part comes from whoever knows it: the router (its sessions), the
service (its listeners, cheap mode), and the forwarder, through
L{IStatsSource} (C{static_nodes} for C{--to}, C{subscriptions} for the
subscription registry).  The interface is routing's: stats reads routing,
never the reverse; it is importable from here too.
"""

import json
import os

import txrouter
from txrouter.routing.interfaces import IStatsSource

__all__ = ["IStatsSource", "encodeStats", "statsDocument"]


def statsDocument(shortName: str, addresses, activeSessions: int, sources, cheap: bool) -> dict:
    """
    The document, as an ordered dict.

    @param shortName: uWSGI's name of the router (C{http}, C{fastrouter}).
    @param addresses: the listener and subscription-server addresses.
    @param sources: L{IStatsSource} providers, or objects that are not.
    """
    document = {
        "version": f"txrouter-{txrouter.__version__}",
        "pid": os.getpid(),
        "uid": os.getuid(),
        "gid": os.getgid(),
        "cwd": os.getcwd(),
        "active_sessions": activeSessions,
        shortName: list(addresses),
    }
    for source in sources:
        provider = IStatsSource(source, None)
        if provider is not None:
            document.update(provider.statsFields())
    document["cheap"] = int(cheap)
    return document


def encodeStats(document: dict, minified: bool = False) -> bytes:
    """
    Encode like uWSGI (one key per line, tab indentation, C{"key":value}),
    or without whitespace (C{--stats-minified}); strings are escaped.
    """
    if minified:
        return json.dumps(document, separators=(",", ":")).encode()
    return json.dumps(document, indent="\t", separators=(",", ":")).encode()
