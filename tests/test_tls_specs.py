"""
uWSGI's spellings of TLS listeners and SNI contexts (txrouter.tls.specs):
the values they parse into, and a ValueError naming the option for each
mistake.
"""

import pytest

from txrouter.tls.specs import (
    SNISpec,
    TLSFiles,
    TLSListenerSpec,
    parseHTTPS,
    parseHTTPS2,
    parseSNI,
    parseSNIRegexp,
    parseSSLRouter,
    parseSSLRouter2,
    tcpEndpoint,
)


@pytest.mark.parametrize("address, endpoint", [
    (":8443", "tcp:8443"),
    ("*:8443", "tcp:8443"),
    ("0.0.0.0:443", "tcp:443:interface=0.0.0.0"),
    ("127.0.0.1:8443", "tcp:8443:interface=127.0.0.1"),
    ("localhost:8443", "tcp:8443:interface=localhost"),
    ("[::1]:8443", "tcp6:8443:interface=\\:\\:1"),
    ("[::]:0", "tcp6:0:interface=\\:\\:"),
])
def test_uwsgi_addresses_become_tcp_endpoints(address, endpoint):
    assert tcpEndpoint(address) == endpoint


@pytest.mark.parametrize("address", [
    "8443", "/run/r.sock", ":", ":port", ":65536", "::1:8443", "[::1]8443", "[nope]:1",
    "a b:1", ":-1", ":８４４３",
])
def test_addresses_that_are_not_tcp_are_refused(address):
    with pytest.raises(ValueError):
        tcpEndpoint(address)


def test_https_positional():
    assert parseHTTPS(":8443,/c/server.crt,/c/server.key") == TLSListenerSpec(
        address=":8443", endpoint="tcp:8443",
        files=TLSFiles(certificate="/c/server.crt", key="/c/server.key"))


def test_https_ciphers_and_an_optional_client_ca():
    spec = parseHTTPS("127.0.0.1:8443,s.crt,s.key,HIGH:!aNULL,ca.pem")
    assert spec.files == TLSFiles("s.crt", "s.key", "HIGH:!aNULL", "ca.pem", False)


def test_https_client_ca_with_a_bang_requires_a_certificate():
    spec = parseHTTPS(":8443,s.crt,s.key,HIGH,!ca.pem")
    assert spec.files.clientCA == "ca.pem"
    assert spec.files.clientCertificateRequired


def test_https_empty_ciphers_field_means_the_default():
    spec = parseHTTPS(":8443,s.crt,s.key,,ca.pem")
    assert spec.files.ciphers is None and spec.files.clientCA == "ca.pem"


def test_https_the_ca_path_keeps_its_commas_as_uwsgi_splits_three_times():
    assert parseHTTPS(":8443,s.crt,s.key,HIGH,a,b.pem").files.clientCA == "a,b.pem"


def test_sslrouter_is_the_same_form():
    assert parseSSLRouter(":9443,s.crt,s.key") == parseHTTPS(":9443,s.crt,s.key")


@pytest.mark.parametrize("parse, option", [(parseHTTPS, "--https"), (parseSSLRouter, "--sslrouter")])
@pytest.mark.parametrize("value", [
    "", ":8443", ":8443,s.crt", ":8443,,s.key", ":8443,s.crt,", "8443,s.crt,s.key",
    ":8443,s.crt,s.key,HIGH,!",
])
def test_positional_mistakes_name_the_option(parse, option, value):
    with pytest.raises(ValueError) as e:
        parse(value)
    assert str(e.value).startswith(option + ": ")


def test_https2_keys_and_aliases():
    assert parseHTTPS2("addr=:8443,cert=s.crt,key=s.key") == parseHTTPS2(
        "addr=:8443,crt=s.crt,key=s.key")
    spec = parseHTTPS2("addr=127.0.0.1:8443,crt=s.crt,key=s.key,ciphers=HIGH,client_ca=!ca.pem")
    assert spec.files == TLSFiles("s.crt", "s.key", "HIGH", "ca.pem", True)
    assert parseHTTPS2("addr=:1,cert=a,key=b,clientca=c").files.clientCA == "c"


def test_https2_backslash_escapes_a_comma():
    assert parseHTTPS2(r"addr=:1,cert=/a\,b.crt,key=k").files.certificate == "/a,b.crt"


def test_https2_spdy_is_recorded_and_has_no_other_effect():
    spec = parseHTTPS2("addr=:1,cert=a,key=b,spdy=1")
    assert spec.spdy
    assert spec.files == parseHTTPS2("addr=:1,cert=a,key=b").files


@pytest.mark.parametrize("value", [
    "addr=:1,cert=a", "cert=a,key=b", "addr=:1,key=b", "addr=:1,cert=a,key=b,clientcert=c",
    "addr=:1,cert=a,key=b,nonsense", "addr=x,cert=a,key=b",
])
def test_https2_mistakes_name_the_option(value):
    with pytest.raises(ValueError) as e:
        parseHTTPS2(value)
    assert str(e.value).startswith("--https2: ")


def test_sslrouter2_takes_the_same_keys_but_spdy():
    assert parseSSLRouter2("addr=:1,crt=a,key=b,client_ca=c").files.clientCA == "c"
    with pytest.raises(ValueError) as e:
        parseSSLRouter2("addr=:1,crt=a,key=b,spdy=1")
    assert str(e.value).startswith("--sslrouter2: unknown key 'spdy'")


def test_sni_names_are_canonical():
    assert parseSNI("PUBLIC.Local. s.crt,s.key,HIGH,!ca.pem") == SNISpec(
        name="public.local", files=TLSFiles("s.crt", "s.key", "HIGH", "ca.pem", True))


@pytest.mark.parametrize("value", [
    "example.com", "example.com ", " s.crt,s.key", "example.com s.crt", "../x s.crt,s.key",
    "a/b s.crt,s.key", "é.com s.crt,s.key",
])
def test_sni_mistakes_name_the_option(value):
    with pytest.raises(ValueError) as e:
        parseSNI(value)
    assert str(e.value).startswith("--sni: ")


def test_sni_regexp_keeps_the_expression():
    assert parseSNIRegexp(r"^.*\.example\.com$ s.crt,s.key").name == r"^.*\.example\.com$"


def test_sni_regexp_that_does_not_compile_names_the_option():
    with pytest.raises(ValueError) as e:
        parseSNIRegexp("(unclosed s.crt,s.key")
    assert str(e.value).startswith("--sni-regexp: '(unclosed' is not a regular expression")
