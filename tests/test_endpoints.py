"""
C{--bind} and C{--stats} endpoint strings: a mistake is a C{ValueError}
found before anything listens, with a hint for uWSGI's spellings.
"""

import pytest

from txrouter.endpoints import checkServerEndpoint


@pytest.mark.parametrize("description, hint", [
    (":8080", "tcp:8080 here"),
    ("127.0.0.1:8080", "tcp:8080:interface=127.0.0.1 here"),
    ("[::1]:8080", r"tcp6:8080:interface=\:\:1 here"),
    ("8080", "a port alone is tcp:8080"),
    ("/run/r.sock", "a unix socket is unix:/run/r.sock"),
])
def test_uwsgi_spellings_get_the_twisted_one(description, hint):
    with pytest.raises(ValueError) as refused:
        checkServerEndpoint(description)
    assert hint in str(refused.value)
    # The hint is right: what it names parses.
    checkServerEndpoint(str(refused.value).split(" is ")[-1].rsplit(" here", 1)[0])


def test_other_mistakes_get_no_hint():
    with pytest.raises(ValueError) as refused:
        checkServerEndpoint("tcp:notaport")
    assert " here)" not in str(refused.value)
