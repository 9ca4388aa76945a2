"""
SNI names and the files they may name: the name check
(txrouter.tls.names), C{--sni-dir} (txrouter.tls.directory), the
subscribers' files and the selection order (txrouter.tls.sni).
"""

import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet.task import Clock

from tests.logs import named
from tests.tlspki import PrivateCA
from txrouter.tls import directory as directoryModule
from txrouter.tls.directory import SNIDirectory, insideDirectory
from txrouter.tls.names import canonicalServerName
from txrouter.tls.sni import SNISelector, SubscriptionContexts
from txrouter.tls.specs import parseSNI


@pytest.mark.parametrize("sent, canonical", [
    (b"public.local", b"public.local"),
    (b"PUBLIC.LOCAL", b"public.local"),
    (b"public.local.", b"public.local"),
    ("Public.Local", b"public.local"),
    (b"a" * 255, b"a" * 255),
    (b"a" * 255 + b".", b"a" * 255),
    (b"xn--bcher-kva.example", b"xn--bcher-kva.example"),
    (b"_acme-challenge.a-b.c_d", b"_acme-challenge.a-b.c_d"),
    (b"127.0.0.1", b"127.0.0.1"),
])
def test_accepted_names(sent, canonical):
    assert canonicalServerName(sent) == canonical


@pytest.mark.parametrize("sent", [
    None, b"", b".", b"..", b"../decoy", b"a/b", b"/etc/passwd", b"a\\b", b"a..b", b".a", b"a..",
    b"a" * 256, b"a" * 256 + b".", b"public\x00.local", b"public.local\x00", b"a\nb", b"a b",
    b"a\x7f", "bücher.example", "bücher.example".encode(), b"a:443", b"*.example.com", b"a%2fb",
])
def test_refused_names(sent):
    assert canonicalServerName(sent) is None


#: Pieces a hostile name is likely made of.
_PIECES = st.sampled_from([
    b"..", b".", b"/", b"\\", b"\x00", b"decoy", b"outside.local", b"inside.local", b"sni",
    b"A", b"-", b"_", b"crt", b"%2e", b"\xc0\xae", b" ", b"\n",
])
_NAMES = st.one_of(
    st.binary(max_size=300),
    st.lists(_PIECES, max_size=12).map(b"".join),
)


@pytest.fixture(scope="module")
def sniDirectory(tmp_path_factory):
    """
    An SNI directory holding C{inside.local}, a link named
    C{outside.local.crt} pointing out of it, next to C{decoy.crt} and
    C{decoy.key} outside.
    """
    base = tmp_path_factory.mktemp("sni-property")
    ca = PrivateCA(base)
    sni = base / "sni"
    sni.mkdir()
    ca.issue("decoy", ["decoy"])
    ca.issue("inside.local", ["inside.local"], directory=sni)
    os.symlink(base / "decoy.crt", sni / "outside.local.crt")
    os.symlink(base / "decoy.key", sni / "outside.local.key")
    return sni


@settings(max_examples=500, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=_NAMES)
def test_no_accepted_name_resolves_outside_the_directory(sniDirectory, name):
    canonical = canonicalServerName(name)
    if canonical is None:
        return
    assert len(canonical) <= 255 and canonical == canonical.lower()
    assert canonicalServerName(canonical) == canonical
    for forbidden in (b"/", b"\\", b"\x00", b".."):
        assert forbidden not in canonical
    root = str(sniDirectory)
    files = SNIDirectory(root, Clock()).filesFor(canonical)
    if files is not None:
        for path in filter(None, files):
            assert os.path.realpath(path).startswith(root + os.sep)
    assert os.path.dirname(os.path.normpath(os.path.join(root, canonical.decode() + ".crt"))) == root


def test_the_directory_serves_its_own_names_only(sniDirectory):
    directory = SNIDirectory(str(sniDirectory), Clock())
    assert directory.filesFor(b"inside.local") == (
        str(sniDirectory / "inside.local.crt"), str(sniDirectory / "inside.local.key"), None)
    assert directory.filesFor(b"outside.local") is None
    assert directory.filesFor(b"decoy") is None


