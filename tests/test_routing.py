"""
Node addresses, the static forwarder and the retry plan (reference 3.5).
"""

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from twisted.internet.task import Clock
from twisted.internet.defer import succeed

from txrouter.routing.nodes import HTTP, UWSGI, BadNodeAddress, parseNode, parseNodeValue
from txrouter.routing.interfaces import NoNodeForKey
from txrouter.routing.retry import RetryPlan
from txrouter.routing.static import StaticForwarder


@pytest.mark.parametrize(
    "spec, name, host, port, path",
    [
        ("127.0.0.1:3031", "127.0.0.1:3031", "127.0.0.1", 3031, None),
        (":3031", ":3031", "127.0.0.1", 3031, None),
        ("backend.local:80", "backend.local:80", "backend.local", 80, None),
        ("[::1]:3031", "[::1]:3031", "::1", 3031, None),
        ("/tmp/app.sock", "/tmp/app.sock", None, 0, "/tmp/app.sock"),
        ("run/app.sock", "run/app.sock", None, 0, "run/app.sock"),
        ("/run/a:b.sock", "/run/a:b.sock", None, 0, "/run/a:b.sock"),
        ("@app", "@app", None, 0, "\0app"),
        ("tcp:10.0.0.1:3031", "10.0.0.1:3031", "10.0.0.1", 3031, None),
        ("tcp:host=h:port=9", "h:9", "h", 9, None),
        ("unix:/run/a.sock", "/run/a.sock", None, 0, "/run/a.sock"),
        ("unix:path=/run/a\\:b.sock", "/run/a:b.sock", None, 0, "/run/a:b.sock"),
    ],
)
def test_node_spellings(spec, name, host, port, path):
    node = parseNode(spec)
    assert (node.name, node.host, node.port, node.path) == (name, host, port, path)


@pytest.mark.parametrize(
    "spec", ["", "h:notaport", "h:0", "h:70000", "tcp:h", "unix:", "tcp::1"]
)
def test_bad_node_addresses(spec):
    with pytest.raises(BadNodeAddress):
        parseNode(spec)


def test_nodes_speak_uwsgi_unless_their_address_says_http():
    assert [parseNode(spec).protocol for spec in ("127.0.0.1:3031", "/run/a.sock", "@a")] == [
        UWSGI, UWSGI, UWSGI]


@pytest.mark.parametrize(
    "spec, host, port, path",
    [
        ("http://127.0.0.1:8000", "127.0.0.1", 8000, None),
        ("http://backend.local:80", "backend.local", 80, None),
        ("http://[::1]:8000", "::1", 8000, None),
        ("http://unix:/run/app.sock", None, 0, "/run/app.sock"),
        ("http://unix:@app", None, 0, "\0app"),
    ],
)
def test_http_node_spellings(spec, host, port, path):
    node = parseNode(spec)
    assert (node.name, node.host, node.port, node.path, node.protocol) == (
        spec, host, port, path, HTTP)


@pytest.mark.parametrize(
    "spec",
    ["http://", "http://h", "http://h:", "http://:80", "http://h:0", "http://h:80/",
     "http://h:80/path", "http://u@h:80", "http://h:80?q", "http://[::1]", "http://[::1]80",
     "http://::1:80", "http://unix:", "http://unix:run/a.sock", "http://unix:/", "http://unix:@",
     "http://h :80"],
)
def test_bad_http_node_addresses(spec):
    with pytest.raises(BadNodeAddress) as caught:
        parseNode(spec)
    assert spec in str(caught.value)


_ENDPOINT_CHARS = "tcpunixhost=port=path:/\\@ab1[]"


@settings(max_examples=500, deadline=None)
@given(st.one_of(
    st.text(max_size=40),
    st.text(alphabet="http:/[]@unix.0123456789٣ab?#", max_size=30).map(lambda t: "http://" + t),
    st.text(alphabet=_ENDPOINT_CHARS, max_size=20).map(lambda t: "tcp:" + t),
    st.text(alphabet=_ENDPOINT_CHARS, max_size=20).map(lambda t: "unix:" + t),
))
@example("http://0:01")
@example("tcp:host=a\\:b:port=80")
def test_fuzz_a_node_address_parses_or_is_a_bad_node_address(spec):
    """
    Any text is a node or a L{BadNodeAddress}; a node's name, the address
    as uWSGI would print it, reads back as the same node.

    (Not for the endpoint strings uWSGI's spelling cannot say: a
    C{unix:} relative path or one that starts with C{@}, a C{tcp:} host
    that starts with C{@}, C{/} or C{[}; their names read as an abstract
    socket, a TCP address, a path or an IPv6 address.)
    """
    try:
        node = parseNode(spec)
    except BadNodeAddress:
        return
    unsayable = (spec.startswith("unix:") and not node.path.startswith("/")) or (
        spec.startswith("tcp:") and node.host[:1] in ("@", "/", "["))
    if not unsayable:
        assert parseNode(node.name) == node
    assert (node.path is None) != (node.host is None)
    assert node.path is not None or 0 < node.port < 65536
    if spec.startswith("http://"):
        assert node.protocol == HTTP and node.name == spec
        # Leading zeros are read as uWSGI's atoi() reads them: "01" is port 1.
        assert node.path is not None or node.port == int(spec.rpartition(":")[2])


