"""
What forwarders without health state share.
"""


class StatelessForwarder:
    """
    A forwarder that learns nothing from outcomes: the same key maps to the
    same answer whether its node failed or not (uWSGI re-runs these mappers
    on a retry).
    """

    def failed(self, key, node) -> None:
        pass

    def connected(self, key, node) -> None:
        pass

    def released(self, key, node) -> None:
        pass

    def abandoned(self, key, node) -> None:
        pass
