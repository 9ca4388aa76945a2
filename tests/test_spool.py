"""
BodySpool: memory up to a threshold, then an unlinked temporary file in the
directory asked for; every failure to store is a SpoolError, and the file is
gone once the spool is closed.
"""

import os
import tempfile

import pytest
from twisted.internet.interfaces import IConsumer
from twisted.internet.testing import StringTransport
from zope.interface import implementer

from txrouter.spool import BodySpool, SpoolError, checkSpoolDirectory


def spool_files(directory) -> list:
    """
    This process's descriptors on unlinked files in C{directory}.
    """
    prefix = os.path.realpath(directory) + "/"
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith(prefix) and target.endswith(" (deleted)"):
            found.append(target)
    return found


@implementer(IConsumer)
class PullingConsumer:
    """
    A consumer that asks its pull producer for everything at once.
    """

    def __init__(self):
        self.transport = StringTransport()
        self.producer = None

    def registerProducer(self, producer, streaming):
        assert not streaming
        self.producer = producer

    def unregisterProducer(self):
        self.producer = None

    def write(self, data):
        self.transport.write(data)

    def drain(self):
        while self.producer is not None:
            self.producer.resumeProducing()


def test_small_body_stays_in_memory(tmp_path):
    spool = BodySpool(100, str(tmp_path))
    spool.write(b"a" * 60)
    spool.write(b"b" * 40)
    assert not spool.onDisk and spool_files(tmp_path) == []
    consumer = PullingConsumer()
    spool.sendTo(consumer)
    assert consumer.transport.value() == b"a" * 60 + b"b" * 40


def test_big_body_goes_to_an_unlinked_file_in_the_directory(tmp_path):
    spool = BodySpool(100, str(tmp_path))
    body = os.urandom(100_000)
    for offset in range(0, len(body), 7000):
        spool.write(body[offset:offset + 7000])
    spool.finish()
    assert spool.onDisk and spool.length == len(body)
    assert len(spool_files(tmp_path)) == 1
    assert os.listdir(tmp_path) == []
    consumer = PullingConsumer()
    done = spool.sendTo(consumer)
    consumer.drain()
    assert done.called and consumer.transport.value() == body
    spool.close()
    assert spool_files(tmp_path) == []


def test_close_during_the_transfer_releases_the_file(tmp_path):
    spool = BodySpool(10, str(tmp_path))
    spool.write(os.urandom(200_000))
    consumer = PullingConsumer()
    done = spool.sendTo(consumer)
    consumer.producer.resumeProducing()
    failures = []
    done.addErrback(failures.append)
    spool.close()
    spool.close()
    assert spool_files(tmp_path) == [] and len(failures) == 1
    # A consumer that still asks gets nothing more and lets go.
    if consumer.producer is not None:
        consumer.producer.resumeProducing()
    assert consumer.producer is None


def test_missing_directory_is_a_spool_error(tmp_path):
    missing = tmp_path / "gone"
    spool = BodySpool(10, str(missing))
    spool.write(b"x" * 10)
    with pytest.raises(SpoolError) as raised:
        spool.write(b"y")
    assert str(raised.value) == f"{missing}: No such file or directory"
    assert (raised.value.directory, raised.value.reason) == (str(missing), "No such file or directory")
    assert not spool.onDisk


def test_full_disk_is_a_spool_error(tmp_path, monkeypatch):
    """
    /dev/full stands for a full disk: writes fail with ENOSPC, at the
    latest when the spool is finished, before a node is connected.
    """
    monkeypatch.setattr(tempfile, "TemporaryFile", lambda dir=None: open("/dev/full", "w+b"))
    spool = BodySpool(10, str(tmp_path))
    with pytest.raises(SpoolError, match="No space left on device"):
        spool.write(b"x" * 20)
        spool.finish()
    assert not spool.onDisk


def test_check_spool_directory(tmp_path):
    checkSpoolDirectory(str(tmp_path))
    checkSpoolDirectory(None)
    assert spool_files(tmp_path) == []
    with pytest.raises(SpoolError, match="No such file or directory"):
        checkSpoolDirectory(str(tmp_path / "missing"))
    (tmp_path / "file").write_bytes(b"")
    with pytest.raises(SpoolError, match="Not a directory"):
        checkSpoolDirectory(str(tmp_path / "file"))
