"""
A bounded buffer for a request body read whole before a node is connected.

uwsgi backends need C{CONTENT_LENGTH} before the body, so a chunked request
body is de-chunked into a spool first (as nginx does in front of uwsgi
backends); post-buffering spools a body of known length so that a slow
upload never holds a backend worker.  The body stays in memory up to a
threshold, then goes to an anonymous temporary file that is unlinked from
the start, so nothing is left on disk on any path.

Storing can fail (the directory is gone or read-only, the disk is full):
that is a L{SpoolError}, which the router turns into a refusal of that one
request.
"""

import tempfile

from twisted.internet.defer import fail, succeed
from twisted.protocols.basic import FileSender


class SpoolError(Exception):
    """
    A request body could not be stored: its temporary file could not be
    created, written or read back.

    @ivar directory: where the file was to be (L{None}: the default
        temporary directory).
    @ivar reason: what the operating system said (C{strerror}).
    """

    def __init__(self, directory: "str | None", reason: str) -> None:
        Exception.__init__(self, directory, reason)
        self.directory = directory
        self.reason = reason

    def __str__(self) -> str:
        where = self.directory if self.directory is not None else tempfile.gettempdir()
        return f"{where}: {self.reason}"


def _spoolError(directory, error: OSError) -> SpoolError:
    return SpoolError(directory, error.strerror or str(error))


def checkSpoolDirectory(directory: "str | None") -> None:
    """
    Make sure temporary files can be created in C{directory} (as a spool
    would), so that a mistake in the configuration shows at start-up rather
    than at the first large body.

    @raise SpoolError: they cannot.
    """
    try:
        tempfile.TemporaryFile(dir=directory).close()
    except OSError as e:
        raise _spoolError(directory, e)


class BodySpool:
    """
    Collects body bytes, then streams them to a consumer with back-pressure.

    @ivar length: the number of bytes written so far.
    """

    def __init__(self, memoryLimit: int = 1 << 20, directory: "str | None" = None) -> None:
        self.memoryLimit = memoryLimit
        self.directory = directory
        self.length = 0
        self._pieces = []
        self._file = None
        self._sender = None

    @property
    def onDisk(self) -> bool:
        """
        Whether the body outgrew memory and lives in a temporary file.
        """
        return self._file is not None

    def write(self, data: bytes) -> None:
        """
        Append body bytes.

        @raise SpoolError: the temporary file could not be created or
            written; the spool is then closed.
        """
        self.length += len(data)
        try:
            if self._file is not None:
                self._file.write(data)
                return
            self._pieces.append(data)
            if self.length > self.memoryLimit:
                self._file = tempfile.TemporaryFile(dir=self.directory)
                self._file.write(b"".join(self._pieces))
                self._pieces = []
        except OSError as e:
            self.close()
            raise _spoolError(self.directory, e)

    def finish(self) -> None:
        """
        The whole body has been written: push it out of Python's buffer
        now, so that a full disk is found before a node is connected.

        @raise SpoolError: the temporary file could not be written; the
            spool is then closed.
        """
        if self._file is None:
            return
        try:
            self._file.flush()
        except OSError as e:
            self.close()
            raise _spoolError(self.directory, e)

    def sendTo(self, consumer):
        """
        Write the whole body to C{consumer} (an C{IConsumer}).

        @return: a Deferred that fires when everything has been written; it
            fails if the consumer stopped the transfer, or with
            L{SpoolError} if the file could not be read back.
        """
        if self._file is None:
            consumer.write(b"".join(self._pieces))
            return succeed(None)
        try:
            self._file.seek(0)
        except OSError as e:
            return fail(_spoolError(self.directory, e))
        self._sender = FileSender()
        return self._sender.beginFileTransfer(self._file, consumer)

    def close(self) -> None:
        """
        Drop the body; the temporary file, if any, disappears.  Safe to
        call more than once.
        """
        self._pieces = []
        sender, self._sender = self._sender, None
        if sender is not None:
            # A later resumeProducing then just unregisters instead of
            # reading a closed file.
            sender.file = None
            sender.stopProducing()
        file, self._file = self._file, None
        if file is not None:
            try:
                file.close()
            except OSError:
                # Closing flushes; the bytes are being dropped anyway and
                # the descriptor is released whatever close() says.
                pass
