"""
--config FILE.toml and --ini FILE.ini: the files become option arguments
parsed before the command line's (the command line wins), and every
mistake names the file and the key.
"""

import grp
import pwd

import pytest
from twisted.python.usage import UsageError

from tests.logs import named
from txrouter.tap import fast, http, https, pty, raw, tuntap


def parse(module, *args):
    options = module.Options()
    options.parseOptions(list(args))
    return options


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def refusal(module, *args) -> str:
    with pytest.raises(UsageError) as caught:
        parse(module, *args)
    return str(caught.value)


# TOML


def test_toml_keys_are_the_long_options(tmp_path):
    path = write(tmp_path, "r.toml", """
        bind = ["tcp:8080", "unix:/run/r.sock"]
        to = ["/run/a.sock", "127.0.0.1:3031"]
        fallback = "@spare"
        timeout = 30
        harakiri = 2.5
        stats-http = true
        quiet = false
        stats = "127.0.0.1:9191"
        keepalive = 15
        http-var = ["A=b"]
    """)
    config = parse(http, "--config", path).config
    assert config.bind == ("tcp:8080", "unix:/run/r.sock")
    assert [n.name for n in config.to] == ["/run/a.sock", "127.0.0.1:3031"]
    assert [n.name for n in config.fallback] == ["@spare"]
    assert (config.timeout, config.harakiri, config.keepalive) == (30, 2.5, 15)
    assert config.stats_http and not config.quiet
    assert config.http_var == (("A", "b"),)


def test_a_bare_keepalive_in_toml_is_the_timeout(tmp_path):
    path = write(tmp_path, "r.toml", 'bind = ["tcp:1"]\nto = ["/a"]\ntimeout = 9\nkeepalive = true\n')
    assert parse(http, "--config", path).config.keepalive == 9


def test_the_command_line_wins(tmp_path):
    """
    A value given on the command line replaces the file's; for a
    repeatable option the command line's values replace all of the
    file's; what the command line does not give stays the file's.
    """
    path = write(tmp_path, "r.toml", """
        bind = ["tcp:8080"]
        to = ["/run/a.sock", "/run/b.sock"]
        fallback = ["/run/spare.sock"]
        timeout = 30
    """)
    config = parse(http, "--config", path, "--timeout", "5", "--to", "/run/c.sock").config
    assert config.timeout == 5
    assert [n.name for n in config.to] == ["/run/c.sock"]
    assert [n.name for n in config.fallback] == ["/run/spare.sock"]
    assert config.bind == ("tcp:8080",)
    # Wherever the option is on the command line, before or after --config.
    config = parse(http, "--timeout", "5", "--config", path).config
    assert config.timeout == 5


@pytest.mark.parametrize("text, message", [
    ("timeout = \"abc\"\n", "r.toml: timeout: --timeout: 'abc' is not a valid value"),
    ("stats-http = 1\n", "r.toml: stats-http: true or false (a flag), not 1"),
    ("timeout = [1, 2]\n", "r.toml: timeout: one string or number (it is not repeatable)"),
    ("to = [{a = 1}]\n", "r.toml: to: an array of strings or numbers"),
    ("stats_http = true\n", "r.toml: unknown keys: stats_http (the keys are the long options: stats-http)"),
    ("http-to = [\"/a\"]\n", "unknown keys: http-to (uWSGI's spelling: here it is to; or give the file to --ini)"),
    ("nonsense = 1\nconfig = \"x\"\n", "unknown keys: nonsense, config (only on the command line)"),
    ("timeout = \n", "r.toml: not TOML: "),
    ("algo = \"best\"\n", "r.toml: algo: --algo: 'best' is not a valid value (one of wrr, lrc, wlrc, iphash"),
])
def test_toml_mistakes_name_the_file_and_the_key(tmp_path, text, message):
    path = write(tmp_path, "r.toml", text)
    assert message in refusal(http, "--bind", "tcp:1", "--to", "/a", "--config", path)


def test_a_missing_file(tmp_path):
    assert refusal(http, "--config", str(tmp_path / "none.toml")) == (
        f"{tmp_path}/none.toml: No such file or directory")


def test_a_config_mistake_names_where_the_options_came_from(tmp_path):
    path = write(tmp_path, "r.toml", 'bind = ["tcp:1"]\nuse-pattern = "/run/apps/x.sock"\n')
    assert refusal(http, "--config", path) == (
        f"--use-pattern needs %s where the key goes (from {path}: use-pattern)")


