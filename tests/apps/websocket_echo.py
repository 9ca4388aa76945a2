"""
The websocket application the end-to-end tests run in real uWSGI workers
(C{tests/test_e2e_websockets.py}), written against uWSGI's own websocket
API over the uwsgi protocol: the router in front relays the C{101} and then
the frames, and the worker reads and writes them on the same socket.

 - /push: sends a binary C{tick} every 0.3 s and reads nothing, so the
   client never needs to send a byte;
 - /sink: reads every message and answers none, except C{how many?},
   answered with the number of messages read before it;
 - any other path: echoes every message it receives as a binary one.

Each websocket writes C{open URI pid PID} to stderr (the worker's log) once
its handshake is sent, and C{closed URI} once the connection is gone (a
close frame, the socket closed, a failed write), so that a test knows which
worker serves it and when that worker saw the end.

Messages are bounded by uWSGI's C{--websocket-max-size} (1024 KiB by
default) and must not be fragmented: uWSGI hands each frame over as it
comes.  A sync worker serves one websocket at a time.
"""

import os
import sys
import time

import uwsgi

PUSH_INTERVAL = 0.3


def application(environ, start_response):
    uri = environ["REQUEST_URI"]
    uwsgi.websocket_handshake()
    _say(f"open {uri} pid {os.getpid()}")
    try:
        path = environ["PATH_INFO"]
        if path == "/push":
            while True:
                uwsgi.websocket_send_binary(b"tick")
                time.sleep(PUSH_INTERVAL)
        if path == "/sink":
            received = 0
            while True:
                if uwsgi.websocket_recv() == b"how many?":
                    uwsgi.websocket_send_binary(str(received).encode())
                else:
                    received += 1
        while True:
            uwsgi.websocket_send_binary(uwsgi.websocket_recv())
    except OSError:
        _say(f"closed {uri}")
    return []


def _say(line: str) -> None:
    sys.stderr.write(line + "\n")
    sys.stderr.flush()
