"""
The WSGI application the end-to-end tests run in real uWSGI workers.

 - default: JSON of the str environ items, plus body_len and body_sha256;
 - /bytes/N: N bytes of "x", streamed in 64 KiB pieces, with Content-Length;
 - /chunked: a few pieces from a generator and no Content-Length, so the
   end of the response is whatever the server in front makes of it (uWSGI
   ends it by closing the connection unless told to chunk it);
 - /slow/S: answers after S seconds;
 - /hold?file=PATH (more query fields allowed): writes "holding URI" to
   stderr (the worker's log), then answers as the default once PATH
   exists, so that a test knows when the request is at the worker and
   decides when it ends (a 504 if PATH is still missing after a minute);
 - /status/N: that status with a short body;
 - /gzip: as /chunked, with uWSGI-Encoding: gzip (what asks uWSGI's
   --http-auto-gzip, and txrouter's --auto-gzip, to compress it);
 - an RTSP/1.0 request (any path): an RTSP answer with the request's CSeq
   and the path it was asked for;
 - /raw-digest: reads the connection itself until its end (a raw stream:
   an Icecast SOURCE, uWSGI's --http-raw-body), then answers body_len and
   body_sha256 of what came.
"""

import hashlib
import json
import os
import select
import sys
import time
import urllib.parse

PIECE = b"x" * 65536
CHUNKS = 5
HOLD_LIMIT = 60.0


def application(environ, start_response):
    path = environ["PATH_INFO"]
    if path.startswith("/bytes/"):
        size = int(path.rsplit("/", 1)[1])
        start_response("200 OK", [("Content-Type", "application/octet-stream"),
                                  ("Content-Length", str(size))])
        return _stream(size)
    if path in ("/chunked", "/gzip"):
        headers = [("Content-Type", "text/plain")]
        if path == "/gzip":
            headers.append(("uWSGI-Encoding", "gzip"))
        start_response("200 OK", headers)
        return (f"piece {i}\n".encode() for i in range(CHUNKS))
    if environ.get("SERVER_PROTOCOL") == "RTSP/1.0":
        start_response("200 OK", [("CSeq", environ.get("HTTP_CSEQ", "0")),
                                  ("Public", "OPTIONS, DESCRIBE"), ("X-Path", path)])
        return [b""]
    if path == "/raw-digest":
        return _rawDigest(start_response)
    if path.startswith("/status/"):
        code = path.rsplit("/", 1)[1]
        body = f"status {code}\n".encode()
        start_response(f"{code} Chosen", [("Content-Length", str(len(body)))])
        return [body]
    if path.startswith("/slow/"):
        time.sleep(float(path.rsplit("/", 1)[1]))
    if path == "/hold" and not _held(environ):
        start_response("504 Never Released", [("Content-Length", "0")])
        return [b""]
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


def _held(environ) -> bool:
    """
    Say that the request is here, then wait until its C{file} exists.
    """
    [gate] = urllib.parse.parse_qs(environ["QUERY_STRING"])["file"]
    sys.stderr.write(f"holding {environ['REQUEST_URI']}\n")
    sys.stderr.flush()
    deadline = time.monotonic() + HOLD_LIMIT
    while not os.path.exists(gate):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def _rawDigest(start_response):
    """
    Read the worker's client connection until its end, as an application
    taking a raw stream does (there is no CONTENT_LENGTH to read by).
    """
    import uwsgi

    digest = hashlib.sha256()
    length = 0
    descriptor = uwsgi.connection_fd()
    sys.stderr.write("raw-digest reading\n")
    sys.stderr.flush()
    while True:
        # The worker's socket is non-blocking: wait for bytes (or the end).
        if not select.select([descriptor], [], [], HOLD_LIMIT)[0]:
            break
        piece = os.read(descriptor, 65536)
        if not piece:
            break
        digest.update(piece)
        length += len(piece)
    body = json.dumps({"body_len": length, "body_sha256": digest.hexdigest()}).encode()
    start_response("200 OK", [("Content-Type", "application/json"),
                              ("Content-Length", str(len(body)))])
    return [body]
