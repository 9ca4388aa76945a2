"""
Signed subscriptions, as uWSGI 2.0.21 makes and checks them.

A client configured with C{DIGEST:PRIVATE.pem} appends a C{unix} var (its
clock, plus one for an unsubscribe), signs the vars block so far with the
private key and the named digest (C{EVP_SignInit}: PKCS#1 v1.5 for an RSA
key, DER-encoded ECDSA or DSA for those keys) and appends the signature as
the last var, C{sign}.  The 4-byte header is not signed.

A server configured with C{DIGEST:DIR} verifies it with the public key in
C{DIR/<key>.pem}, the key's bytes sanitised by L{keyFileName}.

L{sign} and L{verify} are those two operations; L{SignatureChecker} is
what a subscription server runs on every datagram.  It refuses what
uWSGI refuses and, unlike uWSGI, also refuses every replay and any
timestamp further ahead than the tolerance: see its docstring.  Nothing
here does I/O but reading public key files.
"""

import collections
import os
import time

import attr
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, padding, rsa

from txrouter.wire.subscription import (
    Subscription,
    SubscriptionError,
    encodeSignedPayload,
)

__all__ = [
    "DEFAULT_TOLERANCE",
    "AnnounceSigner",
    "digestByName",
    "keyFileName",
    "sign",
    "signSubscription",
    "verify",
    "SignatureChecker",
]

#: uWSGI's C{--subscriptions-sign-check-tolerance} default, in seconds.
DEFAULT_TOLERANCE = 86400

#: How far ahead of the router's clock a signed announce may be dated, in
#: seconds: the clock skew between two hosts, not uWSGI's day of tolerance
#: (see L{SignatureChecker}).
DEFAULT_MAX_AHEAD = 60

#: Public key files are a few hundred bytes; anything much bigger is not one.
_MAX_KEY_FILE = 64 * 1024

_DIGESTS = {
    "md5": hashes.MD5,
    "sha1": hashes.SHA1,
    "sha224": hashes.SHA224,
    "sha256": hashes.SHA256,
    "sha384": hashes.SHA384,
    "sha512": hashes.SHA512,
    "sha512-224": hashes.SHA512_224,
    "sha512-256": hashes.SHA512_256,
    "sha3-224": hashes.SHA3_224,
    "sha3-256": hashes.SHA3_256,
    "sha3-384": hashes.SHA3_384,
    "sha3-512": hashes.SHA3_512,
}

