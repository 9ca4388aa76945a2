"""
Signed subscriptions: the captured signatures of a real uWSGI 2.0.21, keys
made here, and (end to end) a real uWSGI signing with a key made here.
"""

import os
import socket
import time

import attr
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from twisted.internet.task import Clock

from tests.captures import FIXTURES, packets
from tests.realpeers import free_port, uwsgi_worker
from txrouter.subscription import signing
from txrouter.subscription.signing import (
    DEFAULT_MAX_AHEAD,
    DEFAULT_TOLERANCE,
    SignatureChecker,
    digestByName,
    keyFileName,
    sign,
    signSubscription,
    verify,
)
from txrouter.wire.subscription import (
    Subscription,
    SubscriptionError,
    encodeSignedPayload,
    encodeSubscription,
    parseSubscription,
)

CAPTURED_KEY = (FIXTURES / "signed.local.pub.pem").read_bytes()
# The three datagrams of signed.local in the capture: subscribe at 954,
# refresh at 955, unsubscribe (sent at 956, so unix 957).
SUBSCRIBE, REFRESH, UNSUBSCRIBE = packets("subscribe-port0-signed-notify.json")[1::3]
CAPTURE_TIME = 1795480954


def rsaKey(bits: int = 2048):
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


def privatePEM(key) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )


def publicPEM(key) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


@pytest.fixture(scope="module")
def keys():
    """
    Two RSA keys and an EC key, made once for the module.
    """
    return rsaKey(), rsaKey(), ec.generate_private_key(ec.SECP256R1())


def flipCommand(raw: bytes) -> bytes:
    return raw[:3] + bytes([raw[3] ^ 1]) + raw[4:]


def refusal(checker, subscription) -> str:
    with pytest.raises(SubscriptionError) as e:
        checker.check(subscription)
    return e.value.event


def checkerWithCapturedKey(tmp_path, now=CAPTURE_TIME + 0.5, **kwargs):
    (tmp_path / "signed.local.pem").write_bytes(CAPTURED_KEY)
    clock = Clock()
    clock.advance(now)
    return SignatureChecker("SHA1", str(tmp_path), clock=clock, **kwargs), clock


@pytest.mark.parametrize(
    "key, name",
    [
        (b"example.com", "example.com.pem"),
        (b"test.uwsgi.it:8000", "test.uwsgi.it_8000.pem"),
        (b"a-b_c.D9", "a-b_c.D9.pem"),
        (b"../../etc/passwd", ".._.._etc_passwd.pem"),
        (b"x y\x00\xff\xc3\xa9", "x_y____.pem"),
    ],
)
def test_key_file_name_sanitises_as_uwsgi(key, name):
    assert keyFileName(key) == name


def test_digests_by_openssl_name():
    assert digestByName("SHA1").name == "sha1"
    assert digestByName("sha256").name == "sha256"
    assert digestByName("SHA512-256").name == "sha512-256"
    assert digestByName("Sha3-256").name == "sha3-256"
    with pytest.raises(ValueError):
        digestByName("SHA1X")


@pytest.mark.parametrize("raw", [SUBSCRIBE, REFRESH, UNSUBSCRIBE], ids=["sub", "refresh", "unsub"])
def test_captured_signatures_verify_with_the_captured_key(raw):
    assert verify(parseSubscription(raw), "SHA1", CAPTURED_KEY)


def test_captured_signature_needs_the_right_digest_and_key(keys):
    subscription = parseSubscription(SUBSCRIBE)
    assert not verify(subscription, "SHA256", CAPTURED_KEY)
    assert not verify(subscription, "SHA1", publicPEM(keys[0]))


def test_flipped_command_byte_still_verifies():
    """
    uWSGI does not sign the header: a sniffed subscribe with byte 3 set is
    a validly signed unsubscribe (only L{SignatureChecker} refuses it).
    """
    forged = parseSubscription(flipCommand(SUBSCRIBE))
    assert forged.unsubscribe
    assert verify(forged, "SHA1", CAPTURED_KEY)


