"""
L{txrouter.lifecycle.RequestLifecycle}, one request from its parsed head to
its last byte, against a recording front end, scripted forwarders and a
memory reactor whose connects the tests settle.
"""

import gc

from twisted.internet.defer import Deferred, fail
from twisted.internet.error import ConnectionAborted, ConnectionDone, ConnectionRefusedError, UserError
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import LogLevel, globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from tests.logs import named
from tests.test_relay import CountingProducer, NodeTransport
from txrouter.lifecycle import IFrontEnd, RequestLifecycle, RequestSettings
from txrouter.relay import Relay
from txrouter.routing.base import StatelessForwarder
from txrouter.routing.interfaces import ForwarderTimeout, IForwarder, ITrafficCounting, NoNodeForKey
from txrouter.routing.nodes import parseNode
from txrouter.spool import BodySpool, SpoolError
from txrouter.upstream import IUpstreamReceiver, Upstream

KEY = b"app.example"
CLIENT = "10.1.2.3"
HEAD = b"<request head>"

NODE_A = parseNode("10.0.0.1:3031")
NODE_B = parseNode("10.0.0.2:3031")
NODE_C = parseNode("10.0.0.3:3031")
FALLBACK_1 = parseNode("10.0.1.1:3031")
FALLBACK_2 = parseNode("10.0.1.2:3031")


@implementer(IFrontEnd)
class RecordingFrontEnd:
    """
    A front end that records what its lifecycle asks of it, and ends the
    request the way the routers' front ends do: a refusal or an abort
    releases the lifecycle.

    @ivar calls: C{(method name, arguments...)} in order.
    @ivar heads: the head to give per node; a node mapped to L{None} is
        refused (as the FastRouter refuses an HTTP node).
    @ivar streaming: what L{nodeConnected} answers.
    @ivar refuseWhenConnected: refuse from within L{nodeConnected}.
    """

    lifecycle = None
    streaming = False
    refuseWhenConnected = False

    def __init__(self) -> None:
        self.calls = []
        self.heads = {}

    def argumentsOf(self, name: str) -> list:
        """
        The arguments of each call of C{name}.
        """
        return [call[1:] for call in self.calls if call[0] == name]

    @property
    def refusals(self) -> list:
        """
        C{(status, event)} of each refusal.
        """
        return [(status, event) for status, event, detail in self.argumentsOf("refuse")]

    def headFor(self, node):
        self.calls.append(("headFor", node))
        head = self.heads.get(node, HEAD)
        if head is None:
            self.refuse(502, "wrong_protocol", "that node cannot take this request")
        return head

    def nodeConnected(self, upstream):
        self.calls.append(("nodeConnected", upstream))
        if self.refuseWhenConnected:
            self.refuse(503, "changed_mind", "refused once connected")
        return self.streaming

    def responseReceived(self, data):
        self.calls.append(("responseReceived", data))
        self.lifecycle.responseStarted = True

    def responseEnded(self, reason, timedOut):
        self.calls.append(("responseEnded", reason, timedOut))
        self.lifecycle.release()

    def refuse(self, status, event, detail):
        self.calls.append(("refuse", status, event, detail))
        self.lifecycle.release()

    def abort(self, event):
        self.calls.append(("abort", event))
        self.lifecycle.abort()


@implementer(IForwarder)
class ScriptedForwarder(StatelessForwarder):
    """
    A forwarder whose picks follow a script: each answer is a node, L{None},
    a Deferred, or an exception to raise; it records every outcome.

    @ivar picks: the C{(key, client)} of each pick.
    @ivar outcomes: C{(outcome, node)} of each outcome reported.
    """

    def __init__(self, *answers) -> None:
        self.answers = list(answers)
        self.picks = []
        self.outcomes = []

    def pick(self, key, client):
        self.picks.append((key, client))
        answer = self.answers.pop(0)
        if isinstance(answer, BaseException):
            raise answer
        return answer

    def failed(self, key, node):
        self.outcomes.append(("failed", node))

    def connected(self, key, node):
        self.outcomes.append(("connected", node))

    def released(self, key, node):
        self.outcomes.append(("released", node))

    def abandoned(self, key, node):
        self.outcomes.append(("abandoned", node))


@implementer(ITrafficCounting)
class CountingForwarder(ScriptedForwarder):
    """
    A scripted forwarder that keeps byte counts (as the subscription
    registry does).
    """

    def transferred(self, key, node, sent, received):
        self.outcomes.append(("transferred", node, sent, received))