def test_a_link_inside_the_directory_is_followed(tmp_path):
    ca = PrivateCA(tmp_path)
    sni = tmp_path / "sni"
    sni.mkdir()
    ca.issue("real.local", ["real.local"], directory=sni)
    os.symlink("real.local.crt", sni / "alias.local.crt")
    os.symlink(sni / "real.local.key", sni / "alias.local.key")
    (sni / "alias.local.ca").write_bytes((tmp_path / "ca.crt").read_bytes())
    certificate, key, clientCA = SNIDirectory(str(sni), Clock()).filesFor(b"alias.local")
    assert (certificate, key) == (str(sni / "real.local.crt"), str(sni / "real.local.key"))
    assert clientCA == str(sni / "alias.local.ca")


def test_file_names_that_are_not_canonical_are_never_served(tmp_path):
    ca = PrivateCA(tmp_path)
    ca.issue("Upper.Local", ["upper.local"])
    directory = SNIDirectory(str(tmp_path), Clock())
    assert directory.filesFor(b"upper.local") is None


def test_inside_directory_refuses_paths_out(tmp_path):
    (tmp_path / "a").write_text("x")
    (tmp_path / "d").mkdir()
    root = str(tmp_path)
    assert insideDirectory(root, "a") == str(tmp_path / "a")
    assert insideDirectory(root, str(tmp_path / "a")) == str(tmp_path / "a")
    assert insideDirectory(root, "../" + tmp_path.name + "/a") == str(tmp_path / "a")
    assert insideDirectory(root, "d") is None
    assert insideDirectory(root, "missing") is None
    assert insideDirectory(root, "/etc/passwd") is None
    assert insideDirectory(root, "../x") is None


def test_a_flood_of_unknown_names_lists_the_directory_once_per_interval(tmp_path, monkeypatch):
    listed = []
    realScandir = os.scandir
    monkeypatch.setattr(directoryModule.os, "scandir", lambda p: listed.append(p) or realScandir(p))
    clock = Clock()
    directory = SNIDirectory(str(tmp_path), clock, rescanInterval=10)
    for n in range(1000):
        assert directory.filesFor(b"random%d.example" % n) is None
    assert len(listed) == 1
    clock.advance(10)
    directory.filesFor(b"other.example")
    assert len(listed) == 2


class _Subscriptions:
    """
    What a subscription registry answers for names: C{(sni_key, sni_crt,
    sni_ca)}.
    """

    def __init__(self) -> None:
        self.announced = {}
        self.asked = []

    def __call__(self, name):
        self.asked.append(name)
        return self.announced.get(name)


@pytest.fixture
def pki(tmp_path):
    ca = PrivateCA(tmp_path)
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    return {
        "ca": ca,
        "allowed": allowed,
        "sub": ca.issue("sub.local", ["sub.local"], directory=allowed),
        "outside": ca.issue("outside", ["outside.local"]),
        "static": ca.issue("static", ["sub.local"]),
    }


def _announce(issued, ca=None):
    return (issued.keyPath.encode(), issued.certificatePath.encode(),
            ca.encode() if ca else None)


def _served(context) -> str:
    from cryptography.x509.oid import NameOID
    from OpenSSL import SSL

    certificate = SSL.Connection(context).get_certificate(as_cryptography=True)
    return certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value


def test_subscription_files_inside_the_allowed_directory(pki):
    lookup = _Subscriptions()
    lookup.announced[b"sub.local"] = _announce(pki["sub"])
    contexts = SubscriptionContexts(lookup, [str(pki["allowed"])], clock=Clock())
    context = contexts.contextFor(b"sub.local")
    assert _served(context) == "sub.local"
    assert contexts.contextFor(b"sub.local") is context
    assert contexts.contextFor(b"nobody.local") is None


