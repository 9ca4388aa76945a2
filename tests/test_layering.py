"""
The layers of docs/design.md, read from the source: routing/ opens no file
and never imports stats/ (stats reads routing); wire/ knows nothing of
Twisted; the command line (tap/) builds nothing itself.
"""

import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "txrouter"


def modules(directory: str) -> list:
    return sorted((PACKAGE / directory).glob("*.py"))


def imported(path: pathlib.Path) -> set:
    """
    The modules C{path} imports, at any level of its code.
    """
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def called(path: pathlib.Path) -> set:
    """
    The names of what C{path} calls: C{f} for C{f(...)}, C{a.f} for
    C{a.f(...)}.
    """
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Call):
            if isinstance(node.func, ast.Name):
                names.add(node.func.id)
            elif isinstance(node.func, ast.Attribute) and isinstance(node.func.value, ast.Name):
                names.add(f"{node.func.value.id}.{node.func.attr}")
    return names


def within(names: set, package: str) -> set:
    return {name for name in names if name == package or name.startswith(package + ".")}


def _isClassName(name: str) -> bool:
    return name[0].isupper() and not name.isupper()


#: Calls that read or write files.
FILE_CALLS = {"open", "os.open", "io.open", "os.listdir", "os.scandir", "os.stat", "os.unlink",
              "os.remove", "os.mkdir", "os.rename", "tempfile.TemporaryFile"}


@pytest.mark.parametrize("path", modules("routing"), ids=lambda p: p.name)
def test_routing_opens_no_file_and_does_not_import_stats(path):
    assert within(imported(path), "txrouter.stats") == set()
    assert called(path) & FILE_CALLS == set()


@pytest.mark.parametrize("path", modules("wire"), ids=lambda p: p.name)
def test_wire_does_not_import_twisted(path):
    assert within(imported(path), "twisted") == set()


@pytest.mark.parametrize("path", modules("tap"), ids=lambda p: p.name)
def test_tap_parses_and_leaves_the_building_to_the_builder(path):
    """
    No router, forwarder, registry or service is made on the command
    line's side, and no file is opened there but the config files of
    --config and --ini (tap/tomlfile.py, tap/uwsgiini.py: they are command
    lines too).
    """
    names = imported(path)
    assert within(names, "txrouter.routers") == set()
    assert within(names, "txrouter.service") == set()
    # Constants (ALGORITHMS) are fine, classes (SubscriptionRegistry) not.
    assert {name for name in names if name.startswith("txrouter.routing.")
            and _isClassName(name.rsplit(".", 1)[1])} == set()
    if path.name not in ("tomlfile.py", "uwsgiini.py"):
        assert called(path) & FILE_CALLS == set()


def test_the_checks_can_fail(tmp_path):
    """
    The readers above see what they look for.
    """
    sample = tmp_path / "sample.py"
    sample.write_text(
        "from txrouter.stats.document import statsDocument\n"
        "def f():\n    import twisted.internet\n    return open('x'), os.open('y', 0)\n"
    )
    assert within(imported(sample), "txrouter.stats") == {
        "txrouter.stats.document", "txrouter.stats.document.statsDocument"}
    assert within(imported(sample), "twisted") == {"twisted.internet"}
    assert called(sample) & FILE_CALLS == {"open", "os.open"}
