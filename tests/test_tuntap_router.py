"""
The TunTap router's parts: uWSGI's framing (any split, bounded, fuzzed),
its firewall and route rules, and the switch over fake peers, device and
gateway: address learning, spoofing, firewall chains, routes, stats.
"""

import os
import socket
import struct

from hypothesis import given, strategies as st
from twisted.internet.testing import StringTransport
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from txrouter.config import TunTapRouterConfig, TunTapSpec
from txrouter.routers.tuntap import TunTapRouter
from txrouter.tap.tuntap import Options
from txrouter.wire.tuntap import (
    ALLOW,
    DENY,
    BadPacket,
    FirewallRule,
    FrameParser,
    IPPacket,
    RuleBlock,
    TunTapFrameError,
    decide,
    encodeFrame,
    parseFirewallRule,
    parseRouteRule,
    routeFor,
)


def ip(text: str) -> int:
    return struct.unpack("!I", socket.inet_aton(text))[0]


def packet(source: str, destination: str, payload: bytes = b"hello") -> bytes:
    """
    An IPv4 packet (UDP, checksums left at 0: the router reads addresses
    only).
    """
    return struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), 0, 0, 64, 17, 0,
                       socket.inet_aton(source), socket.inet_aton(destination)) + payload


class FrameTests(SynchronousTestCase):
    """
    L{FrameParser} and L{encodeFrame}: uWSGI's C{[0][u16 LE size][m2]}.
    """

    def test_header(self):
        """
        The header is uWSGI's: modifier1 0, the size little-endian,
        modifier2 0 for a packet.
        """
        data = packet("10.0.0.2", "10.0.0.3")
        self.assertEqual(encodeFrame(data)[:4], bytes([0, len(data), 0, 0]))
        self.assertEqual(encodeFrame(data)[4:], data)

    def test_packet(self):
        """
        A frame gives the packet with its addresses.
        """
        data = packet("10.0.0.2", "10.0.0.3")
        self.assertEqual(FrameParser().feed(encodeFrame(data)),
                         [IPPacket(data, ip("10.0.0.2"), ip("10.0.0.3"))])

    @given(st.lists(st.binary(min_size=0, max_size=60), max_size=5), st.data())
    def test_anySplit(self, payloads, data):
        """
        Frames fed in pieces of any size come out whole and in order.
        """
        packets = [packet("10.0.0.2", "10.0.0.%d" % (i + 3), p) for i, p in enumerate(payloads)]
        stream = b"".join(encodeFrame(p) for p in packets)
        cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=8)))
        parser = FrameParser()
        frames = []
        for start, end in zip([0] + cuts, cuts + [len(stream)]):
            frames += parser.feed(stream[start:end])
        self.assertEqual([frame.data for frame in frames], packets)

    def test_tooLarge(self):
        """
        A frame announcing more than the parser's bound is refused before
        its bytes come.
        """
        with self.assertRaises(TunTapFrameError) as caught:
            FrameParser(maxSize=1500).feed(struct.pack("<BHB", 0, 1501, 0))
        self.assertEqual(caught.exception.event, "tuntap_too_large")

    def test_unknownModifier(self):
        with self.assertRaises(TunTapFrameError) as caught:
            FrameParser().feed(struct.pack("<BHB", 0, 20, 7))
        self.assertEqual(caught.exception.event, "tuntap_bad_frame")

    def test_notIPv4(self):
        """
        An IPv6 packet, or a runt, is a L{BadPacket}; the stream stays in
        step.
        """
        six = bytes([0x60]) + bytes(39)
        good = packet("10.0.0.2", "10.0.0.3")
        frames = FrameParser().feed(encodeFrame(six) + encodeFrame(b"\x45abc") + encodeFrame(good))
        self.assertEqual([type(f) for f in frames], [BadPacket, BadPacket, IPPacket])
        self.assertEqual(frames[0].event, "tuntap_not_ipv4")

    def test_rules(self):
        """
        A frame of modifier2 1 is a client's rule block.
        """
        self.assertEqual(FrameParser().feed(encodeFrame(b"x" * 24, 1)), [RuleBlock(b"x" * 24)])

    @given(st.binary(max_size=300))
    def test_fuzz(self, data):
        """
        Any bytes give frames or a L{TunTapFrameError}, nothing else, and
        nothing larger than the bound.
        """
        try:
            frames = FrameParser(maxSize=100).feed(data)
        except TunTapFrameError:
            return
        for frame in frames:
            self.assertLessEqual(len(frame.data), 100)


