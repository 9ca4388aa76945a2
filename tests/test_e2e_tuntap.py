"""
The TunTap router end to end: C{twistd txrouter-tuntap} in a network
namespace of its own, and real uWSGI 2.0.21 peers (C{uwsgi --plugin tuntap
--tuntap-device "uwsgi0 SOCKET"}), each in a namespace the test creates,
pinging each other through it.  Only addresses inside those namespaces
are used (10.77.0.0/24); the namespaces are removed at the end.

uWSGI 2.0.21 creates its client device in its "post-jail" phase, which
only runs when a jail option is given, and runs it at several points of
its start-up: started in a namespace of the test's, the second device of
the same name fails (C{EBUSY}).  So the peers are run as uWSGI's docs say,
with C{--unshare net} (each phase then makes a new namespace and device;
the process ends up in the last one), and the test names the namespace the
peer ended up in (C{ip netns attach NAME PID}) once uWSGI has spawned its
worker, then configures its C{uwsgi0} there.

The machine has no C{ping} binary: the pings are ICMP echo requests sent
from a raw socket by a small Python script run in the peer's namespace.
"""

import hashlib
import json
import os
import pathlib
import pwd
import socket
import struct
import subprocess
import sys
import uuid

import pytest

from tests.realpeers import TWISTD_COMMAND, Process, wait_for_log, wait_for_unix, wait_until
from tests.test_e2e_raw import withProject

pytestmark = pytest.mark.e2e

CAP_NET_ADMIN = 12


def _capable() -> "str | None":
    """
    Why the test cannot run here, or L{None}.
    """
    if not os.path.exists("/dev/net/tun"):
        return "no /dev/net/tun"
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("CapEff:"):
                if not int(line.split()[1], 16) >> CAP_NET_ADMIN & 1:
                    return "no CAP_NET_ADMIN (network namespaces and tun devices need it)"
    return None


if _capable():
    pytest.skip(_capable(), allow_module_level=True)


def run(*args: str) -> None:
    subprocess.run(args, check=True, timeout=30, capture_output=True)


def inNamespace(namespace: str, *args: str) -> "subprocess.CompletedProcess":
    return subprocess.run(["ip", "netns", "exec", namespace, *args],
                          timeout=30, capture_output=True, text=True)


#: C{ping -c 1 -W TIMEOUT ADDRESS}: exits 0 when an echo reply comes.
PING = """
import os, socket, struct, sys, time
address, timeout = sys.argv[1], float(sys.argv[2])
def checksum(data):
    total = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF
ident = os.getpid() & 0xFFFF
body = struct.pack("!BBHHH", 8, 0, 0, ident, 1) + b"txrouter"
body = body[:2] + struct.pack("!H", checksum(body)) + body[4:]
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
s.sendto(body, (address, 0))
deadline = time.monotonic() + timeout
while (left := deadline - time.monotonic()) > 0:
    s.settimeout(left)
    try:
        packet, (source, _) = s.recvfrom(65536)
    except socket.timeout:
        break
    icmp = packet[(packet[0] & 15) * 4:]
    if source == address and icmp[0] == 0 and struct.unpack("!H", icmp[4:6])[0] == ident:
        sys.exit(0)
sys.exit(1)
"""


#: A TCP server on 10.77.0.3:7000 answering the SHA-256 of what it read.
SHA_SERVER = """
import hashlib, socket
server = socket.create_server(("10.77.0.3", 7000))
print("listening", flush=True)
connection, _ = server.accept()
digest = hashlib.sha256()
while data := connection.recv(65536):
    digest.update(data)
connection.sendall(digest.hexdigest().encode())
connection.close()
"""

#: Send C{argv[1]} bytes to 10.77.0.3:7000, print the digest it answers.
SHA_CLIENT = """
import socket, sys
connection = socket.create_connection(("10.77.0.3", 7000), timeout=20)
connection.sendall(bytes(range(256)) * (int(sys.argv[1]) // 256))
connection.shutdown(socket.SHUT_WR)
answer = b""
while data := connection.recv(65536):
    answer += data
print(answer.decode())
"""


