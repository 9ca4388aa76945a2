"""
The Python subscriber (L{txrouter.subscription.client}) and its command
line (C{txrouter-subscribe}): when it announces, what it sends (compared
with datagrams captured from a real uWSGI 2.0.21 client), signing, the
unsubscribe on stop, and unreachable servers.
"""

import errno
import socket

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from twisted.internet.task import Clock
from twisted.python import usage

from tests.captures import packets
from tests.logs import named
from txrouter.subscription.client import (
    SubscriberService,
    nodeSubscription,
    readSigningKey,
)
from txrouter.subscription.signing import SignatureChecker, keyFileName, verify
from txrouter.tap import subscribe
from txrouter.wire.subscription import Subscription, SubscriptionError, parseSubscription
from txrouter.wire.uwsgi import encodeHeader, encodeVars

BASIC = packets("subscribe-basic.json")
SIGNED_NOTIFY = packets("subscribe-port0-signed-notify.json")

#: The clock of the signed capture's first announce (its unix var).
CAPTURE_TIME = 1795480954


class FakeSender:
    """
    Records what would be sent; C{failing} servers raise as an unusable
    destination does.
    """

    def __init__(self, clock):
        self.clock = clock
        self.sent = []
        self.failing = set()
        self.closed = 0

    def send(self, datagram, address):
        if address.text in self.failing:
            raise OSError(errno.ENOENT, "No such file or directory")
        self.sent.append((self.clock.seconds(), address.text, datagram))

    def close(self):
        self.closed += 1

    def to(self, server):
        return [datagram for _, text, datagram in self.sent if text == server]


@pytest.fixture
def clock():
    clock = Clock()
    clock.advance(CAPTURE_TIME + 0.25)
    return clock


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    """
    A private key (PEM), its public key in a keys directory named for
    C{signed.local}, and another private key.
    """
    tmp = tmp_path_factory.mktemp("subscriber-keys")
    (tmp / "keys").mkdir()
    key, other = (rsa.generate_private_key(public_exponent=65537, key_size=2048) for _ in range(2))
    pems = [
        k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                        serialization.NoEncryption())
        for k in (key, other)
    ]
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    (tmp / "keys" / keyFileName(b"signed.local")).write_bytes(public)
    (tmp / "private.pem").write_bytes(pems[0])
    return tmp, pems[0], public, pems[1]


def service(clock, servers=("127.0.0.1:7000",), key="example.com", address="127.0.0.1:3031",
            **kwargs):
    sender = FakeSender(clock)
    return SubscriberService(clock, list(servers), key, address, sender=sender, **kwargs), sender


# -- timing


def test_first_announce_at_once_then_every_frequency(clock):
    """
    Every server hears the subscribe when the service starts, then every
    C{frequency} seconds of the injected clock, nothing in between.
    """
    subscriber, sender = service(clock, ["127.0.0.1:7000", "/run/subs.sock"], frequency=10)
    subscriber.startService()
    assert [(t - clock.seconds(), server) for t, server, _ in sender.sent] == [
        (0, "127.0.0.1:7000"), (0, "/run/subs.sock"),
    ]
    clock.advance(9.9)
    assert len(sender.sent) == 2
    clock.advance(0.1)
    assert len(sender.sent) == 4
    for _ in range(3):
        clock.advance(10)
    assert len(sender.to("127.0.0.1:7000")) == len(sender.to("/run/subs.sock")) == 5
    assert all(not parseSubscription(d).unsubscribe for _, _, d in sender.sent)


def test_default_frequency_is_uwsgis_ten_seconds(clock):
    subscriber, sender = service(clock)
    subscriber.startService()
    clock.advance(9.5)
    assert len(sender.sent) == 1
    clock.advance(0.5)
    assert len(sender.sent) == 2


def test_stop_sends_one_unsubscribe_per_server_then_nothing(clock, events):
    subscriber, sender = service(clock, ["127.0.0.1:7000", "@subs"], frequency=1)
    subscriber.startService()
    clock.advance(1)
    del sender.sent[:]
    subscriber.stopService()
    assert [(server, parseSubscription(d).unsubscribe) for _, server, d in sender.sent] == [
        ("127.0.0.1:7000", True), ("@subs", True),
    ]
    clock.advance(60)
    assert len(sender.sent) == 2
    assert not clock.getDelayedCalls()
    assert not subscriber.running
    [stopped] = named(events, "subscriber_stopped")
    assert stopped["key"] == "example.com" and stopped["address"] == "127.0.0.1:3031"


def test_stop_without_start_sends_nothing(clock):
    subscriber, sender = service(clock)
    subscriber.stopService()
    assert sender.sent == []


