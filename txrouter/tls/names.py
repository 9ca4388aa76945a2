"""
The one check a client's SNI name passes before it names anything: a
context, a file, a routing key.

A server name comes from the ClientHello, so it is whatever the client
chose.  uWSGI puts it unchecked into a path (C{--sni-dir}) and into the
routing key; here it must look like a host name first:

  - letters, digits, C{-}, C{_} (found in real host names, and harmless
    in a file name) and dots between non-empty labels, so no C{/}, no
    C{\\}, no C{..}, no NUL, space or control byte, nothing beyond ASCII;
  - at most 255 bytes, as a routing key (and a DNS name);
  - case-folded to lower case (DNS names are case-insensitive, files are
    not), and one trailing dot (the root label) dropped: C{PUBLIC.LOCAL}
    and C{public.local.} both name C{public.local}.

Anything else is refused: the connection gets the default certificate, and
the name is never used.
"""

import re

__all__ = ["MAX_NAME_LENGTH", "canonicalServerName"]

#: The longest accepted name, in bytes (after the trailing dot is dropped).
MAX_NAME_LENGTH = 255

_NAME = re.compile(rb"[a-z0-9_-]+(?:\.[a-z0-9_-]+)*")


def canonicalServerName(name) -> "bytes | None":
    """
    The canonical form of the server name C{name}, or L{None} if it is not
    an acceptable host name (see the module's docstring).

    @param name: the name as sent (C{bytes}, as pyOpenSSL's
        C{get_servername} gives it; C{str} is accepted for configuration),
        or L{None} when the client sent none.
    """
    if name is None:
        return None
    if isinstance(name, str):
        if not name.isascii():
            return None
        name = name.encode("ascii")
    if name.endswith(b"."):
        name = name[:-1]
    if not name or len(name) > MAX_NAME_LENGTH:
        return None
    name = name.lower()
    return name if _NAME.fullmatch(name) else None
