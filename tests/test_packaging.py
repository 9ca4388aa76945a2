"""
The distribution ships the twistd plugin, and twistd finds it.
"""

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


def twistd(*args):
    return subprocess.run(
        [str(pathlib.Path(sys.executable).parent / "twistd"), *args],
        capture_output=True, text=True, timeout=60, cwd=ROOT,
    )


def test_twistd_lists_the_plugin():
    result = twistd("--help")
    assert "txrouter-http" in result.stdout


def test_every_option_is_documented_in_help_and_docs():
    from txrouter.tap.http import Options

    result = twistd("txrouter-http", "--help")
    assert result.returncode == 0
    docs = (ROOT / "docs" / "http-router.md").read_text()
    names = [o[0] for o in Options.optParameters + Options.optFlags]
    names += ["bind", "to", "fallback", "http-var", "trust-forwarded-from", "keepalive"]
    for name in names:
        assert f"--{name}" in result.stdout, name
        if name != "keepalive-timeout":
            assert f"`--{name}" in docs, name


def test_missing_bind_or_node_is_a_usage_error():
    result = twistd("-n", "txrouter-http", "--to", "/x.sock")
    assert result.returncode != 0
    assert "--bind" in result.stdout + result.stderr
    result = twistd("-n", "txrouter-http", "--bind", "tcp:0", "--to", "h:notaport")
    assert result.returncode != 0
    assert "notaport" in result.stdout + result.stderr
