"""
Hypothesis against the parsers of the subscription system that the wire
tests do not cover: the address policy, datagram addresses, the signature
checker, the stats HTTP request reader and the stats address spelling.

Each one takes whatever a sender (or an operator's option) gives and
either answers within its contract or refuses with its documented error;
nothing else ever escapes.
"""

import ipaddress
import json
import pathlib
import posixpath
import socket

import attr
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from twisted.internet.endpoints import serverFromString
from twisted.internet.protocol import ServerFactory
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock, StringTransport

from txrouter.routing.admission import SOURCE, AddressPolicy
from txrouter.stats.server import StatsFactory, statsEndpoint, uwsgiAddressToEndpoint
from txrouter.subscription.addresses import parseDatagramAddress
from txrouter.subscription.signing import DEFAULT_MAX_AHEAD, SignatureChecker, signSubscription
from txrouter.wire.subscription import Subscription, SubscriptionError

# Addresses: anything, and things close to what subscribers write.
_ips = st.ip_addresses().map(str)
_ports = st.integers(0, 70000).map(str) | st.sampled_from(["", "03031", "+1", "1e3", "٣٠٣١"])
_hosts = _ips | st.sampled_from(["", "0.0.0.0", "[::]", "localhost", "[127.0.0.1]", "::1"]) | (
    _ips.map(lambda ip: f"[{ip}]")
)
_paths = st.sampled_from(["/run/apps/", "/run/apps/../", "/run/", "@apps-", "@", "/", ""]).flatmap(
    lambda prefix: st.text(max_size=20).map(lambda rest: prefix + rest)
)
_addressTexts = st.builds(lambda h, p: f"{h}:{p}", _hosts, _ports) | _paths | st.text(max_size=40)
_addresses = _addressTexts.map(lambda t: t.encode("utf-8", "surrogatepass")) | st.binary(max_size=300)
_sources = st.none() | _ips | st.sampled_from(["127.0.0.1", "::ffff:10.1.2.3"]) | st.text(max_size=20)

_POLICIES = [
    AddressPolicy(),
    AddressPolicy(ownPorts={3017}),
    AddressPolicy(
        networks=["0.0.0.0/0", "::/0"], ports=["1-65535"], directories=["/run/apps", "@apps-"],
    ),
    AddressPolicy(networks=["10.0.0.0/8", SOURCE], ports=["3031", "8000-8010"]),
]


@settings(max_examples=600)
@given(st.sampled_from(_POLICIES), _addresses, _sources,
       st.integers(0, 255), st.integers(0, 255))
def test_address_policy_admits_or_refuses(policy, address, source, modifier1, modifier2):
    """
    Any announced address from any sender gives a node the policy allows,
    or C{bad_address} / C{address_not_allowed}.
    """
    try:
        node = policy.admit(address, source, modifier1, modifier2)
    except SubscriptionError as e:
        assert e.event in ("bad_address", "address_not_allowed") and e.detail
        return
    assert (node.modifier1, node.modifier2) == (modifier1, modifier2)
    assert node.name.isascii() and node.name.isprintable() and " " not in node.name
    if node.path is not None:
        assert node.path.startswith(("/", "\0"))
        assert policy.directories, "unix nodes only with a --subscription-node-dir"
        return
    host = ipaddress.ip_address(node.host)
    assert not host.is_unspecified and not host.is_multicast
    assert any(low <= node.port <= high for low, high in policy.ports)
    assert not (host.is_loopback and node.port in policy.ownPorts)
    if policy.networks == (SOURCE,):
        sender = _sender(source)
        if sender is None or sender.is_loopback:
            assert host.is_loopback
        else:
            assert host == sender


def _sender(source):
    try:
        address = ipaddress.ip_address(source)
    except (TypeError, ValueError):
        return None
    return address.ipv4_mapped or address if address.version == 6 else address


_NOTIFY_PATHS = st.sampled_from([
    b"/run/apps", b"/run/apps/", b"/run/apps/x", b"//run/apps/x", b"/run/apps/../x",
    b"/run/apps/./x", b"/run/apps/a/../../x", b"/run/appsx/y", b"@apps-", b"@apps-x", b"@app",
])


@settings(max_examples=300)
@given(st.sampled_from(_POLICIES), _addresses | _NOTIFY_PATHS)
def test_notify_paths_are_allowed_ones_or_none(policy, path):
    """
    A notify path is acknowledged to exactly when it is ASCII and names
    a socket inside a node directory once C{.} and C{..} are resolved,
    or an abstract name under an C{@prefix}; the answer is that path.
    """
    assert policy.admitNotify(path) == _allowedNotify(policy.directories, path)