def test_restart_announces_again(clock):
    """
    A stopped service can be started again (a MultiService toggled off and
    on): it subscribes again at once.
    """
    subscriber, sender = service(clock, frequency=5)
    subscriber.startService()
    subscriber.stopService()
    subscriber.startService()
    assert [parseSubscription(d).unsubscribe for _, _, d in sender.sent] == [False, True, False]
    clock.advance(5)
    assert len(sender.sent) == 4


# -- what is sent, against uWSGI's client


@pytest.mark.parametrize("subscribe, unsubscribe, settings", [
    (6, 9, dict(key="example.com", weight=7)),
    (7, 10, dict(key="bar.local", weight=7, modifier1=9)),
    (8, 11, dict(key="foo.local:8080", weight=7, modifier1=5, modifier2=3)),
    (0, None, dict(key="example.com")),
])
def test_datagrams_are_uwsgis_byte_for_byte(clock, subscribe, unsubscribe, settings):
    """
    With the settings of the captured C{uwsgi --socket 127.0.0.1:3031
    --subscribe-to/--subscribe2} (one process: cores 1; load 0), the
    subscribe and the unsubscribe are the captured datagrams.
    """
    subscriber, sender = service(clock, **settings)
    subscriber.startService()
    subscriber.stopService()
    [(_, _, sent), (_, _, left)] = sender.sent
    assert sent == BASIC[subscribe]
    if unsubscribe is not None:
        assert left == BASIC[unsubscribe]
    else:
        assert left == sent[:3] + b"\x01" + sent[4:]


def test_notify_datagram_is_uwsgis(clock):
    """
    C{notify} (uWSGI's --subscription-notify-socket) goes where uWSGI puts it.
    """
    subscriber, sender = service(
        clock, key="port0.local", address="127.0.0.1:38635", weight=0, notify="127.0.0.1:7999",
    )
    subscriber.startService()
    assert sender.sent[0][2] == SIGNED_NOTIFY[0]


def test_other_vars(clock):
    """
    The vars uWSGI 2.0.21's client does not send (2.1's C{backup} and
    C{algo}) and the C{sni_*} ones come in the order the codec writes them.
    """
    subscriber, sender = service(
        clock, backup=2, cores=8, algo="lrc", sni_key="/k.pem", sni_crt="/c.pem", sni_ca="/ca.pem",
    )
    subscriber.startService()
    assert parseSubscription(sender.sent[0][2]) == Subscription(
        b"example.com", b"127.0.0.1:3031", cores=8, backup=2, algo=b"lrc",
        sniKey=b"/k.pem", sniCrt=b"/c.pem", sniCa=b"/ca.pem",
    )


def test_an_http_backend_is_announced_with_proto_http_as_uwsgi_21_does(clock):
    """
    C{proto="http"} adds the var uWSGI 2.1's C{--subscribe2 ...,proto=http}
    writes, after the C{sni_*} ones and before C{algo}; 2.1's routers keep
    its first byte, C{h}.  The default adds nothing: the datagram stays
    2.0.21's.
    """
    subscriber, sender = service(clock, proto="http", sni_ca="/ca.pem", algo="lrc")
    subscriber.startService()
    subscriber.stopService()
    block = encodeVars([
        (b"key", b"example.com"), (b"address", b"127.0.0.1:3031"), (b"modifier1", b"0"),
        (b"modifier2", b"0"), (b"cores", b"1"), (b"load", b"0"), (b"weight", b"0"),
        (b"sni_ca", b"/ca.pem"), (b"proto", b"http"), (b"algo", b"lrc"),
    ])
    announce, unsubscribe = (datagram for _, _, datagram in sender.sent)
    assert announce == encodeHeader(224, len(block), 0) + block
    assert unsubscribe == encodeHeader(224, len(block), 1) + block
    plain, plainSender = service(clock)
    plain.startService()
    assert b"proto" not in plainSender.sent[0][2]


def test_an_unknown_protocol_is_refused(clock):
    with pytest.raises(ValueError) as e:
        service(clock, proto="fastcgi")
    assert "uwsgi or http" in str(e.value)


# -- signing


