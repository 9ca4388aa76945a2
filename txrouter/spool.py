"""
A bounded buffer for a request body whose length is not known in advance.

uwsgi backends need C{CONTENT_LENGTH} before the body, so a chunked request
body is de-chunked into a spool first (as nginx does in front of uwsgi
backends): in memory up to a threshold, then in an anonymous temporary file
that is unlinked from the start, so nothing is left on disk on any path.
"""

import tempfile

from twisted.internet.defer import succeed
from twisted.protocols.basic import FileSender


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
        """
        self.length += len(data)
        if self._file is not None:
            self._file.write(data)
            return
        self._pieces.append(data)
        if self.length > self.memoryLimit:
            self._file = tempfile.TemporaryFile(dir=self.directory)
            self._file.write(b"".join(self._pieces))
            self._pieces = []

    def sendTo(self, consumer):
        """
        Write the whole body to C{consumer} (an C{IConsumer}).

        @return: a Deferred that fires when everything has been written; it
            fails if the consumer stopped the transfer.
        """
        if self._file is None:
            consumer.write(b"".join(self._pieces))
            return succeed(None)
        self._file.seek(0)
        self._sender = FileSender()
        return self._sender.beginFileTransfer(self._file, consumer)

    def close(self) -> None:
        """
        Drop the body; the temporary file, if any, disappears.
        """
        self._pieces = []
        if self._sender is not None:
            # A later resumeProducing then just unregisters instead of
            # reading a closed file.
            self._sender.file = None
            self._sender.stopProducing()
        if self._file is not None:
            self._file.close()
