"""
Round robin per key, for forwarders whose mapped value lists several nodes.
"""

#: Keys whose counters are remembered before they all start again at 0.
_KEY_LIMIT = 4096


class KeyRotation:
    """
    A hit counter per key (uWSGI's cache item hit counter): each pick of a
    key takes the next of its nodes.  The counters are bounded, so a flood
    of distinct keys cannot grow memory.
    """

    def __init__(self) -> None:
        self._hits = {}

    def choose(self, key, nodes):
        """
        @param nodes: a non-empty sequence.
        @return: the next of C{nodes} for C{key}.
        """
        if len(nodes) == 1:
            return nodes[0]
        hits = self._hits
        count = hits.get(key, 0)
        if count == 0 and len(hits) >= _KEY_LIMIT:
            hits.clear()
        hits[key] = count + 1
        return nodes[count % len(nodes)]
