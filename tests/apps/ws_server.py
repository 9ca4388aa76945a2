"""
The C{websockets} library's "Deploy behind nginx" app, run by the
end-to-end tests as HTTP nodes of C{txrouter-http --algo lrc}
(C{tests/test_e2e_websockets.py}, C{docs/websockets.md})::

    python tests/apps/ws_server.py /run/ws1.sock ws1

An asyncio server on the unix socket PATH that echoes every message, as the
recipe's C{app.py} (there the socket's name comes from Supervisor's
C{SUPERVISOR_PROCESS_NAME}); SIGTERM closes it.  Its handshake answers carry
C{Server: ws_server NAME}, so that a client behind a router can tell which
server it reached without a message of its own.
"""

import asyncio
import signal
import sys

from websockets.asyncio.server import unix_serve


async def echo(websocket):
    async for message in websocket:
        await websocket.send(message)


async def main(path: str, name: str) -> None:
    async with unix_serve(echo, path, server_header=f"ws_server {name}") as server:
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, server.close)
        await server.wait_closed()


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:3]))
