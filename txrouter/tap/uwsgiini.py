"""
C{--ini FILE.ini}: the router options of a uWSGI ini file's C{[uwsgi]}
section, in uWSGI's spelling (C{http}, C{http-to}, C{fastrouter-use-pattern},
...), with its C{%(...)}, C{$(...)} and magic variables, turned into option
arguments, so that an existing uWSGI router configuration runs as it is.
A uWSGI worker's keys are left aside (and listed in one log line); a router
key txrouter does not take is a mistake naming the file and the key.
"""

import os
import re
import socket

import attr

from txrouter.stats.server import uwsgiAddressToEndpoint
from txrouter.tap.fileargs import FLAG, OPTIONAL, FileArgument, FileArguments, FileError, optionKinds

__all__ = ["SPELLINGS", "UWSGISpelling", "readINI"]


@attr.frozen
class UWSGISpelling:
    """
    How uWSGI spells one router's options.

    @ivar plugin: the twistd plugin running it.
    @ivar prefixes: the prefixes of its options (C{http-}); the rest is
        txrouter's name, unless it is in L{renamed}.
    @ivar listeners: uWSGI's listener keys: to the option they are, and
        whether their value is an address that becomes a C{--bind}
        endpoint, plus a flag they also set.
    @ivar renamed: uWSGI's names, without the prefix, that txrouter
        spells otherwise.
    @ivar refused: uWSGI's names, without the prefix, that are options
        here with another meaning, and why.
    @ivar elsewhere: keys of the same uWSGI router that another txrouter
        plugin runs (C{https} for C{txrouter-http}), and what to do.
    """

    plugin: str
    prefixes: "tuple[str, ...]"
    listeners: dict = attr.ib(factory=dict)
    renamed: dict = attr.ib(factory=dict)
    refused: dict = attr.ib(factory=dict)
    elsewhere: dict = attr.ib(factory=dict)


@attr.frozen
class Listener:
    """
    One of uWSGI's listener keys.

    @ivar option: the option it is here.
    @ivar address: its value is uWSGI's address, turned into an endpoint
        string (C{:8080} is C{tcp:8080}).
    @ivar flag: an option it sets too (C{forkptyurouter} is a C{--bind}
        with C{--uwsgi-framed}).
    """

    option: str
    address: bool = False
    flag: "str | None" = None


_RENAMED = {"stats-server": "stats", "ss": "stats", "use-code-string": "use-code",
            "workers": "processes"}
_READ_SIZE = ("uWSGI's read size; txrouter's --buffer-size is the largest uwsgi vars block"
              " (see the router's page)")
_TLS_HTTP = "a TLS listener: run twistd txrouter-https"
_BIND = Listener("bind", address=True)

SPELLINGS = {
    "txrouter-http": UWSGISpelling(
        "txrouter-http", ("http-",), {"http": _BIND, "httprouter": _BIND},
        _RENAMED, {"buffer-size": _READ_SIZE},
        {"https": _TLS_HTTP, "https2": _TLS_HTTP, "https-export-cert": _TLS_HTTP,
         "https-session-context": _TLS_HTTP},
    ),
    "txrouter-https": UWSGISpelling(
        "txrouter-https", ("http-", "https-"),
        {"http": _BIND, "httprouter": _BIND, "https": Listener("https"),
         "https2": Listener("https2")},
        _RENAMED, {"buffer-size": _READ_SIZE},
    ),
    "txrouter-fast": UWSGISpelling(
        "txrouter-fast", ("fastrouter-",), {"fastrouter": _BIND}, _RENAMED,
        {"buffer-size": _READ_SIZE},
    ),
    "txrouter-raw": UWSGISpelling(
        "txrouter-raw", ("rawrouter-",), {"rawrouter": _BIND}, _RENAMED,
        {"buffer-size": _READ_SIZE},
    ),
    "txrouter-ssl": UWSGISpelling(
        "txrouter-ssl", ("sslrouter-",),
        {"sslrouter": Listener("sslrouter"), "sslrouter2": Listener("sslrouter2")},
        _RENAMED, {"buffer-size": _READ_SIZE},
    ),
    "txrouter-pty": UWSGISpelling(
        "txrouter-pty", ("forkptyrouter-", "forkpty-router-"),
        {"forkptyrouter": _BIND, "forkpty-router": _BIND,
         "forkptyurouter": Listener("bind", True, "uwsgi-framed"),
         "forkpty-urouter": Listener("bind", True, "uwsgi-framed")},
        {"cmd": "command"},
    ),
    "txrouter-tuntap": UWSGISpelling("txrouter-tuntap", ("tuntap-",)),
}