class RuleTests(SynchronousTestCase):
    """
    uWSGI's firewall and route rules.
    """

    def test_bare(self):
        self.assertEqual(parseFirewallRule("deny"), FirewallRule(DENY))
        self.assertEqual(decide([parseFirewallRule("deny")], ip("1.2.3.4"), ip("5.6.7.8")), DENY)

    def test_firstMatchWins(self):
        rules = [parseFirewallRule(r) for r in (
            "allow 192.168.0.0/24 192.168.0.1",
            "deny 192.168.0.0/24 192.168.0.0/24",
            "allow 192.168.0.0/24 0.0.0.0",
            "deny",
        )]
        self.assertEqual(decide(rules, ip("192.168.0.5"), ip("192.168.0.1")), ALLOW)
        self.assertEqual(decide(rules, ip("192.168.0.5"), ip("192.168.0.9")), DENY)
        self.assertEqual(decide(rules, ip("192.168.0.5"), ip("8.8.8.8")), ALLOW)
        self.assertEqual(decide(rules, ip("10.0.0.5"), ip("8.8.8.8")), DENY)

    def test_defaultAllow(self):
        """
        No rule, or none matching: allowed (uWSGI's policy).
        """
        self.assertEqual(decide([], 1, 2), ALLOW)
        self.assertEqual(decide([parseFirewallRule("deny 10.0.0.1 10.0.0.2")],
                                ip("10.0.0.1"), ip("10.0.0.3")), ALLOW)

    def test_maskDefaultsTo32(self):
        rule = parseFirewallRule("deny 10.0.0.1 10.0.0.0/8")
        self.assertTrue(rule.matches(ip("10.0.0.1"), ip("10.9.9.9")))
        self.assertFalse(rule.matches(ip("10.0.0.2"), ip("10.9.9.9")))

    def test_refused(self):
        for text in ("", "permit", "allow 10.0.0.1", "allow 10.0.0.1 10.0.0.0/33",
                     "deny 10.0.0.300 0.0.0.0", "deny ::1 0.0.0.0", "allow a b c d"):
            self.assertRaises(ValueError, parseFirewallRule, text)

    def test_route(self):
        route = parseRouteRule("10.0.0.0/24 192.168.1.0/24 127.0.0.1:4000")
        self.assertEqual(route.gateway, ("127.0.0.1", 4000))
        self.assertEqual(routeFor([route], ip("10.0.0.7"), ip("192.168.1.9")), ("127.0.0.1", 4000))
        self.assertIsNone(routeFor([route], ip("10.0.1.7"), ip("192.168.1.9")))
        for text in ("10.0.0.0/24 192.168.1.0/24", "10.0.0.0/24 1.1.1.1 127.0.0.1",
                     "10.0.0.0/24 1.1.1.1 127.0.0.1:0", "x 1.1.1.1 127.0.0.1:4000"):
            self.assertRaises(ValueError, parseRouteRule, text)


class FakeDevice:
    def __init__(self):
        self.written = []

    def writePacket(self, data):
        self.written.append(data)
        return True


class FakeGateway:
    def __init__(self):
        self.sent = []

    def write(self, data, address):
        self.sent.append((data, address))


