"""
The TunTap router: a small IPv4 switch between jailed uWSGI instances
(uWSGI's C{--tuntap-router}, reference section 9).

Peers connect to a unix socket and exchange IPv4 packets framed as
L{txrouter.wire.tuntap} frames them (what C{uwsgi --tuntap-device "uwsgi0
SOCKET"} sends).  A peer's address is the source of its first packet; a
later peer taking the same address disconnects the older one (uWSGI's
rule).  Every packet from a peer goes through the C{firewall_out} chain,
then:

  - to another peer if its destination is one, through the C{firewall_in}
    chain (uWSGI hands it to the kernel, which needs the device configured
    and forwarding on to send it back; here the router switches it);
  - else, if a route matches, as a UDP datagram from the gateway socket;
  - else to the tun device.

Packets read from the device, or received on the gateway socket, go
through the C{firewall_in} chain to the peer of their destination.

Better than uWSGI: a peer may only send from its own address (a spoofed
packet is dropped and counted, uWSGI forwards it), frames are bounded by
C{maxPacket} (a peer announcing a larger one is disconnected) and packets
that are not IPv4 are dropped and counted (uWSGI takes an IPv6 packet's
bytes 12 to 15 for an address), and device rules pushed by peers are ignored (uWSGI trusts
them, so a peer could make it send UDP anywhere).

With C{credentials}, each peer's process id, user and group are read
from its first bytes (the C{SCM_CREDENTIALS} of a C{--tuntap-use-credentials}
client's handshake, sent once it has dropped its privileges; the listener
comes from L{txrouter.unixcredentials}), shown in the stats, and given to
C{addressFor}, which may assign the peer its address (uWSGI's
C{--tuntap-use-credentials SYMBOL}); the peer may then only send from
that address.

The device is opened with a few ioctls (L{openTun}); the router itself
only needs an object with C{writePacket(bytes)}, so units give it a fake.
"""

import errno
import fcntl
import ipaddress
import os
import struct

from twisted.internet.abstract import FileDescriptor
from twisted.internet.interfaces import IPushProducer
from twisted.internet.protocol import DatagramProtocol, Protocol, ServerFactory
from twisted.logger import Logger
from zope.interface import implementer

import txrouter
from txrouter.early import OpenedEarly
from txrouter.unixcredentials import ICredentialsReceiver
from txrouter.wire.tuntap import (
    ALLOW,
    MAX_PACKET,
    BadPacket,
    FrameParser,
    IPPacket,
    TunTapFrameError,
    decide,
    encodeFrame,
    packetAddresses,
    routeFor,
)

__all__ = [
    "DeviceService", "GatewayService", "TunDevice", "TunTapPeer", "TunTapRouter", "openTun",

]

log = Logger(namespace="txrouter.tuntap")

TUN_PATH = "/dev/net/tun"
#: From C{<linux/if_tun.h>}: C{_IOW('T', 202, int)} and the flags.
TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
#: uWSGI's buffer: the largest packet read from the device at once.
BUFFER_SIZE = 8192

#: What a C{uwsgi --tuntap-use-credentials} client sends first, with its
#: C{SCM_CREDENTIALS}.
CREDENTIALS_HANDSHAKE = b"uwsgi-tuntap"



