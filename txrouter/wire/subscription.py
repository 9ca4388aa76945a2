"""
Subscription datagrams: how a uWSGI instance announces itself to a router.

One datagram is one announce.  It is a uwsgi packet (see
L{txrouter.wire.uwsgi}) whose header carries modifier1 224 and, in the
byte where modifier2 usually is, the command (0 subscribe, anything else
unsubscribe); its vars name the pool (C{key}), the node (C{address}) and
the node's properties::

    e0 | u16 datasize | cmd | key=... address=... modifier1=0 ... [unix=... sign=...]

L{parseSubscription} turns one received datagram into a L{Subscription},
strictly: whatever uWSGI 2.0.21 or 2.1 emits is accepted, anything a
hostile or broken sender could use to make two readers disagree is
refused with a L{SubscriptionError}.  L{encodeSubscription} writes the
datagram a uWSGI 2.0.21 client would write for the same values, byte for
byte.  Checking signatures is the business of
L{txrouter.subscription.signing}; this module only keeps the exact bytes
a signature covers (L{Subscription.signedPayload}).

Divergences from uWSGI's server (all refusals where uWSGI accepts):

  - the header is checked: modifier1 must be 224 and datasize must be the
    length of the vars block (uWSGI reads neither);
  - C{key} and C{address} are required, non-empty, at most 255 bytes
    (uWSGI ignores an empty or longer address, and overflows a heap buffer
    on a longer key);
  - numbers must be plain decimal within the width uWSGI stores them in
    (uWSGI computes garbage from any other byte and truncates);
  - a var named twice is refused (uWSGI keeps the last one);
  - C{sign} must be the last var (uWSGI assumes it is and verifies a
    shifted window when it is not);
  - datagrams above L{MAX_DATAGRAM} bytes are refused (uWSGI truncates
    them and parses the first 4096 bytes).

Unknown vars are accepted, as uWSGI ignores them, and kept in
L{Subscription.extra} so that they can be logged and re-encoded.
"""

import attr

from txrouter.wire.uwsgi import (
    UwsgiPacketError,
    decodeVars,
    encodeHeader,
    encodeVars,
)

__all__ = [
    "MAX_DATAGRAM",
    "MAX_KEY",
    "MAX_ADDRESS",
    "SUBSCRIPTION_MODIFIER1",
    "Subscription",
    "SubscriptionError",
    "parseSubscription",
    "encodeSubscription",
    "encodeSignedPayload",
]

#: The largest datagram accepted or produced.  uWSGI's subscription server
#: reads into a 4096-byte buffer, so nothing longer ever works against it;
#: a server should read with a bigger buffer so that a longer datagram is
#: seen whole, and refused, rather than truncated into something valid.
MAX_DATAGRAM = 4096

#: The longest C{key}: uWSGI's pool name is a 255-byte field.
MAX_KEY = 255

#: The longest C{address}: uWSGI's node name is a 255-byte field.
MAX_ADDRESS = 255

#: The header byte 0 of every subscription datagram.
SUBSCRIPTION_MODIFIER1 = 224

_UINT8 = 0xFF
_UINT64 = 0xFFFFFFFFFFFFFFFF
# time_t is a signed 64-bit integer; uWSGI never sends a negative one.
_INT64 = 0x7FFFFFFFFFFFFFFF


class SubscriptionError(ValueError):
    """
    A subscription datagram, or a subscription value, that is refused.

    @ivar event: a short, stable snake_case name for logs and counters
        (C{"key_too_long"}, C{"bad_signature"}, ...).
    @ivar detail: human-readable explanation.
    """

    def __init__(self, event: str, detail: str) -> None:
        super().__init__(f"{event}: {detail}")
        self.event = event
        self.detail = detail


def _checkName(name: str, maximum: int):
    """
    A validator for C{key} and C{address}: present, non-empty, bounded.
    """

    def check(instance, attribute, value) -> None:
        if not isinstance(value, bytes):
            raise TypeError(f"{name} must be bytes, not {type(value).__name__}")
        if not value:
            raise SubscriptionError(f"missing_{name}", f"empty {name}")
        if len(value) > maximum:
            raise SubscriptionError(
                f"{name}_too_long",
                f"{name} of {len(value)} bytes, limit {maximum}: {value[:32]!r}...",
            )

    return check


