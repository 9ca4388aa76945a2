"""
The subscription client: announce a backend to subscription servers, as a
uWSGI instance announces itself with C{--subscribe-to} or C{--subscribe2}.

The backend need not be uWSGI, or need not subscribe itself: any server
speaking what the routers send it (the uwsgi protocol, for the FastRouter
and the HTTP router; plain HTTP, for the HTTP router, announced with
C{proto="http"}) is announced by a L{SubscriberService} running beside
it, in a C{.tac} file or as C{twistd txrouter-subscribe}.  The datagrams
are those a uWSGI 2.0.21 client sends for the same settings, byte for byte
(L{encodeSubscription}), so uWSGI's own routers accept them as well as
txrouter's; an HTTP node's carry C{proto=http}, as uWSGI 2.1's
C{--subscribe2 ...,proto=http} does (2.1's routers keep its first byte,
C{h}; 2.0.21's ignore it and would speak uwsgi to the node).

As uWSGI's client, the service:

  - sends one subscribe datagram to every server when it starts, then
    again every C{frequency} seconds (uWSGI's C{--subscribe-freq}, default
    10), so that the routers keep the node past their tolerance (17 s);
  - signs each announce when given C{DIGEST:PRIVATE_KEY} (C{unix} = the
    clock, C{sign} last, see L{txrouter.subscription.signing});
  - sends one unsubscribe datagram (header byte 3 = 1, C{unix} = clock + 1
    when signed) to every server when it stops, so that the node leaves at
    once rather than at the end of the tolerance.

Where it differs from uWSGI's client:

  - no extra announce one second after the first (uWSGI's master sends one
    at its first cycle, then every C{--subscribe-freq} cycles);
  - C{load} is always 0 (uWSGI sends its listen queue backlog) and
    C{cores} is what it is told (default 1; uWSGI sends processes times
    cores); routers display both and balance on neither;
  - a signed announce's C{unix} also grows by at least one per announce
    (L{AnnounceSigner}): announces less than a second apart are accepted by
    a replay-protected server, where uWSGI's would repeat a C{unix};
  - the C{weight} is the configured one from the first announce (uWSGI's
    C{--subscribe2 weight=} changes the weight of the whole instance after
    its first pass);
  - servers may be IPv6 (C{[::1]:7000}) and abstract unix sockets
    (C{@name}); uWSGI's client knows IPv4 and paths only;
  - an unreachable server is logged once until it is reachable again
    (uWSGI logs a C{sendto} error at every announce).
"""

import errno

import attr
from twisted.application.service import Service
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from txrouter.subscription.addresses import DatagramAddress, parseDatagramAddress
from txrouter.subscription.federation import DatagramSender
from txrouter.subscription.signing import AnnounceSigner, digestByName
from txrouter.subscription.signing import sign as signPayload
from txrouter.wire.subscription import Subscription, encodeSubscription

__all__ = [
    "DEFAULT_FREQUENCY",
    "PROTOCOLS",
    "SubscriberService",
    "checkSigningKey",
    "nodeSubscription",
    "readSigningKey",
]

log = Logger(namespace="txrouter.subscription")

#: uWSGI's C{--subscribe-freq} default, in seconds.
DEFAULT_FREQUENCY = 10.0

#: Private key files are a few kilobytes; anything much bigger is not one.
_MAX_KEY_FILE = 64 * 1024

#: What a node may speak -> the C{proto} var announcing it (L{None}: no
#: var, as a uWSGI 2.0.21 client sends, which every router reads as uwsgi).
PROTOCOLS = {"uwsgi": None, "http": b"http"}


def _bytes(value) -> bytes:
    """
    Command-line text back to the bytes it came from (in a UTF-8 locale).
    """
    if isinstance(value, str):
        return value.encode("utf-8", "surrogateescape")
    return value


