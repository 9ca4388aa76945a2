"""
Operating a router, end to end: a real twistd txrouter-http in front of a
real uWSGI worker and a node that is not there, with --metrics,
--stats-http, a JSON access log and twistd's log as JSON lines.  The
metrics are read with prometheus_client's parser, the stats page is
rendered by headless Chromium and its DOM checked, and the refusal's event
name is found in both logs.
"""

import json
import os
import shutil
import subprocess
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.realpeers import (
    TWISTD_COMMAND,
    curl,
    free_port,
    txrouter_http,
    uwsgi_worker,
    wait_for_tcp,
    wait_until,
)

pytestmark = pytest.mark.e2e

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def metricValues(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    values = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            values[sample.name, tuple(sorted(sample.labels.items()))] = sample.value
    return values


def chromiumDOM(url: str) -> str:
    """
    The DOM headless Chromium renders for C{url}.
    """
    result = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom", url],
        capture_output=True, timeout=60,
    )
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    return result.stdout.decode()


@pytest.fixture
def router(tmp_path, monkeypatch):
    node = str(tmp_path / "node.sock")
    dead = str(tmp_path / "dead.sock")
    worker = uwsgi_worker(tmp_path, node)
    port, statsPort, metricsPort = free_port(), free_port(), free_port()
    monkeypatch.setenv("TXROUTER_LOG_FILE", str(tmp_path / "twistd.json"))
    command = [*TWISTD_COMMAND, "-n", "--pidfile=", "--logger", "txrouter.logging.jsonLogger",
               "txrouter-http"]
    process = txrouter_http(tmp_path, port, [node, dead], [
        "--max-retries", "0", "--access-log", str(tmp_path / "access.json"),
        "--log-format", "json", "--stats", f"127.0.0.1:{statsPort}", "--stats-http",
        "--metrics", f"tcp:{metricsPort}:interface=127.0.0.1",
    ], command=command)
    wait_for_tcp(statsPort, process=process)
    wait_for_tcp(metricsPort, process=process)
    try:
        yield dict(port=port, stats=statsPort, metrics=metricsPort, node=node, dead=dead,
                   process=process, tmp=tmp_path)
    finally:
        process.stop()
        worker.stop()


def test_metrics_page_and_json_logs(router):
    port, tmp = router["port"], router["tmp"]
    # Round robin: the dead node gets one request (502, then quarantined),
    # the worker the others.
    statuses = [curl("-o", os.devnull, "-w", "%{http_code}", f"http://127.0.0.1:{port}/{n}")
                .stdout.decode() for n in range(4)]
    assert sorted(statuses) == ["200", "200", "200", "502"], statuses

    http = ("router", "http")
    for url in [f"http://127.0.0.1:{router['metrics']}/metrics",
                f"http://127.0.0.1:{router['stats']}/metrics"]:
        values = metricValues(url)
        assert values["txrouter_requests_total", (("node", router["node"]), http,
                                                  ("status_class", "2xx"))] == 3
        assert values["txrouter_refusals_total", (("event", "backend_unreachable"), http)] == 1
        assert values["txrouter_requests_in_flight", (http,)] == 0
        assert values["txrouter_first_byte_seconds_count", (http,)] == 3
        assert values["txrouter_static_node_quarantined", (("node", router["dead"]), http)] == 1
        assert values["txrouter_node_bytes_received_total", (http,)] > 0

    accessLines = [json.loads(line) for line in (tmp / "access.json").read_text().splitlines()]
    refused = [line for line in accessLines if line["status"] == 502]
    assert [line["event"] for line in refused] == ["backend_unreachable"]
    served = [line for line in accessLines if line["status"] == 200]
    assert {line["node"] for line in served} == {router["node"]}
    assert all(line["duration"] >= 0 and line["method"] == "GET" for line in accessLines)

    twistdLog = tmp / "twistd.json"
    wait_until(lambda: "backend_unreachable" in twistdLog.read_text(), "twistd's JSON line",
               process=router["process"])
    events = [json.loads(line) for line in twistdLog.read_text().splitlines()]
    unreachable = [e for e in events if e["event"] == "backend_unreachable"]
    assert unreachable and unreachable[0]["node"] == router["dead"]
    assert {"time", "level", "namespace", "message"} <= set(unreachable[0])


@pytest.mark.skipif(CHROMIUM is None, reason="needs chromium (scripts/setup installs it)")
def test_stats_page_in_chromium(router):
    port = router["port"]
    for n in range(3):
        curl(f"http://127.0.0.1:{port}/{n}")
    dom = chromiumDOM(f"http://127.0.0.1:{router['stats']}/")
    assert 'id="static-nodes"' in dom
    static = dom.partition('id="static-nodes"')[2].partition("</table>")[0]
    assert router["node"] in static and router["dead"] in static
    assert "quarantined" in static
    refusals = dom.partition('id="refusals"')[2].partition("</table>")[0]
    assert "backend_unreachable" in refusals
    statusTable = dom.partition('id="statuses"')[2].partition("</table>")[0]
    assert "<td>2</td>" in statusTable and "2xx" in statusTable