def _checkNumber(maximum: int, optional: bool = False):
    """
    A validator for a numeric var: an integer in C{0..maximum}.
    """

    def check(instance, attribute, value) -> None:
        if value is None and optional:
            return
        if type(value) is not int:
            raise TypeError(f"{attribute.name} must be an int, not {type(value).__name__}")
        if not 0 <= value <= maximum:
            raise SubscriptionError(
                "bad_number", f"{attribute.name} {value} is outside 0..{maximum}"
            )

    return check


def _checkOptionalBytes(instance, attribute, value) -> None:
    if value is not None and not isinstance(value, bytes):
        raise TypeError(f"{attribute.name} must be bytes or None")


def _checkSign(instance, attribute, value) -> None:
    _checkOptionalBytes(instance, attribute, value)
    if value == b"":
        # uWSGI takes an empty signature for no signature at all.
        raise SubscriptionError("empty_sign", "sign var with an empty value")


def _toPairs(pairs) -> tuple:
    return tuple((name, value) for name, value in pairs)


def _checkExtra(instance, attribute, value) -> None:
    seen = set()
    for name, data in value:
        if not isinstance(name, bytes) or not isinstance(data, bytes):
            raise TypeError("extra must hold (bytes, bytes) pairs")
        if not name:
            raise SubscriptionError("empty_var_name", "extra var with an empty name")
        if name in _KNOWN or name in seen:
            raise SubscriptionError("duplicate_var", f"var {name[:32]!r} given twice")
        seen.add(name)


@attr.frozen
class Subscription:
    """
    One subscription announce, as a value.

    The attributes are the vars of the datagram (the wire name is given
    where it differs); an optional var that was absent is L{None}, a
    numeric var that was absent is 0, which is what uWSGI assumes.  The
    constructor refuses what L{parseSubscription} refuses, so every
    L{Subscription} encodes to a datagram that parses back to itself.

    @ivar key: the pool name, exact bytes (case and C{:port} included).
    @ivar address: the node: C{ip:port}, C{:port}, C{/path} or C{@name}.
    @ivar unsubscribe: the command byte (header byte 3) was not 0.
    @ivar modifier1: what the router stamps on requests for this node.
    @ivar modifier2: likewise.
    @ivar cores: workers times cores of the instance (informational).
    @ivar load: the instance's listen backlog (informational).
    @ivar weight: for the weighted algorithms; uWSGI stores 0 as 1.
    @ivar backup: (2.1, C{backup}) the backup level, 0 for primaries.
    @ivar vassal: (2.1, C{vassal}) the Emperor vassal serving the key.
    @ivar sniKey: (C{sni_key}) TLS key for the key's SNI name: a path on
        the router host or inline PEM.
    @ivar sniCrt: (C{sni_crt}) likewise, the certificate.
    @ivar sniCa: (C{sni_ca}) likewise, the client CA.
    @ivar proto: (2.1, C{proto}) what the node speaks (C{h}: plain HTTP).
    @ivar algo: (2.1, C{algo}) the balancing algorithm for a new pool.
    @ivar extra: vars this module does not know, as C{(name, value)}
        pairs in wire order; uWSGI ignores them.
    @ivar notify: a UNIX datagram path to which the router acknowledges
        a new node.
    @ivar clear: (2.1, C{clear}) a shutting-down node asks to be removed
        with a subscribe command carrying C{clear=1}.
    @ivar unix: the client's clock (seconds since the epoch) when it
        signed, plus one for an unsubscribe; present in signed datagrams.
    @ivar sign: the signature (raw bytes) of L{signedPayload}.
    @ivar signedPayload: for a parsed signed datagram, the bytes its
        signature covers exactly as received: the vars block up to, not
        including, the C{sign} var (the header is not covered).  L{None}
        for a value built in code, whose signed bytes are
        L{encodeSignedPayload}C{(value)}.  C{attr.evolve} copies it, so a
        value changed after parsing no longer matches it.
    """

    key: bytes = attr.field(validator=_checkName("key", MAX_KEY))
    address: bytes = attr.field(validator=_checkName("address", MAX_ADDRESS))
    unsubscribe: bool = attr.field(default=False, kw_only=True, converter=bool)
    modifier1: int = attr.field(default=0, kw_only=True, validator=_checkNumber(_UINT8))
    modifier2: int = attr.field(default=0, kw_only=True, validator=_checkNumber(_UINT8))
    cores: int = attr.field(default=0, kw_only=True, validator=_checkNumber(_UINT64))
    load: int = attr.field(default=0, kw_only=True, validator=_checkNumber(_UINT64))
    weight: int = attr.field(default=0, kw_only=True, validator=_checkNumber(_UINT64))
    backup: "int | None" = attr.field(
        default=None, kw_only=True, validator=_checkNumber(_UINT64, optional=True)
    )
    vassal: "bytes | None" = attr.field(default=None, kw_only=True, validator=_checkOptionalBytes)
    sniKey: "bytes | None" = attr.field(default=None, kw_only=True, validator=_checkOptionalBytes)
    sniCrt: "bytes | None" = attr.field(default=None, kw_only=True, validator=_checkOptionalBytes)
    sniCa: "bytes | None" = attr.field(default=None, kw_only=True, validator=_checkOptionalBytes)
    proto: "bytes | None" = attr.field(default=None, kw_only=True, validator=_checkOptionalBytes)
    algo: "bytes | None" = attr.field(default=None, kw_only=True, validator=_checkOptionalBytes)
    extra: tuple = attr.field(default=(), kw_only=True, converter=_toPairs, validator=_checkExtra)
    notify: "bytes | None" = attr.field(default=None, kw_only=True, validator=_checkOptionalBytes)
    clear: "int | None" = attr.field(
        default=None, kw_only=True, validator=_checkNumber(_UINT8, optional=True)
    )
    unix: "int | None" = attr.field(
        default=None, kw_only=True, validator=_checkNumber(_INT64, optional=True)
    )
    sign: "bytes | None" = attr.field(default=None, kw_only=True, validator=_checkSign)
    signedPayload: "bytes | None" = attr.field(
        default=None, kw_only=True, repr=False, validator=_checkOptionalBytes
    )