#: uWSGI's options without a router prefix that configure routers (the
#: subscription system, SNI, the PROXY protocol, the user the process
#: runs as and its unix socket files): they keep their names.
ROUTER_GLOBALS = frozenset((
    "subscription-server", "subscription-algo", "subscription-dotsplit",
    "subscription-tolerance", "subscriptions-sign-check", "subscriptions-sign-check-tolerance",
    "sni", "sni-regexp", "sni-dir", "sni-dir-ciphers", "enable-proxy-protocol",
    "uid", "gid", "chmod-socket", "chown-socket",
))

#: uWSGI's options that configure workers and apps, not routers: read
#: and left aside, in one log line.
WORKER_KEYS = frozenset("""
    module wsgi wsgi-file file callable mount manage-script-name processes workers threads
    enable-threads master plugins plugin plugins-dir socket uwsgi-socket http-socket
    https-socket http11-socket shared-socket chdir chdir2 home virtualenv venv pythonpath
    python-path env vacuum die-on-term harakiri harakiri-verbose buffer-size stats
    stats-server stats-http memory-report logto logto2 logger req-logger daemonize
    daemonize2 pidfile pidfile2 lazy lazy-apps max-requests max-worker-lifetime
    reload-mercy worker-reload-mercy reload-on-rss evil-reload-on-rss
    umask need-app strict single-interpreter thunder-lock listen
    post-buffering post-buffering-bufsize limit-post limit-as cheaper cheaper-algo
    cheaper-initial cheaper-step cheaper-overload disable-logging memory-report
    offload-threads spooler spooler-processes mule mules cron attach-daemon
    smart-attach-daemon subscribe-to subscribe2 subscribe-freq subscription-key
    unsubscribe-on-graceful-reload subscription-notify-socket emperor socket-timeout
    protocol add-header route route-run response-route so-keepalive reuse-port
    auto-procname procname procname-prefix procname-prefix-spaced procname-master
    no-orphans catch-exceptions show-config print hook-asap cache cache2 tuntap-device
    wsgi-disable-file-wrapper ignore-sigpipe ignore-write-errors disable-write-exception
    max-fd close-on-exec idle die-on-idle
""".split())

#: Prefixes of more of them.
WORKER_PREFIXES = ("log-", "logger-", "py-", "python-", "wsgi-", "cheaper-", "touch-",
                   "reload-", "exec-", "hook-", "route-", "static-", "spooler-", "emperor-",
                   "vassal", "cron", "mule", "cache2", "harakiri-", "master-", "worker-")

#: uWSGI's keys that change how a config file is read: not supported.
_READING_KEYS = ("ini", "include", "inherit", "xml", "yaml", "yml", "json", "config",
                 "for", "endfor", "end-for", "if-env", "if-not-env", "if-exists",
                 "if-not-exists", "if-file", "if-not-file", "if-dir", "if-not-dir",
                 "if-opt", "if-not-opt", "endif", "end-if", "end", "else")

#: uWSGI's keys that set a placeholder (C{set-ph = name=value}).
PLACEHOLDER_KEYS = ("set", "set-placeholder", "set-ph")

_TRUE_WORDS = ("", "true", "on", "yes", "1")
_FALSE_WORDS = ("false", "off", "no", "0")


