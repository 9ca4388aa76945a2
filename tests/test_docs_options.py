"""
The docs' option tables and each router's C{usage.Options} (what
C{--help} prints) agree both ways: every option has a row, every row's
option exists, and the default a row gives is the option's.

An option table is a Markdown table whose header starts C{| option |
default |}; a row names one or more options in its first cell
(C{`--modifier1 N`, `--modifier2 N`}).
"""

import importlib
import re

import pytest

from tests.realpeers import ROOT

#: Each command line, the pages that document it (the shared options are
#: on routing-options.md, which every router's page links to).
PLUGINS = {
    "txrouter.tap.http": ["http-router.md", "https-router.md", "http2.md"],
    "txrouter.tap.fast": ["fastrouter.md"],
    "txrouter.tap.raw": ["raw-router.md"],
    "txrouter.tap.https": ["https-router.md", "http-router.md", "http2.md"],
    "txrouter.tap.ssl": ["ssl-router.md", "raw-router.md", "https-router.md"],
    "txrouter.tap.subscribe": ["subscriptions.md"],
    "txrouter.tap.pty": ["pty-router.md"],
    "txrouter.tap.tuntap": ["tuntap-router.md"],
}
SHARED = "routing-options.md"
ROUTERS_WITH_NODES = {"txrouter.tap.http", "txrouter.tap.fast", "txrouter.tap.raw",
                      "txrouter.tap.https", "txrouter.tap.ssl"}

#: Options the routers take that the shared page documents (those of
#: RouterOptions), and pages that are about one command line only.
OWN_PAGES = {page for pages in PLUGINS.values() for page in pages[:1]}


def optionRows(page: str) -> list:
    """
    The rows of the option tables of C{page}: C{(names, default cell)},
    the cell L{None} for a table with no default column.
    """
    rows, column = [], None
    for line in (ROOT / "docs" / page).read_text().splitlines():
        if not line.startswith("|"):
            column = None
            continue
        cells = [cell.strip() for cell in re.split(r"(?<!\\)\|", line.strip().strip("|"))]
        header = [cell.lower() for cell in cells]
        if header[0] == "option":
            column = header.index("default") if "default" in header else -1
            continue
        if column is not None and not set(cells[0]) <= set("-: "):
            # --http2-* stands for the rows of another table.
            names = re.findall(r"`--([a-z0-9][a-z0-9-]*[a-z0-9])(?=[`\s=])", cells[0])
            assert names, (page, line)
            rows.append((names, cells[column] if column >= 0 else None))
    return rows


def optionsOf(module: str):
    return importlib.import_module(module).Options()


def defaults(options) -> dict:
    """
    Every long option of C{options} and its default, as parsed from nothing.
    """
    names = {name.rstrip("=") for name in options.longOpt} - {"help", "version"}
    return {name: options.get(name) for name in names}


def documented(module: str) -> dict:
    """
    The rows documenting C{module}'s options: C{{name: (page, default)}}.
    """
    pages = PLUGINS[module] + ([SHARED] if module in ROUTERS_WITH_NODES else [])
    rows = {}
    for page in pages:
        for names, default in optionRows(page):
            for name in names:
                # An empty cell refers to the row of a later page.
                if name not in rows or rows[name][1] == "":
                    rows[name] = (page, default)
    return rows


@pytest.mark.parametrize("module", sorted(PLUGINS))
def test_every_option_has_a_row(module):
    """
    Every option --help lists has a row in an option table of its pages.
    """
    rows = documented(module)
    missing = sorted(set(defaults(optionsOf(module))) - set(rows))
    assert missing == []


@pytest.mark.parametrize("page", sorted({*OWN_PAGES, SHARED}))
def test_every_row_is_an_option(page):
    """
    Every option a table documents exists in a command line the page is
    about (the shared page: in every router with nodes).
    """
    modules = ROUTERS_WITH_NODES if page == SHARED else [
        module for module, pages in PLUGINS.items() if page in pages]
    known = set()
    for module in modules:
        known |= set(defaults(optionsOf(module)))
    unknown = sorted({name for names, _ in optionRows(page) for name in names} - known)
    assert unknown == []


