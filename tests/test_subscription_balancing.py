"""
The balancing algorithms pick exactly as uWSGI's (reference section 2.8).
"""

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st
from zope.interface.verify import verifyObject

from txrouter.routing.balancing import (
    ALGORITHMS,
    IBalancer,
    IPHash,
    LeastReferenceCount,
    WeightedLeastReferenceCount,
    WeightedRoundRobin,
    balancerByName,
    djb33x,
)


class Candidate:
    """
    What a pool hands to a balancer: the counters uWSGI keeps per node.
    """

    def __init__(self, name, weight=1, reference=0, lastRequests=0):
        self.name = name
        self.weight = weight
        self.reference = reference
        self.lastRequests = lastRequests
        self.wrr = 0

    def __repr__(self):
        return self.name


def nodes(*weights):
    return [Candidate("ABCDEFGH"[i], weight) for i, weight in enumerate(weights)]


def sequence(balancer, candidates, count):
    return "".join(balancer.choose(candidates, None).name for _ in range(count))


def uwsgiWRR(weights, count):
    """
    A line-by-line transcription of uWSGI 2.0.21's
    uwsgi_subscription_algo_wrr as uwsgi_get_subscribe_node drives it:
    first a walk offering each live node (taken if its credit is
    positive), then the reset step.
    """
    wrr = [0] * len(weights)
    picks = []
    for _ in range(count):
        for i in range(len(weights)):
            if wrr[i] > 0:
                wrr[i] -= 1
                picks.append(i)
                break
        else:
            minWeight = 0
            for w in weights:
                if minWeight == 0 or w < minWeight:
                    minWeight = w
            chosen = None
            for i, w in enumerate(weights):
                wrr[i] = w // minWeight
                chosen = i
            wrr[chosen] -= 1
            picks.append(chosen)
    return "".join("ABCDEFGH"[i] for i in picks)


@pytest.mark.parametrize("name", sorted(ALGORITHMS))
def test_every_algorithm_provides_the_interface(name):
    balancer = balancerByName(name)
    assert verifyObject(IBalancer, balancer)
    assert balancer.name == name


def test_unknown_algorithm():
    with pytest.raises(ValueError, match="unknown balancing algorithm 'rr'"):
        balancerByName("rr")


def test_wrr_order_3_1():
    """
    Weights 3 and 1: the reset gives the last node the first pick, then
    the first node spends its three credits.
    """
    assert sequence(WeightedRoundRobin(), nodes(3, 1), 12) == "BAAABAAABAAA"


def test_wrr_order_2_2_1():
    assert sequence(WeightedRoundRobin(), nodes(2, 2, 1), 15) == "CAABBCAABBCAABB"


def test_wrr_order_1_1_and_integer_division():
    assert sequence(WeightedRoundRobin(), nodes(1, 1), 4) == "BABA"
    # 3 // 2 == 1 and 2 // 2 == 1: uWSGI's integer division evens them.
    assert sequence(WeightedRoundRobin(), nodes(3, 2), 4) == "BABA"
    assert sequence(WeightedRoundRobin(), nodes(4, 2), 6) == "BAABAA"


@given(st.lists(st.integers(1, 9), min_size=1, max_size=6), st.integers(1, 60))
def test_wrr_is_uwsgis_algorithm(weights, count):
    assert sequence(WeightedRoundRobin(), nodes(*weights), count) == uwsgiWRR(weights, count)


def test_wrr_new_node_starts_without_credit():
    """
    A node joining mid-round (credit 0) waits for the next reset.
    """
    candidates = nodes(2, 1)
    balancer = WeightedRoundRobin()
    assert sequence(balancer, candidates, 2) == "BA"
    candidates.append(Candidate("C", 1))
    assert sequence(balancer, candidates, 5) == "ACAAB"


def test_lrc_least_in_flight():
    a, b, c = Candidate("A", reference=2), Candidate("B", reference=1), Candidate("C", reference=3)
    assert LeastReferenceCount().choose([a, b, c], None) is b


def test_lrc_spreads_idle_traffic():
    """
    Among idle nodes the walk moves on while the next one is idle too and
    served no more requests since its last announce.
    """
    a, b, c = Candidate("A"), Candidate("B"), Candidate("C")
    balancer = LeastReferenceCount()
    assert balancer.choose([a, b, c], None) is c
    c.lastRequests = 1
    assert balancer.choose([a, b, c], None) is b
    b.lastRequests = 1
    assert balancer.choose([a, b, c], None) is a


def test_lrc_stops_at_an_idle_node_before_a_busy_one():
    a, b = Candidate("A"), Candidate("B", reference=1)
    assert LeastReferenceCount().choose([a, b], None) is a


def test_wlrc_divides_by_weight():
    a = Candidate("A", weight=4, reference=2)
    b = Candidate("B", weight=1, reference=1)
    assert WeightedLeastReferenceCount().choose([a, b], None) is a
    assert LeastReferenceCount().choose([a, b], None) is b


def test_iphash_as_uwsgi_2_1():
    """
    IPv4: s_addr (network order) read as a little-endian integer, modulo
    the node count; IPv6: djb33x of the 16 bytes.
    """
    candidates = nodes(1, 1, 1)
    balancer = IPHash()
    # 10.0.0.1 -> bytes 0a 00 00 01 -> 0x0100000a = 16777226; % 3 == 2
    assert IPHash.hash("10.0.0.1") == 0x0100000A
    assert balancer.choose(candidates, "10.0.0.1").name == "C"
    assert balancer.choose(candidates, "10.0.0.2").name == "A"
    assert balancer.choose(candidates, "::ffff:10.0.0.2").name == "A"
    packed = ipaddress.ip_address("2001:db8::1").packed
    assert IPHash.hash("2001:db8::1") == djb33x(packed)
    assert balancer.choose(candidates, None).name == "A"
    assert balancer.choose(candidates, "not an ip").name == "A"


def test_djb33x():
    assert djb33x(b"example.com") % 65535 == 30778
    assert djb33x(b"") == 5381
    # bytes above 127 are signed chars in uWSGI: XOR with a sign-extended value
    assert djb33x(b"\xff") == ((5381 * 33) ^ 0xFFFFFFFF) & 0xFFFFFFFF
