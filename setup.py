"""
The optional compiled build: with C{TXROUTER_COMPILE=1} in the
environment, C{pip install .} compiles the hot path's modules
(C{txrouter.compiled.MODULES}) with mypyc into C extension modules beside
their C{.py} sources; without it, nothing is compiled and txrouter is pure
Python.  Everything else about the distribution is in C{pyproject.toml}.

It is asked for, not guessed from a compiler being present: a build that
was asked for and fails stops the install instead of quietly giving pure
Python, and a developer's editable checkout stays pure (a compiled module
in place would shadow the edits of its C{.py}).  The build needs gcc, the
Python headers (C{python3-dev}) and mypy, which pip fetches into the build
environment (C{setup_requires} below becomes a build requirement).
"""

import os
import pathlib
from importlib.util import module_from_spec, spec_from_file_location

from setuptools import setup

ROOT = pathlib.Path(__file__).resolve().parent
#: mypy 2.4 is the release the compiled modules were measured and tested with.
MYPY = "mypy>=2.4,<3"


def _compiledModules() -> "list[str]":
    """
    The names in C{txrouter/compiled.py}, read without importing txrouter.
    """
    spec = spec_from_file_location("_txrouter_compiled", ROOT / "txrouter" / "compiled.py")
    module = module_from_spec(spec)
    spec.loader.exec_module(module)
    return list(module.MODULES)


def _extensions() -> list:
    if os.environ.get("TXROUTER_COMPILE") != "1":
        return []
    try:
        from mypyc.build import mypycify
    except ImportError:
        # pip's first look, to learn the build requirements: it installs
        # mypy (setup_requires) and runs this file again.
        return []
    sources = [name.replace(".", "/") + ".py" for name in _compiledModules()]
    return mypycify(sources, opt_level="3", group_name="txrouter")


setup(
    ext_modules=_extensions(),
    setup_requires=[MYPY] if os.environ.get("TXROUTER_COMPILE") == "1" else [],
)
