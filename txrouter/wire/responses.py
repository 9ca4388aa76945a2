"""
The short HTTP responses the router writes itself.

uWSGI's routers close the connection without a byte on every error; txrouter
answers with a status, a one-line body and C{Connection: close}, so that a
user (or the nginx in front) can tell what went wrong.
"""

REASONS = {
    400: b"Bad Request",
    404: b"Not Found",
    408: b"Request Timeout",
    413: b"Content Too Large",
    417: b"Expectation Failed",
    414: b"URI Too Long",
    431: b"Request Header Fields Too Large",
    500: b"Internal Server Error",
    501: b"Not Implemented",
    502: b"Bad Gateway",
    503: b"Service Unavailable",
    504: b"Gateway Timeout",
    505: b"HTTP Version Not Supported",
}

CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


def errorResponse(status: int, detail: str = "") -> bytes:
    """
    A complete response with a short plain-text body, ending the connection.

    @param detail: one line for the body; the reason phrase when empty.
    """
    reason = REASONS.get(status, b"Error")
    body = b"%d %s\n" % (status, reason)
    if detail:
        body += detail.encode("ascii", "replace")[:200] + b"\n"
    return b"".join(
        [
            b"HTTP/1.1 %d %s\r\n" % (status, reason),
            b"Content-Type: text/plain; charset=utf-8\r\n",
            b"Content-Length: %d\r\n" % len(body),
            b"Connection: close\r\n\r\n",
            body,
        ]
    )
