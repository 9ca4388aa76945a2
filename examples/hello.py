"""
A sample WSGI application for the demo: says which worker answered.
"""

import json
import os


def application(environ, start_response):
    length = int(environ.get("CONTENT_LENGTH") or 0)
    body = environ["wsgi.input"].read(length) if length else b""
    answer = {
        "hello": "from a uWSGI worker behind txrouter",
        "worker_pid": os.getpid(),
        "socket": environ.get("UWSGI_SOCKET", os.environ.get("DEMO_SOCKET", "")),
        "method": environ["REQUEST_METHOD"],
        "path": environ["PATH_INFO"],
        "query": environ["QUERY_STRING"],
        "remote": f"{environ.get('REMOTE_ADDR')}:{environ.get('REMOTE_PORT')}",
        "body_bytes": len(body),
    }
    payload = (json.dumps(answer, indent=1) + "\n").encode()
    start_response(
        "200 OK",
        [("Content-Type", "application/json"), ("Content-Length", str(len(payload)))],
    )
    return [payload]