# Wire name -> (attribute, kind), in the order a client writes them: uWSGI
# 2.0.21's order, with 2.1's additions where 2.1 puts them.  Unknown vars
# go where 2.1 writes its own server-ignored var (inactive), before notify.
_BYTES, _NUMBER, _OPTIONAL_NUMBER = "bytes", "number", "optional number"
_LAYOUT = (
    (b"key", "key", _BYTES),
    (b"address", "address", _BYTES),
    (b"modifier1", "modifier1", _NUMBER),
    (b"modifier2", "modifier2", _NUMBER),
    (b"cores", "cores", _NUMBER),
    (b"load", "load", _NUMBER),
    (b"weight", "weight", _NUMBER),
    (b"backup", "backup", _OPTIONAL_NUMBER),
    (b"vassal", "vassal", _BYTES),
    (b"sni_key", "sniKey", _BYTES),
    (b"sni_crt", "sniCrt", _BYTES),
    (b"sni_ca", "sniCa", _BYTES),
    (b"proto", "proto", _BYTES),
    (b"algo", "algo", _BYTES),
    (None, "extra", None),
    (b"notify", "notify", _BYTES),
    (b"clear", "clear", _OPTIONAL_NUMBER),
    (b"unix", "unix", _OPTIONAL_NUMBER),
)
_SIGN = b"sign"
_KNOWN = {name: (attribute, kind) for name, attribute, kind in _LAYOUT if name}
_KNOWN[_SIGN] = ("sign", _BYTES)
# u16 name length, "sign", u16 value length: what follows the signed bytes
# besides the signature itself.
_SIGN_OVERHEAD = 2 + len(_SIGN) + 2


def _number(name: bytes, value: bytes) -> int:
    """
    Parse the decimal digits uWSGI writes with C{%lld}: no sign, no
    space, no leading zero; the range is checked by L{Subscription}.
    """
    if (
        not value
        or not value.isdigit()
        or len(value) > 20
        or (value[0:1] == b"0" and len(value) > 1)
    ):
        raise SubscriptionError(
            "bad_number", f"{name.decode('ascii')} is not a decimal number: {value[:32]!r}"
        )
    return int(value)


