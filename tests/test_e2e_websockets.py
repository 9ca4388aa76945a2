"""
Websockets end to end, with the C{websockets} library's asyncio client in
front of C{twistd txrouter-http}:

 - to real uWSGI 2.0 workers speaking websockets over the uwsgi protocol
   (C{tests/apps/websocket_echo.py}, uWSGI's C{websocket_handshake},
   C{websocket_recv}, C{websocket_send_binary}): a mebibyte each way, a
   worker killed mid-stream, the client leaving, C{--websocket-timeout};
 - to C{websockets} servers on unix sockets as HTTP nodes
   (C{tests/apps/ws_server.py}), the library's "Deploy behind nginx" recipe
   with txrouter in nginx's place: C{--algo lrc} against round robin, and a
   thousand idle websockets held at once with the router's memory measured.

The command lines are those of C{docs/websockets.md}.  Every wait has a
deadline: the client's calls through C{asyncio.wait_for}, the logs and the
stats through L{tests.realpeers.wait_until} (in a thread, so that the
client's loop keeps running meanwhile).
"""

import asyncio
import collections
import os
import re
import resource
import signal
import sys
import warnings

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed
from websockets.protocol import State

from tests.realpeers import (
    ROOT,
    Process,
    free_port,
    rss_kib,
    txrouter_http,
    uwsgi_worker,
    wait_for_log,
    wait_for_unix,
    wait_until,
)
from tests.subpeers import stats

pytestmark = pytest.mark.e2e

WEBSOCKET_APP = ROOT / "tests" / "apps" / "websocket_echo.py"
WS_SERVER = ROOT / "tests" / "apps" / "ws_server.py"
SERVERS = ("ws1", "ws2", "ws3", "ws4")
MIB = 1 << 20
# Deadlines, not expectations: each is many times what the step takes.
CLOSE_WITHIN = 5.0
SCENARIO_WITHIN = 60.0
WEBSOCKET_TIMEOUT = 1
PUSHED_FOR = 3.0
SEND_INTERVAL = 0.3
CONCURRENT = 1000
# Sockets a process needs besides its websockets (listeners, logs, stats).
FD_SLACK = 200
MAX_KIB_PER_WEBSOCKET = 64


def run(scenario):
    """
    Run a coroutine to its end in a fresh event loop, bounded by
    C{SCENARIO_WITHIN} seconds.
    """
    return asyncio.run(asyncio.wait_for(scenario, SCENARIO_WITHIN))


def openWebsocket(port: int, path: str = "/"):
    """
    A websocket through the router on C{port}, as a client that sends
    nothing of its own accord (no keepalive pings) and takes messages of
    any size.  Await it, or use it with C{async with}.
    """
    return connect(
        f"ws://127.0.0.1:{port}{path}", ping_interval=None, max_size=None,
        open_timeout=10, close_timeout=CLOSE_WITHIN,
    )


async def waitFor(check, what: str, timeout: float = CLOSE_WITHIN, process=None) -> None:
    """
    L{wait_until} in a thread: the client's event loop runs meanwhile.
    """
    await asyncio.to_thread(wait_until, check, what, timeout, process)


async def waitForLog(process, text: str, timeout: float = CLOSE_WITHIN) -> None:
    await asyncio.to_thread(wait_for_log, process, text, 1, timeout)


def servedBy(websocket) -> str:
    """
    The name of the C{ws_server} that answered the handshake (its
    C{Server} header).
    """
    return websocket.response.headers["Server"].rpartition(" ")[2]


async def closeAll(websockets) -> None:
    await asyncio.gather(*(websocket.close() for websocket in websockets))


def openTunnels(statsPort: int) -> int:
    return stats(statsPort)["tunnels"]["open"]


@pytest.fixture(scope="module")
def tmp(tmp_path_factory):
    return tmp_path_factory.mktemp("websockets")


@pytest.fixture(scope="module")
def worker(tmp):
    """
    Three uWSGI workers (one websocket each at a time) serving
    C{websocket_echo.py} on a unix socket.
    """
    address = str(tmp / "app.sock")
    with uwsgi_worker(tmp, address, processes=3, app=WEBSOCKET_APP, name="wsworker") as process:
        process.address = address
        yield process


@pytest.fixture(scope="module")
def router(tmp, worker):
    """
    txrouter-http in front of the uWSGI workers, with its defaults.
    """
    port = free_port()
    with txrouter_http(tmp, port, worker.address) as process:
        process.port = port
        yield process


