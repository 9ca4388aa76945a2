"""
The seams of the routing layer: forwarders, key/value stores, availability.

A forwarder maps a routing key to a node.  Every way uWSGI has to find
nodes (static C{--to}, C{--use-base}/C{--use-pattern}, C{--use-cache},
C{--use-code}, the subscription server) is one L{IForwarder}, so each router
can use any of them.  A forwarder that has a part of the stats document to
show provides L{IStatsSource}: the stats layer reads routing through it,
routing never imports stats.  Nothing here does I/O.
"""

from zope.interface import Attribute, Interface


class NoNodeForKey(LookupError):
    """
    The key maps to no node at all (as opposed to nodes that are all down).
    """


class ForwarderTimeout(Exception):
    """
    A forwarder did not answer in time (user code, say).
    """


class IForwarder(Interface):
    """
    Maps a routing key to a node, and learns from outcomes.
    """

    def pick(key, client):
        """
        Choose the node for one request.

        @param key: the routing key (bytes), e.g. the Host header.
        @param client: the client's address text, or L{None} (used by
            balancers that hash on it).
        @return: a L{txrouter.routing.nodes.Node}; L{None} when the key's
            nodes are all unavailable now; or a Deferred firing with either
            (or failing with one of the exceptions below).
        @raise NoNodeForKey: the key maps to no node.
        @raise ForwarderTimeout: the answer took too long.
        """

    def failed(key, node):
        """
        C{node}, picked for C{key}, could not be connected to.
        """

    def connected(key, node):
        """
        C{node}, picked for C{key}, accepted a connection.
        """

    def released(key, node):
        """
        The request C{node} was serving for C{key} is over (whatever its
        outcome): balancers counting active requests count one less.
        """

    def abandoned(key, node):
        """
        C{node}, picked for C{key}, was given up while the connect to it was
        under way (the client left or the router is stopping): neither a
        failure of the node nor a request it served.
        """


class ITrafficCounting(Interface):
    """
    A forwarder that keeps per-node byte counts (the subscription
    registry, for uWSGI's C{tx}/C{rx} in the stats).
    """

    def transferred(key, node, sent, received):
        """
        C{node}, picked for C{key}, was sent C{sent} bytes and sent back
        C{received} bytes for one request (told once, when it is over).
        """


class IAvailability(Interface):
    """
    A forwarder that knows whether any node is available at all; cheap mode
    stops accepting clients while none is.
    """

    available = Attribute("C{True} while at least one node could be picked.")

    def watchAvailability(callback):
        """
        Call C{callback(available)} each time L{available} changes.
        """


class IKeyValueStore(Interface):
    """
    Where C{--use-cache} looks keys up: the embedded in-memory store by
    default; a shared store may replace it.
    """

    def get(key):
        """
        @param key: bytes.
        @return: the value (text such as C{127.0.0.1:3031,5} or C{a|b}), or
            L{None}; or a Deferred firing with either.
        """


class IRemoteMap(Interface):
    """
    A key/value map held elsewhere (a Redis server) that a
    L{txrouter.routing.shared.SharedStore} keeps a local copy of.
    """

    def read(keys):
        """
        Read some keys.

        @param keys: a list of routing keys (bytes).
        @return: a Deferred firing with their values (bytes, or L{None} for
            a key with none), in the order of C{keys}.
        """


class IStatsSource(Interface):
    """
    Something with a part of the stats document to contribute (the static
    forwarder's C{static_nodes}, the subscription registry's
    C{subscriptions}).
    """

    def statsFields():
        """
        @return: a list of C{(key, value)} pairs for the document, in the
            order uWSGI writes them; values JSON-serialisable.
        """
