"""
Signed announces over the whole clock range: what the subscription server
does with a signed C{unix} in the past, now, in the future, at the ends of
the wire's range and past them, and what becomes of the node and of its
worker's next genuine announce afterwards.

Each datagram goes the whole way a received one goes (parse, registry,
signature checker) through a L{SubscriptionProtocol}, which counts and logs
each refusal under its event name.  Signatures are valid throughout: only
the timestamp is in question.
"""

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from twisted.internet.task import Clock

from tests.logs import named
from txrouter.routing.subscriptions import SubscriptionRegistry
from txrouter.subscription.server import SubscriptionProtocol
from txrouter.subscription.signing import SignatureChecker, keyFileName, sign
from txrouter.wire.uwsgi import encodeHeader, encodeVars

NOW = 1_800_000_000
TOLERANCE = 60
# How often the genuine worker announces (uWSGI's --subscribe-freq 10).
EVERY = 10
KEY = b"app.local"
ADDRESS = b"127.0.0.1:3031"
SOURCE = ("127.0.0.1", 40000)


@pytest.fixture(scope="module")
def privateKey():
    return ec.generate_private_key(ec.SECP256R1())


def signedDatagram(privateKey, unix: bytes, unsubscribe: bool = False) -> bytes:
    """
    The datagram a uWSGI client writes for C{KEY}/C{ADDRESS}, with C{unix}
    as given (any bytes, so that values the wire refuses can be sent too),
    validly signed.
    """
    block = encodeVars([
        (b"key", KEY), (b"address", ADDRESS), (b"modifier1", b"0"), (b"modifier2", b"0"),
        (b"cores", b"1"), (b"load", b"0"), (b"weight", b"1"), (b"unix", unix),
    ])
    pem = privateKey.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    block += encodeVars([(b"sign", sign(block, "SHA256", pem))])
    return encodeHeader(224, len(block), 1 if unsubscribe else 0) + block


