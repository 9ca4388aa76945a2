"""
C{twistd txrouter-pty}: the forkpty router from the command line.

Option names are uWSGI's C{--forkptyrouter-*} names without the prefix
(C{--forkptyrouter-command} is C{--command}); uWSGI's C{--forkptyurouter
ADDR} is C{--bind ENDPOINT --uwsgi-framed}.  See C{docs/pty-router.md}.
"""

from txrouter.config import PtyRouterConfig
from txrouter.tap.common import ConfigOptions, ProcessOptions, count, makeRouterService, positive


def window(value: str) -> int:
    number = int(value)
    if not 1 <= number <= 65535:
        raise ValueError("must be 1..65535")
    return number


class Options(ProcessOptions, ConfigOptions):
    """
    The options of C{txrouter-pty}.

    """

    configClass = PtyRouterConfig
    plugin = "txrouter-pty"

    synopsis = "--bind ENDPOINT [--uwsgi-framed] [--command CMD] [options]"
    longdesc = (
        "Runs a command (default /bin/sh) on a new pseudo-terminal for every"
        " client, a drop-in for `uwsgi --forkptyrouter ADDR` (and, with"
        " --uwsgi-framed, `uwsgi --forkptyurouter ADDR`, for `uwsgi --pty-uconnect`)."
        " Whoever can connect gets a shell as the router's user: bind a unix"
        " socket with a strict mode (unix:/run/pty.sock:mode=600)."
    )

    optFlags = [
        ["uwsgi-framed", None,
         "Clients send uwsgi frames (data, window size, signals), as"
         " `uwsgi --pty-uconnect` does (uWSGI's --forkptyurouter); else raw bytes."],
        ["allow-root", None,
         "Run even as root with no --uid: every client gets a root shell."],
    ]

    optParameters = [
        ["command", None, "/bin/sh",
         "The command each client runs; with a space, it runs as /bin/sh -c COMMAND."],
        ["rows", None, 24, "The window's rows until the client sets them.", window],
        ["cols", None, 80, "The window's columns until the client sets them.", window],
        ["timeout", None, 60.0,
         "Seconds without a byte either way before a session is hung up; 0 for none.",
         positive],
        ["max-sessions", None, 0,
         "The most sessions at once (more clients are closed at once); 0 for no limit.",
         count],
        ["graceful-timeout", None, 30.0,
         "On SIGTERM/SIGINT: seconds before clients still connected are cut (the"
         " commands are hung up at once).", positive],
    ]

    def __init__(self) -> None:
        super().__init__()
        self["bind"] = []

    def opt_bind(self, description: str) -> None:
        """
        Listen here (repeatable): unix:/run/pty.sock:mode=600, tcp:...
        """
        self["bind"].append(description)



def makeService(options, reactor=None):
    """
    Build the forkpty router service described by parsed L{Options}.
    """
    return makeRouterService(options, reactor)
