"""
What a config file says, as option arguments: the L{FileArgument}s each
key stands for, and what kind of value each option takes in a file.
"""

import attr

__all__ = [
    "FLAG", "LIST", "OPTIONAL", "PARAMETER", "NOT_IN_FILES", "FileArgument", "FileArguments",
    "FileError", "listFilled", "optionKinds",
]


class FileError(ValueError):
    """
    A config file that cannot be used; the message names the file and the
    key.
    """


@attr.frozen
class FileArgument:
    """
    The option arguments one key of a config file stands for.

    @ivar key: the key, as the file spells it (for messages).
    @ivar arguments: C{["--to", "/run/a.sock"]}, C{["--stats-http"]}...
    """

    key: str
    arguments: "tuple[str, ...]"

    @property
    def option(self) -> str:
        """
        The option's name, without its dashes.
        """
        return self.arguments[0][2:]


@attr.frozen
class FileArguments:
    """
    What a config file says.

    @ivar path: the file.
    @ivar arguments: L{FileArgument}s, in the file's order.
    @ivar ignored: the keys read and left aside (a uWSGI worker's), with
        why, for one log line.
    """

    path: str
    arguments: "tuple[FileArgument, ...]" = ()
    ignored: "tuple[str, ...]" = ()


#: What a kind of option takes in a file.
FLAG, PARAMETER, LIST, OPTIONAL = "flag", "parameter", "list", "optional"

#: Options that fill another's list (C{--https2 X} appends to C{https}).
_FILLS = {"https2": "https", "sslrouter2": "sslrouter"}

#: Options no file may set.
NOT_IN_FILES = ("config", "ini", "help", "version")


def optionKinds(options) -> "dict[str, str]":
    """
    The long options of a parsed-to-be C{usage.Options}, by name, with
    what each takes: L{FLAG}, L{PARAMETER}, L{LIST} (repeatable) or
    L{OPTIONAL} (a flag with an optional value, as C{--keepalive [N]}:
    the options class names them in C{optionalValues}).
    """
    kinds = {}
    optional = getattr(options, "optionalValues", ())
    for long in options.longOpt:
        name = long.rstrip("=")
        if name in NOT_IN_FILES:
            continue
        if name in optional:
            kinds[name] = OPTIONAL
        elif isinstance(options.get(_FILLS.get(name, name)), list):
            kinds[name] = LIST
        else:
            kinds[name] = PARAMETER if long.endswith("=") else FLAG
    return kinds


def listFilled(option: str) -> str:
    """
    The list option C{option} appends to (C{https} for C{https2}).
    """
    return _FILLS.get(option, option)