class Router:
    """
    A subscription server checking signatures, on a fake clock at C{NOW}:
    the signature tolerance is C{TOLERANCE}; nodes live long enough not to
    expire during a test.
    """

    def __init__(self, directory, privateKey, tolerance=TOLERANCE) -> None:
        (directory / keyFileName(KEY)).write_bytes(privateKey.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
        self.privateKey = privateKey
        self.clock = Clock()
        self.clock.advance(NOW)
        checker = SignatureChecker(
            "SHA256", str(directory), tolerance=tolerance, clock=self.clock)
        self.registry = SubscriptionRegistry(self.clock, tolerance=3600, sign_check=checker)
        self.protocol = SubscriptionProtocol(self.registry, self.clock)

    def send(self, unix: bytes, unsubscribe: bool = False) -> None:
        self.protocol.datagramReceived(
            signedDatagram(self.privateKey, unix, unsubscribe), SOURCE)

    def genuine(self) -> str:
        """
        The worker's own announce, C{unix} its clock (the router's); its
        outcome: C{accepted} or the refusal's event.
        """
        before = self.protocol.counts.copy()
        self.send(b"%d" % self.clock.seconds())
        (outcome,) = (self.protocol.counts - before).keys()
        return outcome

    def hasNode(self) -> bool:
        return [n.name for n in self.registry.nodes(KEY)] == [ADDRESS.decode()]


def test_an_announce_from_the_future_does_not_lock_the_node_out(tmp_path, privateKey, events):
    """
    The hole of issue 11: an announce dated an hour ahead, with a tolerance
    of 60 s, was accepted and set the node's replay mark an hour ahead, so
    that the worker's genuine announces were refused as C{replayed} for
    that hour.  It is refused as C{future_timestamp}, one log line, and
    the genuine announce right after it is accepted.
    """
    router = Router(tmp_path, privateKey)
    assert router.genuine() == "accepted"
    router.clock.advance(1)
    router.send(b"%d" % (NOW + 3600))
    assert router.protocol.counts["future_timestamp"] == 1
    assert [e["reason"] for e in named(events, "subscription_refused")] == ["future_timestamp"]
    router.clock.advance(1)
    assert router.genuine() == "accepted"
    assert router.hasNode()
    assert router.protocol.counts == {"accepted": 2, "future_timestamp": 1}


def test_with_uwsgis_day_of_tolerance_an_announce_an_hour_ahead_is_refused(
        tmp_path, privateKey, events):
    """
    uWSGI's default tolerance is a day, for announces from the past; ahead
    of the router's clock only a minute is allowed, so an announce dated
    an hour ahead cannot lock the node out for that hour.
    """
    router = Router(tmp_path, privateKey, tolerance=86400)
    assert router.genuine() == "accepted"
    router.clock.advance(1)
    router.send(b"%d" % (NOW + 3600))
    assert router.protocol.counts["future_timestamp"] == 1
    router.send(b"%d" % (NOW + 60))
    assert router.protocol.counts["accepted"] == 2
    router.clock.advance(61)
    assert router.genuine() == "accepted"


# The signed unix values a datagram may carry, with its outcome when the
# node is new (no announce of it yet) and when its worker subscribed it
# ten seconds ago, and when the worker's next genuine announces (every
# EVERY seconds from NOW + EVERY on) are accepted again: at NOW + EVERY,
# except after the one value that leaves the node's replay mark ahead of
# them, NOW + TOLERANCE, the most a mark can ever be ahead.
_STALE, _FUTURE, _REPLAYED, _WIRE = (
    "stale_timestamp", "future_timestamp", "replayed", "bad_number")
_CLOCK_RANGE = [
    # id, unix, on a new node, on a subscribed node, genuine accepted again at
    ("zero", b"0", _STALE, _STALE, NOW + EVERY),
    ("past beyond tolerance", b"%d" % (NOW - TOLERANCE - 1), _STALE, _STALE, NOW + EVERY),
    ("past at tolerance", b"%d" % (NOW - TOLERANCE), "accepted", _REPLAYED, NOW + EVERY),
    ("past at last announce", b"%d" % (NOW - EVERY), "accepted", _REPLAYED, NOW + EVERY),
    ("a second ago", b"%d" % (NOW - 1), "accepted", "accepted", NOW + EVERY),
    ("now", b"%d" % NOW, "accepted", "accepted", NOW + EVERY),
    ("a second ahead", b"%d" % (NOW + 1), "accepted", "accepted", NOW + EVERY),
    ("ahead at tolerance", b"%d" % (NOW + TOLERANCE), "accepted", "accepted",
     NOW + TOLERANCE + EVERY),
    ("ahead beyond tolerance", b"%d" % (NOW + TOLERANCE + 1), _FUTURE, _FUTURE, NOW + EVERY),
    ("an hour ahead", b"%d" % (NOW + 3600), _FUTURE, _FUTURE, NOW + EVERY),
    ("year 3000", b"32503680000", _FUTURE, _FUTURE, NOW + EVERY),
    ("2**31-1", b"%d" % (2**31 - 1), _FUTURE, _FUTURE, NOW + EVERY),
    ("2**31", b"%d" % 2**31, _FUTURE, _FUTURE, NOW + EVERY),
    ("2**32-1", b"%d" % (2**32 - 1), _FUTURE, _FUTURE, NOW + EVERY),
    # Now, had unix been kept in 32 or 64 bits.
    ("2**32+now", b"%d" % (2**32 + NOW), _FUTURE, _FUTURE, NOW + EVERY),
    ("2**63-1", b"%d" % (2**63 - 1), _FUTURE, _FUTURE, NOW + EVERY),
    # Past the wire's range (uWSGI's int64): refused by the parser.
    ("2**63", b"%d" % 2**63, _WIRE, _WIRE, NOW + EVERY),
    ("2**64-1", b"%d" % (2**64 - 1), _WIRE, _WIRE, NOW + EVERY),
    ("2**64+now", b"%d" % (2**64 + NOW), _WIRE, _WIRE, NOW + EVERY),
    ("10**20", b"1" + b"0" * 20, _WIRE, _WIRE, NOW + EVERY),
    # No sign, no space, no leading zero, no fraction, digits only.
    ("-1", b"-1", _WIRE, _WIRE, NOW + EVERY),
    ("-now", b"-%d" % NOW, _WIRE, _WIRE, NOW + EVERY),
    ("+now", b"+%d" % NOW, _WIRE, _WIRE, NOW + EVERY),
    ("space", b" %d" % NOW, _WIRE, _WIRE, NOW + EVERY),
    ("leading zero", b"0%d" % NOW, _WIRE, _WIRE, NOW + EVERY),
    ("fraction", b"%d.5" % NOW, _WIRE, _WIRE, NOW + EVERY),
    ("hex", b"0x6b49d200", _WIRE, _WIRE, NOW + EVERY),
    ("empty", b"", _WIRE, _WIRE, NOW + EVERY),
    ("letters", b"now", _WIRE, _WIRE, NOW + EVERY),
    ("arabic-indic digits", "١٨٠٠٠٠٠٠٠٠".encode(), _WIRE, _WIRE, NOW + EVERY),
]


@pytest.mark.parametrize("command", ["subscribe", "unsubscribe"])
@pytest.mark.parametrize("state", ["new", "subscribed"])
@pytest.mark.parametrize(
    "unix, onNew, onSubscribed, acceptedAgainAt",
    [case[1:] for case in _CLOCK_RANGE], ids=[case[0] for case in _CLOCK_RANGE],
)
def test_clock_range(tmp_path, privateKey, events, command, state, unix, onNew, onSubscribed,
                     acceptedAgainAt):
    """
    A validly signed datagram carrying C{unix} is accepted or refused with
    one log line under its event; a refused one leaves the node as it was,
    an accepted one adds, refreshes or removes it; the worker's genuine
    announces that follow are refused only as C{replayed}, and only until
    C{acceptedAgainAt}, never more than the tolerance (and the announce
    interval) later.
    """
    router = Router(tmp_path, privateKey)
    if state == "subscribed":
        router.clock.advance(-EVERY)
        assert router.genuine() == "accepted"
        router.clock.advance(EVERY)
    expected = onNew if state == "new" else onSubscribed
    unsubscribe = command == "unsubscribe"
    before = router.protocol.counts.copy()

    router.send(unix, unsubscribe)

    assert router.protocol.counts - before == {expected: 1}
    refused = [e["reason"] for e in named(events, "subscription_refused")]
    assert refused == ([] if expected == "accepted" else [expected])
    if expected == "accepted":
        assert router.hasNode() is not unsubscribe
    else:
        assert router.hasNode() is (state == "subscribed")
    assert acceptedAgainAt - NOW <= TOLERANCE + EVERY
    outcomes = {}
    while router.clock.seconds() < NOW + TOLERANCE + 2 * EVERY:
        router.clock.advance(EVERY)
        outcomes[router.clock.seconds()] = router.genuine()
    assert outcomes == {
        at: "replayed" if at < acceptedAgainAt else "accepted" for at in outcomes
    }
    assert router.hasNode()
