"""
Access to the real uWSGI 2.0.21 captures in shared/reference/uwsgi-captures.

The captures live beside the project (in the steering repository's
C{shared/} folder); a copy of the ones the tests use is kept under
C{tests/fixtures/} so that the suite runs from a lone checkout too.
"""

import binascii
import json
import pathlib

FIXTURES = pathlib.Path(__file__).parent / "fixtures"


def load(name: str):
    """
    The list of C{{t, from, hex}} records of a capture file.
    """
    return json.loads((FIXTURES / name).read_text())


def packets(name: str):
    """
    The raw bytes of each record of a capture file.
    """
    return [binascii.unhexlify(record["hex"]) for record in load(name)]
