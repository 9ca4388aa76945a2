"""
Sets of client addresses (for C{--trust-forwarded-from} and the like).
"""

import ipaddress


class AddressSet:
    """
    IP networks given as CIDR strings or single addresses.
    """

    def __init__(self, networks=()) -> None:
        self.networks = [ipaddress.ip_network(n, strict=False) for n in networks]
        self._cache = {}

    def __bool__(self) -> bool:
        return bool(self.networks)

    def contains(self, host: str) -> bool:
        """
        Whether C{host} (an IP address as text) is in one of the networks.
        """
        if not self.networks:
            return False
        found = self._cache.get(host)
        if found is None:
            try:
                address = ipaddress.ip_address(host)
            except ValueError:
                return False
            found = any(address in network for network in self.networks)
            if len(self._cache) < 4096:
                self._cache[host] = found
        return found