def parseSubscription(datagram: bytes) -> Subscription:
    """
    Parse one received subscription datagram, strictly.

    Vars unknown to uWSGI are accepted and kept in L{Subscription.extra}
    (uWSGI's server ignores them).  Absent numeric vars read as 0 and
    absent optional vars as L{None}, as in uWSGI.

    @param datagram: the datagram exactly as received, whole.
    @return: the announce.
    @raise SubscriptionError: with event
        C{datagram_too_large} (more than L{MAX_DATAGRAM} bytes),
        C{truncated} (shorter than its header, its datasize or one of its
        vars says), C{bad_datasize} (bytes after the announced vars),
        C{bad_modifier1} (byte 0 is not 224),
        C{empty_var_name}, C{duplicate_var}, C{sign_not_last},
        C{empty_sign}, C{bad_number},
        C{missing_key}, C{key_too_long}, C{missing_address},
        C{address_too_long}.
    """
    size = len(datagram)
    if size > MAX_DATAGRAM:
        raise SubscriptionError(
            "datagram_too_large", f"{size} bytes, limit {MAX_DATAGRAM}"
        )
    if size < 4:
        raise SubscriptionError("truncated", f"{size} bytes, shorter than a header")
    modifier1 = datagram[0]
    datasize = datagram[1] | datagram[2] << 8
    command = datagram[3]
    if modifier1 != SUBSCRIPTION_MODIFIER1:
        raise SubscriptionError(
            "bad_modifier1", f"modifier1 {modifier1}, not {SUBSCRIPTION_MODIFIER1}"
        )
    if datasize > size - 4:
        raise SubscriptionError(
            "truncated", f"datasize {datasize} announced, {size - 4} bytes received"
        )
    if datasize < size - 4:
        raise SubscriptionError(
            "bad_datasize", f"datasize {datasize} announced, {size - 4} bytes received"
        )
    block = datagram[4:]
    try:
        pairs = decodeVars(block)
    except UwsgiPacketError as e:
        event = "empty_var_name" if e.event == "empty_key" else "truncated"
        raise SubscriptionError(event, e.detail) from None

    fields = {"unsubscribe": command != 0}
    extra = []
    seen = set()
    for index, (name, value) in enumerate(pairs):
        if name in seen:
            raise SubscriptionError("duplicate_var", f"var {name[:32]!r} given twice")
        seen.add(name)
        known = _KNOWN.get(name)
        if known is None:
            extra.append((name, value))
            continue
        attribute, kind = known
        if name == _SIGN:
            if index != len(pairs) - 1:
                raise SubscriptionError("sign_not_last", "vars follow the sign var")
            fields["signedPayload"] = block[: len(block) - _SIGN_OVERHEAD - len(value)]
        fields[attribute] = value if kind == _BYTES else _number(name, value)
    if b"key" not in seen:
        raise SubscriptionError("missing_key", "no key var")
    if b"address" not in seen:
        raise SubscriptionError("missing_address", "no address var")
    return Subscription(extra=extra, **fields)


def _pairs(subscription: Subscription):
    """
    The vars of C{subscription} in the order a uWSGI client writes them,
    C{sign} excluded.
    """
    for name, attribute, kind in _LAYOUT:
        value = getattr(subscription, attribute)
        if name is None:
            yield from value
        elif value is None:
            continue
        elif kind == _BYTES:
            yield name, value
        else:
            yield name, b"%d" % (value,)


def _encode(pairs) -> bytes:
    try:
        return encodeVars(pairs)
    except UwsgiPacketError as e:
        # Only a var longer than 65535 bytes is refused there.
        raise SubscriptionError("datagram_too_large", e.detail) from None


def encodeSignedPayload(subscription: Subscription) -> bytes:
    """
    The bytes a client signs: the vars block without the C{sign} var.

    Sign it after setting L{Subscription.unix}, then encode the value with
    the signature in L{Subscription.sign}.

    @raise SubscriptionError: C{datagram_too_large}.
    """
    return _encode(_pairs(subscription))


def encodeSubscription(subscription: Subscription) -> bytes:
    """
    Encode a subscription datagram as uWSGI 2.0.21's client does.

    The vars come in its order (C{key, address, modifier1, modifier2,
    cores, load, weight}, then C{sni_key, sni_crt, sni_ca, notify, unix,
    sign} when present; 2.1's vars and L{Subscription.extra} where 2.1
    writes them), numbers in plain decimal, the command byte 1 for an
    unsubscribe.  L{Subscription.signedPayload} is not used.

    @return: the datagram.
    @raise SubscriptionError: C{datagram_too_large}, above L{MAX_DATAGRAM}.
    """
    block = encodeSignedPayload(subscription)
    if subscription.sign is not None:
        block += _encode([(_SIGN, subscription.sign)])
    if len(block) + 4 > MAX_DATAGRAM:
        raise SubscriptionError(
            "datagram_too_large", f"{len(block) + 4} bytes, limit {MAX_DATAGRAM}"
        )
    return (
        encodeHeader(SUBSCRIPTION_MODIFIER1, len(block), 1 if subscription.unsubscribe else 0)
        + block
    )