class ConnectingReactor(MemoryReactorClock):
    """
    A memory reactor whose connects the test settles: L{accept} connects
    the node to a L{NodeTransport}, L{refuseConnect} fails it.

    Its connectors know their factory while connecting, and forget it once
    connected, as L{txrouter.transports.connectNode}'s UNIX connector does
    (a factory keeps its connector: the two would make a reference cycle).
    """

    def connectTCP(self, host, port, factory, timeout=30, bindAddress=None):
        connector = super().connectTCP(host, port, factory, timeout, bindAddress)
        connector.factory = factory
        return connector

    def attempted(self) -> list:
        """
        The C{(host, port)} of every connect started, in order.
        """
        return [(host, port) for host, port, *rest in self.tcpClients]

    def accept(self, index: int = -1) -> Upstream:
        """
        The node of connect C{index} accepts: its upstream protocol is
        connected, and returned.
        """
        connector = self.connectors[index]
        protocol = connector.factory.buildProtocol(None)
        connector.factory = None
        protocol.makeConnection(NodeTransport())
        return protocol

    def refuseConnect(self, index: int = -1, reason=None) -> None:
        """
        The connect C{index} fails, as a reactor reports it.
        """
        factory = self.tcpClients[index][2]
        factory.clientConnectionFailed(
            self.connectors[index], Failure(reason or ConnectionRefusedError()),
        )


class FakeSpool:
    """
    A body spool that fails when told to, and sends when the test says.

    @ivar sending: the Deferred of the transfer under way.
    """

    sending = None
    closed = False

    def __init__(self, writeError=None, sendError=None) -> None:
        self.writeError = writeError
        self.sendError = sendError
        self.pieces = []

    def write(self, data: bytes) -> None:
        if self.writeError is not None:
            raise self.writeError
        self.pieces.append(data)

    def finish(self) -> None:
        pass

    def sendTo(self, consumer):
        if self.sendError is not None:
            return fail(self.sendError)
        consumer.write(b"".join(self.pieces))
        self.sending = Deferred()
        return self.sending

    def close(self) -> None:
        self.closed = True


class RecordingAccessLog:
    def __init__(self) -> None:
        self.lines = []

    def log(self, remoteAddr, head, status, size):
        self.lines.append((remoteAddr, head, status, size))


class LifecycleTestCase(SynchronousTestCase):
    def setUp(self):
        self.reactor = ConnectingReactor()
        self.client = StringTransport()
        self.clientProducer = CountingProducer()
        self.events = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    def lifecycle(self, forwarder, frontEnd=None, client=CLIENT, **settings):
        """
        A lifecycle for a request for L{KEY} from C{client}, with a fresh
        relay and, unless given, a fresh L{RecordingFrontEnd}.
        """
        if frontEnd is None:
            frontEnd = RecordingFrontEnd()
        relay = Relay(self.clientProducer, self.client)
        lifecycle = RequestLifecycle(
            RequestSettings(reactor=self.reactor, forwarder=forwarder, **settings),
            frontEnd, relay, KEY, client,
        )
        frontEnd.lifecycle = lifecycle
        self.frontEnd = frontEnd
        return lifecycle


class InterfaceTests(LifecycleTestCase):
    def test_fakes_match_the_interfaces(self):
        """
        The fakes these tests use provide what the lifecycle expects of a
        front end and of a forwarder.
        """
        self.assertTrue(verifyObject(IFrontEnd, RecordingFrontEnd()))
        self.assertTrue(verifyObject(IForwarder, ScriptedForwarder()))
        self.assertTrue(verifyObject(ITrafficCounting, CountingForwarder()))

    def test_lifecycle_receives_upstream_reports(self):
        """
        A lifecycle has every method an upstream reports to.
        """
        lifecycle = self.lifecycle(ScriptedForwarder())
        self.assertTrue(verifyObject(IUpstreamReceiver, lifecycle, tentative=True))

    def test_settings_are_frozen_with_uwsgis_defaults(self):
        """
        Settings are a value: they cannot be changed under running
        requests; unset ones are uWSGI's defaults.
        """
        settings = RequestSettings(reactor=self.reactor, forwarder=None, fallback=[NODE_A])
        self.assertEqual(settings.fallback, (NODE_A,))
        self.assertEqual(
            (settings.maxRetries, settings.connectTimeout, settings.timeout, settings.harakiri),
            (3, 60.0, 60.0, 0),
        )
        with self.assertRaises(AttributeError):
            settings.maxRetries = 5


