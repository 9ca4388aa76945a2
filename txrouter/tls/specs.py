"""
uWSGI's spellings of TLS listeners and SNI contexts, parsed into values.

Positional forms (C{CA} prefixed with C{!}: a client certificate is
required; without it one is requested, and checked if sent, as
C{SSL_VERIFY_PEER} does in uWSGI's C{core/ssl.c})::

    --https      ADDR,CRT,KEY[,CIPHERS[,CA]]
    --sslrouter  ADDR,CRT,KEY[,CIPHERS[,CA]]
    --sni        "NAME CRT,KEY[,CIPHERS[,CA]]"
    --sni-regexp "REGEXP CRT,KEY[,CIPHERS[,CA]]"

Key-value forms (uWSGI's C{uwsgi_kvlist_parse}: items split on C{,}, a
backslash escapes the next character)::

    --https2     addr=…,cert=…|crt=…,key=…[,ciphers=…][,clientca=…|client_ca=…][,spdy=1]
    --sslrouter2 addr=…,cert=…|crt=…,key=…[,ciphers=…][,clientca=…|client_ca=…]

Stricter than uWSGI, which ignores what it does not know: an unknown key or
an item without C{=} is a mistake (a misspelt C{clientca} would otherwise
turn client authentication off without a word).  C{spdy=1} is accepted and
recorded (L{TLSListenerSpec.spdy}), but SPDY is not spoken.

Every mistake is a C{ValueError} whose message starts with the option.
Nothing here opens a file.
"""

import ipaddress
import re

import attr

from txrouter.tls.names import canonicalServerName

__all__ = [
    "TLSFiles",
    "TLSListenerSpec",
    "SNISpec",
    "parseHTTPS",
    "parseHTTPS2",
    "parseSSLRouter",
    "parseSSLRouter2",
    "parseSNI",
    "parseSNIRegexp",
    "tcpEndpoint",
    "listenArguments",
]


@attr.frozen
class TLSFiles:
    """
    What one TLS context is made of, as named on the command line.

    @ivar certificate: the PEM certificate file (the chain may follow).
    @ivar key: the PEM private key file.
    @ivar ciphers: an OpenSSL cipher list for TLS 1.2, or L{None} for the
        default one.
    @ivar clientCA: the PEM file of the CAs client certificates are checked
        against, or L{None}: no client certificate is asked for.
    @ivar clientCertificateRequired: with C{clientCA}, whether a client
        without a certificate is refused (uWSGI's C{!} prefix), rather than
        only asked for one.
    """

    certificate: str
    key: str
    ciphers: "str | None" = None
    clientCA: "str | None" = None
    clientCertificateRequired: bool = False


@attr.frozen
class TLSListenerSpec:
    """
    One TLS listener (C{--https}, C{--https2}, C{--sslrouter},
    C{--sslrouter2}).

    @ivar address: the address as given, in uWSGI's form (C{:8443},
        C{127.0.0.1:8443}, C{[::1]:8443}): uWSGI's default session-id
        context is made from it.
    @ivar endpoint: the Twisted TCP server endpoint description for it.
    @ivar spdy: C{spdy=1} was given (C{--https2}); it has no effect.
    """

    address: str
    endpoint: str
    files: TLSFiles
    spdy: bool = False


@attr.frozen
class SNISpec:
    """
    One C{--sni} (C{name} is a canonical server name) or C{--sni-regexp}
    (C{name} is the regular expression) context.
    """

    name: str
    files: TLSFiles


def _escaped(value: str) -> str:
    return "".join("\\" + c if c in "\\:=" else c for c in value)


def listenArguments(address: str) -> "tuple[int, str]":
    """
    The C{(port, interface)} to listen on for a uWSGI listening address
    (C{:8443} gives C{(8443, "")}, C{[::1]:8443} gives C{(8443, "::1")}),
    as C{listenTCP} and C{listenSSL} take them.

    @raise ValueError: as L{tcpEndpoint}.
    """
    _, host, port = _hostAndPort(address)
    return port, host


def tcpEndpoint(address: str) -> str:
    """
    The Twisted TCP server endpoint description of a uWSGI listening
    address: C{:8443} and C{*:8443} (every IPv4 interface) give
    C{tcp:8443}, C{127.0.0.1:8443} gives C{tcp:8443:interface=127.0.0.1},
    C{[::1]:8443} gives C{tcp6:8443:interface=\\:\\:1}.

    @raise ValueError: C{address} is not C{[HOST]:PORT}.
    """
    kind, host, port = _hostAndPort(address)
    if not host:
        return f"{kind}:{port}"
    return f"{kind}:{port}:interface={_escaped(host)}"


def _hostAndPort(address: str) -> "tuple[str, str, int]":
    if address.startswith("["):
        host, bracket, port = address[1:].partition("]:")
        if not bracket:
            raise ValueError(f"{address!r} is not [IPv6]:PORT")
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"{address!r}: {host!r} is not an IPv6 address") from None
        kind = "tcp6"
    else:
        host, colon, port = address.rpartition(":")
        if not colon:
            raise ValueError(f"{address!r} is not HOST:PORT or :PORT (TLS listens on TCP)")
        if host == "*":
            host = ""
        if host and not re.fullmatch(r"[A-Za-z0-9.-]+", host):
            raise ValueError(f"{address!r}: {host!r} is not a host (an IPv6 address goes in [])")
        kind = "tcp"
    if not (port.isascii() and port.isdigit()) or int(port) > 65535:
        raise ValueError(f"{address!r}: {port!r} is not a port")
    return kind, host, int(port)


