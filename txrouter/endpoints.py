"""
Server endpoint strings, parsed before anything listens.
"""

from twisted.internet.endpoints import serverFromString

__all__ = ["checkServerEndpoint", "parseServerEndpoint"]


def parseServerEndpoint(reactor, description: str):
    """
    The server endpoint C{description} names (C{serverFromString}),
    nothing bound yet.

    @raise ValueError: it names none; the message says why.  Twisted's
        parsers raise whatever their arguments raise (C{ValueError} for a
        bad number, C{TypeError} for an unknown parameter, C{OSError} for a
        missing certificate, C{IndexError} for a missing systemd
        descriptor...): all mean the same to the user.
    """
    if not description:
        raise ValueError("empty")
    try:
        return serverFromString(reactor, description)
    except Exception as e:
        reason = str(e) or type(e).__name__
        if description.startswith("systemd:") and isinstance(e, (IndexError, KeyError)):
            reason = "systemd passed no such socket"
        raise ValueError(reason + _hint(description)) from None


def _hint(description: str) -> str:
    """
    What a uWSGI user probably meant by an address in uWSGI's spelling
    (C{:8080}, C{127.0.0.1:8080}, C{/run/r.sock}), why a C{systemd:}
    endpoint found no socket, or nothing.
    """
    if description.startswith("systemd:"):
        return (
            " (LISTEN_PID must be this process's, and LISTEN_FDS and LISTEN_FDNAMES"
            " both set: Twisted ignores one without the other;"
            " systemd-socket-activate sets LISTEN_FDNAMES only when given --fdname)"
        )
    host, colon, port = description.rpartition(":")
    if colon and port.isdigit() and "=" not in host:
        if host.startswith("[") and host.endswith("]"):
            escaped = host[1:-1].replace(":", "\\:")
            return f" (uWSGI's {description!r} is tcp6:{port}:interface={escaped} here)"
        if ":" not in host:
            interface = f":interface={host}" if host else ""
            return f" (uWSGI's {description!r} is tcp:{port}{interface} here)"
    if description.isdigit():
        return f" (a port alone is tcp:{description} here)"
    if description.startswith("/"):
        return f" (a unix socket is unix:{description} here)"
    return ""


def checkServerEndpoint(description: str, parse=parseServerEndpoint) -> None:
    """
    Parse C{description} on a reactor that binds nothing, so that a
    mistake is found while the options are read: twistd reports a usage
    error raised then, but only a traceback for one raised by
    C{makeService}.

    @param parse: called as C{parse(reactor, description)}; raises
        C{ValueError} for a description it cannot use.
    @raise ValueError: from C{parse}.
    """
    # Imported here: it brings trial, and only start-up needs it.
    from twisted.internet.testing import MemoryReactor

    parse(MemoryReactor(), description)
