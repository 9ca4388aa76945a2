"""Which node serves a request: forwarders, balancing, node health. No sockets here."""