def _files(certificate: str, key: str, ciphers, clientCA) -> TLSFiles:
    if not certificate:
        raise ValueError("no certificate file")
    if not key:
        raise ValueError("no key file")
    required = False
    if clientCA is not None and clientCA.startswith("!"):
        required, clientCA = True, clientCA[1:]
        if not clientCA:
            raise ValueError("'!' names no client CA file")
    return TLSFiles(
        certificate=certificate,
        key=key,
        ciphers=ciphers or None,
        clientCA=clientCA or None,
        clientCertificateRequired=required,
    )


def _positionalFiles(text: str, form: str) -> TLSFiles:
    """
    C{CRT,KEY[,CIPHERS[,CA]]}, split as uWSGI does: at the first three
    commas (a CA path may hold commas).
    """
    parts = text.split(",", 3)
    if len(parts) < 2:
        raise ValueError(f"{text!r} is not {form}")
    certificate, key = parts[0], parts[1]
    ciphers = parts[2] if len(parts) > 2 else None
    clientCA = parts[3] if len(parts) > 3 else None
    return _files(certificate, key, ciphers, clientCA)


def _named(option: str, parse):
    def parsed(value: str):
        try:
            return parse(value)
        except ValueError as e:
            raise ValueError(f"{option}: {e}") from None

    parsed.__doc__ = parse.__doc__
    return parsed


def _positionalListener(value: str) -> TLSListenerSpec:
    address, comma, rest = value.partition(",")
    if not comma:
        raise ValueError(f"{value!r} is not ADDR,CRT,KEY[,CIPHERS[,CA]]")
    return TLSListenerSpec(
        address=address,
        endpoint=tcpEndpoint(address),
        files=_positionalFiles(rest, "ADDR,CRT,KEY[,CIPHERS[,CA]]"),
    )


#: The keys of C{--https2}; C{--sslrouter2} takes them but C{spdy}.
_KEYS = {
    "addr": "addr",
    "cert": "cert",
    "crt": "cert",
    "key": "key",
    "ciphers": "ciphers",
    "clientca": "clientca",
    "client_ca": "clientca",
    "spdy": "spdy",
}


def _keyValues(value: str) -> list:
    """
    uWSGI's C{uwsgi_kvlist_parse}: C{(key, value)} pairs split on
    unescaped C{,} then at the first unescaped C{=}, backslashes removed.
    """
    items, current, escaped = [], [], False
    for char in value:
        if escaped:
            current.append(("", char))
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == ",":
            items.append(current)
            current = []
        else:
            current.append((char, char))
    if current:
        items.append(current)
    pairs = []
    for item in items:
        # Each character is (what it is for the syntax, what it is).
        syntax = "".join(kind or "\0" for kind, _ in item)
        text = "".join(char for _, char in item)
        equals = syntax.find("=")
        if equals < 0:
            raise ValueError(f"{text!r} is not key=value")
        pairs.append((text[:equals], text[equals + 1:]))
    return pairs


def _keyValueListener(value: str, keys) -> TLSListenerSpec:
    given = {}
    for key, item in _keyValues(value):
        name = _KEYS.get(key)
        if name is None or name not in keys:
            known = ", ".join(sorted(k for k in _KEYS if _KEYS[k] in keys))
            raise ValueError(f"unknown key {key!r} (known: {known})")
        given[name] = item
    missing = [name for name in ("addr", "cert", "key") if not given.get(name)]
    if missing:
        raise ValueError(f"{value!r} lacks {', '.join(missing)}")
    return TLSListenerSpec(
        address=given["addr"],
        endpoint=tcpEndpoint(given["addr"]),
        files=_files(given["cert"], given["key"], given.get("ciphers"), given.get("clientca")),
        spdy=given.get("spdy", "0") not in ("", "0"),
    )


def _sniParts(value: str):
    name, space, rest = value.partition(" ")
    if not space or not name:
        raise ValueError(f"{value!r} is not 'NAME CRT,KEY[,CIPHERS[,CA]]'")
    return name, _positionalFiles(rest, "CRT,KEY[,CIPHERS[,CA]]")


def _sni(value: str) -> SNISpec:
    name, files = _sniParts(value)
    canonical = canonicalServerName(name)
    if canonical is None:
        raise ValueError(
            f"{name!r} is not a server name (letters, digits, '-', '_' and dots, at most 255)")
    return SNISpec(name=canonical.decode("ascii"), files=files)


def _sniRegexp(value: str) -> SNISpec:
    pattern, files = _sniParts(value)
    try:
        re.compile(pattern)
    except re.error as e:
        raise ValueError(f"{pattern!r} is not a regular expression ({e})") from None
    return SNISpec(name=pattern, files=files)


parseHTTPS = _named("--https", _positionalListener)
parseSSLRouter = _named("--sslrouter", _positionalListener)
parseHTTPS2 = _named(
    "--https2", lambda value: _keyValueListener(value, set(_KEYS.values())))
parseSSLRouter2 = _named(
    "--sslrouter2", lambda value: _keyValueListener(value, set(_KEYS.values()) - {"spdy"}))
parseSNI = _named("--sni", _sni)
parseSNIRegexp = _named("--sni-regexp", _sniRegexp)
