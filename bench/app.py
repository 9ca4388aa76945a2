"""
The benchmark's backend application: b"ok", or 1 MiB at /1mib.
"""

OK = b"ok"
MIB = b"x" * (1 << 20)


def application(environ, start_response):
    body = MIB if environ["PATH_INFO"] == "/1mib" else OK
    start_response(
        "200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))]
    )
    return [body]