def nodeSubscription(
    key,
    address,
    weight: int = 0,
    modifier1: int = 0,
    modifier2: int = 0,
    backup=None,
    cores: int = 1,
    notify=None,
    sni_key=None,
    sni_crt=None,
    sni_ca=None,
    algo=None,
    proto: str = "uwsgi",
) -> Subscription:
    """
    The subscribe announce of a node, checked.

    @param key: the pool to join (bytes or text), exact: a Host name, with
        C{:port} if requests carry it.
    @param address: where routers reach the node, in uWSGI's spelling:
        C{ip:port}, C{:port} (the subscriber's own IP, for a txrouter
        server), C{/path} or C{@name}.  Host names are refused, as uWSGI's
        routers cannot connect to them.
    @param backup: uWSGI 2.1's backup level (L{None}: no C{backup} var).
    @param algo: uWSGI 2.1's balancing algorithm of a pool this announce
        creates (L{None}: no C{algo} var).
    @param proto: what the node speaks: C{"uwsgi"} (no C{proto} var) or
        C{"http"} (C{proto=http}: the HTTP router sends it HTTP/1.1
        requests; uWSGI 2.0.21's routers ignore the var).
    @return: the announce (a subscribe; C{attr.evolve(s, unsubscribe=True)}
        is its unsubscribe).
    @raise ValueError: a bad address or protocol; a L{SubscriptionError}
        for a key or address that is empty or over 255 bytes, or a number
        out of range.
    """
    if proto not in PROTOCOLS:
        raise ValueError(f"the protocol must be uwsgi or http, not {proto!r}")
    address = _bytes(address)
    try:
        text = address.decode("ascii")
    except UnicodeDecodeError:
        raise ValueError(f"the address is not ASCII: {address!r}") from None
    parseDatagramAddress(text)
    return Subscription(
        _bytes(key),
        address,
        weight=weight,
        modifier1=modifier1,
        modifier2=modifier2,
        backup=backup,
        cores=cores,
        notify=_bytes(notify),
        sniKey=_bytes(sni_key),
        sniCrt=_bytes(sni_crt),
        sniCa=_bytes(sni_ca),
        algo=_bytes(algo),
        proto=PROTOCOLS[proto],
    )


def checkSigningKey(digest: str, privateKeyPEM: bytes) -> None:
    """
    Check that C{privateKeyPEM} can sign with C{digest}, by signing once.

    @raise ValueError: unknown digest, or not a usable private key.
    """
    digestByName(digest)
    try:
        signPayload(b"", digest, privateKeyPEM)
    except TypeError as e:
        # cryptography raises TypeError for an encrypted key without password.
        raise ValueError(str(e)) from None


def readSigningKey(value: str) -> "tuple[str, bytes]":
    """
    Read a C{DIGEST:PRIVATE_KEY_FILE} value (uWSGI's C{sign=} spelling,
    e.g. C{SHA256:/etc/keys/example.com.key}) and check it.

    @return: C{(digest, privateKeyPEM)}, what L{SubscriberService} takes.
    @raise ValueError: not C{DIGEST:PATH}, unknown digest, unreadable file,
        or not an unencrypted private key.
    """
    digest, colon, path = value.partition(":")
    if not colon or not digest or not path:
        raise ValueError(f"want DIGEST:PRIVATE_KEY_FILE, not {value!r}")
    digestByName(digest)
    try:
        with open(path, "rb") as f:
            pem = f.read(_MAX_KEY_FILE + 1)
    except OSError as e:
        raise ValueError(f"{path}: {e.strerror}") from None
    if len(pem) > _MAX_KEY_FILE:
        raise ValueError(f"{path}: over {_MAX_KEY_FILE} bytes, not a private key")
    try:
        checkSigningKey(digest, pem)
    except ValueError as e:
        raise ValueError(f"{path}: not a usable private key: {e}") from None
    return digest, pem