@pytest.fixture(scope="module")
def idleRouter(tmp, worker):
    """
    txrouter-http in front of the uWSGI workers, closing a websocket idle
    both ways for C{WEBSOCKET_TIMEOUT} seconds.
    """
    port = free_port()
    with txrouter_http(tmp, port, worker.address,
                       ["--websocket-timeout", str(WEBSOCKET_TIMEOUT)]) as process:
        process.port = port
        yield process


@pytest.fixture(scope="module")
def wsServers(tmp):
    """
    The recipe's four C{websockets} servers, each on its unix socket:
    C{{name: path}}.
    """
    paths = {name: str(tmp / f"{name}.sock") for name in SERVERS}
    processes = []
    try:
        for name, path in paths.items():
            process = Process([sys.executable, WS_SERVER, path, name], tmp / f"{name}.log")
            processes.append(process)
            wait_for_unix(path, process=process)
        yield paths
    finally:
        for process in processes:
            process.stop()


def serversRouter(tmp, wsServers, extraArgs=()):
    """
    txrouter-http in front of the C{websockets} servers as HTTP nodes, with
    a stats server; its C{port} and C{statsPort} set.
    """
    port, statsPort = free_port(), free_port()
    process = txrouter_http(
        tmp, port, [f"http://unix:{path}" for path in wsServers.values()],
        [*extraArgs, "--stats", f"127.0.0.1:{statsPort}"],
    )
    process.port, process.statsPort = port, statsPort
    return process


@pytest.fixture(scope="module")
def lrcRouter(tmp, wsServers):
    with serversRouter(tmp, wsServers, ["--algo", "lrc"]) as process:
        yield process


@pytest.fixture(scope="module")
def roundRobinRouter(tmp, wsServers):
    with serversRouter(tmp, wsServers) as process:
        yield process


# uWSGI workers


def pieces(total: int):
    """
    Random messages adding up to C{total} bytes, of sizes that take each
    length encoding of a frame (7, 16 and 64 bits), none over uWSGI's
    C{--websocket-max-size} (1024 KiB).
    """
    sizes = [1, 125, 126, 4096, 65535, 65536, 300000]
    out = []
    while total:
        size = min(sizes[len(out) % len(sizes)], total)
        out.append(os.urandom(size))
        total -= size
    return out


def test_a_mebibyte_each_way_is_relayed_byte_exact(router):
    """
    1 MiB of binary messages sent to a uWSGI worker through the router
    while its echoes come back: every message arrives whole and unchanged,
    in order.
    """
    messages = pieces(MIB)

    async def exchange():
        async with openWebsocket(router.port, "/echo") as websocket:
            sending = asyncio.ensure_future(sendAll(websocket, messages))
            echoed = [await websocket.recv() for _ in messages]
            await sending
        return echoed

    async def sendAll(websocket, messages):
        for message in messages:
            await websocket.send(message)

    echoed = run(exchange())
    assert [len(message) for message in echoed] == [len(message) for message in messages]
    assert b"".join(echoed) == b"".join(messages)


def workerPid(worker, uri: str) -> int:
    """
    The PID of the uWSGI worker that serves the websocket of C{uri} (it
    says so in its log).
    """
    [pid] = re.findall(rf"^open {re.escape(uri)} pid (\d+)$", worker.log(), re.M)
    return int(pid)


