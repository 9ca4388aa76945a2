"""
When to start a worker again after it died.
"""

__all__ = ["RestartBackoff"]


class RestartBackoff:
    """
    The delays before restarting a worker that keeps dying: C{first}
    seconds, doubled at each death up to C{maximum}, and C{first} again
    once a worker has lived C{stable} seconds (it died of something else
    than its start-up).
    """

    def __init__(self, first: float = 0.1, maximum: float = 30.0, stable: float = 10.0) -> None:
        self.first = first
        self.maximum = maximum
        self.stable = stable
        self._next = first

    def delay(self, lived: float) -> float:
        """
        The seconds to wait before starting again a worker that died after
        C{lived} seconds.
        """
        if lived >= self.stable:
            self._next = self.first
        delay = self._next
        self._next = min(delay * 2, self.maximum)
        return delay