@pytest.mark.parametrize(
    "old, new",
    [
        (b"signed.local", b"signed.locaL"),
        (b"127.0.0.1:38635", b"127.0.0.1:38636"),
        (b"1795480954", b"1795480955"),
        (b"\x06\x00weight\x01\x000", b"\x06\x00weight\x01\x009"),
    ],
    ids=["key", "address", "unix", "weight"],
)
def test_tampered_vars_do_not_verify(old, new):
    assert SUBSCRIBE.count(old) == 1
    tampered = parseSubscription(SUBSCRIBE.replace(old, new))
    assert not verify(tampered, "SHA1", CAPTURED_KEY)


def test_truncated_signature_does_not_verify():
    """
    One byte less of signature: with the datasize left as sent the
    datagram is refused; with the datasize fixed, the signature fails.
    """
    with pytest.raises(SubscriptionError) as e:
        parseSubscription(SUBSCRIBE[:-1])
    assert e.value.event == "truncated"
    block = SUBSCRIBE[4:-1]
    # The sign var's own length field: 256 -> 255.
    block = block[: -(2 + 255)] + (255).to_bytes(2, "little") + block[-255:]
    cut = parseSubscription(bytes([224]) + len(block).to_bytes(2, "little") + b"\x00" + block)
    assert len(cut.sign) == 255
    assert not verify(cut, "SHA1", CAPTURED_KEY)


def test_unsigned_does_not_verify():
    assert not verify(Subscription(b"signed.local", b"127.0.0.1:1"), "SHA1", CAPTURED_KEY)


def test_sign_verify_roundtrip_through_the_wire(keys):
    """
    A value signed here encodes to a datagram whose signature verifies with
    the matching public key only; C{unix} is C{now}, C{now + 1} to
    unsubscribe, as uWSGI's client does.
    """
    signer, other, _ = keys
    value = Subscription(b"app.example.com", b"10.0.0.1:3031", cores=4, weight=2,
                         notify=b"/run/ack.sock")
    for unsubscribe, unix in ((False, 1000), (True, 1001)):
        signed = signSubscription(
            attr.evolve(value, unsubscribe=unsubscribe), "SHA256", privatePEM(signer), 1000
        )
        assert signed.unix == unix and len(signed.sign) == 256
        assert verify(signed, "SHA256", publicPEM(signer))
        received = parseSubscription(encodeSubscription(signed))
        assert received.signedPayload == encodeSignedPayload(signed)
        assert verify(received, "SHA256", publicPEM(signer))
        assert not verify(received, "SHA256", publicPEM(other))
        assert not verify(received, "SHA1", publicPEM(signer))


def test_sign_is_pkcs1_v15_over_the_payload(keys):
    """
    The signature of the bytes themselves, deterministic for RSA, as
    C{openssl dgst -sign} makes it.
    """
    signer = keys[0]
    payload = b"\x03\x00key\x01\x00k"
    signature = sign(payload, "SHA1", privatePEM(signer))
    assert signature == sign(payload, "sha1", privatePEM(signer))
    value = Subscription(b"k", b"a", sign=signature, signedPayload=payload)
    assert verify(value, "SHA1", publicPEM(signer))


def test_ec_keys_sign_and_verify(keys):
    ecKey = keys[2]
    signed = signSubscription(Subscription(b"k", b"a"), "SHA256", privatePEM(ecKey), 5)
    assert verify(parseSubscription(encodeSubscription(signed)), "SHA256", publicPEM(ecKey))


def test_checker_accepts_the_captured_sequence(tmp_path):
    checker, clock = checkerWithCapturedKey(tmp_path)
    checker.check(parseSubscription(SUBSCRIBE))
    clock.advance(1)
    checker.check(parseSubscription(REFRESH))
    clock.advance(2)
    checker.check(parseSubscription(UNSUBSCRIBE))