def test_a_worker_killed_mid_stream_closes_the_client(router, worker):
    """
    SIGKILL to the worker serving a websocket while messages flow both
    ways: the client's connection is closed (without a close frame: the
    router has none to relay) within C{CLOSE_WITHIN} seconds, and the
    router logs no traceback, at most one line naming the node: a
    C{tunnel_closed} line when the kernel reports the killed
    worker's socket reset (it died with bytes unread), nothing when it
    reports an end of stream, which is also how a uWSGI websocket ends
    normally.  The worker's master then starts another worker.
    """
    echoes = 0

    async def pump(websocket, flowing):
        nonlocal echoes
        message = os.urandom(65536)
        while True:
            await websocket.send(message)
            assert await websocket.recv() == message
            echoes += 1
            if echoes == 4:
                flowing.set()

    async def scenario():
        async with openWebsocket(router.port, "/killed") as websocket:
            await waitForLog(worker, "open /killed pid ")
            pid = workerPid(worker, "/killed")
            assert pid in worker.children()
            flowing = asyncio.Event()
            pumping = asyncio.ensure_future(pump(websocket, flowing))
            await asyncio.wait_for(flowing.wait(), CLOSE_WITHIN)
            logged = len(router.log().splitlines())
            os.kill(pid, signal.SIGKILL)
            await asyncio.wait_for(websocket.wait_closed(), CLOSE_WITHIN)
            with pytest.raises(ConnectionClosed):
                await pumping
            # The router is done with the killed worker's connection once
            # it has served the next websocket.
            async with openWebsocket(router.port, "/after") as after:
                await after.send(b"still there")
                assert await after.recv() == b"still there"
        return websocket.close_code, router.log().splitlines()[logged:]

    closeCode, lines = run(scenario())
    assert closeCode == 1006
    assert len(lines) <= 1
    assert all(worker.address in line for line in lines)
    assert "Traceback" not in router.log()
    wait_for_log(worker, "Respawned uWSGI worker")


@pytest.mark.parametrize("leaving", ["close frame", "connection cut"])
def test_the_client_leaving_reaches_the_worker(router, worker, leaving):
    """
    A client that closes its websocket, with a close frame or by cutting
    the connection (then only the router can tell the worker): the worker
    sees the end within C{CLOSE_WITHIN} seconds, its C{websocket_recv}
    raises.
    """
    uri = "/leaving-" + leaving.replace(" ", "-")

    async def scenario():
        websocket = await openWebsocket(router.port, uri)
        await websocket.send(b"hello")
        assert await websocket.recv() == b"hello"
        if leaving == "close frame":
            await websocket.close()
        else:
            websocket.transport.abort()
        await waitForLog(worker, f"closed {uri}")

    run(scenario())


def test_an_idle_websocket_is_closed_after_websocket_timeout(idleRouter, worker):
    """
    With C{--websocket-timeout 1}, a websocket where neither side sends is
    closed by the router: the client's connection ends and so does the
    worker's.
    """
    async def scenario():
        async with openWebsocket(idleRouter.port, "/idle") as websocket:
            await websocket.send(b"once")
            assert await websocket.recv() == b"once"
            await asyncio.wait_for(websocket.wait_closed(), WEBSOCKET_TIMEOUT + CLOSE_WITHIN)
        await waitForLog(worker, "closed /idle")
        return websocket.close_code

    assert run(scenario()) == 1006


def test_a_server_pushing_to_a_silent_client_keeps_it_open(idleRouter, worker):
    """
    One idle timer watches both directions: a worker pushing a message
    every 0.3 s to a client that sends nothing keeps the websocket open
    past C{--websocket-timeout} (three times over).
    """
    async def scenario():
        async with openWebsocket(idleRouter.port, "/push") as websocket:
            loop = asyncio.get_running_loop()
            end = loop.time() + PUSHED_FOR
            ticks = 0
            while loop.time() < end:
                assert await asyncio.wait_for(websocket.recv(), CLOSE_WITHIN) == b"tick"
                ticks += 1
            return ticks, websocket.state

    ticks, state = run(scenario())
    assert state is State.OPEN
    assert ticks >= PUSHED_FOR / WEBSOCKET_TIMEOUT


def test_a_client_sending_to_a_silent_server_keeps_it_open(idleRouter):
    """
    The other direction: a client sending a message every 0.3 s to a
    worker that answers none keeps the websocket open past
    C{--websocket-timeout}; the worker then says it got them all.
    """
    async def scenario():
        async with openWebsocket(idleRouter.port, "/sink") as websocket:
            loop = asyncio.get_running_loop()
            end = loop.time() + PUSHED_FOR
            sent = 0
            while loop.time() < end:
                await websocket.send(b"tock")
                sent += 1
                # The client's pace, not a wait for something.
                await asyncio.sleep(SEND_INTERVAL)
            await websocket.send(b"how many?")
            return sent, await asyncio.wait_for(websocket.recv(), CLOSE_WITHIN)

    sent, counted = run(scenario())
    assert counted == str(sent).encode()


# websockets servers behind --algo lrc (the library's nginx recipe)