class ConnectTests(LifecycleTestCase):
    def test_node_connected_with_the_head_then_held_bytes(self):
        """
        The picked node is connected and sent the front end's head, then
        the client bytes held while connecting; the forwarder was asked with
        the key and the client's address, and hears the node connected.
        """
        forwarder = ScriptedForwarder(NODE_A)
        lifecycle = self.lifecycle(forwarder)
        lifecycle.relay.toNode(b"body")
        lifecycle.dispatch()
        self.assertEqual(self.reactor.attempted(), [("10.0.0.1", 3031)])
        self.assertEqual(self.frontEnd.argumentsOf("headFor"), [(NODE_A,)])
        upstream = self.reactor.accept()
        self.assertEqual(upstream.transport.value(), HEAD + b"body")
        self.assertEqual(forwarder.picks, [(KEY, CLIENT)])
        self.assertEqual(forwarder.outcomes, [("connected", NODE_A)])
        self.assertEqual(self.frontEnd.argumentsOf("nodeConnected"), [(upstream,)])
        self.assertIs(lifecycle.node, NODE_A)

    def test_streaming_body(self):
        """
        When the front end says client bytes may still follow, the client
        paces the node connection from then on.
        """
        frontEnd = RecordingFrontEnd()
        frontEnd.streaming = True
        lifecycle = self.lifecycle(ScriptedForwarder(NODE_A), frontEnd)
        lifecycle.dispatch()
        upstream = self.reactor.accept()
        producer = upstream.transport.producer
        producer.pauseProducing()
        producer.stopProducing()
        self.assertEqual(self.clientProducer.calls, ["pause"])
        lifecycle.bodyComplete()
        self.assertIsNone(upstream.transport.producer)

    def test_response_goes_to_the_front_end(self):
        """
        The node's bytes go to the front end; a close after the response
        started is the front end's to judge.
        """
        lifecycle = self.lifecycle(ScriptedForwarder(NODE_A))
        lifecycle.dispatch()
        upstream = self.reactor.accept()
        upstream.dataReceived(b"HTTP/1.1 200 OK\r\n")
        upstream.dataReceived(b"\r\n")
        upstream.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(
            self.frontEnd.argumentsOf("responseReceived"), [(b"HTTP/1.1 200 OK\r\n",), (b"\r\n",)],
        )
        self.assertEqual(self.frontEnd.argumentsOf("responseEnded"), [(None, False)])
        self.assertEqual(self.frontEnd.refusals, [])

    def test_node_picked_later(self):
        """
        A forwarder that answers with a Deferred (user code) has its node
        connected when it fires.
        """
        picking = Deferred()
        lifecycle = self.lifecycle(ScriptedForwarder(picking))
        lifecycle.dispatch()
        self.assertEqual(self.reactor.attempted(), [])
        picking.callback(NODE_B)
        self.assertEqual(self.reactor.attempted(), [("10.0.0.2", 3031)])
        self.reactor.accept()
        self.assertIs(lifecycle.node, NODE_B)


