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
        raise ValueError(str(e) or type(e).__name__) from None


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