def openTun(name: str, path: str = TUN_PATH) -> "tuple[int, str]":
    """
    Open (or create) the tun device C{name}: C{IFF_TUN|IFF_NO_PI}, so each
    read gives one bare IPv4 packet and each write takes one.

    @return: its non-blocking descriptor and the name the kernel gave it.
    @raise OSError: no C{/dev/net/tun}, no C{CAP_NET_ADMIN}, a bad name.
    """
    fd = os.open(path, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        request = struct.pack("16sH", name.encode(), IFF_TUN | IFF_NO_PI)
        answer = fcntl.ioctl(fd, TUNSETIFF, request)
    except BaseException:
        os.close(fd)
        raise
    return fd, answer[:16].rstrip(b"\0").decode()


class TunDevice(FileDescriptor):
    """
    The tun device as a reader on the reactor: each packet read goes to
    C{router.deviceReceived}; C{writePacket} writes one packet, or tells
    that the device did not take it (full, or down: C{EIO}).
    """

    def __init__(self, reactor, fd: int, name: str, router) -> None:
        super().__init__(reactor)
        self.fd = fd
        self.name = name
        self.router = router

    def fileno(self) -> int:
        return self.fd

    def doRead(self):
        for _ in range(64):
            try:
                packet = os.read(self.fd, BUFFER_SIZE)
            except BlockingIOError:
                return None
            except OSError as e:
                if e.errno == errno.EINTR:
                    continue
                return e
            self.router.deviceReceived(packet)
        return None

    def writePacket(self, packet: bytes) -> bool:
        try:
            os.write(self.fd, packet)
            return True
        except OSError as e:
            log.debug("tuntap_device_write_failed: {error}", event="tuntap_device_write_failed",
                      error=os.strerror(e.errno))
            return False

    def connectionLost(self, reason) -> None:
        super().connectionLost(reason)
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def logPrefix(self) -> str:
        return f"tun {self.name}"


def _dotted(address: int) -> str:
    return str(ipaddress.IPv4Address(address))


class TunTapRouter(ServerFactory):
    """
    The switch: the peers' factory and the device's and gateway's handler.

    @ivar device: what packets for no peer are written to (C{writePacket}).
    @ivar gateway: the gateway's datagram transport, or L{None}.
    @ivar peers: the registered peers by host-order address.
    @ivar counts: the router's own counters (C{malformed}, C{spoofed},
        C{denied}, C{unroutable}, C{device_dropped}, C{refused}: peers
        refused on their credentials), for the stats
        document.
    """

    noisy = False
    device = None
    gateway = None

    def __init__(self, *, firewall_in=(), firewall_out=(), routes=(),
                 maxPacket: int = MAX_PACKET, credentials: bool = False,
                 addressFor=None) -> None:
        """
        @param credentials: read each peer's credentials from its first
            bytes (uWSGI's C{--tuntap-use-credentials}): the peers' listener
            must give them (L{txrouter.unixcredentials}), a peer whose
            first bytes come without them is refused.
        @param addressFor: with C{credentials}, a callable taking a peer's
            C{(pid, uid, gid)} and returning its address (dotted text, an
            L{ipaddress.IPv4Address} or a host-order L{int}), or L{None} to
            refuse the peer.  Without it a peer's address is its first
            packet's source.
        """
        if addressFor is not None and not credentials:
            raise ValueError("addressFor needs credentials=True")
        self.credentials = credentials
        self.addressFor = addressFor
        self.firewallIn = tuple(firewall_in)
        self.firewallOut = tuple(firewall_out)
        self.routes = tuple(routes)
        self.maxPacket = maxPacket
        self.peers = {}
        self.connected = []
        self.counts = {"malformed": 0, "spoofed": 0, "denied": 0, "unroutable": 0,
                       "device_dropped": 0, "refused": 0}

    def buildProtocol(self, addr):
        peer = TunTapPeer(self)
        peer.factory = self
        return peer

    # Peers

    def register(self, peer: "TunTapPeer", address: int) -> None:
        """
        Give C{peer} C{address}; an older peer holding it is disconnected.
        """
        older = self.peers.get(address)
        if older is not None and older is not peer:
            log.warn("tuntap_address_taken: {addr} moves to a new peer",
                     event="tuntap_address_taken", addr=_dotted(address))
            older.address = None
            older.transport.loseConnection()
        self.peers[address] = peer
        peer.address = address
        log.info("tuntap_peer_registered: {addr}", event="tuntap_peer_registered",
                 addr=_dotted(address))

    def peerGone(self, peer: "TunTapPeer") -> None:
        if peer in self.connected:
            self.connected.remove(peer)
        if peer.address is not None and self.peers.get(peer.address) is peer:
            del self.peers[peer.address]

    def peerSent(self, peer: "TunTapPeer", packet: IPPacket) -> None:
        """
        A packet from a registered C{peer}, from its own address.
        """
        if decide(self.firewallOut, packet.source, packet.destination) != ALLOW:
            self.drop(peer, "denied")
            return
        target = self.peers.get(packet.destination)
        if target is not None:
            self._deliver(packet.data, packet.source, packet.destination)
            return
        gateway = routeFor(self.routes, packet.source, packet.destination)
        if gateway is not None and self.gateway is not None:
            self.gateway.write(packet.data, gateway)
        elif self.device is None or not self.device.writePacket(packet.data):
            self.drop(peer, "device_dropped")

    def drop(self, peer: "TunTapPeer | None", why: str) -> None:
        """
        Count a packet dropped, C{why} naming the router's counter, and
        against C{peer}'s C{dropped}.
        """
        self.counts[why] += 1
        if peer is not None:
            peer.dropped += 1

    # Towards peers

    def deviceReceived(self, packet: bytes) -> None:
        """
        A packet read from the device (or the gateway): to the peer of its
        destination, through C{firewall_in}; dropped when none is.
        """
        try:
            source, destination = packetAddresses(packet)
        except TunTapFrameError:
            self.counts["malformed"] += 1
            return
        self._deliver(packet, source, destination)

    def _deliver(self, packet: bytes, source: int, destination: int) -> None:
        target = self.peers.get(destination)
        if target is None:
            self.counts["unroutable"] += 1
            return
        if decide(self.firewallIn, source, destination) != ALLOW:
            self.drop(target, "denied")
            return
        target.sendPacket(packet)

    # Stats

    def statsDocument(self) -> dict:
        """
        uWSGI's tuntap stats document (reference section 9), with the
        router's own counters after it under C{txrouter}.
        """
        return {
            "version": f"txrouter-{txrouter.__version__}",
            "pid": os.getpid(), "uid": os.getuid(), "gid": os.getgid(), "cwd": os.getcwd(),
            "peers": self.statsPeers(),
            "txrouter": dict(self.counts, connected=len(self.connected)),
        }

    def statsPeers(self) -> "list[dict]":
        """
        uWSGI's C{peers} list: every registered peer.
        """
        return [
            {"addr": _dotted(address),
             "addr_32": int.from_bytes(address.to_bytes(4, "big"), "little"),
             "uid": peer.uid, "gid": peer.gid, "pid": peer.pid,
             "tx": peer.tx, "rx": peer.rx, "dropped": peer.dropped}
            for address, peer in self.peers.items()
        ]


@implementer(IPushProducer)
class _Congestion:
    """
    Registered on a peer's transport: while it is paused (its buffer is
    full), packets for the peer are dropped, as uWSGI drops those that do
    not fit its 8 KiB queue.
    """

    paused = False

    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        self.paused = False

    def stopProducing(self) -> None:
        pass


@implementer(ICredentialsReceiver)
class TunTapPeer(Protocol):
    """
    One connected peer.

    @ivar address: its host-order address, once its first packet came.
    @ivar tx: bytes of packets sent to it; C{rx}: received from it.
    @ivar dropped: its packets (either way) dropped.
    @ivar pid: the peer's process id, with the router's C{credentials}
        (else 0); C{uid}, C{gid}: its user and group.
    """

    address = None
    pid = uid = gid = 0
    identified = False
    _opening = b""

    def __init__(self, router: TunTapRouter) -> None:
        self.router = router
        self.parser = FrameParser(router.maxPacket)
        self.congestion = _Congestion()
        self.tx = self.rx = self.dropped = 0

    def connectionMade(self) -> None:
        self.router.connected.append(self)
        self.transport.registerProducer(self.congestion, True)

    def credentialsReceived(self, pid: int, uid: int, gid: int) -> None:
        """
        Who wrote the bytes about to be received: the first time, with the
        router's C{credentials}, the peer's identity, and its address if the
        router assigns addresses.
        """
        if self.identified or not self.router.credentials:
            return
        self.identified = True
        self.pid, self.uid, self.gid = pid, uid, gid
        router = self.router
        if router.addressFor is None:
            return
        try:
            address = router.addressFor(pid, uid, gid)
            address = None if address is None else int(ipaddress.IPv4Address(address))
        except Exception as e:
            self._refuse("tuntap_credentials_refused",
                         f"the address function failed for pid {pid} uid {uid} gid {gid}: {e!r}",
                         "refused")
            return
        if not address:
            self._refuse("tuntap_credentials_refused",
                         f"no address for pid {pid} uid {uid} gid {gid}", "refused")
            return
        router.register(self, address)

    def dataReceived(self, data: bytes) -> None:
        if self.transport.disconnecting:
            return
        if self.router.credentials and not self.identified:
            self._refuse("tuntap_no_credentials", "a peer's first bytes came without credentials",
                         "refused")
            return
        if self._opening is not None:
            data = self._skipHandshake(data)
            if not data:
                return
        try:
            frames = self.parser.feed(data)
        except TunTapFrameError as e:
            self._refuse(e.event, e.detail)
            return
        router = self.router
        for frame in frames:
            if self.transport.disconnecting:
                return
            if isinstance(frame, BadPacket):
                router.drop(self, "malformed")
                log.debug("{event}: {detail}", event=frame.event, detail=frame.detail)
                continue
            if not isinstance(frame, IPPacket):
                log.info("tuntap_rules_ignored: {size} bytes of device rules",
                         event="tuntap_rules_ignored", size=len(frame.data))
                continue
            self.rx += len(frame.data)
            if self.address is None:
                if frame.source == 0:
                    self._refuse("tuntap_bad_source", "a first packet from 0.0.0.0")
                    return
                router.register(self, frame.source)
            elif frame.source != self.address:
                router.drop(self, "spoofed")
                log.warn("tuntap_spoofed: {peer} sent a packet from {source}",
                         event="tuntap_spoofed", peer=_dotted(self.address),
                         source=_dotted(frame.source))
                continue
            router.peerSent(self, frame)

    def _skipHandshake(self, data: bytes) -> bytes:
        """
        Pass over the credentials handshake a C{--tuntap-use-credentials}
        client opens with (the credentials it carries are not read: the
        router reads the same facts with C{SO_PEERCRED} when it has
        C{credentials}); the bytes after it, or every byte if the
        connection does not open with it.
        """
        opening = self._opening + data
        if len(opening) < len(CREDENTIALS_HANDSHAKE) and CREDENTIALS_HANDSHAKE.startswith(opening):
            self._opening = opening
            return b""
        self._opening = None
        if opening.startswith(CREDENTIALS_HANDSHAKE):
            if not self.router.credentials:
                log.info("tuntap_credentials_ignored: a --tuntap-use-credentials client",
                         event="tuntap_credentials_ignored")
            return opening[len(CREDENTIALS_HANDSHAKE):]
        return opening

    def _refuse(self, event: str, detail: str, counter: str = "malformed") -> None:
        self.router.counts[counter] += 1
        log.warn("{event}: {detail}", event=event, detail=detail)
        self.transport.loseConnection()

    def sendPacket(self, packet: bytes) -> None:
        if self.congestion.paused or self.transport.disconnecting:
            self.dropped += 1
            return
        self.tx += len(packet)
        self.transport.write(encodeFrame(packet))

    def connectionLost(self, reason) -> None:
        self.router.peerGone(self)


class GatewayProtocol(DatagramProtocol):
    """
    The gateway socket: datagrams received are packets for the peers
    (through C{firewall_in}); routed packets leave from it.
    """

    def __init__(self, router: TunTapRouter) -> None:
        self.router = router

    def startProtocol(self) -> None:
        self.router.gateway = self.transport

    def stopProtocol(self) -> None:
        self.router.gateway = None

    def datagramReceived(self, data: bytes, addr) -> None:
        self.router.deviceReceived(data)


class DeviceService(OpenedEarly):
    """
    Opens the tun device C{name} on start (as root, before privileges are
    dropped) and reads it for C{router}; closes it on stop.

    @ivar device: the L{TunDevice}, while running.
    """

    device = None

    def __init__(self, reactor, name: str, router: TunTapRouter, open=openTun) -> None:
        self.reactor = reactor
        self.name = name
        self.router = router
        self.open = open
        self.label = f"--tuntap-router {name}"

    @property
    def opened(self) -> bool:
        return self.device is not None

    def _open(self) -> None:
        fd, name = self.open(self.name)
        self.device = TunDevice(self.reactor, fd, name, self.router)
        self.router.device = self.device
        self.device.startReading()
        log.info("tuntap_device_open: {device}", event="tuntap_device_open", device=name)

    def stopService(self):
        super().stopService()
        device, self.device = self.device, None
        if device is not None:
            self.router.device = None
            device.stopReading()
            device.connectionLost(None)


class GatewayService(OpenedEarly):
    """
    The UDP gateway socket (C{IP:PORT}) of C{router}, bound on start.
    """

    port = None

    def __init__(self, reactor, address: str, router: TunTapRouter) -> None:
        self.reactor = reactor
        host, _, port = address.rpartition(":")
        self.host = host
        self.portNumber = int(port)
        self.router = router
        self.label = f"--tuntap-router gateway {address}"

    def _open(self) -> None:
        self.port = self.reactor.listenUDP(
            self.portNumber, GatewayProtocol(self.router), interface=self.host)

    def stopService(self):
        super().stopService()
        port, self.port = self.port, None
        if port is not None:
            return port.stopListening()