def _allowedNotify(directories, path: bytes):
    try:
        text = path.decode("ascii")
    except UnicodeDecodeError:
        return None
    if text.startswith("@"):
        inside = any(d.startswith("@") and text.startswith(d) for d in directories)
        return "\0" + text[1:] if inside else None
    if text.startswith("/"):
        parent = pathlib.PurePosixPath(posixpath.normpath(text)).parent
        inside = any(not d.startswith("@") and parent.is_relative_to(d) for d in directories)
        return text if inside else None
    return None


@settings(max_examples=600)
@given(_addressTexts | st.text(max_size=40), st.booleans())
def test_datagram_addresses_parse_or_raise_value_error(text, listen):
    try:
        address = parseDatagramAddress(text, listen=listen)
    except ValueError:
        return
    assert address.text == text
    target = address.sendTo()
    if address.family == socket.AF_UNIX:
        assert address.path and target == address.path and address.port == 0
        return
    portText = text.rpartition(":")[2]
    assert portText.isascii() and portText.isdigit() and int(portText) == address.port
    assert (0 if listen else 1) <= address.port < 65536
    host, port = target
    assert port == address.port
    version = ipaddress.ip_address(host).version
    assert version == (6 if address.family == socket.AF_INET6 else 4)


# The signature checker, against a model of what it must accept.

_NOW = 1_800_000_000
_TOLERANCE = 100
_KEYS = (b"ec.local", b"ec.local", b"rsa.local", b"nofile.local", b"garbage.local")
_NODES = (b"127.0.0.1:3031", b"127.0.0.1:3032")


@pytest.fixture(scope="module")
def signers(tmp_path_factory):
    """
    A keys directory with an EC key for C{ec.local}, an RSA key for
    C{rsa.local}, no file for C{nofile.local} and a file that holds no key
    for C{garbage.local}; the private keys by subscription key, and one
    that matches no file.
    """
    directory = tmp_path_factory.mktemp("fuzzkeys")
    private = {
        b"ec.local": ec.generate_private_key(ec.SECP256R1()),
        b"rsa.local": rsa.generate_private_key(public_exponent=65537, key_size=1024),
    }
    for key, value in private.items():
        (directory / f"{key.decode()}.pem").write_bytes(value.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    (directory / "garbage.local.pem").write_bytes(b"-----BEGIN PUBLIC KEY-----\nAAAA\n")
    pems = {
        key: value.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                 serialization.NoEncryption())
        for key, value in private.items()
    }
    stranger = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption())
    return str(directory), pems, stranger


_datagrams = st.fixed_dictionaries({
    "key": st.sampled_from(_KEYS),
    "address": st.sampled_from(_NODES),
    "unsubscribe": st.booleans(),
    # How it is signed: by the key's owner, by a stranger, with random
    # bytes, or not at all.
    "signer": st.sampled_from(["owner", "owner", "owner", "stranger", "random", "none"]),
    "randomSign": st.binary(min_size=1, max_size=300),
    # Seconds from now, mostly close to it (real clients), rarely absent.
    "unix": st.sampled_from([0, 0, 1, -1, 2, None])
    | st.integers(-2 * _TOLERANCE, 2 * _TOLERANCE),
})
# Replay the n-th datagram sent so far, as it was or with its (unsigned)
# command byte flipped.
_replays = st.tuples(st.integers(0, 11), st.booleans())
_steps = st.lists(
    st.one_of(_datagrams, _replays, st.integers(0, 2 * _TOLERANCE)), min_size=1, max_size=12,
)