class RefusalTests(LifecycleTestCase):
    def assertRefused(self, status, event):
        self.assertEqual(self.frontEnd.refusals, [(status, event)])
        self.assertTrue(self.frontEnd.lifecycle.finished)

    def test_no_node_for_key(self):
        """
        A key that maps to no node: 404 C{no_node_for_key}, nothing
        connected.
        """
        lifecycle = self.lifecycle(ScriptedForwarder(NoNodeForKey(KEY)))
        lifecycle.dispatch()
        self.assertRefused(404, "no_node_for_key")
        self.assertIn(repr(KEY.decode()), self.frontEnd.argumentsOf("refuse")[0][2])
        self.assertEqual(self.reactor.attempted(), [])

    def test_no_node_for_key_later(self):
        """
        The same when user code says so later.
        """
        picking = Deferred()
        lifecycle = self.lifecycle(ScriptedForwarder(picking))
        lifecycle.dispatch()
        picking.errback(NoNodeForKey(KEY))
        self.assertRefused(404, "no_node_for_key")

    def test_no_key_goes_to_the_fallback(self):
        """
        With C{fallbackOnNoKey}, a key without nodes goes to the first
        fallback node instead.
        """
        lifecycle = self.lifecycle(
            ScriptedForwarder(NoNodeForKey(KEY)),
            fallback=[FALLBACK_1, FALLBACK_2], fallbackOnNoKey=True,
        )
        lifecycle.dispatch()
        self.assertEqual(self.reactor.attempted(), [("10.0.1.1", 3031)])
        self.assertEqual(self.frontEnd.refusals, [])

    def test_all_nodes_dead(self):
        """
        A forwarder whose nodes are all unavailable (it answers L{None}):
        503 C{all_nodes_dead}.
        """
        lifecycle = self.lifecycle(ScriptedForwarder(None))
        lifecycle.dispatch()
        self.assertRefused(503, "all_nodes_dead")
        self.assertEqual(self.reactor.attempted(), [])

    def test_forwarder_timeout(self):
        """
        A forwarder whose answer fails with L{ForwarderTimeout}: 504
        C{forwarder_timeout}.
        """
        picking = Deferred()
        lifecycle = self.lifecycle(ScriptedForwarder(picking))
        lifecycle.dispatch()
        self.assertEqual(self.frontEnd.refusals, [])
        picking.errback(ForwarderTimeout())
        self.assertRefused(504, "forwarder_timeout")
        self.assertEqual(self.reactor.attempted(), [])

    def test_forwarder_raising(self):
        """
        A forwarder raising anything else: 502 C{forwarder_failed}, and the
        traceback in one critical log line for whoever wrote it.
        """

        def brokenUserCode():
            raise RuntimeError("user bug")

        forwarder = ScriptedForwarder()
        forwarder.pick = lambda key, client: brokenUserCode()
        lifecycle = self.lifecycle(forwarder)
        lifecycle.dispatch()
        self.assertRefused(502, "forwarder_failed")
        [event] = named(self.events, "forwarder_failed")
        self.assertEqual(event["log_level"], LogLevel.critical)
        failure = event["log_failure"]
        self.assertIsInstance(failure.value, RuntimeError)
        self.assertIn("brokenUserCode", failure.getTraceback())
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_forwarder_failing_later(self):
        """
        The same for a Deferred failing with anything else: its own
        traceback is logged.
        """
        picking = Deferred()
        lifecycle = self.lifecycle(ScriptedForwarder(picking))
        lifecycle.dispatch()
        try:
            raise ValueError("late user bug")
        except ValueError:
            picking.errback()
        self.assertRefused(502, "forwarder_failed")
        [event] = named(self.events, "forwarder_failed")
        self.assertIn("late user bug", event["log_failure"].getTraceback())
        self.assertIn("test_forwarder_failing_later", event["log_failure"].getTraceback())
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)

    def test_connect_failures_retried_then_502(self):
        """
        A failed connect is retried with the forwarder's next pick up to
        C{maxRetries} times; each failure is the forwarder's to learn from
        and logged; then 502 C{backend_unreachable}.
        """
        forwarder = ScriptedForwarder(NODE_A, NODE_B, NODE_C)
        lifecycle = self.lifecycle(forwarder, maxRetries=2)
        lifecycle.dispatch()
        for attempt in range(3):
            self.assertEqual(len(self.reactor.attempted()), attempt + 1)
            self.assertEqual(self.frontEnd.refusals, [])
            self.reactor.refuseConnect()
        self.assertEqual(
            self.reactor.attempted(), [("10.0.0.1", 3031), ("10.0.0.2", 3031), ("10.0.0.3", 3031)],
        )
        self.assertEqual(
            forwarder.outcomes, [("failed", NODE_A), ("failed", NODE_B), ("failed", NODE_C)],
        )
        self.assertRefused(502, "backend_unreachable")
        self.assertEqual(
            [e["node"] for e in named(self.events, "backend_unreachable")],
            [NODE_A.name, NODE_B.name, NODE_C.name],
        )

    def test_quiet(self):
        """
        With C{quiet}, failed connects are not logged.
        """
        lifecycle = self.lifecycle(ScriptedForwarder(NODE_A), maxRetries=0, quiet=True)
        lifecycle.dispatch()
        self.reactor.refuseConnect()
        self.assertRefused(502, "backend_unreachable")
        self.assertEqual(named(self.events, "backend_unreachable"), [])

    def test_retry_succeeds(self):
        """
        A retry that connects serves the request.
        """
        forwarder = ScriptedForwarder(NODE_A, NODE_B)
        lifecycle = self.lifecycle(forwarder)
        lifecycle.dispatch()
        self.reactor.refuseConnect()
        upstream = self.reactor.accept()
        self.assertEqual(upstream.transport.value(), HEAD)
        self.assertEqual(forwarder.outcomes, [("failed", NODE_A), ("connected", NODE_B)])
        self.assertIs(lifecycle.node, NODE_B)
        self.assertEqual(self.frontEnd.refusals, [])

    def test_connect_timeout_is_a_504(self):
        """
        A connect that does not complete within C{connectTimeout} is given
        up; when the last attempt timed out the refusal is 504
        C{backend_timeout}.
        """
        lifecycle = self.lifecycle(ScriptedForwarder(NODE_A), maxRetries=0, connectTimeout=5)
        lifecycle.dispatch()
        self.reactor.advance(4.9)
        self.assertFalse(self.reactor.connectors[0].stoppedConnecting)
        self.reactor.advance(0.1)
        self.assertTrue(self.reactor.connectors[0].stoppedConnecting)
        # What a reactor reports after stopConnecting.
        self.reactor.refuseConnect(reason=UserError())
        self.assertRefused(504, "backend_timeout")

    def test_fallback_nodes_in_order(self):
        """
        With fallback nodes, the retries walk them in order (the forwarder
        is not asked again), then 502.
        """
        forwarder = ScriptedForwarder(NODE_A)
        lifecycle = self.lifecycle(forwarder, fallback=[FALLBACK_1, FALLBACK_2])
        lifecycle.dispatch()
        for attempt in range(3):
            self.reactor.refuseConnect()
        self.assertEqual(
            self.reactor.attempted(), [("10.0.0.1", 3031), ("10.0.1.1", 3031), ("10.0.1.2", 3031)],
        )
        self.assertEqual(len(forwarder.picks), 1)
        self.assertRefused(502, "backend_unreachable")

    def test_fallback_node_serves(self):
        """
        A fallback node that connects serves the request.
        """
        lifecycle = self.lifecycle(ScriptedForwarder(NODE_A), fallback=[FALLBACK_1, FALLBACK_2])
        lifecycle.dispatch()
        self.reactor.refuseConnect()
        self.reactor.accept()
        self.assertIs(lifecycle.node, FALLBACK_1)
        self.assertEqual(self.frontEnd.argumentsOf("headFor"), [(NODE_A,), (FALLBACK_1,)])

    def test_forwarder_raising_on_a_retry(self):
        """
        A forwarder that raises when asked again after a failed connect:
        the same 502 C{forwarder_failed} as on the first pick.
        """
        lifecycle = self.lifecycle(ScriptedForwarder(NODE_A, RuntimeError("user bug")))
        lifecycle.dispatch()
        self.reactor.refuseConnect()
        self.assertRefused(502, "forwarder_failed")
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_node_closes_before_responding(self):
        """
        A node that closes before any response byte: 502
        C{backend_closed}, logged with the node's name.
        """
        lifecycle = self.lifecycle(ScriptedForwarder(NODE_A))
        lifecycle.dispatch()
        self.reactor.accept().connectionLost(Failure(ConnectionDone()))
        self.assertRefused(502, "backend_closed")
        [event] = named(self.events, "backend_closed")
        self.assertEqual(event["node"], NODE_A.name)

    def test_node_idle_before_responding(self):
        """
        A node silent for C{timeout} seconds before responding is cut: 504
        C{backend_timeout}.
        """
        lifecycle = self.lifecycle(ScriptedForwarder(NODE_A), timeout=30)
        lifecycle.dispatch()
        upstream = self.reactor.accept()
        self.reactor.advance(29)
        self.assertFalse(upstream.transport.disconnecting)
        self.reactor.advance(1)
        self.assertTrue(upstream.transport.disconnecting)
        upstream.connectionLost(Failure(ConnectionAborted()))
        self.assertRefused(504, "backend_timeout")

    def test_harakiri(self):
        """
        A node still busy C{harakiri} seconds into the exchange is cut too,
        however active.
        """
        lifecycle = self.lifecycle(ScriptedForwarder(NODE_A), timeout=30, harakiri=10)
        lifecycle.dispatch()
        upstream = self.reactor.accept()
        for second in range(9):
            self.reactor.advance(1)
            lifecycle.relay.toNode(b".")
        self.assertFalse(upstream.transport.disconnecting)
        self.reactor.advance(1)
        self.assertTrue(upstream.transport.disconnecting)
        upstream.connectionLost(Failure(ConnectionAborted()))
        self.assertRefused(504, "backend_timeout")

    def test_node_idle_after_responding(self):
        """
        A node that times out after the response started is not refused
        (the client has part of a response): the front end hears it.
        """
        lifecycle = self.lifecycle(ScriptedForwarder(NODE_A), timeout=30)
        lifecycle.dispatch()
        upstream = self.reactor.accept()
        upstream.dataReceived(b"HTTP/1.1 200 OK\r\n")
        self.reactor.advance(30)
        upstream.connectionLost(Failure(ConnectionAborted()))
        self.assertEqual(self.frontEnd.argumentsOf("responseEnded"), [("timed out", True)])
        self.assertEqual(self.frontEnd.refusals, [])


