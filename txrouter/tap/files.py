"""
Config files for the routers' command lines, turned into option arguments.

C{--config FILE.toml} holds the long options by their names: C{timeout =
30}, C{to = ["/run/a.sock", "/run/b.sock"]} (a repeatable option is an
array), C{stats-http = true} (a flag is a boolean).  C{--ini FILE.ini}
reads the router options of a uWSGI ini file's C{[uwsgi]} section, in
uWSGI's spelling (C{http}, C{http-to}, C{fastrouter-use-pattern}, ...), so
that an existing uWSGI router configuration runs as it is.

Either file becomes a list of L{FileArgument}s, each the option arguments
one key of the file stands for (L{txrouter.tap.tomlfile},
L{txrouter.tap.uwsgiini}); L{withFiles} puts them before the command
line's, so that the command line wins.  Every mistake is a L{FileError}
naming the file and the key.
"""

import getopt
import os
import re

import attr
from twisted.logger import Logger
from twisted.python import usage

from txrouter.tap.fileargs import LIST, FileArgument, FileArguments, FileError, listFilled, optionKinds
from txrouter.tap.mistakes import explain
from txrouter.tap.tomlfile import readTOML
from txrouter.tap.uwsgiini import readINI

__all__ = ["FilesRead", "absolutePaths", "namingFiles", "withFiles"]

log = Logger(namespace="txrouter.tap")

@attr.frozen
class FilesRead:
    """
    A command line with its config files read (L{withFiles}).

    @ivar arguments: the files' option arguments, then the command line's.
    @ivar files: the L{FileArguments} of each file, in order.
    @ivar origins: the options the files gave and the command line did
        not, to C{"FILE: KEY"}.
    """

    arguments: list
    files: "tuple[FileArguments, ...]" = ()
    origins: dict = attr.ib(factory=dict)


def withFiles(options, arguments, logIgnored: bool = True) -> FilesRead:
    """
    Read the C{--config} and C{--ini} files C{arguments} names, for the
    C{usage.Options} C{options} (a L{txrouter.tap.common.ConfigOptions}):
    their option arguments go first, so the command line wins, and a
    repeatable option keeps the values of the last place that gives it
    (a later file, or the command line).

    @param logIgnored: log the keys of an ini file left aside
        (C{config_keys_ignored}).
    @raise usage.UsageError: a file that cannot be used, naming it and the
        key.
    """
    files = []
    try:
        for option, path in _fileOptions(arguments):
            if option == "config":
                read = readTOML(path, options)
            else:
                read = readINI(path, options, options.plugin)
            for argument in read.arguments:
                _checkAlone(options, read.path, argument)
            files.append(read)
    except FileError as e:
        raise usage.UsageError(str(e)) from None
    kinds = optionKinds(options)
    given = {listFilled(a[2:].partition("=")[0]) for a in arguments if a.startswith("--")}
    lists = [{listFilled(a.option) for a in read.arguments if kinds.get(a.option) == LIST}
             for read in files] + [given]
    combined, origins = [], {}
    for index, read in enumerate(files):
        later = set().union(*lists[index + 1:])
        for argument in read.arguments:
            if kinds.get(argument.option) == LIST and listFilled(argument.option) in later:
                continue
            combined += argument.arguments
            if argument.option not in given:
                origins[argument.option] = f"{read.path}: {argument.key}"
        if read.ignored and logIgnored:
            log.info(
                "config_keys_ignored: {path}: not router options, left aside: {keys}",
                event="config_keys_ignored", path=read.path, keys=", ".join(read.ignored),
            )
    return FilesRead(combined + list(arguments), tuple(files), origins)


def _checkAlone(options, path: str, argument: FileArgument) -> None:
    """
    Parse one key's arguments alone, on a new instance of C{options}'
    class, so that a mistake names the file and the key.

    @raise FileError: the mistake.
    """
    scratch = type(options)()
    arguments = scratch.rewriteArguments(list(argument.arguments))
    try:
        found, _ = getopt.getopt(arguments, scratch.shortOpt, scratch.longOpt)
        for option, value in found:
            name = option[2:]
            name = scratch.synonyms.get(name) or scratch.synonyms[name.replace("-", "_")]
            dispatch = scratch._dispatch[name]
            if isinstance(dispatch, usage.CoerceParameter):
                dispatch.dispatch(name, value)
            else:
                dispatch(name, value)
    except (getopt.error, usage.UsageError, ValueError) as e:
        raise FileError(f"{path}: {argument.key}: {explain(scratch, arguments, str(e))}") from None


def namingFiles(origins: dict, reason: str) -> str:
    """
    C{reason}, a mistake naming options, with the file and key of each
    option named that a config file gave (L{FilesRead.origins}).
    """
    named = [origins[name] for name in dict.fromkeys(re.findall(r"--([a-z0-9-]+)", reason))
             if name in origins]
    return reason + (f" (from {'; '.join(named)})" if named else "")


def _fileOptions(arguments) -> "list[tuple[str, str]]":
    """
    The C{--config} and C{--ini} files C{arguments} names, in order.

    @raise usage.UsageError: one without its file.
    """
    found = []
    for index, argument in enumerate(arguments):
        if argument == "--":
            break
        name, equals, value = argument[2:].partition("=")
        if not argument.startswith("--") or name not in ("config", "ini"):
            continue
        if not equals:
            if index + 1 >= len(arguments):
                raise usage.UsageError(f"--{name} needs a file")
            value = arguments[index + 1]
        found.append((name, value))
    return found


def absolutePaths(arguments) -> list:
    """
    C{arguments} with the paths of C{--config} and C{--ini} made absolute,
    so that they are found again when SIGHUP reads them (twistd may have
    changed directory).
    """
    absolute = list(arguments)
    for index, argument in enumerate(arguments):
        if argument == "--":
            break
        name, equals, value = argument.partition("=")
        if name in ("--config", "--ini"):
            if equals:
                absolute[index] = f"{name}={os.path.abspath(value)}"
            elif index + 1 < len(arguments):
                absolute[index + 1] = os.path.abspath(arguments[index + 1])
    return absolute
