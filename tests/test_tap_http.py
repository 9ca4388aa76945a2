"""
The command line of txrouter-http builds the router it describes.
"""

import pytest
from twisted.internet.testing import MemoryReactorClock
from twisted.python.usage import UsageError

from txrouter.tap.http import Options, makeService


def parse(*args):
    options = Options()
    options.parseOptions(["--bind", "tcp:0", "--to", "/a.sock", *args])
    return options


@pytest.mark.parametrize(
    "args, expected",
    [((), 0), (("--keepalive",), 60.0), (("--keepalive", "15"), 15.0),
     (("--keepalive=7",), 7.0), (("--timeout", "9", "--keepalive"), 9.0)],
)
def test_keepalive_takes_an_optional_value(args, expected):
    assert parse(*args)["keepalive"] == expected


def test_options_reach_the_router():
    options = parse(
        "--to", "127.0.0.1:3031", "--fallback", "@spare", "--http-var", "A=b",
        "--http-var", "C=d=e", "--max-retries", "1", "--harakiri", "5", "--buffer-size", "8192",
        "--trust-forwarded-from", "10.0.0.0/8", "--silent-errors", "--modifier1", "5",
    )
    service = makeService(options, MemoryReactorClock())
    router = service.router
    assert [n.name for n in router.forwarder.nodes] == ["/a.sock", "127.0.0.1:3031"]
    assert [n.name for n in router.fallback] == ["@spare"]
    assert router.httpVars == [(b"A", b"b"), (b"C", b"d=e")]
    assert (router.maxRetries, router.harakiri, router.bufferSize) == (1, 5, 8192)
    assert router.trusted.contains("10.9.8.7") and not router.trusted.contains("11.0.0.1")
    assert router.silentErrors and router.modifier1 == 5
    assert router.connectTimeout == router.headersTimeout == 60.0


@pytest.mark.parametrize(
    "args",
    [("--http-var", "novalue"), ("--modifier1", "256"), ("--trust-forwarded-from", "x"),
     ("--timeout", "-1"), ("--to", "h:bad")],
)
def test_bad_values_are_usage_errors(args):
    with pytest.raises((UsageError, ValueError)):
        parse(*args)


def test_limit_post_reaches_the_router():
    service = makeService(parse("--limit-post", "10"), MemoryReactorClock())
    assert service.router.limitPost == 10


@pytest.mark.parametrize(
    "args, option",
    [(("--spool-dir", "{missing}"), "--spool-dir"),
     (("--post-buffering-dir", "{missing}"), "--post-buffering-dir"),
     (("--post-buffering", "10", "--post-buffering-dir", "{missing}"), "--post-buffering-dir"),
     (("--spool-dir", "{file}"), "--spool-dir")],
)
def test_unusable_spool_directories_are_usage_errors(tmp_path, args, option):
    """
    Both directories are checked whenever given (a de-chunked body goes to
    --post-buffering-dir when there is no --spool-dir), as the router
    checks them.
    """
    missing, file = tmp_path / "gone", tmp_path / "file"
    file.write_text("")
    args = [arg.format(missing=missing, file=file) for arg in args]
    with pytest.raises(UsageError, match=f"^{option}: {tmp_path}/"):
        parse(*args)
    assert parse("--spool-dir", str(tmp_path), "--post-buffering-dir", str(tmp_path))["spool-dir"]