def test_mapped_values_may_name_http_nodes():
    a, b = parseNodeValue("http://127.0.0.1:8000|/run/b.sock,5")
    assert (a.protocol, a.port, b.protocol, b.modifier1) == (HTTP, 8000, UWSGI, 5)


def nodes(count):
    return [parseNode(f"127.0.0.1:{3031 + i}") for i in range(count)]


def test_round_robin_is_one_cursor_for_every_key():
    a, b, c = nodes(3)
    forwarder = StaticForwarder([a, b, c], Clock())
    assert [forwarder.pick(k) for k in (b"x", b"y", b"x", b"z")] == [a, b, c, a]


def test_dead_node_is_skipped_for_gracetime_then_used_again():
    clock = Clock()
    a, b = nodes(2)
    forwarder = StaticForwarder([a, b], clock, gracetime=30)
    forwarder.failed(None, a)
    assert [forwarder.pick(None) for _ in range(3)] == [b, b, b]
    clock.advance(29.9)
    assert forwarder.pick(None) == b
    clock.advance(0.1)
    assert {forwarder.pick(None), forwarder.pick(None)} == {a, b}


def test_max_fails_quarantines_after_that_many_failures_within_gracetime():
    """
    With maxFails=3 (nginx's max_fails), two failed connects leave a node
    in the rotation; the third within gracetime puts it in quarantine.
    Failures older than gracetime, or followed by a connect, do not count.
    """
    clock = Clock()
    a, b = nodes(2)
    forwarder = StaticForwarder([a, b], clock, gracetime=30, maxFails=3)
    forwarder.failed(None, a)
    forwarder.failed(None, a)
    assert not forwarder.isDead(a)
    assert {forwarder.pick(None), forwarder.pick(None)} == {a, b}
    clock.advance(31)
    forwarder.failed(None, a)
    assert not forwarder.isDead(a), "the first two are older than gracetime"
    forwarder.failed(None, a)
    forwarder.connected(None, a)
    forwarder.failed(None, a)
    assert not forwarder.isDead(a), "a connect starts the count again"
    forwarder.failed(None, a)
    forwarder.failed(None, a)
    assert forwarder.isDead(a)
    assert [forwarder.pick(None) for _ in range(3)] == [b, b, b]
    default = StaticForwarder([a, b], clock, gracetime=30)
    default.failed(None, a)
    assert default.isDead(a), "one failure is enough by default, as in uWSGI"


def test_a_lone_node_or_the_last_live_one_is_never_quarantined():
    """
    As nginx: a failed connect quarantines a node only while another node
    is out of quarantine; the last one keeps serving.
    """
    clock = Clock()
    (lone,) = nodes(1)
    forwarder = StaticForwarder([lone], clock)
    forwarder.failed(None, lone)
    assert not forwarder.isDead(lone) and forwarder.pick(None) == lone
    a, b = nodes(2)
    forwarder = StaticForwarder([a, b], clock)
    forwarder.failed(None, a)
    forwarder.failed(None, b)
    assert forwarder.isDead(a) and not forwarder.isDead(b)
    assert [forwarder.pick(None) for _ in range(3)] == [b, b, b]


def test_a_request_never_tries_a_node_twice():
    """
    The lone node a forwarder keeps in rotation is not tried again by the
    request it just failed: the plan is over (nginx tries each node once).
    """
    clock = Clock()
    a, b = nodes(2)
    plan = RetryPlan(StaticForwarder([a], clock), b"k", maxRetries=3)
    assert plan.afterFailure(plan.first()) is None
    plan = RetryPlan(StaticForwarder([a, b], clock), b"k", maxRetries=3)
    assert plan.afterFailure(plan.first()) == b
    assert plan.afterFailure(b) is None


def test_a_deferred_pick_of_a_tried_node_ends_the_plan():
    a, b = nodes(2)

    class Later:
        def pick(self, key, client=None):
            return succeed(a)

        def failed(self, key, node):
            pass

    plan = RetryPlan(Later(), b"k", maxRetries=3)
    answers = []
    plan.afterFailure(a).addCallback(answers.append)
    assert answers == [None]