def test_signed_announces_match_uwsgis_signed_bytes_and_verify(clock, keys):
    """
    The captured signed client (SHA1, notify) announced at T and T+1 and
    unsubscribed at T+2 with unix T+3: ours at the same clock signs the
    same bytes, in datagrams of the same header (the signature differs:
    another private key), and every signature verifies with our public key.
    """
    _, privatePEM, publicPEM, _ = keys
    subscriber, sender = service(
        clock, key="signed.local", address="127.0.0.1:38635", notify="127.0.0.1:7999",
        frequency=1, sign=("SHA1", privatePEM),
    )
    subscriber.startService()
    clock.pump([1, 1])
    subscriber.stopService()
    datagrams = [d for _, _, d in sender.sent]
    ours = [parseSubscription(d) for d in datagrams]
    assert [(s.unix - CAPTURE_TIME, s.unsubscribe) for s in ours] == [
        (0, False), (1, False), (2, False), (3, True),
    ]
    captured = {CAPTURE_TIME: SIGNED_NOTIFY[1], CAPTURE_TIME + 1: SIGNED_NOTIFY[4],
                CAPTURE_TIME + 3: SIGNED_NOTIFY[7]}
    for datagram, mine in zip(datagrams, ours):
        assert len(mine.sign) == 256
        assert verify(mine, "SHA1", publicPEM)
        if mine.unix in captured:
            theirs = captured[mine.unix]
            assert datagram[:4] == theirs[:4]
            assert mine.signedPayload == parseSubscription(theirs).signedPayload


def test_signed_announces_pass_a_replay_protected_server(clock, keys):
    """
    Every announce, even several a second, and the unsubscribe carry a
    newer unix than the one before: txrouter's SignatureChecker accepts
    them all, and refuses one signed by another key.
    """
    tmp, privatePEM, _, otherPEM = keys
    checker = SignatureChecker("sha256", str(tmp / "keys"), clock=clock)
    subscriber, sender = service(
        clock, key="signed.local", frequency=0.25, sign=("sha256", privatePEM),
    )
    subscriber.startService()
    clock.pump([0.25] * 6)
    subscriber.stopService()
    unixes = []
    for _, _, datagram in sender.sent:
        announce = parseSubscription(datagram)
        checker.check(announce)
        unixes.append(announce.unix)
    assert len(unixes) == 8 and unixes == sorted(set(unixes))
    forger, forged = service(clock, key="signed.local", address="127.0.0.1:3032",
                             sign=("sha256", otherPEM))
    forger.startService()
    with pytest.raises(SubscriptionError) as e:
        checker.check(parseSubscription(forged.sent[0][2]))
    assert e.value.event == "bad_signature"


def test_unusable_signing_keys_are_refused_at_construction(clock, keys):
    _, privatePEM, publicPEM, _ = keys
    with pytest.raises(ValueError):
        service(clock, sign=("sha999", privatePEM))
    with pytest.raises(ValueError):
        service(clock, sign=("sha256", publicPEM))
    with pytest.raises(ValueError):
        service(clock, sign=("sha256", b"junk"))


# -- unreachable servers


def test_unreachable_server_is_logged_once_and_others_still_hear(clock, events):
    subscriber, sender = service(clock, ["/run/gone.sock", "127.0.0.1:7000"], frequency=1)
    sender.failing.add("/run/gone.sock")
    subscriber.startService()
    clock.pump([1] * 5)
    assert len(sender.to("127.0.0.1:7000")) == 6
    [event] = named(events, "subscriber_unreachable")
    assert event["server"] == "/run/gone.sock"
    assert event["error"] == "No such file or directory"
    assert event["log_level"].name == "warn"

    sender.failing.clear()
    clock.advance(1)
    assert len(sender.to("/run/gone.sock")) == 1
    assert len(named(events, "subscriber_reachable")) == 1
    sender.failing.add("/run/gone.sock")
    clock.pump([1] * 3)
    subscriber.stopService()
    assert len(named(events, "subscriber_unreachable")) == 2
    assert not named(events, "subscriber_error")


def test_real_sockets_no_server_then_a_server(clock, events, tmp_path):
    """
    With the real sender: a unix datagram path nobody listens on is logged
    once and raises nothing; once a socket is bound there it gets the
    announces and the unsubscribe.
    """
    path = str(tmp_path / "subs.sock")
    subscriber = SubscriberService(clock, [path], "example.com", "127.0.0.1:3031", frequency=1)
    subscriber.startService()
    clock.pump([1] * 3)
    assert len(named(events, "subscriber_unreachable")) == 1
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind(path)
        server.settimeout(5)
        clock.advance(1)
        assert server.recv(4096) == BASIC[0]
        subscriber.stopService()
        assert server.recv(4096) == BASIC[0][:3] + b"\x01" + BASIC[0][4:]
    assert len(named(events, "subscriber_reachable")) == 1


# -- construction


