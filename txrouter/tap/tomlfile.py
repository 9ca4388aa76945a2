"""
C{--config FILE.toml}: the long options by their names (C{timeout = 30},
C{to = ["/run/a.sock", "/run/b.sock"]} for a repeatable option, C{stats-http
= true} for a flag), turned into option arguments.
"""

import tomllib

from txrouter.tap.fileargs import (
    FLAG, LIST, NOT_IN_FILES, OPTIONAL, FileArgument, FileArguments, FileError, optionKinds,
)

__all__ = ["readTOML"]


def readTOML(path: str, options) -> FileArguments:
    """
    The option arguments of the TOML file C{path} for C{options}.

    @raise FileError: the file cannot be read, is not TOML, names an
        option C{options} does not have, or gives one a value of the wrong
        kind.
    """
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except OSError as e:
        raise FileError(f"{path}: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise FileError(f"{path}: not TOML: {e}") from None
    kinds = optionKinds(options)
    unknown = [key for key in data if key not in kinds]
    if unknown:
        raise FileError(f"{path}: unknown keys: " + ", ".join(
            _unknownTOMLKey(key, kinds) for key in unknown))
    arguments = []
    for key, value in data.items():
        arguments += _tomlArguments(path, key, kinds[key], value)
    return FileArguments(path, tuple(arguments))


def _unknownTOMLKey(key: str, kinds) -> str:
    dashed = key.replace("_", "-")
    if dashed in kinds:
        return f"{key} (the keys are the long options: {dashed})"
    for prefix in ("https-", "http-", "fastrouter-", "rawrouter-", "sslrouter-", "forkptyrouter-"):
        if key.startswith(prefix) and key[len(prefix):] in kinds:
            return f"{key} (uWSGI's spelling: here it is {key[len(prefix):]}; or give the file to --ini)"
    if key in NOT_IN_FILES:
        return f"{key} (only on the command line)"
    return key


def _tomlArguments(path: str, key: str, kind: str, value) -> "list[FileArgument]":
    option = "--" + key

    def wrong(wanted: str):
        return FileError(f"{path}: {key}: {wanted}, not {value!r}")

    if kind == FLAG:
        if not isinstance(value, bool):
            raise wrong("true or false (a flag)")
        return [FileArgument(key, (option,))] if value else []
    if kind == OPTIONAL:
        if isinstance(value, bool):
            return [FileArgument(key, (option,))] if value else []
        if isinstance(value, (int, float)):
            return [FileArgument(key, (option, str(value)))]
        raise wrong("true, false or a number")
    scalar = (str, int, float)
    if kind == LIST:
        values = value if isinstance(value, list) else [value]
        if not all(isinstance(item, scalar) and not isinstance(item, bool) for item in values):
            raise wrong("an array of strings or numbers")
        return [FileArgument(key, (option, str(item))) for item in values]
    if not isinstance(value, scalar) or isinstance(value, bool):
        raise wrong("one string or number" + (" (it is not repeatable)" if isinstance(value, list) else ""))
    return [FileArgument(key, (option, str(value)))]