@pytest.mark.parametrize("announce, reason", [
    (lambda p: _announce(p["outside"]), "is not a file inside the allowed directories"),
    (lambda p: (b"sub.local.key", b"sub.local.crt", None), "is not an absolute path"),
    (lambda p: (b"-----BEGIN PRIVATE KEY-----\n", b"-----BEGIN CERTIFICATE-----\n", None),
     "inline PEM is not accepted"),
    (lambda p: (p["sub"].keyPath.encode(),
                str(p["allowed"] / ".." / "outside.crt").encode(), None),
     "is not a file inside the allowed directories"),
])
def test_subscription_files_elsewhere_are_refused_logged_and_not_retried_at_once(
        pki, events, announce, reason):
    lookup = _Subscriptions()
    lookup.announced[b"sub.local"] = announce(pki)
    clock = Clock()
    contexts = SubscriptionContexts(lookup, [str(pki["allowed"])], clock=clock, retryInterval=30)
    assert contexts.contextFor(b"sub.local") is None
    assert contexts.contextFor(b"sub.local") is None
    [line] = named(events, "sni_context_failed")
    assert reason in line["reason"]
    clock.advance(30)
    assert contexts.contextFor(b"sub.local") is None
    assert len(named(events, "sni_context_failed")) == 2


def test_a_link_out_of_the_allowed_directory_is_refused(pki):
    os.symlink(pki["outside"].certificatePath, pki["allowed"] / "link.crt")
    lookup = _Subscriptions()
    lookup.announced[b"sub.local"] = (
        pki["sub"].keyPath.encode(), str(pki["allowed"] / "link.crt").encode(), None)
    assert SubscriptionContexts(lookup, [str(pki["allowed"])], clock=Clock()).contextFor(
        b"sub.local") is None


def test_new_paths_build_a_new_context(pki):
    lookup = _Subscriptions()
    lookup.announced[b"sub.local"] = _announce(pki["sub"])
    contexts = SubscriptionContexts(lookup, [str(pki["allowed"])], clock=Clock())
    first = contexts.contextFor(b"sub.local")
    other = pki["ca"].issue("other", ["other.local"], directory=pki["allowed"])
    lookup.announced[b"sub.local"] = _announce(other)
    assert _served(contexts.contextFor(b"sub.local")) == "other.local"
    del lookup.announced[b"sub.local"]
    assert contexts.contextFor(b"sub.local") is None
    assert first is not None


def test_static_names_come_before_the_subscribers(pki):
    lookup = _Subscriptions()
    lookup.announced[b"sub.local"] = _announce(pki["sub"])
    lookup.announced[b"only.local"] = _announce(pki["sub"])
    subscriptions = SubscriptionContexts(lookup, [str(pki["allowed"])], clock=Clock())
    static = pki["static"]
    selector = SNISelector(
        names=[parseSNI(f"sub.local {static.certificatePath},{static.keyPath}")],
        subscriptions=subscriptions, clock=Clock())
    assert selector.contextFor(b"sub.local") is selector.contextFor(b"sub.local")
    assert b"sub.local" not in lookup.asked
    assert _served(selector.contextFor(b"only.local")) == "sub.local"


def test_dotsplit_tries_uwsgis_suffixes(pki):
    lookup = _Subscriptions()
    lookup.announced[b".example.com"] = _announce(pki["sub"])
    subscriptions = SubscriptionContexts(lookup, [str(pki["allowed"])], clock=Clock())
    selector = SNISelector(subscriptions=subscriptions, dotsplit=True, clock=Clock())
    assert selector.contextFor(b"a.b.example.com") is not None
    assert lookup.asked == [b"a.b.example.com", b".b.example.com", b".example.com"]
    del lookup.asked[:]
    assert selector.contextFor(b"a.b.c.d.e.f.g.example.com") is None
    assert len(lookup.asked) == 6


def test_the_directory_cache_is_bounded(pki, tmp_path):
    sni = tmp_path / "dir"
    sni.mkdir()
    for name in ("a.local", "b.local", "c.local"):
        pki["ca"].issue(name, [name], directory=sni)
    selector = SNISelector(directory=str(sni), clock=Clock(), cacheSize=2)
    first = selector.contextFor(b"a.local")
    assert selector.contextFor(b"a.local") is first
    selector.contextFor(b"b.local")
    selector.contextFor(b"c.local")
    assert selector.contextFor(b"a.local") is not first