class ReleaseTests(LifecycleTestCase):
    def test_release_cancels_the_pending_pick(self):
        """
        A request released while its forwarder is still answering cancels
        that answer (user code can stop working on it).
        """
        cancelled = []
        picking = Deferred(cancelled.append)
        forwarder = ScriptedForwarder(picking)
        lifecycle = self.lifecycle(forwarder)
        lifecycle.dispatch()
        lifecycle.release()
        self.assertEqual(cancelled, [picking])
        self.assertEqual(self.reactor.attempted(), [])
        self.assertEqual(self.frontEnd.calls, [])
        # The cancellation is no error of the request's.
        results = []
        picking.addBoth(results.append)
        self.assertEqual(results, [None])

    def test_node_picked_after_release(self):
        """
        A node that user code gives after the request was released is not
        connected, and nobody hears of it.
        """
        picking = Deferred()
        forwarder = ScriptedForwarder(picking)
        lifecycle = self.lifecycle(forwarder)
        lifecycle.dispatch()
        lifecycle.release()
        picking.callback(NODE_A)
        self.assertEqual(self.reactor.attempted(), [])
        self.assertEqual(self.frontEnd.calls, [])
        self.assertEqual(forwarder.outcomes, [])
        # Nothing failed along the way either.
        results = []
        picking.addBoth(results.append)
        self.assertEqual(results, [None])

    def test_release_while_connecting(self):
        """
        A request released while its node is being connected stops the
        connect, and the forwarder hears the node abandoned (not failed);
        what the reactor says afterwards is ignored.
        """
        forwarder = ScriptedForwarder(NODE_A)
        lifecycle = self.lifecycle(forwarder)
        lifecycle.dispatch()
        lifecycle.release()
        self.assertTrue(self.reactor.connectors[0].stoppedConnecting)
        self.assertEqual(forwarder.outcomes, [("abandoned", NODE_A)])
        self.reactor.refuseConnect(reason=UserError())
        self.assertEqual(forwarder.outcomes, [("abandoned", NODE_A)])
        self.assertEqual(self.frontEnd.refusals, [])

    def test_release_while_connecting_on_a_memory_reactor(self):
        """
        The lifecycle runs on Twisted's memory reactor (as the design wants
        of library code), whose connectors are C{IConnector}s and no more:
        releasing a request while its node is being connected stops the
        connect there too.
        """
        self.reactor = MemoryReactorClock()
        forwarder = ScriptedForwarder(NODE_A)
        lifecycle = self.lifecycle(forwarder)
        lifecycle.dispatch()
        lifecycle.release()
        self.assertTrue(self.reactor.connectors[0].stoppedConnecting)
        self.assertEqual(forwarder.outcomes, [("abandoned", NODE_A)])

    def test_head_refused(self):
        """
        A front end that refuses the picked node (L{IFrontEnd.headFor}
        returns L{None}): the node is abandoned, not connected, and no
        other node is tried.
        """
        frontEnd = RecordingFrontEnd()
        frontEnd.heads[NODE_A] = None
        forwarder = ScriptedForwarder(NODE_A, NODE_B)
        lifecycle = self.lifecycle(forwarder, frontEnd)
        lifecycle.dispatch()
        self.assertEqual(self.reactor.attempted(), [])
        self.assertEqual(forwarder.outcomes, [("abandoned", NODE_A)])
        self.assertEqual(frontEnd.refusals, [(502, "wrong_protocol")])
        self.assertEqual(len(forwarder.picks), 1)

    def test_release_closes_the_node_connection(self):
        """
        Releasing a served request tells the forwarder the node is released
        and closes the node connection; the front end hears nothing more
        from it.
        """
        forwarder = ScriptedForwarder(NODE_A)
        lifecycle = self.lifecycle(forwarder, timeout=30)
        lifecycle.dispatch()
        upstream = self.reactor.accept()
        upstream.dataReceived(b"response")
        lifecycle.release()
        self.assertEqual(forwarder.outcomes, [("connected", NODE_A), ("released", NODE_A)])
        self.assertTrue(upstream.transport.disconnecting)
        calls = list(self.frontEnd.calls)
        upstream.connectionLost(Failure(ConnectionDone()))
        self.reactor.advance(60)
        self.assertEqual(self.frontEnd.calls, calls)

    def test_release_twice(self):
        """
        Releasing again does nothing: the forwarder hears each outcome
        once.
        """
        forwarder = CountingForwarder(NODE_A)
        lifecycle = self.lifecycle(forwarder)
        lifecycle.dispatch()
        self.reactor.accept()
        lifecycle.release()
        lifecycle.release()
        self.assertEqual(
            [outcome[0] for outcome in forwarder.outcomes], ["connected", "released", "transferred"],
        )

    def test_abort_cuts_the_node_connection(self):
        """
        Aborting releases the request and cuts the node connection.
        """
        forwarder = ScriptedForwarder(NODE_A)
        lifecycle = self.lifecycle(forwarder)
        lifecycle.dispatch()
        upstream = self.reactor.accept()
        lifecycle.abort()
        self.assertTrue(lifecycle.finished)
        self.assertTrue(upstream.transport.disconnected)
        self.assertEqual(forwarder.outcomes, [("connected", NODE_A), ("released", NODE_A)])

    def test_bytes_counted_for_a_counting_forwarder(self):
        """
        A forwarder that keeps byte counts is told, once the request is
        over, what the node was sent (head and body) and sent back.
        """
        forwarder = CountingForwarder(NODE_A)
        lifecycle = self.lifecycle(forwarder)
        lifecycle.relay.toNode(b"held ")
        lifecycle.dispatch()
        upstream = self.reactor.accept()
        lifecycle.relay.toNode(b"body")
        upstream.dataReceived(b"response")
        upstream.dataReceived(b"!")
        lifecycle.release()
        self.assertEqual(
            forwarder.outcomes,
            [
                ("connected", NODE_A),
                ("released", NODE_A),
                ("transferred", NODE_A, len(HEAD + b"held body"), len(b"response!")),
            ],
        )

    def test_refused_once_connected(self):
        """
        A front end may end the request as its node connects (from
        L{IFrontEnd.nodeConnected}): the forwarder hears the node released,
        and the node connection is closed, not left open until the node
        gives up.
        """
        frontEnd = RecordingFrontEnd()
        frontEnd.refuseWhenConnected = True
        forwarder = ScriptedForwarder(NODE_A)
        lifecycle = self.lifecycle(forwarder, frontEnd)
        lifecycle.dispatch()
        upstream = self.reactor.accept()
        self.assertEqual(frontEnd.refusals, [(503, "changed_mind")])
        self.assertTrue(lifecycle.finished)
        self.assertEqual(forwarder.outcomes, [("connected", NODE_A), ("released", NODE_A)])
        self.assertTrue(upstream.transport.disconnecting)

    def test_refused_once_connected_counted(self):
        """
        The same with a forwarder that keeps byte counts: it is told the
        head was sent.
        """
        frontEnd = RecordingFrontEnd()
        frontEnd.refuseWhenConnected = True
        forwarder = CountingForwarder(NODE_A)
        lifecycle = self.lifecycle(forwarder, frontEnd)
        lifecycle.dispatch()
        self.reactor.accept()
        self.assertEqual(
            forwarder.outcomes,
            [("connected", NODE_A), ("released", NODE_A), ("transferred", NODE_A, len(HEAD), 0)],
        )

    def test_front_end_forgotten(self):
        """
        A released lifecycle no longer refers to its front end, which
        refers to it: requests leave no reference cycle for the garbage
        collector.
        """
        gc.collect()
        gc.set_debug(gc.DEBUG_SAVEALL)
        self.addCleanup(gc.garbage.clear)
        self.addCleanup(gc.set_debug, 0)
        forwarder = CountingForwarder(NODE_A)
        frontEnd = RecordingFrontEnd()
        frontEnd.streaming = True
        lifecycle = self.lifecycle(forwarder, frontEnd, timeout=30, connectTimeout=5)
        lifecycle.dispatch()
        upstream = self.reactor.accept()
        upstream.dataReceived(b"partial ")
        lifecycle.relay.fromNode(b"partial ")
        lifecycle.release()
        self.assertIsNone(lifecycle.frontEnd)
        # What the reactor does once the closed connection is gone.
        upstream.connectionLost(Failure(ConnectionDone()))
        del self.reactor.tcpClients[:], self.reactor.connectors[:]
        del lifecycle, frontEnd, upstream, self.frontEnd
        gc.collect()
        kinds = (RequestLifecycle, RecordingFrontEnd, Relay, Upstream)
        self.assertEqual([o for o in gc.garbage if isinstance(o, kinds)], [])