_UNITS = {"KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30, "s": 1}


def documentedValue(cell: str):
    """
    What a default cell says, for comparison: a number (C{1 MiB} is
    1048576, C{0 (off)} is 0), else the cell's text without its backticks
    (C{none}, C{off}, C{`--timeout`}, C{`$TMPDIR`}, C{hostname}...).
    """
    cell = cell.replace("*", "").strip()
    number = re.fullmatch(r"`?(-?\d+(?:\.\d+)?)`?\s*(KiB|MiB|GiB|s)?(\s*\(.*\))?", cell)
    if number:
        return float(number.group(1)) * _UNITS.get(number.group(2), 1)
    return cell.strip("`")


@pytest.mark.parametrize("module", sorted(PLUGINS))
def test_documented_defaults_are_the_options(module):
    """
    The default in an option's row is the one its Options have: a number
    is that number and a word that word; an option with no value of its
    own (L{None}, an empty list) has a row that says what applies instead
    (none, off, required, C{`--timeout`}, C{`$TMPDIR`}), never a number.
    """
    options = optionsOf(module)
    rows = documented(module)
    wrong = []
    for name, actual in sorted(defaults(options).items()):
        if name not in rows or name in _flagNames(options):
            continue
        page, cell = rows[name]
        if cell is None:
            continue
        said = documentedValue(cell)
        if actual is None or actual == []:
            right = not isinstance(said, float) and said != ""
        elif isinstance(actual, (int, float)):
            right = said == float(actual)
        else:
            right = said == str(actual)
        if not right:
            wrong.append((name, page, cell, actual))
    assert wrong == []


def _flagNames(options) -> set:
    """
    The options that take no value (flags, and C{opt_} methods that take
    no argument), whose cell says off/on.
    """
    names = set()
    for name in defaults(options):
        if f"{name}=" not in options.longOpt and name in options.longOpt:
            names.add(name)
    return names


# docs/from-uwsgi.md

#: uWSGI 2.0.21's router options (the reference's option matrix and the
#: HTTP router's own), as suffixes of --R-... or whole names.
UWSGI_ROUTER_OPTIONS = [
    "processes", "workers", "zerg", "use-cache", "use-pattern", "use-base", "use-code-string",
    "use-socket", "to", "subscription-server", "subscription-slot", "subscription-fallback-key",
    "fallback", "fallback-on-no-key", "gracetime", "events", "max-retries", "quiet", "cheap",
    "timeout", "stats", "harakiri", "uid", "gid", "resubscribe", "resubscribe-bind",
    "buffer-size", "post-buffering", "post-buffering-dir", "xclient", "session-context",
    "http-var", "http-modifier1", "http-modifier2", "http-keepalive", "http-auto-chunked",
    "http-auto-gzip", "http-raw-body", "http-websockets", "http-chunked-input",
    "http-manage-expect", "http-manage-source", "http-manage-rtsp", "http-stud-prefix",
    "http-server-name-as-http-host", "http-headers-timeout", "http-connect-timeout",
    "https-export-cert", "https-session-context", "http-to-https", "sni", "sni-regexp",
    "sni-dir", "sni-dir-ciphers", "forkptyrouter-command", "forkptyrouter-rows",
    "tuntap-router-firewall-in", "tuntap-router-route", "tuntap-router-stats",
]

def fromUwsgiRows() -> list:
    """
    The rows of from-uwsgi.md's tables: C{(uWSGI cell, txrouter cell)}.
    """
    rows = []
    for line in (ROOT / "docs" / "from-uwsgi.md").read_text().splitlines():
        cells = [cell.strip() for cell in re.split(r"(?<!\\)\|", line.strip().strip("|"))]
        if line.startswith("|") and len(cells) >= 2 and not set(cells[0]) <= set("-: "):
            rows.append((cells[0], cells[1]))
    return rows


def test_from_uwsgi_covers_every_router_option():
    """
    Every uWSGI router option has a row in from-uwsgi.md.
    """
    uwsgiCells = " ".join(uwsgi for uwsgi, _ in fromUwsgiRows())
    missing = [name for name in UWSGI_ROUTER_OPTIONS
               if not re.search(rf"--(?:[a-z]+-|R-)?{re.escape(name)}\b", uwsgiCells)]
    assert missing == []


def test_from_uwsgi_names_options_that_exist():
    """
    Every txrouter option from-uwsgi.md maps to is one of a command line's.
    """
    known = set()
    for module in PLUGINS:
        known |= set(defaults(optionsOf(module)))
    named = {name for _, txrouter in fromUwsgiRows()
             for name in re.findall(r"`--([a-z0-9][a-z0-9-]*)", txrouter)}
    assert sorted(named - known) == []
