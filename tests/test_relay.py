"""
L{txrouter.relay.Relay}, the byte pipe between a client and a node, against
fake transports.
"""

from twisted.internet.interfaces import IPushProducer
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from txrouter.limits import PENDING_LIMIT
from txrouter.relay import Relay


@implementer(IPushProducer)
class CountingProducer:
    """
    A client's reading side: counts the pauses and resumptions it is asked
    for, as a session that nests pauses would.

    @ivar paused: pauses not yet matched by a resumption.
    """

    def __init__(self) -> None:
        self.calls = []

    @property
    def paused(self) -> int:
        return self.calls.count("pause") - self.calls.count("resume")

    def pauseProducing(self) -> None:
        self.calls.append("pause")

    def resumeProducing(self) -> None:
        self.calls.append("resume")

    def stopProducing(self) -> None:
        self.calls.append("stop")


class PacedByTheClient:
    """
    The node connection's producer hands pauses and resumptions to the
    client's reading side, and the node connection ending (Twisted stops
    its producer) does not stop the client.
    """

    def assertPacedByTheClient(self):
        producer = self.upstream.transport.producer
        self.assertIsNotNone(producer)
        before = list(self.producer.calls)
        producer.pauseProducing()
        producer.resumeProducing()
        producer.stopProducing()
        self.assertEqual(self.producer.calls, before + ["pause", "resume"])


class NodeTransport(StringTransport):
    """
    A node connection's transport that can be half-closed.

    @ivar writeClosedAfter: the bytes written when the write side was
        closed, or L{None} while it is open.
    """

    writeClosedAfter = None

    def loseWriteConnection(self) -> None:
        if self.writeClosedAfter is None:
            self.writeClosedAfter = self.value()


class FakeUpstream:
    """
    What a relay uses of a L{txrouter.upstream.Upstream}: C{write}, which
    counts (and, in the real one, touches the idle timer), and its
    transport.
    """

    def __init__(self) -> None:
        self.transport = NodeTransport()
        self.sent = 0

    def write(self, data: bytes) -> None:
        self.sent += len(data)
        self.transport.write(data)


class RelayTestCase(SynchronousTestCase):
    def setUp(self):
        self.producer = CountingProducer()
        self.client = StringTransport()
        self.upstream = FakeUpstream()
        self.relay = Relay(self.producer, self.client)

    def test_fakes(self):
        """
        The fake client producer is a push producer.
        """
        self.assertTrue(verifyObject(IPushProducer, self.producer))


class ClientToNodeTests(RelayTestCase, PacedByTheClient):
    def test_bytes_held_until_attached_arrive_in_order(self):
        """
        Client bytes sent while the node is being connected reach it once
        it is attached, in order, before any that come after.
        """
        self.relay.toNode(b"one ")
        self.relay.toNode(b"two ")
        self.assertEqual(self.upstream.transport.value(), b"")
        self.relay.attach(self.upstream, False)
        self.relay.toNode(b"three")
        self.assertEqual(self.upstream.transport.value(), b"one two three")

    def test_bytes_go_through_the_upstream(self):
        """
        Once attached, client bytes are written through the upstream (which
        counts them and restarts its idle timer), not around it.
        """
        self.relay.toNode(b"held")
        self.relay.attach(self.upstream, True)
        self.relay.toNode(b"streamed")
        self.assertEqual(self.upstream.sent, len(b"heldstreamed"))

    def test_client_paused_past_the_pending_limit(self):
        """
        Up to L{PENDING_LIMIT} held bytes the client keeps being read; past
        it the client is paused, once, and it is resumed, once, when the
        node is attached, after the held bytes went to the node.
        """
        self.relay.toNode(b"x" * PENDING_LIMIT)
        self.assertEqual(self.producer.calls, [])
        self.relay.toNode(b"y")
        self.assertEqual(self.producer.calls, ["pause"])
        self.relay.toNode(b"z")
        self.assertEqual(self.producer.calls, ["pause"])
        self.relay.attach(self.upstream, False)
        self.assertEqual(self.producer.calls, ["pause", "resume"])
        self.assertEqual(self.upstream.transport.value(), b"x" * PENDING_LIMIT + b"yz")

    def test_streaming_makes_the_client_the_nodes_producer(self):
        """
        Attached with C{streaming}, the client's producer is the streaming
        producer of the node's transport, so a slow node slows the client;
        when the body is done it is unregistered.
        """
        self.relay.attach(self.upstream, True)
        self.assertPacedByTheClient()
        self.assertTrue(self.upstream.transport.streaming)
        self.relay.clientDone()
        self.assertIsNone(self.upstream.transport.producer)

    def test_not_streaming_registers_nothing(self):
        """
        Attached without C{streaming} (nothing more is expected from the
        client), the node's transport has no producer, and C{clientDone}
        has nothing to undo.
        """
        self.relay.attach(self.upstream, False)
        self.assertIsNone(self.upstream.transport.producer)
        self.relay.clientDone()
        self.assertIsNone(self.upstream.transport.producer)

    def test_streaming_is_wired_once(self):
        """
        Asking for streaming again registers nothing more (a transport
        refuses a second producer).
        """
        self.relay.attach(self.upstream, True)
        self.relay.streamFromClient()
        self.assertPacedByTheClient()

    def test_stream_from_client_later(self):
        """
        A front end that learns later that the client has more to send (an
        upgrade, say) starts streaming then; before a node is attached that
        is a no-op.
        """
        self.relay.streamFromClient()
        self.relay.attach(self.upstream, False)
        self.assertIsNone(self.upstream.transport.producer)
        self.relay.streamFromClient()
        self.assertPacedByTheClient()