def readINI(path: str, options, plugin: str) -> FileArguments:
    """
    The option arguments of the router options in a uWSGI ini file's
    C{[uwsgi]} section (C{FILE:SECTION} reads another), for C{plugin}
    (C{txrouter-http}...).

    What is read as uWSGI reads it: C{key = value} lines, keys repeated
    for repeatable options, C{;} and C{#} comments, a flag with no value or
    with C{true}/C{1}/C{yes}/C{on} (C{false}/C{0}/C{no}/C{off}: off).
    Values may use C{%(key)} (another key's first value, or a
    placeholder's from C{set-placeholder = key=value}; a key used only so
    is a placeholder, not an unknown key), C{$(VAR)},
    C{$(VAR:-default)} and C{$(VAR-default)} (the environment), C{%%},
    and uWSGI's magic variables of the file's name (C{%d}, C{%p}, C{%s},
    C{%n}, C{%e}, C{%c}, C{%o}, C{%x}) and C{%h} (the host name); every
    other C{%X}, C{@(...)}, placeholder arithmetic, and the keys that
    include files or add logic (C{ini}, C{include}, C{if-env}...) are
    refused.

    @raise FileError: the file cannot be read, has no such section, or
        has keys this router cannot take (all of them said at once).
    """
    filePath, section = _splitSection(path)
    try:
        with open(filePath, "rb") as f:
            text = f.read().decode("utf-8")
    except OSError as e:
        raise FileError(f"{filePath}: {e.strerror}") from None
    except UnicodeDecodeError as e:
        raise FileError(f"{filePath}: not UTF-8 ({e.reason} at byte {e.start})") from None
    entries = _iniEntries(text, section)
    if entries is None:
        raise FileError(f"{filePath}: no [{section}] section")
    values = _Substitution(filePath, section, entries)
    spelling = SPELLINGS[plugin]
    kinds = optionKinds(options)
    arguments, ignored, refused = [], [], []
    for line, key, raw in entries:
        if key in PLACEHOLDER_KEYS:
            continue
        try:
            found = _iniArguments(
                spelling, kinds, key, lambda: values.value(line, key, raw))
        except _Refused as e:
            refused.append(f"{key} ({e})")
            continue
        if found == _UNKNOWN:
            # A key that is no option but is used by a %(key) is uWSGI's
            # placeholder.
            if key not in values.referenced:
                refused.append(f"{key} (unknown)")
            continue
        if isinstance(found, str):
            ignored.append(key if found == _WORKER else f"{key} ({found})")
            continue
        if found is not None:
            arguments.append(FileArgument(key, found))
    if refused:
        refused = list(dict.fromkeys(refused))
        raise FileError(
            f"{filePath}: [{section}] keys {plugin} cannot take: " + ", ".join(refused)
            + " (see docs/operations.md, 'Migrating a uWSGI ini')"
        )
    return FileArguments(filePath, tuple(arguments), tuple(dict.fromkeys(ignored)))


def _splitSection(path: str) -> "tuple[str, str]":
    """
    uWSGI's C{FILE:SECTION}: the section after the last colon of the
    file's name, C{uwsgi} by default.
    """
    directory, _, name = path.rpartition("/")
    name, colon, section = name.partition(":")
    filePath = f"{directory}/{name}" if directory else name
    return (filePath, section or "uwsgi") if colon else (path, "uwsgi")


def _iniEntries(text: str, section: str):
    """
    The C{(line, key, value)} of C{section}, as uWSGI's ini parser reads
    them, or L{None} if there is no such section.
    """
    entries, current, found = [], "", False
    for number, line in enumerate(text.split("\n"), 1):
        line = line.strip(" \t\r")
        if not line or line[0] in ";#":
            continue
        if line[0] == "[":
            current = line[1:-1] if line.endswith("]") else line[1:]
            found = found or current == section
            continue
        if current != section:
            continue
        key, _, value = line.partition("=")
        entries.append((number, key.rstrip(" \t\r"), value.lstrip(" \t\r")))
    return entries if found else None


_UNKNOWN, _WORKER = "unknown", "worker"


class _Refused(Exception):
    """
    A router key this router cannot take; the message says why.
    """


def _iniArguments(spelling: UWSGISpelling, kinds, key: str, valueOf):
    """
    The option arguments of one ini key for the router C{spelling}
    describes: a tuple of arguments, L{None} for a flag set off, or a
    string saying why it is left aside (L{_WORKER}, L{_UNKNOWN}, or for
    another router).  C{valueOf()} gives its value, substituted: only the
    values of the keys used are, so that a worker's key may use what is
    not supported here.

    @raise _Refused: a router key this router cannot take.
    """
    if key in _READING_KEYS or key.startswith(("if-", "for-")):
        raise _Refused("includes and logic in ini files are not supported: write the values out")
    listener = spelling.listeners.get(key)
    if listener is not None:
        value = valueOf()
        if value.startswith(("=", "fd://")):
            raise _Refused(f"{value!r}: uWSGI's shared or inherited sockets are not supported;"
                           " a systemd: endpoint is Twisted's way")
        given = uwsgiAddressToEndpoint(value) if listener.address else value
        arguments = ("--" + listener.option, given)
        return arguments + (("--" + listener.flag,) if listener.flag else ())
    if key in spelling.elsewhere:
        raise _Refused(spelling.elsewhere[key])
    if key in WORKER_KEYS:
        return _WORKER
    for prefix in spelling.prefixes:
        if key in kinds and key.startswith(prefix):
            return _converted(kinds, key, valueOf())
    for prefix in spelling.prefixes:
        if key.startswith(prefix):
            name = key[len(prefix):]
            if name in spelling.refused:
                raise _Refused(spelling.refused[name])
            name = spelling.renamed.get(name, name)
            if name not in kinds:
                raise _Refused(f"no such option in {spelling.plugin}")
            return _converted(kinds, name, valueOf())
    if key in ROUTER_GLOBALS:
        if key not in kinds:
            raise _Refused(f"no such option in {spelling.plugin}")
        return _converted(kinds, key, valueOf())
    other = _otherRouter(key, spelling)
    if other is not None:
        return f"for twistd {other}"
    if key.startswith(WORKER_PREFIXES):
        return _WORKER
    return _UNKNOWN