def test_checker_refuses_replays_and_the_flipped_command(tmp_path):
    """
    Every datagram is accepted once; a flipped subscribe is refused because
    it is not newer than the subscribe it was made from, a flipped
    unsubscribe because it is not newer than the unsubscribe.
    """
    checker, clock = checkerWithCapturedKey(tmp_path)
    checker.check(parseSubscription(SUBSCRIBE))
    assert refusal(checker, parseSubscription(SUBSCRIBE)) == "replayed"
    assert refusal(checker, parseSubscription(flipCommand(SUBSCRIBE))) == "replayed"
    checker.check(parseSubscription(REFRESH))
    assert refusal(checker, parseSubscription(SUBSCRIBE)) == "replayed"
    checker.check(parseSubscription(UNSUBSCRIBE))
    assert refusal(checker, parseSubscription(flipCommand(UNSUBSCRIBE))) == "replayed"
    assert refusal(checker, parseSubscription(UNSUBSCRIBE)) == "replayed"
    assert refusal(checker, parseSubscription(REFRESH)) == "replayed"


def test_checker_remembers_nodes_separately(tmp_path, keys):
    """
    Two addresses of one key are two nodes: the same C{unix} is fine.
    """
    signer = keys[0]
    (tmp_path / "k.pem").write_bytes(publicPEM(signer))
    clock = Clock()
    clock.advance(100)
    checker = SignatureChecker("SHA256", str(tmp_path), clock=clock)
    for address in (b"a:1", b"b:1"):
        checker.check(signSubscription(Subscription(b"k", address), "SHA256",
                                       privatePEM(signer), 100))


def test_checker_refusals(tmp_path, keys):
    checker, clock = checkerWithCapturedKey(tmp_path)
    subscribe = parseSubscription(SUBSCRIBE)
    assert refusal(checker, attr.evolve(subscribe, sign=None)) == "unsigned"
    assert refusal(checker, attr.evolve(subscribe, unix=None)) == "missing_timestamp"
    assert refusal(checker, parseSubscription(SUBSCRIBE.replace(b"signed.local", b"signed.locaL"))
                   ) == "no_public_key"
    assert refusal(checker, parseSubscription(SUBSCRIBE.replace(b"38635", b"38636"))
                   ) == "bad_signature"
    (tmp_path / "signed.local.pem").write_bytes(b"-----BEGIN PUBLIC KEY-----\nnot a key\n")
    assert refusal(checker, subscribe) == "bad_public_key"
    (tmp_path / "signed.local.pem").write_bytes(publicPEM(keys[0]))
    assert refusal(checker, subscribe) == "bad_signature"
    # Same size as the key before: renamed over it, so the inode changes.
    (tmp_path / "new.tmp").write_bytes(CAPTURED_KEY)
    os.replace(tmp_path / "new.tmp", tmp_path / "signed.local.pem")
    checker.check(subscribe)


def test_checker_tolerance(tmp_path):
    """
    C{unix} may be up to the tolerance old, for unsubscribes too (uWSGI
    checks no timestamp on unsubscribes), and up to the smaller of the
    tolerance and a minute ahead (uWSGI has no upper bound).
    """
    checker, clock = checkerWithCapturedKey(tmp_path, now=CAPTURE_TIME + DEFAULT_TOLERANCE + 1)
    assert refusal(checker, parseSubscription(SUBSCRIBE)) == "stale_timestamp"
    checker.check(parseSubscription(REFRESH))
    clock.advance(3)
    assert refusal(checker, parseSubscription(UNSUBSCRIBE)) == "stale_timestamp"
    early, _ = checkerWithCapturedKey(tmp_path, now=CAPTURE_TIME - DEFAULT_MAX_AHEAD)
    early.check(parseSubscription(SUBSCRIBE))
    assert refusal(early, parseSubscription(REFRESH)) == "future_timestamp"
    dayAhead, _ = checkerWithCapturedKey(tmp_path, now=CAPTURE_TIME - DEFAULT_TOLERANCE)
    assert refusal(dayAhead, parseSubscription(SUBSCRIBE)) == "future_timestamp"
    short, _ = checkerWithCapturedKey(tmp_path, now=CAPTURE_TIME + 11, tolerance=10)
    assert refusal(short, parseSubscription(SUBSCRIBE)) == "stale_timestamp"
    ahead, _ = checkerWithCapturedKey(tmp_path, now=CAPTURE_TIME - 10, tolerance=10)
    assert refusal(ahead, parseSubscription(REFRESH)) == "future_timestamp"
    ahead.check(parseSubscription(SUBSCRIBE))