class RouterTests(SynchronousTestCase):
    """
    L{TunTapRouter} with L{StringTransport} peers, a fake device and a
    fake gateway.
    """

    def router(self, **kwargs):
        router = TunTapRouter(**kwargs)
        router.device = FakeDevice()
        router.gateway = FakeGateway()
        return router

    def connect(self, router):
        peer = router.buildProtocol(None)
        transport = StringTransport()
        peer.makeConnection(transport)
        return peer, transport

    def received(self, transport):
        frames = FrameParser().feed(transport.value())
        transport.clear()
        return [frame.data for frame in frames]

    def test_learnsAddress(self):
        """
        A peer's address is its first packet's source; a packet to it is
        framed to it.
        """
        router = self.router()
        a, ta = self.connect(router)
        b, tb = self.connect(router)
        a.dataReceived(encodeFrame(packet("10.0.0.2", "10.0.0.3")))
        self.assertEqual(a.address, ip("10.0.0.2"))
        self.assertEqual(len(router.device.written), 1)  # .3 is no peer yet
        b.dataReceived(encodeFrame(packet("10.0.0.3", "10.0.0.2", b"pong")))
        self.assertEqual(self.received(ta), [packet("10.0.0.3", "10.0.0.2", b"pong")])
        a.dataReceived(encodeFrame(packet("10.0.0.2", "10.0.0.3", b"ping")))
        self.assertEqual(self.received(tb), [packet("10.0.0.2", "10.0.0.3", b"ping")])
        self.assertEqual(len(router.device.written), 1)

    def test_spoofed(self):
        """
        A packet from another address than the peer's is dropped and
        counted.
        """
        router = self.router()
        a, ta = self.connect(router)
        b, tb = self.connect(router)
        a.dataReceived(encodeFrame(packet("10.0.0.2", "10.0.0.1")))
        b.dataReceived(encodeFrame(packet("10.0.0.3", "10.0.0.1")))
        b.dataReceived(encodeFrame(packet("10.0.0.9", "10.0.0.2")))
        self.assertEqual(ta.value(), b"")
        self.assertEqual((b.dropped, router.counts["spoofed"]), (1, 1))
        self.assertFalse(tb.disconnecting)

    def test_collision(self):
        """
        A newcomer with an address in use takes it; the older peer is
        disconnected (uWSGI's rule).
        """
        router = self.router()
        a, ta = self.connect(router)
        a2, ta2 = self.connect(router)
        a.dataReceived(encodeFrame(packet("10.0.0.2", "10.0.0.1")))
        a2.dataReceived(encodeFrame(packet("10.0.0.2", "10.0.0.1")))
        self.assertTrue(ta.disconnecting)
        self.assertIs(router.peers[ip("10.0.0.2")], a2)
        a.connectionLost(None)
        self.assertIs(router.peers[ip("10.0.0.2")], a2)

    def test_zeroSource(self):
        router = self.router()
        a, ta = self.connect(router)
        a.dataReceived(encodeFrame(packet("0.0.0.0", "10.0.0.1")))
        self.assertTrue(ta.disconnecting)
        self.assertEqual(router.peers, {})

    def test_tooLarge(self):
        """
        A frame over the bound disconnects the peer; a non-IPv4 packet is
        only dropped.
        """
        router = self.router(maxPacket=1500)
        a, ta = self.connect(router)
        a.dataReceived(encodeFrame(bytes([0x60]) + bytes(39)))
        self.assertFalse(ta.disconnecting)
        a.dataReceived(struct.pack("<BHB", 0, 1501, 0))
        self.assertTrue(ta.disconnecting)
        self.assertEqual(router.counts["malformed"], 2)

    def test_credentialsHandshake(self):
        """
        The C{uwsgi-tuntap} opening of a C{--tuntap-use-credentials} client,
        in any pieces, is passed over; the packets after it are read.
        """
        router = self.router()
        a, ta = self.connect(router)
        stream = b"uwsgi-tuntap" + encodeFrame(packet("10.0.0.2", "10.0.0.1"))
        for i in range(len(stream)):
            a.dataReceived(stream[i:i + 1])
        self.assertEqual(a.address, ip("10.0.0.2"))
        self.assertFalse(ta.disconnecting)

    def connectWith(self, router, credentials=(4242, 1000, 1001)):
        peer, transport = self.connect(router)
        if credentials is not None:
            peer.credentialsReceived(*credentials)
        return peer, transport

    def test_credentialsInStats(self):
        """
        With C{credentials}, a peer's pid, uid and gid are those of its
        first bytes (later ones are not looked at), shown in the stats; its
        address is still its first packet's source.
        """
        router = self.router(credentials=True)
        a, ta = self.connectWith(router)
        a.dataReceived(b"uwsgi-tuntap")
        a.credentialsReceived(0, 0, 0)
        a.dataReceived(encodeFrame(packet("10.0.0.2", "10.0.0.1")))
        [peer] = router.statsDocument()["peers"]
        self.assertEqual((peer["addr"], peer["pid"], peer["uid"], peer["gid"]),
                         ("10.0.0.2", 4242, 1000, 1001))

    def test_credentialsIgnoredWhenOff(self):
        """
        Without C{credentials}, what a transport says is not looked at.
        """
        router = self.router()
        a, ta = self.connectWith(router)
        a.dataReceived(encodeFrame(packet("10.0.0.2", "10.0.0.1")))
        [peer] = router.statsDocument()["peers"]
        self.assertEqual((peer["pid"], peer["uid"]), (0, 0))

    def test_addressFromCredentials(self):
        """
        An C{addressFor} function assigns the address from the credentials
        before any packet: packets to it are delivered, and the peer may
        only send from it.
        """
        seen = []

        def addressFor(pid, uid, gid):
            seen.append((pid, uid, gid))
            return f"10.0.{uid - 1000}.{gid - 1000}"

        router = self.router(credentials=True, addressFor=addressFor)
        a, ta = self.connectWith(router)
        self.assertEqual((seen, a.address), ([(4242, 1000, 1001)], ip("10.0.0.1")))
        router.deviceReceived(packet("10.0.0.9", "10.0.0.1", b"early"))
        self.assertEqual(self.received(ta), [packet("10.0.0.9", "10.0.0.1", b"early")])
        a.dataReceived(b"uwsgi-tuntap" + encodeFrame(packet("10.0.0.7", "10.0.0.9")))
        self.assertEqual((router.counts["spoofed"], router.device.written), (1, []))
        a.dataReceived(encodeFrame(packet("10.0.0.1", "10.0.0.9")))
        self.assertEqual(len(router.device.written), 1)

    def test_credentialsRefused(self):
        """
        A peer is disconnected and counted as C{refused} when its first
        bytes come without credentials, when the function gives no address,
        or when it fails.
        """
        def failing(pid, uid, gid):
            raise KeyError(uid)

        for router, credentials in ((self.router(credentials=True), None),
                                    (self.router(credentials=True,
                                                 addressFor=lambda pid, uid, gid: None), (1, 2, 3)),
                                    (self.router(credentials=True, addressFor=failing), (1, 2, 3))):
            a, ta = self.connectWith(router, credentials)
            a.dataReceived(encodeFrame(packet("10.0.0.2", "10.0.0.1")))
            self.assertTrue(ta.disconnecting)
            self.assertEqual((router.counts["refused"], router.peers), (1, {}))

    def test_addressForNeedsCredentials(self):
        self.assertRaises(ValueError, TunTapRouter, addressFor=lambda *a: "10.0.0.1")

    def test_deviceRefuses(self):
        """
        A packet the device does not take (it is down) is counted against
        its peer.
        """
        router = self.router()
        router.device.writePacket = lambda data: False
        a, ta = self.connect(router)
        a.dataReceived(encodeFrame(packet("10.0.0.2", "10.0.0.1")))
        self.assertEqual((router.counts["device_dropped"], a.dropped), (1, 1))

    def test_firewallOut(self):
        router = self.router(firewall_out=[parseFirewallRule("deny 10.0.0.2 10.0.0.3")])
        a, ta = self.connect(router)
        b, tb = self.connect(router)
        b.dataReceived(encodeFrame(packet("10.0.0.3", "10.0.0.1")))
        a.dataReceived(encodeFrame(packet("10.0.0.2", "10.0.0.3")))
        self.assertEqual(tb.value(), b"")
        self.assertEqual(router.counts["denied"], 1)

    def test_firewallIn(self):
        """
        The in chain applies to packets from the device and between peers.
        """
        router = self.router(firewall_in=[parseFirewallRule("deny 0.0.0.0 10.0.0.3")])
        a, ta = self.connect(router)
        b, tb = self.connect(router)
        b.dataReceived(encodeFrame(packet("10.0.0.3", "10.0.0.1")))
        a.dataReceived(encodeFrame(packet("10.0.0.2", "10.0.0.3")))
        router.deviceReceived(packet("10.0.0.1", "10.0.0.3"))
        router.deviceReceived(packet("10.0.0.1", "10.0.0.2"))
        self.assertEqual(tb.value(), b"")
        self.assertEqual(self.received(ta), [packet("10.0.0.1", "10.0.0.2")])
        self.assertEqual(router.counts["denied"], 2)

    def test_route(self):
        router = self.router(routes=[parseRouteRule("10.0.0.0/24 8.8.8.0/24 127.0.0.1:4000")])
        a, ta = self.connect(router)
        a.dataReceived(encodeFrame(packet("10.0.0.2", "8.8.8.8")))
        self.assertEqual(router.gateway.sent, [(packet("10.0.0.2", "8.8.8.8"), ("127.0.0.1", 4000))])
        self.assertEqual(router.device.written, [])

    def test_congested(self):
        """
        While a peer's transport is paused, packets for it are dropped and
        counted.
        """
        router = self.router()
        a, ta = self.connect(router)
        a.dataReceived(encodeFrame(packet("10.0.0.2", "10.0.0.1")))
        ta.producer.pauseProducing()
        router.deviceReceived(packet("10.0.0.1", "10.0.0.2"))
        self.assertEqual((ta.value(), a.dropped), (b"", 1))
        ta.producer.resumeProducing()
        router.deviceReceived(packet("10.0.0.1", "10.0.0.2"))
        self.assertEqual(len(self.received(ta)), 1)

    def test_stats(self):
        """
        uWSGI's document: version, pid, uid, gid, cwd, and a peer per
        address with C{addr_32} the network-order value read natively.
        """
        router = self.router()
        a, ta = self.connect(router)
        a.dataReceived(encodeFrame(packet("10.0.0.2", "10.0.0.1")))
        router.deviceReceived(packet("10.0.0.1", "10.0.0.2", b"x" * 10))
        document = router.statsDocument()
        self.assertEqual(list(document)[:6], ["version", "pid", "uid", "gid", "cwd", "peers"])
        [peer] = document["peers"]
        self.assertEqual(peer["addr"], "10.0.0.2")
        self.assertEqual(peer["addr_32"], struct.unpack("=I", socket.inet_aton("10.0.0.2"))[0])
        self.assertEqual((peer["rx"], peer["tx"], peer["dropped"]), (25, 30, 0))
        a.connectionLost(None)
        self.assertEqual(router.statsDocument()["peers"], [])