class SpoolTests(LifecycleTestCase):
    def test_spooled_body_sent_after_the_head(self):
        """
        A spooled body is sent from the spool once the node is connected,
        after the head; a client half-close is passed on after it.
        """
        spool = FakeSpool()
        lifecycle = self.lifecycle(ScriptedForwarder(NODE_A))
        lifecycle.spoolBody(spool)
        self.assertTrue(lifecycle.spooled([b"spooled ", b"body"], True))
        lifecycle.relay.clientEOF()
        lifecycle.dispatch()
        upstream = self.reactor.accept()
        self.assertEqual(upstream.transport.value(), HEAD + b"spooled body")
        self.assertIsNone(upstream.transport.writeClosedAfter)
        spool.sending.callback(None)
        self.assertEqual(upstream.transport.writeClosedAfter, HEAD + b"spooled body")
        lifecycle.release()
        self.assertTrue(spool.closed)

    def test_body_spool_in_memory(self):
        """
        The same with the real L{BodySpool}, which sends a small body at
        once.
        """
        lifecycle = self.lifecycle(ScriptedForwarder(NODE_A))
        lifecycle.spoolBody(BodySpool())
        lifecycle.spooled([b"abc"], False)
        lifecycle.spooled([b"def"], True)
        lifecycle.dispatch()
        upstream = self.reactor.accept()
        self.assertEqual(upstream.transport.value(), HEAD + b"abcdef")

    def test_spool_failure(self):
        """
        A body that cannot be stored: one error line for the operator, who
        has a disk or directory to fix, and a 503 C{spool_failed} that does
        not tell the client where.
        """
        spool = FakeSpool(writeError=SpoolError("/var/spool/tx", "No space left on device"))
        lifecycle = self.lifecycle(ScriptedForwarder(NODE_A))
        lifecycle.spoolBody(spool)
        self.assertFalse(lifecycle.spooled([b"body"], False))
        self.assertEqual(
            self.frontEnd.argumentsOf("refuse"),
            [(503, "spool_failed", "the request body could not be stored")],
        )
        [event] = named(self.events, "spool_failed")
        self.assertEqual(event["log_level"], LogLevel.error)
        self.assertEqual(event["error"], "/var/spool/tx: No space left on device")
        self.assertEqual(event["client"], CLIENT)
        lifecycle.spoolFailed(spool.writeError)
        self.assertEqual(len(named(self.events, "spool_failed")), 1)
        self.assertEqual(len(self.frontEnd.refusals), 1)
        self.assertTrue(spool.closed)

    def test_spool_read_back_failure(self):
        """
        A body that cannot be read back once the node is connected: the
        same 503, and the node connection is closed.
        """
        spool = FakeSpool(sendError=SpoolError(None, "Input/output error"))
        lifecycle = self.lifecycle(ScriptedForwarder(NODE_A))
        lifecycle.spoolBody(spool)
        lifecycle.spooled([b"body"], True)
        lifecycle.dispatch()
        upstream = self.reactor.accept()
        self.assertEqual(self.frontEnd.refusals, [(503, "spool_failed")])
        self.assertEqual(len(named(self.events, "spool_failed")), 1)
        self.assertTrue(upstream.transport.disconnecting)

    def test_spool_transfer_stopped_by_the_end_of_the_request(self):
        """
        A transfer that fails because the request ended otherwise is no
        spool failure.
        """
        spool = FakeSpool()
        lifecycle = self.lifecycle(ScriptedForwarder(NODE_A))
        lifecycle.spoolBody(spool)
        lifecycle.spooled([b"body"], True)
        lifecycle.dispatch()
        self.reactor.accept()
        lifecycle.release()
        spool.sending.errback(Exception("Consumer asked us to stop producing"))
        self.assertEqual(named(self.events, "spool_failed"), [])
        self.assertEqual(self.frontEnd.refusals, [])