class HalfCloseTests(RelayTestCase):
    def test_eof_after_attach(self):
        """
        A client's half-close goes to the node at once once attached.
        """
        self.relay.attach(self.upstream, True)
        self.relay.toNode(b"body")
        self.relay.clientEOF()
        self.assertEqual(self.upstream.transport.writeClosedAfter, b"body")

    def test_eof_before_attach(self):
        """
        A half-close that comes while the node is being connected is passed
        on when it is attached, after the held bytes; the client is not
        made the node's producer then, since it has nothing more to send.
        """
        self.relay.toNode(b"body")
        self.relay.clientEOF()
        self.relay.attach(self.upstream, True)
        self.assertEqual(self.upstream.transport.writeClosedAfter, b"body")
        self.assertIsNone(self.upstream.transport.producer)

    def test_eof_waits_for_the_spool(self):
        """
        While a spooled body is being sent, a half-close waits for it:
        L{Relay.spoolSent} passes it on.
        """
        self.relay.attach(self.upstream, False, spooled=True)
        self.upstream.write(b"spooled ")
        self.relay.clientEOF()
        self.assertIsNone(self.upstream.transport.writeClosedAfter)
        self.upstream.write(b"body")
        self.relay.spoolSent()
        self.assertEqual(self.upstream.transport.writeClosedAfter, b"spooled body")

    def test_eof_before_attach_waits_for_the_spool(self):
        """
        A half-close that came before the node was attached waits for the
        spooled body too.
        """
        self.relay.clientEOF()
        self.relay.attach(self.upstream, False, spooled=True)
        self.assertIsNone(self.upstream.transport.writeClosedAfter)
        self.upstream.write(b"body")
        self.relay.spoolSent()
        self.assertEqual(self.upstream.transport.writeClosedAfter, b"body")

    def test_spool_sent_without_eof(self):
        """
        A sent spool does not half-close a client that did not.
        """
        self.relay.attach(self.upstream, False, spooled=True)
        self.relay.spoolSent()
        self.assertIsNone(self.upstream.transport.writeClosedAfter)
        self.relay.clientEOF()
        self.assertEqual(self.upstream.transport.writeClosedAfter, b"")


class NodeToClientTests(RelayTestCase):
    def setUp(self):
        super().setUp()
        self.relay.attach(self.upstream, False)

    def test_last_bytes_never_wait_on_the_client(self):
        """
        A response that arrives whole is written without making the node
        the client's producer.
        """
        self.relay.fromNode(b"whole response", last=True)
        self.assertEqual(self.client.value(), b"whole response")
        self.assertIsNone(self.client.producer)

    def test_partial_bytes_make_the_node_the_clients_producer(self):
        """
        From the first bytes of a response that has more to come, the
        node's transport is the streaming producer of the client's, so that
        a slow client slows the node; it is registered once.
        """
        self.relay.fromNode(b"first ")
        self.assertIs(self.client.producer, self.upstream.transport)
        self.assertTrue(self.client.streaming)
        self.relay.fromNode(b"second ")
        self.relay.fromNode(b"last", last=True)
        self.assertIs(self.client.producer, self.upstream.transport)
        self.assertEqual(self.client.value(), b"first second last")

    def test_sent_to_client_counts(self):
        """
        L{Relay.sentToClient} is the number of bytes written to the client.
        """
        self.assertEqual(self.relay.sentToClient, 0)
        self.relay.fromNode(b"12345")
        self.relay.fromNode(b"678", last=True)
        self.assertEqual(self.relay.sentToClient, 8)
        self.assertEqual(len(self.client.value()), 8)


class DetachTests(RelayTestCase):
    def test_detach_undoes_both_producers(self):
        """
        Detaching unregisters the client from the node and the node from the
        client, forgets the node, and returns it for its owner to close.
        """
        self.relay.attach(self.upstream, True)
        self.relay.fromNode(b"part")
        self.assertIs(self.relay.detach(), self.upstream)
        self.assertIsNone(self.relay.upstream)
        self.assertIsNone(self.upstream.transport.producer)
        self.assertIsNone(self.client.producer)

    def test_detach_after_client_done(self):
        """
        A producer already unregistered is not unregistered twice (a
        transport raises then).
        """
        self.relay.attach(self.upstream, True)
        self.relay.clientDone()
        self.assertIs(self.relay.detach(), self.upstream)
        self.assertIsNone(self.upstream.transport.producer)

    def test_detach_resumes_a_paused_client(self):
        """
        A client paused while its node was being connected is resumed when
        the request is given up, so that its connection is not stuck; its
        held bytes are dropped.
        """
        self.relay.toNode(b"x" * (PENDING_LIMIT + 1))
        self.assertEqual(self.producer.paused, 1)
        self.assertIsNone(self.relay.detach())
        self.assertEqual(self.producer.paused, 0)
        self.relay.attach(self.upstream, False)
        self.assertEqual(self.upstream.transport.value(), b"")
        self.assertEqual(self.producer.paused, 0)

    def test_detach_of_a_closed_node(self):
        """
        A node connection whose transport is gone is detached without
        touching it.
        """
        self.relay.attach(self.upstream, True)
        self.upstream.transport = None
        self.assertIs(self.relay.detach(), self.upstream)

    def test_detach_twice(self):
        """
        Detaching again has nothing left to undo.
        """
        self.relay.attach(self.upstream, True)
        self.relay.fromNode(b"part")
        self.relay.detach()
        self.assertIsNone(self.relay.detach())