def test_every_router_takes_a_config_file(tmp_path):
    path = write(tmp_path, "r.toml", 'bind = ["tcp:9"]\nto = ["/a"]\n')
    for module in (http, fast, raw):
        assert parse(module, "--config", path).config.bind == ("tcp:9",)
    path = write(tmp_path, "p.toml",
                 'bind = ["unix:/run/p.sock"]\ncommand = "/bin/true"\nallow-root = true\n')
    assert parse(pty, "--config", path).config.command == "/bin/true"
    path = write(tmp_path, "t.toml", 'tuntap-router = ["tun0 /run/t.sock"]\n')
    assert parse(tuntap, "--config", path).config.tuntap_router[0].device == "tun0"


# uWSGI ini


HTTP_INI = """\
; a uWSGI HTTP router in front of two workers
[uwsgi]
plugins = http,python3
master = true
module = app:application
processes = 4
apps = /run/apps
http = 127.0.0.1:8080
http-to = %(apps)/a.sock
http-to = %(apps)/b.sock
http-keepalive = 1
http-timeout = $(ROUTER_TIMEOUT:-45)
http-harakiri = 20
http-stats = %dstats.sock
subscription-dotsplit = false
fastrouter = 127.0.0.1:3017

[other]
http = :9090
http-to = /run/other.sock
"""


def test_a_uwsgi_http_router_ini(tmp_path, events):
    path = write(tmp_path, "app.ini", HTTP_INI)
    config = parse(http, "--ini", path).config
    assert config.bind == ("tcp:8080:interface=127.0.0.1",)
    assert [n.name for n in config.to] == ["/run/apps/a.sock", "/run/apps/b.sock"]
    # uWSGI's --http-keepalive 1 is the bare flag: the timeout's seconds.
    assert (config.keepalive, config.timeout, config.harakiri) == (45, 45, 20)
    assert config.stats == f"{tmp_path}/stats.sock"
    assert not config.subscription_dotsplit
    [line] = named(events, "config_keys_ignored")
    assert line["keys"] == (
        "plugins, master, module, processes, fastrouter (for twistd txrouter-fast)")


def test_ini_environment_and_sections(tmp_path, monkeypatch):
    path = write(tmp_path, "app.ini", HTTP_INI)
    monkeypatch.setenv("ROUTER_TIMEOUT", "7")
    assert parse(http, "--ini", path).config.timeout == 7
    config = parse(http, "--ini", path + ":other").config
    assert config.bind == ("tcp:9090",)
    assert [n.name for n in config.to] == ["/run/other.sock"]
    assert f"{path}: no [nothing] section" == refusal(http, "--ini", path + ":nothing")


def test_a_uwsgi_fastrouter_ini(tmp_path):
    path = write(tmp_path, "fast.ini", """\
[uwsgi]
fastrouter = /run/fast.sock
; uWSGI reads %s as the file's name: a pattern's %s is written %%s
fastrouter-use-pattern = /run/apps/%%s.sock
fastrouter-subscription-server = 127.0.0.1:7000
fastrouter-cheap = true
fastrouter-post-buffering = 8192
""")
    refused = refusal(fast, "--ini", path)
    assert "choose one way to find nodes, not --use-pattern, --subscription-server" in refused
    assert f"{path}: fastrouter-use-pattern; {path}: fastrouter-subscription-server" in refused
    path = write(tmp_path, "fast.ini", """\
[uwsgi]
fastrouter = /run/fast.sock
fastrouter-use-pattern = /run/apps/%%s.sock
fastrouter-post-buffering = 8192
fastrouter-fallback = /run/spare.sock
fastrouter-stats-server = 127.0.0.1:5005
""")
    config = parse(fast, "--ini", path).config
    assert config.bind == ("unix:/run/fast.sock",)
    assert config.use_pattern == "/run/apps/%s.sock"
    assert (config.post_buffering, config.stats) == (8192, "127.0.0.1:5005")
    assert [n.name for n in config.fallback] == ["/run/spare.sock"]


def test_the_command_line_wins_over_an_ini(tmp_path):
    path = write(tmp_path, "app.ini", HTTP_INI)
    config = parse(http, "--ini", path, "--to", "/run/c.sock", "--timeout", "3").config
    assert [n.name for n in config.to] == ["/run/c.sock"]
    assert config.timeout == 3


