"""
C{--cache-store URL}: where the shared key/value store of a fleet of routers
is (C{docs/fleet.md})::

    redis://[[USER]:PASSWORD@]HOST[:PORT][/DB][?prefix=P]
    rediss://...    the same over TLS: the server's certificate is checked
                    against the system's CAs, or against ca=FILE
    unix:///PATH[?db=N&prefix=P&password=S]

Parsing knows nothing of Twisted, so that the configuration value
(L{txrouter.config}) holds a checked L{StoreURL}; the connection is
L{txrouter.redisclient}'s business.
"""

import urllib.parse

import attr

__all__ = ["DEFAULT_PREFIX", "StoreURL", "parseStoreURL"]

#: What every routing key is prefixed with in Redis, unless C{prefix=}
#: says otherwise: a Redis database shared with other programs stays
#: readable.
DEFAULT_PREFIX = b"txrouter:"

_SCHEMES = ("redis", "rediss", "unix")


@attr.frozen
class StoreURL:
    """
    A parsed C{--cache-store}.

    @ivar scheme: C{redis}, C{rediss} (TLS) or C{unix}.
    @ivar host: the server's name or address (L{None} for C{unix}).
    @ivar port: its TCP port.
    @ivar path: the unix socket's path (L{None} for TCP).
    @ivar db: the Redis database number.
    @ivar prefix: what routing keys are prefixed with in Redis.
    @ivar username: for Redis 6 ACLs, or L{None}.
    @ivar password: or L{None}.
    @ivar ca: a PEM file of the CA certificates a C{rediss} server's is
        checked against (L{None}: the system's).
    """

    scheme: str
    host: "str | None" = None
    port: int = 6379
    path: "str | None" = None
    db: int = 0
    prefix: bytes = DEFAULT_PREFIX
    username: "str | None" = attr.ib(default=None, repr=False)
    password: "str | None" = attr.ib(default=None, repr=False)
    ca: "str | None" = None

    def __str__(self) -> str:
        """
        The URL without its password, for log lines.
        """
        prefix = urllib.parse.quote_from_bytes(self.prefix, safe=":._-")
        if self.scheme == "unix":
            return f"unix://{self.path}?db={self.db}&prefix={prefix}"
        return f"{self.scheme}://{self.host}:{self.port}/{self.db}?prefix={prefix}"


def parseStoreURL(text) -> StoreURL:
    """
    Parse a C{--cache-store} URL (a L{StoreURL} is returned as it is).

    @raise ValueError: not one of the forms above; the message says why.
    """
    if isinstance(text, StoreURL):
        return text
    try:
        return _parse(text)
    except ValueError as e:
        # Said without the password the URL may hold.
        raise ValueError(str(e).replace(repr(text), repr(_hidePassword(text)))) from None


def _hidePassword(text: str) -> str:
    parts = urllib.parse.urlsplit(text)
    if "@" in parts.netloc:
        parts = parts._replace(netloc="***@" + parts.netloc.rpartition("@")[2])
    if "password=" in parts.query:
        parts = parts._replace(query="&".join(
            "password=***" if pair.startswith("password=") else pair
            for pair in parts.query.split("&")))
    return urllib.parse.urlunsplit(parts)


def _parse(text: str) -> StoreURL:
    parts = urllib.parse.urlsplit(text)
    if parts.scheme not in _SCHEMES:
        raise ValueError(f"{text!r}: give redis://HOST:PORT/DB, rediss://... or unix:///PATH")
    try:
        query = dict(urllib.parse.parse_qsl(parts.query, keep_blank_values=True,
                                            strict_parsing=bool(parts.query)))
    except ValueError:
        raise ValueError(f"{text!r}: a query of NAME=VALUE pairs joined by &") from None
    known = {"prefix", "db", "password", "ca"}
    unknown = sorted(set(query) - known)
    if unknown:
        raise ValueError(f"{text!r}: unknown parameter {unknown[0]!r} (known: {', '.join(sorted(known))})")
    prefix = urllib.parse.unquote_to_bytes(_rawParameter(parts.query, "prefix")) \
        if "prefix" in query else DEFAULT_PREFIX
    fields = dict(scheme=parts.scheme, prefix=prefix, ca=query.get("ca"))
    if parts.scheme == "unix":
        if parts.netloc or not parts.path.startswith("/"):
            raise ValueError(f"{text!r}: a unix socket is unix:///ABSOLUTE/PATH")
        fields.update(path=parts.path, db=_db(query.get("db", "0"), text),
                      password=query.get("password"))
    else:
        try:
            host, port = parts.hostname, parts.port
        except ValueError:
            raise ValueError(f"{text!r}: the port must be 1..65535") from None
        if not host:
            raise ValueError(f"{text!r}: no host")
        if port == 0:
            raise ValueError(f"{text!r}: the port must be 1..65535")
        if "db" in query or "password" in query:
            raise ValueError(f"{text!r}: give the database as /DB and the password as :PASSWORD@")
        fields.update(host=host, port=6379 if port is None else port, db=_db(parts.path.strip("/") or "0", text),
                      username=parts.username or None, password=parts.password)
    if fields["ca"] is not None and parts.scheme != "rediss":
        raise ValueError(f"{text!r}: ca= is for rediss:// only")
    return StoreURL(**fields)


def _rawParameter(query: str, name: str) -> str:
    """
    The still-escaped value of C{name} in C{query}, so that a prefix of any
    bytes can be given (C{%FF}).
    """
    for pair in query.split("&"):
        key, _, value = pair.partition("=")
        if key == name:
            return value.replace("+", " ")
    return ""


def _db(text: str, url: str) -> int:
    if not (text.isascii() and text.isdigit()):
        raise ValueError(f"{url!r}: the database is a number, not {text!r}")
    return int(text)