def test_in_cheap_mode_all_nodes_dead_gives_none_and_empty_list_gives_no_node():
    """
    Cheap mode watches availability: there every node may be quarantined,
    as in uWSGI, and a pick then answers L{None}.
    """
    clock = Clock()
    a, b = nodes(2)
    forwarder = StaticForwarder([a, b], clock)
    forwarder.watchAvailability(lambda available: None)
    forwarder.failed(None, a)
    forwarder.failed(None, b)
    assert forwarder.pick(None) is None
    with pytest.raises(NoNodeForKey):
        StaticForwarder([], clock).pick(b"k")


def test_connected_clears_the_quarantine():
    clock = Clock()
    a, b = nodes(2)
    forwarder = StaticForwarder([a, b], clock)
    forwarder.failed(None, a)
    forwarder.connected(None, a)
    assert not forwarder.isDead(a)


def test_retries_walk_the_static_nodes_up_to_max_retries():
    """
    Five dead nodes: exactly four attempts (reference 15.7).
    """
    clock = Clock()
    all5 = nodes(5)
    plan = RetryPlan(StaticForwarder(all5, clock), b"k", maxRetries=3)
    tried = [plan.first()]
    while True:
        node = plan.afterFailure(tried[-1])
        if node is None:
            break
        tried.append(node)
    assert tried == all5[:4]


def test_fallback_nodes_replace_the_other_static_nodes_on_retry():
    clock = Clock()
    a, b = nodes(2)
    f1, f2 = parseNode("/f1.sock"), parseNode("/f2.sock")
    plan = RetryPlan(StaticForwarder([a, b], clock), b"k", maxRetries=3, fallback=(f1, f2))
    assert plan.first() == a
    assert plan.afterFailure(a) == f1
    assert plan.afterFailure(f1) == f2
    assert plan.afterFailure(f2) is None


def test_zero_retries_gives_up_at_once():
    clock = Clock()
    a, b = nodes(2)
    plan = RetryPlan(StaticForwarder([a, b], clock), b"k", maxRetries=0)
    assert plan.afterFailure(plan.first()) is None


# Balancing --to nodes (--algo)


def test_lrc_sends_the_next_request_to_the_node_with_fewest_in_flight():
    """
    With C{lrc}, a node whose long requests (tunnels) ended takes the next
    ones, where round robin would keep alternating.
    """
    clock = Clock()
    a, b = nodes(2)
    forwarder = StaticForwarder([a, b], clock, algo="lrc")
    first = forwarder.pick(None)
    forwarder.connected(None, first)
    second = forwarder.pick(None)
    forwarder.connected(None, second)
    assert {first, second} == {a, b}
    forwarder.released(None, second)
    assert forwarder.pick(None) == second
    forwarder.abandoned(None, second)
    assert forwarder.pick(None) == second


def test_lrc_counts_picks_not_yet_connected():
    clock = Clock()
    a, b = nodes(2)
    forwarder = StaticForwarder([a, b], clock, algo="lrc")
    assert {forwarder.pick(None), forwarder.pick(None)} == {a, b}


def test_a_balanced_list_keeps_the_quarantine_rules():
    clock = Clock()
    a, b = nodes(2)
    forwarder = StaticForwarder([a, b], clock, algo="lrc", gracetime=30)
    picked = forwarder.pick(None)
    forwarder.failed(None, picked)
    other = b if picked == a else a
    assert [forwarder.pick(None) for _ in range(3)] == [other] * 3
    clock.advance(30)
    assert picked in {forwarder.pick(None) for _ in range(4)}


def test_iphash_keeps_a_client_on_one_node():
    clock = Clock()
    forwarder = StaticForwarder(nodes(3), clock, algo="iphash")
    for client in ("10.0.0.1", "10.0.0.2", "::1"):
        chosen = {forwarder.pick(None, client) for _ in range(5)}
        assert len(chosen) == 1


def test_an_unknown_algorithm_is_refused():
    with pytest.raises(ValueError):
        StaticForwarder(nodes(2), Clock(), algo="random")


@pytest.mark.parametrize("spec", ["https://app.example:443", "ftp://h:21", "uwsgi://h:3031"])
def test_a_url_that_is_no_node_is_refused_saying_what_is_meant(spec):
    """
    C{--to https://...} used to parse as host C{https://app.example} and
    fail every request with a DNS error; it is refused at start-up.
    """
    with pytest.raises(BadNodeAddress, match="http://HOST:PORT"):
        parseNode(spec)