def test_checker_brings_a_mark_left_ahead_by_a_clock_step_back_within_reach(tmp_path, keys):
    """
    When the router's clock steps back by more than the tolerance (a fast
    clock put right), a node's replay mark is ahead of anything the node
    can send: it is brought back to C{now + tolerance}, so the node's
    announces are accepted again once they are after it, not once the clock
    has caught up with the mark; the datagrams accepted before the step
    stay refused.
    """
    signer = keys[2]
    (tmp_path / "k.pem").write_bytes(publicPEM(signer))
    clock = Clock()
    clock.advance(1_000_000)
    checker = SignatureChecker("SHA256", str(tmp_path), clock=clock, tolerance=60)

    def signed(now):
        return signSubscription(Subscription(b"k", b"n"), "SHA256", privatePEM(signer), now)

    hourAgo = signed(clock.seconds())
    checker.check(hourAgo)
    clock.advance(3600 - 30)
    last = signed(clock.seconds())
    checker.check(last)
    clock.advance(-3600)
    assert refusal(checker, hourAgo) == "replayed"
    assert refusal(checker, signed(clock.seconds() + 60)) == "replayed"
    assert refusal(checker, last) == "future_timestamp"
    clock.advance(1)
    checker.check(signed(clock.seconds() + 60))
    clock.advance(61)
    checker.check(signed(clock.seconds()))


def test_checker_memory_is_bounded(tmp_path, keys):
    """
    Nodes are forgotten beyond C{maxNodes}, the oldest first, and once
    their last timestamp is stale; a forgotten node's last datagram can
    then be replayed once (the documented cost).
    """
    signer = keys[0]
    (tmp_path / "k.pem").write_bytes(publicPEM(signer))
    clock = Clock()
    clock.advance(1000)
    checker = SignatureChecker("SHA1", str(tmp_path), clock=clock, tolerance=60, maxNodes=2)
    signed = {address: signSubscription(Subscription(b"k", address), "SHA1",
                                        privatePEM(signer), 1000)
              for address in (b"a", b"b", b"c")}
    for value in signed.values():
        checker.check(value)
    assert refusal(checker, signed[b"c"]) == "replayed"
    checker.check(signed[b"a"])
    assert refusal(checker, signed[b"a"]) == "replayed"
    assert len(checker._lastSeen) == 2
    clock.advance(61)
    assert refusal(checker, signed[b"c"]) == "stale_timestamp"
    assert len(checker._lastSeen) == 0


def test_checker_reloads_a_changed_key_file(tmp_path, keys):
    """
    A key file replaced (rename over it, as key rotation does) or removed
    is noticed on the next datagram.
    """
    first, second, _ = keys
    clock = Clock()
    clock.advance(100)
    checker = SignatureChecker("SHA256", str(tmp_path), clock=clock)
    path = tmp_path / keyFileName(b"app:80")

    def signedBy(key, now):
        return signSubscription(Subscription(b"app:80", b"n"), "SHA256", privatePEM(key), now)

    assert refusal(checker, signedBy(first, 100)) == "no_public_key"
    path.write_bytes(publicPEM(first))
    checker.check(signedBy(first, 100))
    replacement = tmp_path / "new.tmp"
    replacement.write_bytes(publicPEM(second))
    os.replace(replacement, path)
    assert refusal(checker, signedBy(first, 101)) == "bad_signature"
    checker.check(signedBy(second, 102))
    path.unlink()
    assert refusal(checker, signedBy(second, 103)) == "no_public_key"


