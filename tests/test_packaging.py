"""
The distribution ships the twistd plugin, and twistd finds it.
"""

import importlib
import pathlib
import subprocess
import sys
import zipfile

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
         "-q", "-w", str(out), str(ROOT)],
        check=True, timeout=300,
    )
    [path] = out.glob("txrouter-*.whl")
    return zipfile.ZipFile(path).namelist()


def test_wheel_carries_the_plugin_but_no_twisted_package_init(wheel):
    assert "twisted/plugins/txrouter_plugins.py" in wheel
    assert "twisted/__init__.py" not in wheel
    assert "twisted/plugins/__init__.py" not in wheel
    assert "txrouter/routers/http.py" in wheel
    assert "txrouter/wire/http1.py" in wheel
    assert "txrouter/subscription/client.py" in wheel
    assert "txrouter/tap/subscribe.py" in wheel
    assert "txrouter/tap/https.py" in wheel
    assert "txrouter/tap/pty.py" in wheel
    assert "txrouter/tap/tuntap.py" in wheel
    assert "txrouter/tls/sni.py" in wheel


def twistd(*args):
    return subprocess.run(
        [str(pathlib.Path(sys.executable).parent / "twistd"), *args],
        capture_output=True, text=True, timeout=60, cwd=ROOT,
    )


def test_twistd_lists_the_plugins():
    result = twistd("--help")
    assert "txrouter-http" in result.stdout
    assert "txrouter-fast" in result.stdout
    assert "txrouter-raw" in result.stdout
    assert "txrouter-https" in result.stdout
    assert "txrouter-ssl" in result.stdout
    assert "txrouter-subscribe" in result.stdout
    assert "txrouter-pty" in result.stdout
    assert "txrouter-tuntap" in result.stdout
    reactors = twistd("--help-reactors").stdout
    assert any(line.split() and line.split()[0] == "txrouter" for line in reactors.splitlines())


@pytest.mark.parametrize(
    "plugin, module, page",
    # --http-to-https is described with the HTTPS router, the --http2
    # options on their own page.
    [("txrouter-http", "txrouter.tap.http", "http-router.md https-router.md http2.md"),
     ("txrouter-fast", "txrouter.tap.fast", "fastrouter.md"),
     ("txrouter-raw", "txrouter.tap.raw", "raw-router.md"),
     # The HTTPS router has the HTTP router's options, the SSL router the
     # raw router's, and both the TLS options of https-router.md.
     ("txrouter-https", "txrouter.tap.https", "https-router.md http-router.md http2.md"),
     ("txrouter-ssl", "txrouter.tap.ssl", "ssl-router.md raw-router.md https-router.md"),
     ("txrouter-subscribe", "txrouter.tap.subscribe", "subscriptions.md"),
     ("txrouter-pty", "txrouter.tap.pty", "pty-router.md"),
     ("txrouter-tuntap", "txrouter.tap.tuntap", "tuntap-router.md")],
)
def test_every_option_is_documented_in_help_and_docs(plugin, module, page):
    """
    Every option (its own and the shared ones) is in --help and has a line in
    the router's page or in the shared page of routing options.
    """
    options = importlib.import_module(module).Options()
    result = twistd(plugin, "--help")
    assert result.returncode == 0
    docs = "".join((ROOT / "docs" / name).read_text() for name in [*page.split(), "routing-options.md"])
    names = {name.rstrip("=") for name in options.longOpt} - {"help", "version"}
    for name in sorted(names):
        assert f"--{name}" in result.stdout, name
        assert f"`--{name}" in docs, name


def test_missing_bind_or_node_is_a_usage_error():
    result = twistd("-n", "txrouter-http", "--to", "/x.sock")
    assert result.returncode != 0
    assert "--bind" in result.stdout + result.stderr
    result = twistd("-n", "txrouter-http", "--bind", "tcp:0", "--to", "h:notaport")
    assert result.returncode != 0
    assert "notaport" in result.stdout + result.stderr


def test_subscriber_usage_errors_stop_twistd(tmp_path):
    result = twistd("-n", "txrouter-subscribe", "--key", "k", "--address", "127.0.0.1:3031")
    assert result.returncode != 0
    assert "--subscribe-to" in result.stdout + result.stderr
    result = twistd("-n", "txrouter-subscribe", "--subscribe-to", "127.0.0.1:7000", "--key", "k",
                    "--address", "127.0.0.1:3031", "--sign", f"SHA256:{tmp_path / 'none.pem'}")
    assert result.returncode != 0
    assert "--sign" in result.stdout + result.stderr


@pytest.mark.parametrize(
    "plugin, args, option",
    [("txrouter-fast", ("--to", "/x.sock", "--post-buffering", "10", "--post-buffering-dir", "{missing}"),
      "--post-buffering-dir"),
     ("txrouter-http", ("--to", "/x.sock", "--spool-dir", "{missing}"), "--spool-dir"),
     ("txrouter-fast", ("--to", "/x.sock", "--stats", "tcp:9191:colour=blue"), "--stats"),
     ("txrouter-http", ("--to", "/x.sock", "--stats", "ssl:9191:privateKey={missing}"), "--stats"),
     ("txrouter-http", ("--to", "/x.sock", "--bind", "ssl:0:privateKey={missing}"), "--bind"),
     ("txrouter-fast", ("--to", "/x.sock", "--bind", "tcp:port=http"), "--bind"),
     ("txrouter-http", ("--to", "/x.sock", "--access-log", "{missing}/access.log"), "--access-log"),
     ("txrouter-fast", ("--use-cache", "--cache-file", "{missing}"), "--cache-file")],
)
def test_unusable_directories_and_addresses_are_usage_errors(tmp_path, plugin, args, option):
    """
    twistd stops with a message that names the option, not a traceback.
    """
    missing = str(tmp_path / "gone")
    result = twistd("-n", plugin, "--bind", "tcp:0", *[arg.format(missing=missing) for arg in args])
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert f"{option}: " in output
    assert "Traceback" not in output