_SAFE = frozenset(b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz.-_")


def digestByName(name: str) -> hashes.HashAlgorithm:
    """
    The digest named as in uWSGI's C{SHA1:...} option values.

    OpenSSL's names, case-insensitive (C{SHA1}, C{sha256}, C{SHA512-256},
    C{SHA3-256}, C{MD5}).

    @raise ValueError: not a digest this module knows.
    """
    factory = _DIGESTS.get(name.lower())
    if factory is None:
        raise ValueError(f"unknown digest {name!r}; known: {', '.join(sorted(_DIGESTS))}")
    return factory()


def keyFileName(key: bytes) -> str:
    """
    The name of the public key file of a subscription key, as uWSGI
    derives it: every byte outside C{0-9 A-Z a-z . - _} becomes C{_}, then
    C{.pem} is appended (C{test.uwsgi.it:8000} gives
    C{test.uwsgi.it_8000.pem}).  The result never contains a C{/}.

    @param key: the subscription key, exact bytes.
    @return: a file name, to be joined to the keys directory.
    """
    return bytes(b if b in _SAFE else 0x5F for b in key).decode("ascii") + ".pem"


def _signWith(privateKey, payload: bytes, digest: hashes.HashAlgorithm) -> bytes:
    if isinstance(privateKey, rsa.RSAPrivateKey):
        return privateKey.sign(payload, padding.PKCS1v15(), digest)
    if isinstance(privateKey, ec.EllipticCurvePrivateKey):
        return privateKey.sign(payload, ec.ECDSA(digest))
    if isinstance(privateKey, dsa.DSAPrivateKey):
        return privateKey.sign(payload, digest)
    raise ValueError(f"cannot sign with a {type(privateKey).__name__}")


def _verifyWith(publicKey, signature: bytes, payload: bytes, digest: hashes.HashAlgorithm) -> bool:
    try:
        if isinstance(publicKey, rsa.RSAPublicKey):
            publicKey.verify(signature, payload, padding.PKCS1v15(), digest)
        elif isinstance(publicKey, ec.EllipticCurvePublicKey):
            publicKey.verify(signature, payload, ec.ECDSA(digest))
        elif isinstance(publicKey, dsa.DSAPublicKey):
            publicKey.verify(signature, payload, digest)
        else:
            return False
    except (InvalidSignature, ValueError, UnsupportedAlgorithm):
        return False
    return True


def _loadPublicKey(publicKeyPEM: bytes):
    """
    @raise ValueError: not a PEM public key of a type uWSGI can verify with.
    """
    try:
        key = serialization.load_pem_public_key(publicKeyPEM)
    except UnsupportedAlgorithm as e:
        raise ValueError(str(e)) from None
    if not isinstance(key, (rsa.RSAPublicKey, ec.EllipticCurvePublicKey, dsa.DSAPublicKey)):
        raise ValueError(f"a {type(key).__name__} cannot verify uWSGI signatures")
    return key


def sign(payload: bytes, digest: str, privateKeyPEM: bytes) -> bytes:
    """
    Sign bytes as uWSGI's client does (C{EVP_SignFinal}).

    @param payload: the bytes to sign, normally
        L{encodeSignedPayload}C{(subscription)}.
    @param digest: a digest name (see L{digestByName}).
    @param privateKeyPEM: an unencrypted PEM private key (RSA, as uWSGI's
        documentation has it; EC and DSA keys work too).
    @return: the signature, raw bytes (256 for an RSA-2048 key).
    @raise ValueError: unknown digest, or not a usable private key.
    """
    algorithm = digestByName(digest)
    try:
        privateKey = serialization.load_pem_private_key(privateKeyPEM, password=None)
    except UnsupportedAlgorithm as e:
        raise ValueError(str(e)) from None
    return _signWith(privateKey, payload, algorithm)


def signSubscription(
    subscription: Subscription, digest: str, privateKeyPEM: bytes, now: int
) -> Subscription:
    """
    A signed copy of C{subscription}, as a uWSGI client makes it: C{unix}
    set to C{now} (plus one for an unsubscribe), then C{sign} over the
    vars.

    @param now: the client's clock, whole seconds since the epoch.
    @raise ValueError: as L{sign}.
    """
    unsigned = attr.evolve(
        subscription,
        unix=int(now) + (1 if subscription.unsubscribe else 0),
        sign=None,
        signedPayload=None,
    )
    return attr.evolve(
        unsigned, sign=sign(encodeSignedPayload(unsigned), digest, privateKeyPEM)
    )


class AnnounceSigner:
    """
    Signs the announces a sender makes over time (a subscriber's, a
    router's C{--resubscribe} ones), each with a C{unix} newer than the
    previous one of the same key.

    uWSGI's client writes its clock (plus one for an unsubscribe), so two
    announces of a key within one second carry the same C{unix}, and a
    replay-protected server (L{SignatureChecker}) refuses the second.
    Here an announce carries the clock, or the previous C{unix} of its key
    plus one if that is more: the clock's value, as uWSGI's, whenever
    announces of a key are at least a second apart.

    @ivar digest: the digest name (see L{digestByName}).
    @ivar privateKeyPEM: the unencrypted PEM private key.
    """

    def __init__(self, digest: str, privateKeyPEM: bytes, maxKeys: int = 4096) -> None:
        """
        @param maxKeys: keys whose last C{unix} is remembered; past that,
            those not newer than the clock are forgotten (their next
            announce carries the clock anyway).
        """
        self.digest = digest
        self.privateKeyPEM = privateKeyPEM
        self._maxKeys = maxKeys
        self._lastUnix = {}

    def sign(self, subscription: Subscription, now: float) -> Subscription:
        """
        A signed copy of C{subscription}, as L{signSubscription} makes it,
        at the clock time C{now}.

        @raise ValueError: as L{sign}.
        """
        command = 1 if subscription.unsubscribe else 0
        key = subscription.key
        unix = max(int(now) + command, self._lastUnix.get(key, 0) + 1)
        if len(self._lastUnix) >= self._maxKeys:
            self._lastUnix = {k: v for k, v in self._lastUnix.items() if v >= int(now)}
        self._lastUnix[key] = unix
        return signSubscription(subscription, self.digest, self.privateKeyPEM, unix - command)


def _signedBytes(subscription: Subscription) -> bytes:
    if subscription.signedPayload is not None:
        return subscription.signedPayload
    return encodeSignedPayload(subscription)


def verify(subscription: Subscription, digest: str, publicKeyPEM: bytes) -> bool:
    """
    Whether C{subscription} carries a valid signature by C{publicKeyPEM}.

    Only the signature is checked: neither the timestamp nor replays (see
    L{SignatureChecker}), nor the command byte, which uWSGI does not sign.

    @param subscription: a parsed datagram (its
        L{Subscription.signedPayload} is verified) or a value built in code
        (its encoding is).
    @param digest: a digest name (see L{digestByName}).
    @param publicKeyPEM: a PEM public key (C{BEGIN PUBLIC KEY}).
    @return: L{False} as well for an unsigned subscription.
    @raise ValueError: unknown digest, or not a usable public key.
    """
    algorithm = digestByName(digest)
    publicKey = _loadPublicKey(publicKeyPEM)
    if subscription.sign is None:
        return False
    return _verifyWith(publicKey, subscription.sign, _signedBytes(subscription), algorithm)


def _stamp(info: os.stat_result) -> tuple:
    """
    What tells a changed key file: device, inode, size, modification time.
    """
    return (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns)


class _WallClock:
    """
    An C{IReactorTime.seconds} provider for callers with no reactor.
    """

    @staticmethod
    def seconds() -> float:
        return time.time()


class SignatureChecker:
    """
    The signature check of a subscription server: C{uWSGI
    --subscriptions-sign-check DIGEST:DIRECTORY}, with replay protection.

    For each datagram, L{check} requires, in this order (first failure
    wins, cheap checks before file access and RSA):

      1. a C{sign} var (event C{unsigned});
      2. a C{unix} var (C{missing_timestamp});
      3. C{unix >= now - tolerance} (C{stale_timestamp}), for unsubscribes
         too, where uWSGI checks nothing;
      4. C{unix <= now + ahead} (C{future_timestamp}), where uWSGI has no
         upper bound; C{ahead} is the smaller of C{tolerance} and
         C{maxAhead} (60 s by default: clocks of hosts a few seconds
         apart, never the day uWSGI tolerates in the past);
      5. C{unix} greater than that of the last datagram accepted for the
         same key and address, whatever their commands (C{replayed});
      6. a readable public key at C{DIRECTORY/keyFileName(key)}
         (C{no_public_key}, C{bad_public_key});
      7. a valid signature (C{bad_signature}).

    Step 4 keeps one datagram from locking a node out: the timestamp it
    leaves as the node's replay mark refuses every announce not after it,
    the worker's own included, so a mark an hour ahead (a datagram signed
    on a clock an hour fast) would refuse the worker's announces for an
    hour, and one a day ahead, within uWSGI's default tolerance, for a
    day.  The mark never sits past C{now + ahead}: a mark found beyond it,
    because this clock stepped back since, is brought back to it.  So
    whatever was accepted for a node, its worker's own announces are
    accepted again at most C{ahead} seconds (a minute) later.

    Step 5 is where this departs from uWSGI, which only requires a
    refresh to be newer than the datagram that I{created} the node and
    checks nothing on unsubscribes: here no datagram is accepted twice,
    and a sniffed subscribe with its (unsigned) command byte flipped is
    refused, because a real client's unsubscribe carries C{now + 1}.  The
    cost: two announces of one node within the same second (a brutal
    reload that unsubscribes and subscribes again at once, or two
    C{--subscribe-to} of the same key to the same server) see the second
    one refused until the next announce.  The memory of each node lasts
    C{tolerance} seconds (older datagrams are stale anyway), at most
    C{maxNodes} nodes, and is lost on restart: a datagram accepted before
    a restart can be replayed once after it, within the tolerance.

    Public keys are read when first needed and read again when their
    file's device, inode, size or modification time changes (uWSGI reads
    each key once per pool and never again): a cached key costs a C{stat}
    per datagram, no open.  A key whose file disappears is forgotten.  Rotate a key by renaming the new file over the old one:
    a rewrite in place that keeps the size within the file system's
    timestamp granularity can go unnoticed.

    @ivar tolerance: the C{--subscriptions-sign-check-tolerance}, seconds.
    """

    def __init__(
        self,
        digest: str,
        directory: str,
        tolerance: int = DEFAULT_TOLERANCE,
        clock=None,
        maxNodes: int = 65536,
        maxKeys: int = 1024,
        maxAhead: int = DEFAULT_MAX_AHEAD,
    ) -> None:
        """
        @param digest: the digest name (C{SHA1}, ...), see L{digestByName}.
        @param directory: where the C{<key>.pem} public keys are.
        @param tolerance: how far a C{unix} timestamp may be before C{now},
            in seconds (and after it, up to C{maxAhead}).
        @param maxAhead: how far a C{unix} timestamp may be after C{now},
            at most, in seconds.
        @param clock: an C{IReactorTime} (only C{seconds} is used); the
            system clock if L{None}.
        @param maxNodes: how many nodes' last timestamps are remembered.
        @param maxKeys: how many parsed public keys are kept.
        @raise ValueError: unknown digest.
        """
        self._digest = digestByName(digest)
        self.directory = directory
        self.tolerance = tolerance
        self.ahead = min(tolerance, maxAhead)
        self._clock = clock if clock is not None else _WallClock()
        self._maxNodes = maxNodes
        self._maxKeys = maxKeys
        self._keys = collections.OrderedDict()
        self._lastSeen = collections.OrderedDict()

    def publicKeyPath(self, key: bytes) -> str:
        """
        The file the public key of C{key} is read from.
        """
        return os.path.join(self.directory, keyFileName(key))

    def check(self, subscription: Subscription) -> None:
        """
        Accept C{subscription} or refuse it; an accepted datagram is
        remembered, so checking it again refuses it as C{replayed}.

        @raise SubscriptionError: with the events listed on the class.
        """
        if subscription.sign is None:
            raise SubscriptionError("unsigned", f"no signature for key {subscription.key!r}")
        if subscription.unix is None:
            raise SubscriptionError("missing_timestamp", "signed without a unix var")
        now = self._clock.seconds()
        oldest = now - self.tolerance
        newest = now + self.ahead
        self._forgetOlderThan(oldest)
        if subscription.unix < oldest:
            raise SubscriptionError(
                "stale_timestamp",
                f"unix {subscription.unix} is more than {self.tolerance} s"
                f" before now ({int(now)})",
            )
        if subscription.unix > newest:
            raise SubscriptionError(
                "future_timestamp",
                f"unix {subscription.unix} is more than {self.ahead} s"
                f" after now ({int(now)})",
            )
        node = (subscription.key, subscription.address)
        last = self._lastSeen.get(node)
        if last is not None and last > newest:
            # Only a clock stepped back since puts a mark there.
            last = self._lastSeen[node] = int(newest)
        if last is not None and subscription.unix <= last:
            raise SubscriptionError(
                "replayed",
                f"unix {subscription.unix} not after {last}, already accepted for"
                f" {subscription.key!r} {subscription.address!r}",
            )
        publicKey = self._publicKey(subscription.key)
        if not _verifyWith(
            publicKey, subscription.sign, _signedBytes(subscription), self._digest
        ):
            raise SubscriptionError(
                "bad_signature",
                f"signature of {subscription.key!r} {subscription.address!r}"
                f" does not verify with {self.publicKeyPath(subscription.key)}",
            )
        self._lastSeen[node] = subscription.unix
        self._lastSeen.move_to_end(node)
        while len(self._lastSeen) > self._maxNodes:
            self._lastSeen.popitem(last=False)

    def _forgetOlderThan(self, oldest: float) -> None:
        """
        Drop the remembered nodes whose last timestamp is stale: any
        datagram not after it is stale too.  The table is in acceptance
        order, which honest clocks keep close to timestamp order.
        """
        lastSeen = self._lastSeen
        while lastSeen:
            node, unix = next(iter(lastSeen.items()))
            if unix >= oldest:
                return
            del lastSeen[node]

    def _publicKey(self, key: bytes):
        """
        The public key of C{key}, from the cache while its file is unchanged.

        A cached key costs one C{stat} per datagram; its file is opened
        and parsed only when first needed and after it changes.  The cache
        holds at most C{maxKeys} keys, the least recently used dropped
        first.

        @raise SubscriptionError: C{no_public_key}, C{bad_public_key}.
        """
        path = self.publicKeyPath(key)
        keys = self._keys
        try:
            stamp = _stamp(os.stat(path))
            cached = keys.get(path)
            if cached is not None and cached[0] == stamp:
                keys.move_to_end(path)
                publicKey = cached[1]
            else:
                with open(path, "rb") as f:
                    stamp = _stamp(os.fstat(f.fileno()))
                    publicKey = self._read(f, path)
                keys[path] = (stamp, publicKey)
                keys.move_to_end(path)
                while len(keys) > self._maxKeys:
                    keys.popitem(last=False)
        except OSError as e:
            keys.pop(path, None)
            raise SubscriptionError(
                "no_public_key", f"no public key for {key!r}: {e.strerror}: {path}"
            ) from None
        if publicKey is None:
            raise SubscriptionError("bad_public_key", f"{path} is not a usable public key")
        return publicKey

    @staticmethod
    def _read(f, path: str):
        """
        The public key in an open file, or L{None} if it holds none.
        """
        data = f.read(_MAX_KEY_FILE + 1)
        if len(data) > _MAX_KEY_FILE:
            return None
        try:
            return _loadPublicKey(data)
        except ValueError:
            return None