def test_unknown_and_unsupported_ini_keys_in_one_message(tmp_path):
    path = write(tmp_path, "app.ini", """\
[uwsgi]
http = =0
http-to = /run/a.sock
http-events = 128
http-buffer-size = 8192
https = :443,a.crt,a.key
htp-to = /run/b.sock
include = other.ini
master = true
logto = /var/log/%k-$(NOT_SET_ANYWHERE)/@(x).log
""")
    message = refusal(http, "--ini", path)
    assert message == (
        f"{path}: [uwsgi] keys txrouter-http cannot take:"
        " http ('=0': uWSGI's shared or inherited sockets are not supported; a systemd:"
        " endpoint is Twisted's way),"
        " http-events (no such option in txrouter-http),"
        " http-buffer-size (uWSGI's read size; txrouter's --buffer-size is the largest"
        " uwsgi vars block (see the router's page)),"
        " https (a TLS listener: run twistd txrouter-https),"
        " htp-to (unknown),"
        " include (includes and logic in ini files are not supported: write the values out)"
        " (see docs/operations.md, 'Migrating a uWSGI ini')"
    )


@pytest.mark.parametrize("value, message", [
    ("%(nothing)/a.sock", "app.ini:3: http-to: %(nothing): no key 'nothing' in the section"),
    ("%(a + 1)", "app.ini:3: http-to: %(a + 1): placeholder arithmetic is not supported"),
    ("%k/a.sock", "app.ini:3: http-to: %k: uWSGI's magic variable is not supported here"),
    ("@(/etc/node)", "app.ini:3: http-to: @(/etc/node): reading files or commands is not supported"),
    ("$(NO_SUCH_VARIABLE_HERE)", "app.ini:3: http-to: $(NO_SUCH_VARIABLE_HERE): not in the environment"),
    ("%(http-to)", "app.ini:3: http-to: %(http-to) refers to itself"),
])
def test_ini_substitutions_refused(tmp_path, value, message):
    path = write(tmp_path, "app.ini", f"[uwsgi]\nhttp = :8080\nhttp-to = {value}\n")
    assert message in refusal(http, "--ini", path)


def test_an_ini_value_mistake_names_the_file_and_key(tmp_path):
    path = write(tmp_path, "app.ini", "[uwsgi]\nhttp = :8080\nhttp-to = /a\nhttp-timeout = soon\n")
    assert refusal(http, "--ini", path) == (
        f"{path}: http-timeout: --timeout: 'soon' is not a valid value"
        " (could not convert string to float: 'soon')")


def test_a_placeholder_is_no_unknown_key(tmp_path):
    path = write(tmp_path, "app.ini",
                 "[uwsgi]\nport = 8080\nhttp = :%(port)\nset-ph = node=/a\nhttp-to = %(node)\n"
                 "http-quiet = 1\n")
    config = parse(http, "--ini", path).config
    assert config.bind == ("tcp:8080",) and config.quiet
    assert [n.name for n in config.to] == ["/a"]


def test_ini_socket_files_and_user(tmp_path):
    path = write(tmp_path, "app.ini", "[uwsgi]\nhttp = /run/r.sock\nhttp-to = /a\n"
                 "chmod-socket = 660\nchown-socket = nobody:nogroup\n")
    config = parse(http, "--ini", path).config
    nobody = (pwd.getpwnam("nobody").pw_uid, grp.getgrnam("nogroup").gr_gid)
    assert (config.chmod_socket, config.chown_socket) == (0o660, nobody)


def test_ini_for_the_other_routers(tmp_path):
    path = write(tmp_path, "tls.ini", """\
[uwsgi]
http = :80
https = :443,%da.crt,%da.key
http-to = /run/a.sock
https-session-context = ctx
""")
    refused = refusal(https, "--ini", path)
    # The files are read when the options are checked: the names are right.
    assert f"--https :443: {tmp_path}/a.crt" in refused
    path = write(tmp_path, "raw.ini", "[uwsgi]\nrawrouter = 127.0.0.1:2525\nrawrouter-to = 127.0.0.1:25\n"
                 "rawrouter-xclient = true\nrawrouter-max-retries = 2\n")
    config = parse(raw, "--ini", path).config
    assert config.xclient and config.max_retries == 2
    assert config.bind == ("tcp:2525:interface=127.0.0.1",)
    path = write(tmp_path, "pty.ini", "[uwsgi]\nforkptyurouter = /run/pty.sock\n"
                 "forkptyrouter-cmd = /bin/bash\nforkptyrouter-rows = 40\n")
    config = parse(pty, "--ini", path, "--allow-root").config
    assert config.uwsgi_framed and config.command == "/bin/bash" and config.rows == 40
    assert config.bind == ("unix:/run/pty.sock:mode=600",)
