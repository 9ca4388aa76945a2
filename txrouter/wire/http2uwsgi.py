"""
Turn a parsed HTTP request head into the vars of a uwsgi packet.

The var set and order are uWSGI 2.0.21's HTTP router's (reference section
5.2), so an application sees the same environ behind either router, with
the holes closed:

 - header names containing C{_} are dropped (as nginx does by default), so
   C{Content_Length} or C{X_Foo} can never pose as C{CONTENT_LENGTH} or
   merge into C{HTTP_X_FOO};
 - the C{Proxy} header is dropped (httpoxy: it would become C{HTTP_PROXY});
 - C{X-Forwarded-*} and C{Forwarded} are dropped unless the peer is trusted,
   because uWSGI workers derive C{wsgi.url_scheme} from them;
 - C{REMOTE_PORT} is the real port (uWSGI prints it byte-swapped).
"""

from urllib.parse import unquote_to_bytes
from struct import Struct

_packU16 = Struct("<H").pack

_UNTRUSTED = frozenset(
    {
        b"X-FORWARDED-FOR",
        b"X-FORWARDED-PROTO",
        b"X-FORWARDED-HOST",
        b"X-FORWARDED-PORT",
        b"X-FORWARDED-SSL",
        b"X-FORWARDED-SCHEME",
        b"FORWARDED",
    }
)
_PROXY = b"PROXY"
_TRANSFER_ENCODING = b"TRANSFER-ENCODING"
_UNPREFIXED = {b"CONTENT-LENGTH": b"CONTENT_LENGTH", b"CONTENT-TYPE": b"CONTENT_TYPE"}


def _key(name: bytes) -> bytes:
    """
    A var name, encoded with its length prefix.
    """
    return _packU16(len(name)) + name


_REQUEST_METHOD = _key(b"REQUEST_METHOD")
_PATH_INFO = _key(b"PATH_INFO")
_REQUEST_URI = _key(b"REQUEST_URI")
_QUERY_STRING = _key(b"QUERY_STRING")
_EMPTY_QUERY_STRING = _QUERY_STRING + _packU16(0)
_SERVER_PROTOCOL = _key(b"SERVER_PROTOCOL")
_SCRIPT_NAME = _key(b"SCRIPT_NAME") + _packU16(0)
_SERVER_NAME = _key(b"SERVER_NAME")
_SERVER_PORT = _key(b"SERVER_PORT")
_UWSGI_ROUTER = _key(b"UWSGI_ROUTER") + _packU16(4) + b"http"
_HTTPS = _key(b"HTTPS") + _packU16(2) + b"on"
_REMOTE_ADDR = _key(b"REMOTE_ADDR")
_REMOTE_PORT = _key(b"REMOTE_PORT")
_CONTENT_LENGTH = _key(b"CONTENT_LENGTH")

# Header name -> (upper-cased name, encoded var key); bounded so that
# hostile clients sending random names cannot grow it without limit.
_varKeys: dict = {}
_VAR_KEY_CACHE_SIZE = 512


def _varKey(name: bytes):
    cached = _varKeys.get(name)
    if cached is not None:
        return cached
    upper = name.upper()
    var = _UNPREFIXED.get(upper)
    if var is None:
        var = b"HTTP_" + upper.replace(b"-", b"_")
    result = (upper, _key(var))
    if len(_varKeys) < _VAR_KEY_CACHE_SIZE:
        _varKeys[name] = result
    return result


def encodeConnectionVars(
    serverName: bytes,
    serverPort: bytes,
    remoteAddr: bytes,
    remotePort: bytes,
    https: bool = False,
    clientVars=(),
) -> bytes:
    """
    Encode the vars that are the same for every request of one client
    connection (C{SCRIPT_NAME} to C{REMOTE_PORT}, in uWSGI's order), once
    per connection, for L{encodeRequestVars}.

    @param clientVars: C{(name, value)} pairs sent right after C{HTTPS}
        (the client certificate's C{HTTPS_CLIENT_CERTIFICATE}, C{HTTPS_DN},
        C{HTTPS_CC}), values of at most 65535 bytes.
    """
    u16 = _packU16
    client = b"".join(
        [u16(len(name)) + name + u16(len(value)) + value for name, value in clientVars])
    return b"".join([
        _SCRIPT_NAME,
        _SERVER_NAME, u16(len(serverName)), serverName,
        _SERVER_PORT, u16(len(serverPort)), serverPort,
        _UWSGI_ROUTER,
        _HTTPS if https else b"",
        client,
        _REMOTE_ADDR, u16(len(remoteAddr)), remoteAddr,
        _REMOTE_PORT, u16(len(remotePort)), remotePort,
    ])


def encodeRequestVars(
    head,
    connectionVars: bytes,
    extraVars=(),
    trustForwarded: bool = False,
    contentLength: "bytes | None" = None,
) -> bytes:
    """
    Build the uwsgi vars block of one request, in uWSGI's order.

    Values longer than 65535 bytes cannot occur: the request head is
    bounded well below that.

    @param head: a L{txrouter.wire.http1.RequestHead}.
    @param connectionVars: the connection's vars, from
        L{encodeConnectionVars}.
    @param extraVars: C{(key, value)} pairs appended last (C{--http-var}).
    @param trustForwarded: keep the client's C{X-Forwarded-*} headers.
    @param contentLength: when not L{None}, the body was de-chunked by the
        router: this becomes C{CONTENT_LENGTH} in place of
        C{Transfer-Encoding}, which is otherwise passed on (the backend then
        de-chunks, as with uWSGI's C{--http-chunked-input}).
    @return: the encoded vars block.
    """
    u16 = _packU16
    target = head.path
    pathPart, question, query = target.partition(b"?")
    # find(), not "in", on the hot path: see txrouter.wire.http1.
    pathInfo = unquote_to_bytes(pathPart) if pathPart.find(b"%") != -1 else pathPart
    method = head.method
    version = head.version
    if question:
        pieces = [
            _REQUEST_METHOD, u16(len(method)), method,
            _PATH_INFO, u16(len(pathInfo)), pathInfo,
            _REQUEST_URI, u16(len(target)), target,
            _QUERY_STRING, u16(len(query)), query,
            _SERVER_PROTOCOL, u16(len(version)), version,
            connectionVars,
        ]
    else:
        pieces = [
            _REQUEST_METHOD, u16(len(method)), method,
            _REQUEST_URI, u16(len(target)), target,
            _PATH_INFO, u16(len(pathInfo)), pathInfo,
            _EMPTY_QUERY_STRING,
            _SERVER_PROTOCOL, u16(len(version)), version,
            connectionVars,
        ]

    values: "dict[bytes, bytes]" = {}
    for name, value in head.headers:
        if name.find(b"_") != -1:
            continue
        upper, key = _varKey(name)
        if upper == _PROXY:
            continue
        if upper == _TRANSFER_ENCODING and contentLength is not None:
            key, value = _CONTENT_LENGTH, contentLength
        elif upper in _UNTRUSTED and not trustForwarded:
            continue
        previous = values.get(key)
        values[key] = value if previous is None else previous + b", " + value
    for key, value in values.items():
        pieces += (key, u16(len(value)), value)
    for key, value in extraVars:
        pieces += (u16(len(key)), key, u16(len(value)), value)
    return b"".join(pieces)
