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

# Header name -> (upper-cased name, var name); bounded so that hostile
# clients sending random names cannot grow it without limit.
_varNames: dict = {}
_VAR_NAME_CACHE_SIZE = 512


def _varName(name: bytes):
    cached = _varNames.get(name)
    if cached is not None:
        return cached
    upper = name.upper()
    var = _UNPREFIXED.get(upper)
    if var is None:
        var = b"HTTP_" + upper.replace(b"-", b"_")
    result = (upper, var)
    if len(_varNames) < _VAR_NAME_CACHE_SIZE:
        _varNames[name] = result
    return result


def requestVars(
    head,
    serverName: bytes,
    serverPort: bytes,
    remoteAddr: bytes,
    remotePort: bytes,
    https: bool = False,
    extraVars=(),
    trustForwarded: bool = False,
    contentLength: "bytes | None" = None,
) -> list:
    """
    Build the uwsgi vars for one request, in uWSGI's order.

    @param head: a L{txrouter.wire.http1.RequestHead}.
    @param extraVars: C{(key, value)} pairs appended last (C{--http-var}).
    @param trustForwarded: keep the client's C{X-Forwarded-*} headers.
    @param contentLength: when not L{None}, the body was de-chunked by the
        router: this becomes C{CONTENT_LENGTH} in place of
        C{Transfer-Encoding}, which is otherwise passed on (the backend then
        de-chunks, as with uWSGI's C{--http-chunked-input}).
    @return: a list of C{(key, value)} byte pairs.
    """
    target = head.path
    pathPart, question, query = target.partition(b"?")
    pathInfo = unquote_to_bytes(pathPart) if b"%" in pathPart else pathPart
    if question:
        pairs = [
            (b"REQUEST_METHOD", head.method),
            (b"PATH_INFO", pathInfo),
            (b"REQUEST_URI", target),
            (b"QUERY_STRING", query),
        ]
    else:
        pairs = [
            (b"REQUEST_METHOD", head.method),
            (b"REQUEST_URI", target),
            (b"PATH_INFO", pathInfo),
            (b"QUERY_STRING", b""),
        ]
    pairs += [
        (b"SERVER_PROTOCOL", head.version),
        (b"SCRIPT_NAME", b""),
        (b"SERVER_NAME", serverName),
        (b"SERVER_PORT", serverPort),
        (b"UWSGI_ROUTER", b"http"),
    ]
    if https:
        pairs.append((b"HTTPS", b"on"))
    pairs.append((b"REMOTE_ADDR", remoteAddr))
    pairs.append((b"REMOTE_PORT", remotePort))

    seen = {}
    for name, value in head.headers:
        if b"_" in name:
            continue
        upper, var = _varName(name)
        if upper == _PROXY:
            continue
        if upper == _TRANSFER_ENCODING and contentLength is not None:
            seen[b"CONTENT_LENGTH"] = len(pairs)
            pairs.append((b"CONTENT_LENGTH", contentLength))
            continue
        if upper in _UNTRUSTED and not trustForwarded:
            continue
        index = seen.get(var)
        if index is None:
            seen[var] = len(pairs)
            pairs.append((var, value))
        else:
            pairs[index] = (var, pairs[index][1] + b", " + value)
    pairs.extend(extraVars)
    return pairs