@pytest.mark.parametrize("servers, key, address, kwargs", [
    ([], "k", "127.0.0.1:3031", {}),
    (["localhost:7000"], "k", "127.0.0.1:3031", {}),
    (["127.0.0.1"], "k", "127.0.0.1:3031", {}),
    (["127.0.0.1:7000"], "", "127.0.0.1:3031", {}),
    (["127.0.0.1:7000"], "k" * 256, "127.0.0.1:3031", {}),
    (["127.0.0.1:7000"], "k", "", {}),
    (["127.0.0.1:7000"], "k", "localhost:3031", {}),
    (["127.0.0.1:7000"], "k", "127.0.0.1", {}),
    (["127.0.0.1:7000"], "k", "127.0.0.1:3031", dict(frequency=0)),
    (["127.0.0.1:7000"], "k", "127.0.0.1:3031", dict(modifier1=256)),
])
def test_bad_settings_are_refused_at_construction(clock, servers, key, address, kwargs):
    with pytest.raises(ValueError):
        SubscriberService(clock, servers, key, address, **kwargs)


def test_addresses_in_uwsgis_spellings():
    for address in ("127.0.0.1:3031", ":3031", "[::1]:3031", "/run/app.sock", "@app"):
        assert nodeSubscription(b"k", address).address == address.encode()


# -- the command line


def options(*args):
    parsed = subscribe.Options()
    parsed.parseOptions(list(args))
    return parsed


REQUIRED = ("--subscribe-to", "127.0.0.1:7000", "--key", "example.com",
            "--address", "127.0.0.1:3031")


def test_options_make_the_service(clock, keys):
    tmp = keys[0]
    parsed = options(
        *REQUIRED, "--subscribe-to", "/run/subs.sock", "--frequency", "2.5", "--weight", "3",
        "--modifier1", "5", "--modifier2", "1", "--backup", "1", "--cores", "4",
        "--notify", "/run/ack.sock", "--algo", "wlrc", "--sign", f"SHA256:{tmp / 'private.pem'}",
        "--sni-key", "/k", "--sni-crt", "/c", "--sni-ca", "/ca",
    )
    subscriber = subscribe.makeService(parsed, clock)
    assert isinstance(subscriber, SubscriberService)
    assert [s.text for s in subscriber.servers] == ["127.0.0.1:7000", "/run/subs.sock"]
    assert subscriber.frequency == 2.5
    assert subscriber.subscription == Subscription(
        b"example.com", b"127.0.0.1:3031", weight=3, modifier1=5, modifier2=1, backup=1,
        cores=4, notify=b"/run/ack.sock", algo=b"wlrc", sniKey=b"/k", sniCrt=b"/c", sniCa=b"/ca",
    )
    assert parsed["sign"][0] == "SHA256" and b"PRIVATE KEY" in parsed["sign"][1]


def test_option_defaults_are_uwsgis(clock):
    subscriber = subscribe.makeService(options(*REQUIRED), clock)
    assert subscriber.frequency == 10
    assert subscriber.subscription == Subscription(b"example.com", b"127.0.0.1:3031", cores=1)


def test_proto_option(clock):
    subscriber = subscribe.makeService(options(*REQUIRED, "--proto", "http"), clock)
    assert subscriber.subscription.proto == b"http"
    subscriber = subscribe.makeService(options(*REQUIRED, "--proto", "uwsgi"), clock)
    assert subscriber.subscription.proto is None


@pytest.mark.parametrize("args, message", [
    (REQUIRED[2:], "--subscribe-to"),
    (REQUIRED[:2] + REQUIRED[4:], "--key"),
    (REQUIRED[:4], "--address"),
    (("--subscribe-to", "example.org:7000") + REQUIRED[2:], "IP address"),
    (REQUIRED[:5] + ("localhost:3031",), "IP address"),
    (REQUIRED + ("--frequency", "0"), "above 0"),
    (REQUIRED + ("--modifier1", "256"), "0..255"),
    (REQUIRED + ("--algo", "fastest"), "one of wrr"),
    (REQUIRED + ("--proto", "fastcgi"), "uwsgi or http"),
    (REQUIRED + ("--sign", "SHA256"), "DIGEST:PRIVATE_KEY_FILE"),
    (REQUIRED + ("--sign", "SHA999:/etc/hostname"), "unknown digest"),
    (REQUIRED + ("--sign", "SHA256:/nonexistent/key.pem"), "No such file"),
])
def test_bad_options_are_usage_errors(args, message):
    with pytest.raises(usage.UsageError) as e:
        options(*args)
    assert message in str(e.value)


def test_a_sign_file_that_is_no_private_key_is_a_usage_error(keys, tmp_path):
    public = tmp_path / "public.pem"
    public.write_bytes(keys[2])
    for path in (public, tmp_path):
        with pytest.raises(usage.UsageError) as e:
            options(*REQUIRED, "--sign", f"SHA256:{path}")
        assert "--sign" in str(e.value)


def test_read_signing_key(keys):
    tmp, privatePEM, _, _ = keys
    assert readSigningKey(f"sha256:{tmp / 'private.pem'}") == ("sha256", privatePEM)
