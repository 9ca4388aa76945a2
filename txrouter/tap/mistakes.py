"""
Usage errors in one line that names the option and says what to do.

twistd prints a subcommand's whole help (some two hundred lines) before a
usage error's reason, and C{usage.Options}' own reasons do not name the
option (C{Parameter type enforcement failed: could not convert string to
float: 'abc'}).  L{explain} rewrites the reason so that it names the option
and, for uWSGI's spellings, the option meant; L{stopWith} prints it alone,
reason first, for a subcommand run by twistd; L{reportStartupErrors} does
the same for what cannot be opened when twistd starts the services (a
port in use, a socket in a directory that does not exist).
"""

import re
import sys

from twisted.python.usage import Options as UsageOptions, UsageError

__all__ = ["explain", "refuseAbbreviations", "reportStartupErrors", "stopWith", "UWSGI_PREFIXES"]

#: The prefixes uWSGI's router options carry and txrouter's drop
#: (C{--http-to} is C{--to}).
UWSGI_PREFIXES = ("https-", "http-", "fastrouter-", "rawrouter-", "sslrouter-", "forkptyrouter-")

#: uWSGI's options that have another name here.
UWSGI_RENAMED = {"subscribe-freq": "frequency", "forkptyrouter-cmd": "command"}

_UNKNOWN = re.compile(r"option (\S+) not recognized")
_QUOTED = re.compile(r"'(.*)'\s*$")
_UNEXPECTED = re.compile(r"^unexpected argument '(.*)'")


def explain(options, argv, reason: str) -> str:
    """
    The reason of a usage error for C{argv}, rewritten to name the option
    and the right spelling where it can.

    @param options: the C{usage.Options} that refused C{argv}.
    @param argv: the arguments given to it.
    @param reason: the C{UsageError}'s text.
    """
    unknown = _UNKNOWN.search(reason)
    if unknown:
        return _unknownOption(options, unknown.group(1).lstrip("-"))
    unexpected = _UNEXPECTED.match(reason)
    if unexpected:
        value = unexpected.group(1)
        index = argv.index(value) if value in argv else 0
        if index and argv[index - 1].startswith("--"):
            return (f"{argv[index - 1]} {value}: {value!r} is no value {argv[index - 1]}"
                    " takes (a flag takes none; a number must be one)")
        return reason
    if reason.startswith("Parameter type enforcement failed: "):
        detail = reason[len("Parameter type enforcement failed: "):]
        value = _QUOTED.search(detail)
        option = _optionGiven(argv, value.group(1)) if value else None
        if option is not None:
            return f"{option}: {value.group(1)!r} is not a valid value ({detail})"
        return detail
    return reason


def refuseAbbreviations(options, argv) -> None:
    """
    Refuse a long option that is not spelled out: C{getopt} takes any
    unique prefix, so uWSGI's C{--http-to NODE} would silently be
    C{--http-to-https NODE}.

    @raise UsageError: C{option NAME not recognized}, as for any unknown
        option (L{explain} then names the right one).
    """
    known = {long.rstrip("=") for long in options.longOpt}
    for argument in argv:
        if argument == "--":
            return
        if argument.startswith("--"):
            name = argument[2:].partition("=")[0]
            if name not in known:
                raise UsageError(f"option --{name} not recognized")


def _unknownOption(options, name: str) -> str:
    known = {long.rstrip("=") for long in options.longOpt}
    if UWSGI_RENAMED.get(name) in known:
        return f"--{name} is uWSGI's spelling; here it is --{UWSGI_RENAMED[name]}"
    for prefix in UWSGI_PREFIXES:
        if name.startswith(prefix) and name[len(prefix):] in known:
            return (f"--{name} is uWSGI's spelling; here it is --{name[len(prefix):]}"
                    " (uWSGI's router options lose their prefix)")
    return f"unknown option --{name}"


def _optionGiven(argv, value: str) -> "str | None":
    """
    The option C{argv} gave C{value} to (C{--name value} or
    C{--name=value}), or L{None}.
    """
    for index, argument in enumerate(argv):
        name, equals, given = argument.partition("=")
        if equals and given == value and name.startswith("--"):
            return name
        if argument == value and index and argv[index - 1].startswith("--"):
            return argv[index - 1]
    return None


def parseInOneLine(options, argv) -> None:
    """
    Parse C{argv} with C{options} (a C{usage.Options}), every mistake said
    in one line that names the option; run by twistd, a mistake ends the
    run with that line alone (L{stopWith}).

    @raise UsageError: the mistake, explained, outside twistd.
    """
    try:
        refuseAbbreviations(options, argv)
        UsageOptions.parseOptions(options, argv)
    except UsageError as e:
        reason = explain(options, argv, str(e))
        if options.parent is not None:
            stopWith(options, reason)
        raise UsageError(reason) from None


def stopWith(options, reason: str) -> None:
    """
    End a twistd run on a usage error: the reason alone, first, and where
    the help is, instead of the whole help and the reason last; exit
    status 2, as C{argparse} and most tools.
    """
    command = f"twistd {options.parent.subCommand}" if options.parent else "twistd"
    sys.stderr.write(f"{command}: {reason}\n(see: {command} --help)\n")
    sys.stderr.flush()
    raise SystemExit(2)


def reportStartupErrors(options) -> None:
    """
    From now on, end the twistd run of C{options}' subcommand on a
    L{txrouter.early.StartupError} with its one line, as L{stopWith} does
    for a usage error, instead of a traceback: twistd raises what fails
    while the services start out of its C{run()}.  Other exceptions are
    reported as before.
    """
    from twisted.logger import Logger

    from txrouter.early import StartupError

    server = options.parent
    command = f"twistd {server.subCommand}"
    # twistd's log goes to a file (or the process is a daemon, whose
    # standard error is gone): the line goes there too.
    toLogFile = not server.get("nodaemon") or server.get("logfile") not in (None, "-")
    previous = sys.excepthook

    def report(kind, error, traceback):
        if not isinstance(error, StartupError):
            return previous(kind, error, traceback)
        if toLogFile:
            Logger(namespace="txrouter.startup").critical(
                "startup_failed: {error}", event="startup_failed", error=str(error))
        sys.stdout.flush()
        sys.__stderr__.write(f"{command}: {error}\n")
        sys.__stderr__.flush()
        raise SystemExit(2)

    sys.excepthook = report