class OptionsTests(SynchronousTestCase):
    def parse(self, *argv):
        options = Options()
        options.parseOptions(list(argv))
        return options.config

    def test_uwsgiSpellings(self):
        config = self.parse(
            "--tuntap-router", "tun0 /run/t.sock 127.0.0.1:5001 127.0.0.1:6000",
            "--tuntap-router-firewall-out", "deny",
            "--tuntap-router-firewall-in", "allow 10.0.0.0/8 0.0.0.0",
            "--tuntap-router-route", "10.0.0.0/8 8.8.8.8 127.0.0.1:7000",
        )
        self.assertEqual(config.tuntap_router,
                         (TunTapSpec("tun0", "/run/t.sock", "127.0.0.1:5001", "127.0.0.1:6000"),))
        self.assertEqual(config.tuntap_router_firewall_out, (FirewallRule(DENY),))

    def test_mistakes(self):
        for argv in (
            [],
            ["--tuntap-router", "tun0"],
            ["--tuntap-router", "tun0 /s", "--tuntap-router-firewall-in", "permit"],
            ["--tuntap-router", "tun0 /s", "--tuntap-router-route", "0.0.0.0 0.0.0.0 1.1.1.1:53"],
            ["--tuntap-router", "a-name-too-long-for-linux /s"],
            ["--tuntap-router", "tun0 /s", "--tuntap-use-credentials", "yes"],
            ["--tuntap-router", "tun0 /s", "--tuntap-use-credentials", "nosuchmodule:f"],
        ):
            self.assertRaises(usage.UsageError, self.parse, *argv)

    def test_credentials(self):
        """
        C{--tuntap-use-credentials true} reads credentials; C{MODULE:FUNCTION}
        is loaded at start-up, so that a mistake is a usage error.
        """
        self.assertEqual(self.parse("--tuntap-router", "tun0 /s",
                                    "--tuntap-use-credentials", "true").tuntap_use_credentials,
                         "true")
        config = self.parse("--tuntap-router", "tun0 /s",
                            "--tuntap-use-credentials", "ipaddress:IPv4Address")
        import ipaddress
        self.assertIs(config.tuntap_use_credentials, ipaddress.IPv4Address)

    def test_tac(self):
        """
        The config class takes the option values as the command line does.
        """
        config = TunTapRouterConfig(tuntap_router=["tun0 /s"],
                                    tuntap_router_firewall_in=["deny"])
        self.assertEqual(config.tuntap_router_firewall_in, (FirewallRule(DENY),))


class BuildTests(SynchronousTestCase):
    """
    L{buildService} on a L{TunTapRouterConfig}: per C{--tuntap-router}, its
    device, its peers' listener, its stats listener and its gateway.
    """

    def test_services(self):
        from twisted.internet.testing import MemoryReactorClock

        from txrouter.build import buildService
        from txrouter.routers.tuntap import DeviceService, GatewayService
        from txrouter.service import Listener

        config = TunTapRouterConfig(
            tuntap_router=["tun0 /run/a.sock", "tun1 /run/b.sock /run/b.stats 127.0.0.1:6000"],
            tuntap_router_stats="/run/default.stats",
            tuntap_router_route=[],
        )
        services = list(buildService(config, MemoryReactorClock()))
        self.assertEqual([type(s) for s in services],
                         [DeviceService, Listener, Listener,
                          DeviceService, Listener, Listener, GatewayService])
        self.assertEqual([s.name for s in services if isinstance(s, DeviceService)], ["tun0", "tun1"])
        self.assertEqual(services[2].endpoint._address, "/run/default.stats")
        self.assertEqual(services[5].endpoint._address, "/run/b.stats")
