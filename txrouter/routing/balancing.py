"""
Balancing algorithms for subscribed pools: C{--subscription-algo}.

Each algorithm is one small class providing L{IBalancer}: given the
nodes of a pool that may serve a request now, in the order they were
added, it chooses one.  The pool (L{txrouter.routing.subscriptions}) keeps
the counters they read: the in-flight count C{reference}, the requests
since the last announce C{lastRequests}, the C{weight}, and the C{wrr}
credit that only L{WeightedRoundRobin} writes.

The algorithms are uWSGI's (reference section 2.8), pick for pick:

  - C{wrr} (the default): the first node with credit left spends one;
    when none has any, every node gets C{weight // smallest weight} and
    the I{last} node spends one.  Weights 3 and 1 give B A A A B A A A...;
  - C{lrc}: the fewest requests in flight; among idle nodes, walk forward
    while the next one is no busier and served no more since its last
    announce, so that idle traffic spreads;
  - C{wlrc}: as C{lrc}, comparing C{reference / weight};
  - C{iphash} (uWSGI 2.1): the client's IPv4 address as uWSGI reads it
    (network byte order taken as a little-endian integer) modulo the
    number of nodes; IPv6: L{djb33x} of the 16 address bytes.

One difference: uWSGI's C{lrc}/C{wlrc} walk looks at the next node of the
pool even when that node is dead, and can then settle on a busier node
after it; here only the candidates are walked.
"""

import ipaddress

from zope.interface import Attribute, Interface, implementer

__all__ = [
    "IBalancer",
    "WeightedRoundRobin",
    "LeastReferenceCount",
    "WeightedLeastReferenceCount",
    "IPHash",
    "ALGORITHMS",
    "balancerByName",
    "djb33x",
]


class IBalancer(Interface):
    """
    Chooses the node of a pool that serves one request.
    """

    name = Attribute("The algorithm's name as C{--subscription-algo} spells it.")

    def choose(candidates, client):
        """
        @param candidates: a non-empty sequence of the nodes that may serve
            now, in the order they joined the pool; each has C{weight}
            (at least 1), C{reference}, C{lastRequests} and a writable
            C{wrr}.
        @param client: the client's IP address text, or L{None}.
        @return: one of C{candidates}.
        """


def djb33x(data: bytes) -> int:
    """
    uWSGI's string hash: C{h = 5381; h = h * 33 ^ c} over 32 bits, each
    byte taken as a I{signed} char (which matters above 127 only).

    C{djb33x(b"example.com") % 65535 == 30778}, the bucket uWSGI's stats
    show for that key.
    """
    h = 5381
    for byte in data:
        if byte > 127:
            byte |= 0xFFFFFF00
        h = ((h * 33) ^ byte) & 0xFFFFFFFF
    return h


@implementer(IBalancer)
class WeightedRoundRobin:
    """
    uWSGI's C{wrr}: credits refilled in proportion to the weights.

    Integer division makes weights relative to the smallest one: 3 and 2
    both get one credit, so they alternate.
    """

    name = "wrr"

    def choose(self, candidates, client=None):
        for node in candidates:
            if node.wrr > 0:
                node.wrr -= 1
                return node
        smallest = min(node.weight for node in candidates)
        for node in candidates:
            node.wrr = node.weight // smallest
        chosen = candidates[-1]
        chosen.wrr -= 1
        return chosen


def _leastLoaded(candidates, load):
    """
    The walk of uWSGI's C{lrc} and C{wlrc}.

    A load of 0 is also the "nothing chosen yet" mark, which is what makes
    the walk go on among idle nodes: it stops at an idle node only when
    the next one is busier or served more requests since its last
    announce.
    """
    chosen = None
    smallest = 0
    last = len(candidates) - 1
    for index, node in enumerate(candidates):
        current = load(node)
        if smallest == 0 or current < smallest:
            smallest = current
            chosen = node
            if smallest == 0:
                after = candidates[index + 1] if index < last else None
                if not (
                    after is not None
                    and load(after) <= current
                    and after.lastRequests <= node.lastRequests
                ):
                    break
    return chosen


@implementer(IBalancer)
class LeastReferenceCount:
    """
    uWSGI's C{lrc}: the node with the fewest requests in flight.
    """

    name = "lrc"

    def choose(self, candidates, client=None):
        return _leastLoaded(candidates, lambda node: node.reference)


@implementer(IBalancer)
class WeightedLeastReferenceCount:
    """
    uWSGI's C{wlrc}: the node with the fewest requests in flight per unit
    of weight.
    """

    name = "wlrc"

    def choose(self, candidates, client=None):
        return _leastLoaded(candidates, lambda node: node.reference / node.weight)


@implementer(IBalancer)
class IPHash:
    """
    uWSGI 2.1's C{iphash}: the same client goes to the same node while the
    pool does not change.

    uWSGI finds no node for a client without an IP address (a unix socket
    listener); here such requests hash to 0, the first node.
    """

    name = "iphash"

    def choose(self, candidates, client=None):
        return candidates[self.hash(client) % len(candidates)]

    @staticmethod
    def hash(client) -> int:
        """
        The number uWSGI takes modulo the node count for C{client}.
        """
        if not client:
            return 0
        try:
            address = ipaddress.ip_address(client)
        except ValueError:
            return 0
        if address.version == 6 and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        if address.version == 4:
            # uWSGI takes sin_addr.s_addr, stored in network order, as a
            # native (little-endian) integer.
            return int.from_bytes(address.packed, "little")
        return djb33x(address.packed)


#: Every algorithm, by name.
ALGORITHMS = {
    cls.name: cls
    for cls in (WeightedRoundRobin, LeastReferenceCount, WeightedLeastReferenceCount, IPHash)
}


def balancerByName(name: str) -> IBalancer:
    """
    A new balancer for an algorithm name (C{wrr}, C{lrc}, C{wlrc}, C{iphash}).

    @raise ValueError: an unknown name.
    """
    try:
        return ALGORITHMS[name]()
    except KeyError:
        raise ValueError(
            f"unknown balancing algorithm {name!r}; known: {', '.join(ALGORITHMS)}"
        ) from None