def test_checker_opens_a_key_file_only_when_it_changed(tmp_path, keys, monkeypatch):
    """
    The parsed keys are cached (at most C{maxKeys}, least recently used
    dropped): a datagram of a cached key whose file is unchanged opens
    no file.
    """
    first, _, _ = keys
    clock = Clock()
    clock.advance(100)
    checker = SignatureChecker("SHA256", str(tmp_path), clock=clock, maxKeys=2)
    opened = []

    def counting(path, *args):
        opened.append(os.path.basename(path))
        return open(path, *args)

    monkeypatch.setattr(signing, "open", counting, raising=False)
    for name in (b"a", b"b", b"c"):
        (tmp_path / keyFileName(name)).write_bytes(publicPEM(first))

    def check(name, now):
        checker.check(signSubscription(Subscription(name, b"n"), "SHA256", privatePEM(first), now))

    check(b"a", 100)
    check(b"b", 100)
    check(b"a", 101)
    check(b"b", 101)
    assert opened == ["a.pem", "b.pem"]
    check(b"c", 100)
    check(b"b", 102)
    check(b"a", 102)
    assert opened == ["a.pem", "b.pem", "c.pem", "a.pem"]


def test_checker_refuses_unknown_digests(tmp_path):
    with pytest.raises(ValueError):
        SignatureChecker("NOPE", str(tmp_path))


def receive(sock, timeout: float) -> bytes:
    sock.settimeout(timeout)
    data, _ = sock.recvfrom(65535)
    return data


@pytest.mark.e2e
def test_real_uwsgi_signed_subscribe2(tmp_path, keys):
    """
    A real uWSGI 2.0.21 signs a C{--subscribe2} announce with a key made
    here (SHA256): the datagram re-encodes byte for byte, the checker
    accepts it, and refuses it with byte 3 flipped; the unsubscribe sent on
    SIGTERM is accepted, and refused with byte 3 flipped back.
    """
    signer = keys[0]
    private = tmp_path / "private.pem"
    private.write_bytes(privatePEM(signer))
    keysDir = tmp_path / "keys"
    keysDir.mkdir()
    (keysDir / "e2e.local_8080.pem").write_bytes(publicPEM(signer))
    checker = SignatureChecker("SHA256", str(keysDir))
    port = free_port()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as server:
        server.bind(("127.0.0.1", 0))
        serverPort = server.getsockname()[1]
        subscribe2 = ",".join([
            f"server=127.0.0.1:{serverPort}", "key=e2e.local:8080", f"addr=127.0.0.1:{port}",
            "weight=3", "modifier1=5", "modifier2=2",
            "sni_key=/x/k.pem", "sni_crt=/x/c.pem", "sni_ca=/x/ca.pem",
            f"sign=SHA256:{private}",
        ])
        worker = uwsgi_worker(
            tmp_path, f"127.0.0.1:{port}", processes=1,
            extra_args=["--subscribe2", subscribe2, "--subscribe-freq", "1",
                        "--subscription-notify-socket", str(tmp_path / "ack.sock")],
        )
        try:
            raw = receive(server, 20)
        finally:
            worker.stop()
        before = time.time()
        datagrams = []
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not (datagrams and datagrams[-1][3]):
            datagrams.append(receive(server, 10))

    subscription = parseSubscription(raw)
    assert encodeSubscription(subscription) == raw
    assert (subscription.key, subscription.address, subscription.weight) == (
        b"e2e.local:8080", f"127.0.0.1:{port}".encode(), 3,
    )
    assert (subscription.modifier1, subscription.modifier2) == (5, 2)
    assert (subscription.sniKey, subscription.sniCrt, subscription.sniCa) == (
        b"/x/k.pem", b"/x/c.pem", b"/x/ca.pem",
    )
    assert subscription.notify == str(tmp_path / "ack.sock").encode()
    assert abs(subscription.unix - before) < 30 and not subscription.unsubscribe
    checker.check(subscription)
    flipped = parseSubscription(flipCommand(raw))
    assert verify(flipped, "SHA256", publicPEM(signer))
    assert refusal(checker, flipped) == "replayed"

    unsubscribe = parseSubscription(datagrams[-1])
    assert unsubscribe.unsubscribe and encodeSubscription(unsubscribe) == datagrams[-1]
    checker.check(unsubscribe)
    assert refusal(checker, parseSubscription(flipCommand(datagrams[-1]))) == "replayed"