class BodyDeadlineTests(LifecycleTestCase):
    def test_body_timeout_before_the_response(self):
        """
        C{timeout} seconds without body bytes before any response: 408
        C{body_timeout}.
        """
        lifecycle = self.lifecycle(ScriptedForwarder(NODE_A))
        lifecycle.watchBody(10)
        lifecycle.dispatch()
        self.reactor.accept()
        self.reactor.advance(9)
        self.assertEqual(self.frontEnd.refusals, [])
        self.reactor.advance(1)
        self.assertEqual(self.frontEnd.refusals, [(408, "body_timeout")])

    def test_body_activity_restarts_the_deadline(self):
        """
        Body bytes restart the deadline.
        """
        lifecycle = self.lifecycle(ScriptedForwarder(NODE_A))
        lifecycle.watchBody(10)
        self.reactor.advance(6)
        lifecycle.bodyActivity(1)
        self.reactor.advance(6)
        self.assertEqual(self.frontEnd.refusals, [])
        self.reactor.advance(4)
        self.assertEqual(self.frontEnd.refusals, [(408, "body_timeout")])

    def test_body_timeout_after_the_response_started(self):
        """
        Once part of a response went to the client, a stalled body cannot
        be refused: the request is aborted.
        """
        lifecycle = self.lifecycle(ScriptedForwarder(NODE_A))
        lifecycle.watchBody(10)
        lifecycle.dispatch()
        upstream = self.reactor.accept()
        upstream.dataReceived(b"HTTP/1.1 200 OK\r\n")
        self.reactor.advance(10)
        self.assertEqual(self.frontEnd.argumentsOf("abort"), [("body_timeout",)])
        self.assertEqual(self.frontEnd.refusals, [])
        self.assertTrue(upstream.transport.disconnected)

    def test_complete_body_stops_the_deadline(self):
        """
        Once the whole body came, the deadline is off; so it is once the
        request is released.
        """
        completed = self.lifecycle(ScriptedForwarder(NODE_A))
        completed.watchBody(10)
        completed.bodyComplete()
        released = self.lifecycle(ScriptedForwarder(NODE_A))
        released.watchBody(10)
        released.release()
        self.reactor.advance(20)
        self.assertFalse(completed.finished)
        self.assertEqual(completed.frontEnd.calls, [])
        self.assertEqual(self.frontEnd.calls, [])


class AccessLogTests(LifecycleTestCase):
    def test_access_log(self):
        """
        The access log gets the client's address, the request, the status
        and the size.
        """
        accessLog = RecordingAccessLog()
        lifecycle = self.lifecycle(ScriptedForwarder(NODE_A), accessLog=accessLog)
        lifecycle.logAccess("head", 200, 42)
        unix = self.lifecycle(ScriptedForwarder(NODE_A), client=None, accessLog=accessLog)
        unix.logAccess("head", 404, 0)
        self.assertEqual(accessLog.lines, [(b"10.1.2.3", "head", 200, 42), (b"", "head", 404, 0)])

    def test_no_access_log(self):
        """
        Without an access log, nothing is written (nor fails).
        """
        self.lifecycle(ScriptedForwarder(NODE_A)).logAccess("head", 200, 42)
