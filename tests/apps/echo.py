"""
The WSGI application the end-to-end tests run in real uWSGI workers.

 - default: JSON of the str environ items, plus body_len and body_sha256;
 - /bytes/N: N bytes of "x", streamed in 64 KiB pieces, with Content-Length;
 - /chunked: a few pieces from a generator and no Content-Length, so the
   end of the response is whatever the server in front makes of it (uWSGI
   ends it by closing the connection unless told to chunk it);
 - /slow/S: answers after S seconds;
 - /status/N: that status with a short body.
"""

import hashlib
import json
import time

PIECE = b"x" * 65536
CHUNKS = 5


def application(environ, start_response):
    path = environ["PATH_INFO"]
    if path.startswith("/bytes/"):
        size = int(path.rsplit("/", 1)[1])
        start_response("200 OK", [("Content-Type", "application/octet-stream"),
                                  ("Content-Length", str(size))])
        return _stream(size)
    if path == "/chunked":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return (f"piece {i}\n".encode() for i in range(CHUNKS))
    if path.startswith("/status/"):
        code = path.rsplit("/", 1)[1]
        body = f"status {code}\n".encode()
        start_response(f"{code} Chosen", [("Content-Length", str(len(body)))])
        return [body]
    if path.startswith("/slow/"):
        time.sleep(float(path.rsplit("/", 1)[1]))
    digest = hashlib.sha256()
    length = 0
    stream = environ["wsgi.input"]
    while True:
        piece = stream.read(65536)
        if not piece:
            break
        digest.update(piece)
        length += len(piece)
    answer = {k: v for k, v in environ.items() if isinstance(v, str)}
    answer["body_len"] = length
    answer["body_sha256"] = digest.hexdigest()
    body = json.dumps(answer, sort_keys=True).encode()
    start_response("200 OK", [("Content-Type", "application/json"),
                              ("Content-Length", str(len(body)))])
    return [body]


def _stream(size):
    while size > 0:
        piece = PIECE[: min(size, len(PIECE))]
        size -= len(piece)
        yield piece
