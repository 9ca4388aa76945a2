"""
Looking at captured log events.
"""


def named(events, name: str) -> list:
    """
    The events among C{events} whose stable event name is C{name}.
    """
    return [e for e in events if e.get("event") == name]