def _otherRouter(key: str, spelling: UWSGISpelling) -> "str | None":
    for other in SPELLINGS.values():
        if other.plugin == spelling.plugin:
            continue
        if key in other.listeners or key.startswith(other.prefixes):
            return other.plugin
    return None


def _converted(kinds, option: str, value: str):
    """
    The arguments of C{option} for an ini value: flags are on unless
    C{false}, C{off}, C{no} or C{0} (L{None}: off).
    """
    kind = kinds[option]
    if kind == FLAG:
        if value.lower() in _FALSE_WORDS:
            return None
        return ("--" + option,)
    if kind == OPTIONAL:
        lowered = value.lower()
        if lowered in _FALSE_WORDS:
            return None
        # uWSGI's --http-keepalive 1 is the bare flag.
        if lowered in _TRUE_WORDS:
            return ("--" + option,)
        return ("--" + option, value)
    if not value:
        raise _Refused(f"--{option} needs a value")
    return ("--" + option, value)


_SUBSTITUTION = re.compile(r"%%|%\(([^)]*)\)|%(.)|\$\(([^)]*)\)|@\(([^)]*)\)")


class _Substitution:
    """
    The values of an ini section, with uWSGI's substitutions made.

    @ivar referenced: the keys some C{%(key)} names.
    """

    def __init__(self, path: str, section: str, entries) -> None:
        self.path = path
        self.first = {}
        for line, key, value in entries:
            if key in PLACEHOLDER_KEYS:
                key, _, value = value.partition("=")
            self.first.setdefault(key, (line, value))
        self.referenced = set()
        for _, _, value in entries:
            for match in _SUBSTITUTION.finditer(value):
                if match.group(1) is not None:
                    self.referenced.add(match.group(1).strip())
        absolute = os.path.abspath(path)
        name = os.path.basename(absolute)
        directory = os.path.dirname(absolute) + "/"
        self.magic = {
            "p": absolute, "s": name, "d": directory, "o": path,
            "n": name.rpartition(".")[0] if "." in name else name,
            "e": name.rpartition(".")[2] if "." in name else "",
            "c": os.path.basename(directory.rstrip("/")), "x": section,
            "h": socket.gethostname(),
        }
        for upper in "OPDS":
            self.magic[upper] = self.magic[upper.lower()]

    def value(self, line: int, key: str, raw: str, seen=()) -> str:
        where = f"{self.path}:{line}: {key}"

        def substitute(match) -> str:
            text = match.group(0)
            if text == "%%":
                return "%"
            reference, magic, variable, atFile = match.groups()
            if reference is not None:
                name = reference.strip()
                if " " in name:
                    raise FileError(f"{where}: %({reference}): placeholder arithmetic is not supported")
                if name in seen or name == key:
                    raise FileError(f"{where}: %({name}) refers to itself")
                if name not in self.first:
                    raise FileError(f"{where}: %({name}): no key {name!r} in the section")
                otherLine, otherRaw = self.first[name]
                return self.value(otherLine, name, otherRaw, (*seen, key))
            if magic is not None:
                if magic in self.magic:
                    return self.magic[magic]
                raise FileError(f"{where}: %{magic}: uWSGI's magic variable is not supported here"
                                " (write %% for a literal %)")
            if variable is not None:
                return _environment(where, variable)
            raise FileError(f"{where}: @({atFile}): reading files or commands is not supported")

        return _SUBSTITUTION.sub(substitute, raw)


def _environment(where: str, variable: str) -> str:
    """
    uWSGI's C{$(VAR)}, C{$(VAR:-default)} (unset or empty) and
    C{$(VAR-default)} (unset).
    """
    if ":-" in variable:
        name, _, default = variable.partition(":-")
        return os.environ.get(name) or default
    if "-" in variable:
        name, _, default = variable.partition("-")
        return os.environ.get(name, default)
    if variable not in os.environ:
        raise FileError(f"{where}: $({variable}): not in the environment")
    return os.environ[variable]