class SubscriberService(Service):
    """
    Announces one node of one key to subscription servers while it runs.

    Start it and the node joins the key's pool on every server; stop it
    and the node leaves.  In a C{.tac} file, beside the backend it
    announces::

        SubscriberService(reactor, ["127.0.0.1:7000"], "example.com",
                          "127.0.0.1:3031").setServiceParent(application)

    @ivar servers: the L{DatagramAddress}es announced to.
    @ivar frequency: seconds between two announces.
    @ivar subscription: the subscribe announce, unsigned.
    """

    def __init__(
        self,
        reactor,
        servers,
        key,
        address,
        frequency: float = DEFAULT_FREQUENCY,
        sign=None,
        sender=None,
        **fields,
    ) -> None:
        """
        @param reactor: an C{IReactorTime}: the announces' timer and the
            clock of the signed C{unix}.
        @param servers: the subscription servers, L{DatagramAddress}es or
            text (C{ip:port}, C{/path}, C{@name}); at least one.
        @param key: see L{nodeSubscription}.
        @param address: see L{nodeSubscription}.
        @param frequency: seconds between announces (uWSGI's
            C{--subscribe-freq}); keep it well under the routers'
            tolerance (17 s), and at 1 or more when signing.
        @param sign: C{(digest, privateKeyPEM)} to sign every announce
            with (see L{readSigningKey}), or L{None}.
        @param sender: what sends the datagrams (C{send(datagram,
            address)}, raising C{OSError}); a L{DatagramSender} of this
            service's own if L{None}.
        @param fields: the announce's other fields, the keyword arguments
            of L{nodeSubscription} (C{weight}, C{modifier1}, C{modifier2},
            C{backup}, C{cores}, C{notify}, C{sni_key}, C{sni_crt},
            C{sni_ca}, C{algo}, C{proto}).
        @raise ValueError: no server, a bad server address, a bad announce
            (L{nodeSubscription}), a frequency not above 0, or a signing
            key that cannot sign.
        @raise TypeError: a field L{nodeSubscription} does not know.
        """
        servers = [
            s if isinstance(s, DatagramAddress) else parseDatagramAddress(s) for s in servers
        ]
        if not servers:
            raise ValueError("no subscription server to announce to")
        if not frequency > 0:
            raise ValueError(f"the frequency must be above 0 seconds, not {frequency!r}")
        self.subscription = nodeSubscription(key, address, **fields)
        self._signer = None
        if sign is not None:
            digest, privateKeyPEM = sign
            checkSigningKey(digest, privateKeyPEM)
            self._signer = AnnounceSigner(digest, privateKeyPEM)
        self.reactor = reactor
        self.servers = servers
        self.frequency = frequency
        self._ownSender = sender is None
        self.sender = DatagramSender() if sender is None else sender
        self._loop = None
        self._unreachable = set()

    def _describe(self) -> dict:
        return dict(
            key=self.subscription.key.decode("utf-8", "replace"),
            address=self.subscription.address.decode("ascii"),
            servers=", ".join(server.text for server in self.servers),
            speaks=" (http)" if self.subscription.proto else "",
        )

    def startService(self) -> None:
        """
        Announce the node to every server now, then every C{frequency}
        seconds.
        """
        super().startService()
        log.info(
            "subscriber_started: announcing {key} => {address}{speaks} to {servers}"
            " every {frequency} s{signed}",
            event="subscriber_started", frequency=self.frequency,
            signed=", signed" if self._signer is not None else "", **self._describe(),
        )
        self._loop = LoopingCall(self.announce)
        self._loop.clock = self.reactor
        self._loop.start(self.frequency, now=True).addErrback(
            lambda failure: log.failure(
                "subscriber_error: the announces stopped", failure, event="subscriber_error",
            )
        )

    def stopService(self) -> None:
        """
        Stop announcing and send the unsubscribe to every server, once.
        """
        super().stopService()
        if self._loop is None:
            return
        if self._loop.running:
            self._loop.stop()
        self._loop = None
        self._send(attr.evolve(self.subscription, unsubscribe=True))
        log.info(
            "subscriber_stopped: unsubscribed {key} => {address} from {servers}",
            event="subscriber_stopped", **self._describe(),
        )
        if self._ownSender:
            self.sender.close()

    def announce(self) -> None:
        """
        Send the subscribe datagram to every server now (what the timer
        calls).  Never raises.
        """
        self._send(self.subscription)

    def _send(self, subscription: Subscription) -> None:
        try:
            if self._signer is not None:
                subscription = self._signer.sign(subscription, self.reactor.seconds())
            datagram = encodeSubscription(subscription)
        except Exception:
            # The key was checked at construction: only a bug gets here,
            # and the next announce may still go out.
            log.failure("subscriber_error: cannot build the announce", event="subscriber_error")
            return
        for server in self.servers:
            try:
                self.sender.send(datagram, server)
            except OSError as e:
                self._failed(server, e)
            else:
                if server in self._unreachable:
                    self._unreachable.discard(server)
                    log.info(
                        "subscriber_reachable: {server} can be sent to again",
                        event="subscriber_reachable", server=server.text,
                    )

    def _failed(self, server: DatagramAddress, error: OSError) -> None:
        """
        Log that C{server} cannot be sent to, once until it can again: a
        router that is down for an hour would otherwise get a line per
        announce.
        """
        if server in self._unreachable:
            return
        self._unreachable.add(server)
        log.warn(
            "subscriber_unreachable: cannot announce {key} to {server}: {error}"
            " (retrying every {frequency} s, logged once)",
            event="subscriber_unreachable", server=server.text,
            key=self.subscription.key.decode("utf-8", "replace"),
            error=error.strerror or errno.errorcode.get(error.errno, str(error)),
            frequency=self.frequency,
        )