@settings(max_examples=200, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(_steps)
def test_signature_checker_accepts_exactly_valid_newer_datagrams(signers, steps):
    """
    Datagrams of any key, signature and timestamp, replays of them, with
    the clock moving between them: only one signed by its key's owner,
    no older than the tolerance, no further ahead of now than the smaller
    of the tolerance and a minute (L{DEFAULT_MAX_AHEAD}), and newer
    than the last one accepted for its node passes; every other one is
    refused with a L{SubscriptionError}.
    """
    directory, pems, stranger = signers
    clock = Clock()
    clock.advance(_NOW)
    checker = SignatureChecker("SHA256", directory, tolerance=_TOLERANCE, clock=clock)
    sent, last = [], {}
    for step in steps:
        if isinstance(step, int):
            clock.advance(step)
            continue
        if isinstance(step, tuple):
            if not sent:
                continue
            subscription, valid = sent[step[0] % len(sent)]
            if step[1]:
                subscription = attr.evolve(subscription, unsubscribe=not subscription.unsubscribe)
        else:
            subscription, valid = _datagram(step, clock.seconds(), pems, stranger)
        sent.append((subscription, valid))
        node = (subscription.key, subscription.address)
        now = clock.seconds()
        fresh = (subscription.unix is not None
                 and now - _TOLERANCE <= subscription.unix
                 <= now + min(_TOLERANCE, DEFAULT_MAX_AHEAD))
        expected = valid and fresh and subscription.unix > last.get(node, -1)
        try:
            checker.check(subscription)
        except SubscriptionError as e:
            assert not expected, (e.event, e.detail)
            event(e.event)
            continue
        assert expected
        event("accepted")
        last[node] = subscription.unix


def _datagram(step, now, pems, stranger):
    """
    The subscription a step describes, and whether its signature is its
    key owner's.
    """
    offset = step["unix"]
    unix = None if offset is None else max(0, int(now) + offset)
    announce = Subscription(step["key"], step["address"], unsubscribe=step["unsubscribe"])
    owner = pems.get(step["key"])
    signer = step["signer"]
    if signer in ("owner", "stranger") and unix is not None:
        pem = owner if signer == "owner" and owner is not None else stranger
        signed = signSubscription(announce, "SHA256", pem, unix - step["unsubscribe"])
        return signed, signer == "owner" and owner is not None
    sign = None if signer == "none" else step["randomSign"]
    return attr.evolve(announce, unix=unix, sign=sign), False


# The stats HTTP request reader.

_MAX_REQUEST = 8192
_chunks = st.lists(
    st.binary(max_size=64) | st.sampled_from([b"\r\n", b"\n", b"\r\n\r\n", b"GET / HTTP/1.0\r\n"])
    | st.tuples(st.sampled_from([b"x", b"\r", b"a\n"]), st.integers(1000, 5000)).map(
        lambda piece: piece[0] * piece[1]),
    max_size=12,
)


@settings(max_examples=300)
@given(_chunks)
def test_stats_http_reader(chunks):
    """
    Whatever a stats client sends, in whatever pieces: once the bytes so
    far hold an empty line the document is answered and the connection
    closed; if they pass 8 KiB first, a 431 is answered and the connection
    closed; else it waits, and is cut after 4 s.  Later bytes are ignored.
    """
    reactor = MemoryReactorClock()
    factory = StatsFactory(reactor, lambda: {"key": 'a"b'}, http=True)
    protocol = factory.buildProtocol(None)
    transport = StringTransport()
    protocol.makeConnection(transport)
    received, outcome = b"", "waiting"
    for chunk in chunks:
        protocol.dataReceived(chunk)
        if outcome != "waiting":
            continue
        received += chunk
        if b"\r\n\r\n" in received or b"\n\n" in received:
            outcome = "answered"
        elif len(received) > _MAX_REQUEST:
            outcome = "too large"
    if outcome == "answered":
        head, _, body = transport.value().partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.0 200 OK\r\n")
        assert json.loads(body) == {"key": 'a"b'}
        assert transport.disconnecting and not transport.disconnected
    elif outcome == "too large":
        assert transport.value().startswith(b"HTTP/1.0 431 ")
        assert transport.disconnecting and not transport.disconnected
    else:
        assert transport.value() == b"" and not transport.disconnecting
        reactor.advance(4)
        assert transport.disconnected
    protocol.connectionLost(None)
    assert reactor.getDelayedCalls() == []


# The stats address spelling.

_pathChars = st.characters(blacklist_categories=("Cs",), blacklist_characters="\0")


@settings(max_examples=300)
@given(st.text(max_size=40))
def test_stats_addresses_give_an_endpoint_or_a_value_error(text):
    """
    Any text either names an endpoint that listens (a text without a
    colon: at that path, whatever its characters) or is refused with a
    C{ValueError} that quotes it.
    """
    reactor = MemoryReactorClock()
    try:
        endpoint = statsEndpoint(reactor, text)
    except ValueError as e:
        assert repr(text) in str(e)
        return
    endpoint.listen(ServerFactory())
    if ":" not in text:
        [(path, *_)] = reactor.unixServers
        assert path == text


@settings(max_examples=300)
@given(
    st.one_of(
        st.builds(lambda ip, port: (f"{ip}:{port}", ("tcp", port, ip)),
                  st.ip_addresses(v=4).map(str), st.integers(0, 65535)),
        st.builds(lambda ip, port: (f"[{ip}]:{port}", ("tcp", port, ip)),
                  st.ip_addresses(v=6).map(str), st.integers(0, 65535)),
        st.builds(lambda port: (f":{port}", ("tcp", port, "")), st.integers(0, 65535)),
        st.builds(lambda rest: ("/" + rest, ("unix", "/" + rest)), st.text(_pathChars, max_size=30)),
    )
)
def test_uwsgi_spelled_stats_addresses_listen_where_they_say(spelled):
    """
    C{ip:port}, C{[v6]:port}, C{:port} and any absolute path (colons,
    backslashes and equals signs included) listen on that port and
    interface, or at that path.
    """
    text, expected = spelled
    reactor = MemoryReactorClock()
    serverFromString(reactor, uwsgiAddressToEndpoint(text)).listen(ServerFactory())
    if expected[0] == "tcp":
        [(port, _, _, interface)] = reactor.tcpServers
        assert (port, interface) == expected[1:]
    else:
        [(path, *_)] = reactor.unixServers
        assert path == expected[1]