#: In the router's namespace: send the packet C{argv[1]} (hex) to the
#: router's gateway (127.0.0.1:7001) from 127.0.0.1:7002, and print the
#: addresses and first payload byte of the packet the route brings back.
GATEWAY_PEER = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("127.0.0.1", 7002))
s.settimeout(10)
s.sendto(bytes.fromhex(sys.argv[1]), ("127.0.0.1", 7001))
packet, _ = s.recvfrom(65536)
print(socket.inet_ntoa(packet[12:16]), socket.inet_ntoa(packet[16:20]), packet[20])
"""


def ping(namespace: str, address: str, timeout: float = 2.0) -> bool:
    return inNamespace(namespace, sys.executable, "-c", PING, address, str(timeout)).returncode == 0


def checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def echoRequest(source: str, destination: str) -> bytes:
    """
    An ICMP echo request, as an IPv4 packet.
    """
    icmp = struct.pack("!BBHHH", 8, 0, 0, 1, 1) + b"txrouter"
    icmp = icmp[:2] + struct.pack("!H", checksum(icmp)) + icmp[4:]
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(icmp), 0, 0, 64, 1, 0,
                         socket.inet_aton(source), socket.inet_aton(destination))
    header = header[:10] + struct.pack("!H", checksum(header)) + header[12:]
    return header + icmp


def frame(packet: bytes) -> bytes:
    return struct.pack("<BHB", 0, len(packet), 0) + packet


class Network:
    """
    The namespaces, the router and its peers of one test; C{close} removes
    them all.
    """

    def __init__(self, tmp_path: pathlib.Path) -> None:
        self.tmp = tmp_path
        self.tag = uuid.uuid4().hex[:8]
        self.namespaces = []
        self.processes = []
        self.socket = str(tmp_path / "tuntap.sock")
        self.stats = str(tmp_path / "stats.sock")

    def namespace(self, name: str) -> str:
        namespace = f"txrtt-{self.tag}-{name}"
        run("ip", "netns", "add", namespace)
        self.namespaces.append(namespace)
        self.configure(namespace)
        return namespace

    def configure(self, namespace: str) -> None:
        run("ip", "netns", "exec", namespace, "ip", "link", "set", "lo", "up")
        # No IPv6 chatter (router solicitations) on the devices.
        run("ip", "netns", "exec", namespace, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1")
        run("ip", "netns", "exec", namespace, "sysctl", "-qw",
            "net.ipv6.conf.default.disable_ipv6=1")

    def router(self, *args: str, gateway: str = "", env=None) -> Process:
        namespace = self.routerNamespace = self.namespace(f"router{len(self.processes)}")
        process = Process(
            ["ip", "netns", "exec", namespace, *TWISTD_COMMAND, "-n", "--pidfile=",
             "txrouter-tuntap", "--tuntap-router", f"txrtun0 {self.socket} {self.stats} {gateway}",
             *args],
            self.tmp / "router.log", env=env or withProject(),
        )
        self.processes.append(process)
        wait_for_unix(self.socket, 20, process=process)
        return process

    def peer(self, name: str, address: str, *extra: str, app: str = "") -> str:
        """
        A uWSGI peer with C{address} on its C{uwsgi0}, in a namespace of its
        own that the test names.
        """
        process = Process(
            ["uwsgi", "--plugin", "tuntap", "--unshare", "net",
             "--tuntap-device", f"uwsgi0 {self.socket}", "--socket", app or str(self.tmp / f"{name}.app"),
             "--die-on-term", *extra],
            self.tmp / f"{name}.log",
        )
        self.processes.append(process)
        wait_for_log(process, "spawned uWSGI worker", timeout=20)
        namespace = f"txrtt-{self.tag}-{name}"
        run("ip", "netns", "attach", namespace, str(process.pid))
        self.namespaces.append(namespace)
        self.configure(namespace)
        wait_until(lambda: inNamespace(namespace, "ip", "link", "show", "uwsgi0").returncode == 0,
                   f"uwsgi0 in {namespace}", 20, process)
        run("ip", "netns", "exec", namespace, "ip", "addr", "add", f"{address}/24", "dev", "uwsgi0")
        run("ip", "netns", "exec", namespace, "ip", "link", "set", "uwsgi0", "up")
        return namespace

    def statsDocument(self) -> dict:
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(5)
            s.connect(self.stats)
            data = b""
            while chunk := s.recv(65536):
                data += chunk
        return json.loads(data)

    def peers(self) -> dict:
        return {peer["addr"]: peer for peer in self.statsDocument()["peers"]}

    def register(self, namespace: str, address: str) -> None:
        """
        Make the peer at C{address} send a packet (a ping of nobody), and
        wait until the router has learnt its address.
        """
        ping(namespace, "10.77.0.1", 0.1)
        wait_until(lambda: address in self.peers(), f"{address} registered", 15)

    def close(self) -> None:
        try:
            for process in reversed(self.processes):
                process.stop()
        finally:
            for namespace in self.namespaces:
                subprocess.run(["ip", "netns", "del", namespace], timeout=30)


@pytest.fixture
def network(tmp_path):
    network = Network(tmp_path)
    try:
        yield network
    finally:
        network.close()


def test_ping_between_peers(network):
    """
    Two uWSGI peers ping each other through the router (started where a
    killed router left its socket); the stats list both, with the bytes
    they moved.
    """
    network.router().kill()
    network.router()
    a = network.peer("a", "10.77.0.2")
    b = network.peer("b", "10.77.0.3")
    network.register(b, "10.77.0.3")
    assert ping(a, "10.77.0.3")
    assert ping(b, "10.77.0.2")
    peers = network.peers()
    assert peers["10.77.0.2"]["rx"] > 0 and peers["10.77.0.2"]["tx"] > 0
    assert peers["10.77.0.3"]["rx"] > 0 and peers["10.77.0.3"]["tx"] > 0
    assert peers["10.77.0.2"]["addr_32"] == struct.unpack("=I", socket.inet_aton("10.77.0.2"))[0]


#: A uWSGI peer that drops to nobody and sends its credentials then.
AS_NOBODY = ("--tuntap-use-credentials", "--uid", "nobody", "--gid", "nogroup")


def test_credentials_client(network):
    """
    A C{uwsgi --tuntap-use-credentials} peer (which opens with a
    credentials handshake once it runs as another user than root) is
    served by a router without the option: its handshake is passed over,
    its address learnt from its first packet.
    """
    network.router()
    a = network.peer("a", "10.77.0.2")
    # As nobody, it cannot bind in the test's directory.
    b = network.peer("b", "10.77.0.3", *AS_NOBODY, app="0.0.0.0:3031")
    network.register(b, "10.77.0.3")
    assert ping(a, "10.77.0.3")


def test_credentials_read(network):
    """
    With C{--tuntap-use-credentials true} the router reads the credentials
    of the handshake, sent after the peer dropped to nobody, and shows them
    in the stats.
    """
    network.router("--tuntap-use-credentials", "true")
    b = network.peer("b", "10.77.0.3", *AS_NOBODY, app="0.0.0.0:3031")
    network.register(b, "10.77.0.3")
    peer = network.peers()["10.77.0.3"]
    assert (peer["uid"], peer["gid"]) == (pwd.getpwnam("nobody").pw_uid,
                                          pwd.getpwnam("nobody").pw_gid)
    assert peer["pid"] > 0


def test_credentials_assign_address(network):
    """
    With C{--tuntap-use-credentials MODULE:FUNCTION} the function's answer
    for the peer's credentials is its address: packets for that address
    reach it, and a peer whose function answers None is refused.
    """
    (network.tmp / "tuntapaddresses.py").write_text(
        "import pwd\n"
        "def assign(pid, uid, gid):\n"
        "    return '10.77.0.3' if uid == pwd.getpwnam('nobody').pw_uid else None\n")
    env = withProject()
    env["PYTHONPATH"] += os.pathsep + str(network.tmp)
    network.router("--tuntap-use-credentials", "tuntapaddresses:assign", env=env)
    network.peer("b", "10.77.0.3", *AS_NOBODY, app="0.0.0.0:3031")
    wait_until(lambda: "10.77.0.3" in network.peers(), "10.77.0.3 assigned", 15)
    # The test runs as root, which the function gives no address.
    with socket.socket(socket.AF_UNIX) as refused:
        refused.settimeout(10)
        refused.connect(network.socket)
        refused.sendall(b"uwsgi-tuntap")
        assert refused.recv(100) == b""
    assert network.statsDocument()["txrouter"]["refused"] == 1
    assert list(network.peers()) == ["10.77.0.3"]


def test_tcp_between_peers(network):
    """
    A megabyte over TCP from one uWSGI peer to another, through the
    router, arrives whole.
    """
    network.router()
    a = network.peer("a", "10.77.0.2")
    b = network.peer("b", "10.77.0.3")
    network.register(b, "10.77.0.3")
    server = Process(["ip", "netns", "exec", b, sys.executable, "-c", SHA_SERVER],
                     network.tmp / "server.log")
    network.processes.append(server)
    wait_for_log(server, "listening")
    size = 1 << 20
    client = inNamespace(a, sys.executable, "-c", SHA_CLIENT, str(size))
    assert client.returncode == 0, client.stderr
    assert client.stdout.strip() == hashlib.sha256(bytes(range(256)) * (size // 256)).hexdigest()


def test_firewall_deny(network):
    """
    C{--tuntap-router-firewall-in "deny 10.77.0.2 10.77.0.4"}: .2 cannot
    reach .4, but still reaches .3; the denied packets are counted.
    """
    network.router("--tuntap-router-firewall-in", "deny 10.77.0.2 10.77.0.4")
    a = network.peer("a", "10.77.0.2")
    b = network.peer("b", "10.77.0.3")
    c = network.peer("c", "10.77.0.4")
    network.register(b, "10.77.0.3")
    network.register(c, "10.77.0.4")
    assert ping(a, "10.77.0.3")
    assert not ping(a, "10.77.0.4")
    assert network.statsDocument()["txrouter"]["denied"] >= 1


def test_spoofed_source(network):
    """
    A peer sending from another peer's address: the packet is dropped and
    counted (the peer's C{dropped}, the router's C{spoofed}), and never
    reaches the peer it was sent to.
    """
    network.router()
    a = network.peer("a", "10.77.0.2")
    network.register(a, "10.77.0.2")
    with socket.socket(socket.AF_UNIX) as spoofer:
        spoofer.settimeout(5)
        spoofer.connect(network.socket)
        spoofer.sendall(frame(echoRequest("10.77.0.9", "10.77.0.2")))
        wait_until(lambda: "10.77.0.9" in network.peers(), "10.77.0.9 registered", 15)
        before = network.peers()["10.77.0.2"]["tx"]
        spoofer.sendall(frame(echoRequest("10.77.0.3", "10.77.0.2")))
        wait_until(lambda: network.statsDocument()["txrouter"]["spoofed"] == 1,
                   "the spoofed packet counted", 15)
        peers = network.peers()
        assert peers["10.77.0.9"]["dropped"] == 1
        assert peers["10.77.0.2"]["tx"] == before


def test_ping_router_device(network):
    """
    A peer pings the address of the router's own tun device: the request
    is written to the device, the router's kernel answers through it, the
    router reads the reply and sends it to the peer.
    """
    network.router()
    wait_until(lambda: inNamespace(network.routerNamespace, "ip", "link", "show",
                                   "txrtun0").returncode == 0, "txrtun0", 15)
    run("ip", "netns", "exec", network.routerNamespace,
        "ip", "addr", "add", "10.77.0.1/24", "dev", "txrtun0")
    run("ip", "netns", "exec", network.routerNamespace, "ip", "link", "set", "txrtun0", "up")
    a = network.peer("a", "10.77.0.2")
    assert ping(a, "10.77.0.1")
    assert ping(network.routerNamespace, "10.77.0.2")


def test_route_through_gateway(network):
    """
    C{--tuntap-router-route}: a datagram on the gateway socket holding a
    packet for a peer reaches it; the peer's answer, matching the route,
    leaves as a UDP datagram to the route's address.
    """
    network.router("--tuntap-router-route", "10.77.0.0/24 10.88.0.0/24 127.0.0.1:7002",
                   gateway="127.0.0.1:7001")
    a = network.peer("a", "10.77.0.2")
    run("ip", "netns", "exec", a, "ip", "route", "add", "10.88.0.0/24", "dev", "uwsgi0")
    network.register(a, "10.77.0.2")
    result = inNamespace(network.routerNamespace, sys.executable, "-c", GATEWAY_PEER,
                         echoRequest("10.88.0.5", "10.77.0.2").hex())
    assert result.returncode == 0, result.stderr
    # An echo reply (ICMP type 0) from the peer to the gateway's sender.
    assert result.stdout.split() == ["10.77.0.2", "10.88.0.5", "0"]
