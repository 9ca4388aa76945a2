"""
logrotate and the access log, end to end: a real twistd txrouter-http logs
to --access-log; the file is renamed and the process gets SIGUSR1 (what
logrotate's postrotate sends); the next request's line is in a new file at
the original path.  twistd's own log file, which it rotates on SIGUSR1, is
rotated too.
"""

import os
import signal

import pytest

from tests.realpeers import TWISTD_COMMAND, curl, free_port, txrouter_http, wait_until

pytestmark = pytest.mark.e2e


def test_sigusr1_reopens_the_access_log(tmp_path):
    accessLog = tmp_path / "access.log"
    twistdLog = tmp_path / "twistd.log"
    port = free_port()
    command = [*TWISTD_COMMAND, "-n", "--pidfile=", "--logfile", str(twistdLog), "txrouter-http"]
    # No node listens there: every request gets a 502, logged all the same.
    with txrouter_http(tmp_path, port, str(tmp_path / "no-node.sock"),
                       ["--access-log", str(accessLog)], command=command) as router:
        curl(f"http://127.0.0.1:{port}/before")
        wait_until(lambda: "/before" in accessLog.read_text(), "the first line", process=router)
        os.rename(accessLog, tmp_path / "access.log.1")
        router.signal(signal.SIGUSR1)
        wait_until(accessLog.exists, "a new file at the path", process=router)
        curl(f"http://127.0.0.1:{port}/after")
        wait_until(lambda: "/after" in accessLog.read_text(), "the next line", process=router)
        rotated = (tmp_path / "access.log.1").read_text()
        assert '"GET /before HTTP/1.1" 502' in rotated and "/after" not in rotated
        assert '"GET /after HTTP/1.1" 502' in accessLog.read_text()
        # twistd's handler, which was there first, still rotates its log.
        wait_until((tmp_path / "twistd.log.1").exists, "twistd's log rotation", process=router)