async def closeOneServersAndReopen(router, reopen: int):
    """
    Open two websockets per server, one at a time; close those of C{ws2};
    once the router counts them closed, open C{reopen} more.

    @return: the servers of the first eight, and those of the new ones.
    """
    first = [await openWebsocket(router.port) for _ in range(2 * len(SERVERS))]
    firstServers = collections.Counter(servedBy(websocket) for websocket in first)
    await closeAll([websocket for websocket in first if servedBy(websocket) == "ws2"])
    await waitFor(lambda: openTunnels(router.statsPort) == 6, "6 tunnels open", process=router)
    new = [await openWebsocket(router.port) for _ in range(reopen)]
    newServers = [servedBy(websocket) for websocket in new]
    await closeAll(first + new)
    return firstServers, newServers


def test_lrc_sends_new_websockets_to_the_server_whose_websockets_closed(lrcRouter):
    """
    C{--algo lrc}: an open websocket counts as in flight for its whole
    life, so once the websockets of one server are closed, the next ones
    go to that server until it has as many as the others.
    """
    firstServers, newServers = run(closeOneServersAndReopen(lrcRouter, 2))
    assert firstServers == {name: 2 for name in SERVERS}
    assert newServers == ["ws2", "ws2"]


def test_round_robin_spreads_new_websockets_whatever_is_open(roundRobinRouter):
    """
    Without C{--algo} (uWSGI's round robin) the next websockets go to each
    server in turn, however many each already holds: the server whose
    websockets closed gets one of four.
    """
    firstServers, newServers = run(closeOneServersAndReopen(roundRobinRouter, 4))
    assert firstServers == {name: 2 for name in SERVERS}
    assert sorted(newServers) == list(SERVERS)


def concurrentWebsockets(wanted: int) -> int:
    """
    How many websockets this test may hold open at once under C{ulimit
    -n}: the router holds two sockets per websocket (the client's, the
    node's) and the test one.  The soft limit is raised toward the hard
    one if need be (the router started afterwards inherits it); C{wanted}
    is lowered, with a warning, only if the hard limit forbids it.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = 2 * wanted + FD_SLACK
    if soft != resource.RLIM_INFINITY and soft < need:
        soft = need if hard == resource.RLIM_INFINITY else min(need, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    if soft != resource.RLIM_INFINITY and soft < need:
        allowed = (soft - FD_SLACK) // 2
        warnings.warn(f"ulimit -n is {soft}: {allowed} concurrent websockets, not {wanted}")
        return allowed
    return wanted


def test_a_thousand_idle_websockets_held_at_once(tmp, wsServers, capsys):
    """
    A thousand websockets opened through C{txrouter-http --algo lrc} to the
    four servers and held open together: the stats count them all as open
    tunnels, lrc spreads them evenly, each echoes a message, and the
    router's resident memory grows by less than C{MAX_KIB_PER_WEBSOCKET}
    KiB per websocket (the figure is printed).
    """
    count = concurrentWebsockets(CONCURRENT)
    with serversRouter(tmp, wsServers, ["--algo", "lrc"]) as router:
        opening = asyncio.Semaphore(50)

        async def openOne():
            async with opening:
                return await openWebsocket(router.port)

        async def echo(websocket, index):
            message = f"message {index}".encode()
            await websocket.send(message)
            return await websocket.recv() == message

        async def scenario():
            # A few websockets first, so that what the router sets up once
            # is not counted as the thousand's.
            await closeAll([await openOne() for _ in range(8)])
            await waitFor(lambda: openTunnels(router.statsPort) == 0, "no tunnel open",
                          process=router)
            before = rss_kib(router.pid)
            websockets = await asyncio.gather(*(openOne() for _ in range(count)))
            after = rss_kib(router.pid)
            try:
                tunnels = stats(router.statsPort)["tunnels"]
                servers = collections.Counter(servedBy(websocket) for websocket in websockets)
                echoed = await asyncio.gather(
                    *(echo(websocket, index) for index, websocket in enumerate(websockets)))
            finally:
                await closeAll(websockets)
            return before, after, tunnels, servers, echoed

        before, after, tunnels, servers, echoed = run(scenario())

    perWebsocket = (after - before) / count
    with capsys.disabled():
        print(f"\n{count} idle websockets: router RSS {before} KiB -> {after} KiB,"
              f" {perWebsocket:.1f} KiB per websocket")
    assert tunnels["open"] == count
    assert sorted(servers) == list(SERVERS)
    assert max(servers.values()) - min(servers.values()) <= 1
    assert all(echoed) and len(echoed) == count
    assert perWebsocket < MAX_KIB_PER_WEBSOCKET
