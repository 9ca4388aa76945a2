"""
The stats page: the stats document as one HTML page, what HAProxy's
stats page shows at a glance (listeners, static nodes and their
quarantine and health checks, subscribed pools and their nodes, requests, retries, tunnels,
refusals).  Rendered on the server from the document, no script; the page
reloads itself every few seconds.
"""

import time
from html import escape

__all__ = ["renderPage"]

#: Seconds between two reloads of the page.
REFRESH = 5

_STYLE = """
body { font: 13px sans-serif; margin: 1em; color: #222; }
h1 { font-size: 18px; } h2 { font-size: 15px; margin-top: 1.4em; }
table { border-collapse: collapse; margin: .4em 0; }
th, td { border: 1px solid #bbb; padding: 2px 8px; text-align: right; }
th { background: #dde4ee; } td.name, th.name { text-align: left; }
tr.down td { background: #f4c7c3; } tr.up td { background: #d9f0d3; }
.summary td { text-align: left; }
"""


def _cell(value, css: str = "") -> str:
    attribute = f' class="{css}"' if css else ""
    return f"<td{attribute}>{escape(str(value))}</td>"


def _table(caption: str, header, rows, rowClasses=None, tableId: str = "") -> str:
    identity = f' id="{escape(tableId)}"' if tableId else ""
    parts = [f"<table{identity}><caption>{escape(caption)}</caption><tr>"]
    parts += [f'<th class="name">{escape(h)}</th>' if i == 0 else f"<th>{escape(h)}</th>"
              for i, h in enumerate(header)]
    parts.append("</tr>")
    for index, row in enumerate(rows):
        css = rowClasses[index] if rowClasses else ""
        parts.append(f'<tr class="{css}">' if css else "<tr>")
        parts += [_cell(value, "name" if i == 0 else "") for i, value in enumerate(row)]
        parts.append("</tr>")
    parts.append("</table>")
    return "".join(parts)


def _ago(stamp: int, now: float) -> str:
    return f"{max(0, int(now - stamp))} s ago" if stamp else "never"


def _staticState(node: dict) -> str:
    if node.get("check") == "down":
        return "down (checks)"
    return "quarantined" if node["grace"] else "up"


def renderPage(document: dict, shortName: str, now: "float | None" = None) -> bytes:
    """
    The page of the stats C{document} (L{txrouter.stats.document.statsDocument})
    of the router uWSGI calls C{shortName}.
    """
    now = time.time() if now is None else now
    requests = document.get("requests", {})
    body = [
        f"<h1>txrouter {escape(shortName)}: {escape(str(document.get('version')))}</h1>",
        _table("Router", ["field", "value"], [
            ("pid", document.get("pid")),
            ("client connections", document.get("active_sessions")),
            ("requests", requests.get("started", 0)),
            ("in flight", requests.get("in_flight", 0)),
            ("cheap mode", "paused" if document.get("cheap") else "accepting"),
        ], tableId="router"),
        _table("Listeners", ["address"], [(a,) for a in document.get(shortName, [])],
               tableId="listeners"),
    ]
    statuses = requests.get("statuses", {})
    if statuses:
        body.append(_table("Responses", ["status class", "requests"],
                           sorted(statuses.items()), tableId="statuses"))
    refusals = requests.get("refusals", {})
    body.append(_table("Refusals (since start)", ["event", "count"],
                       sorted(refusals.items()) or [("none", 0)], tableId="refusals"))
    retries = document.get("retries", {})
    tunnels = document.get("tunnels")
    extra = [("retries: " + cause, value) for cause, value in retries.items()]
    if tunnels is not None:
        extra += [("tunnels open", tunnels["open"]), ("tunnels opened", tunnels["opened"])]
    keepalive = document.get("node_keepalive")
    if keepalive is not None:
        extra += [("kept node connections idle", keepalive["idle"]),
                  ("kept node connections reused", keepalive["reused"])]
    body.append(_table("Retries and tunnels", ["counter", "value"], extra, tableId="counters"))
    static = document.get("static_nodes")
    if static is not None:
        rows = [(n["name"], n["hits"], _staticState(n),
                 _ago(n["grace"], now) if n["grace"] else "") for n in static]
        body.append("<h2>Static nodes (--to)</h2>")
        body.append(_table(
            "static nodes", ["node", "connections", "state", "quarantined since"], rows,
            ["up" if _staticState(n) == "up" else "down" for n in static],
            tableId="static-nodes"))
    checks = document.get("node_checks")
    if checks is not None:
        rows = [(c["name"], c["role"], c["state"], _ago(c["since"], now), c["fails"],
                 c["passes"], c["reason"] or "") for c in checks]
        body.append("<h2>Health checks</h2>")
        body.append(_table(
            "health checks", ["node", "option", "state", "changed", "failed in a row",
                              "passed in a row", "last probe"], rows,
            [c["state"] for c in checks], tableId="node-checks"))
    pools = document.get("subscriptions")
    if pools is not None:
        body.append(f"<h2>Subscribed pools ({len(pools)})</h2>")
        for pool in pools:
            nodes = pool["nodes"]
            rows = [(n["name"], n["requests"], n["ref"], n["failcnt"],
                     "dead" if n["death_mark"] else "up", n["weight"],
                     _ago(n["last_check"], now)) for n in nodes]
            body.append(_table(
                f"pool {pool['key']}: {pool['hits']} lookups, {pool.get('algo', '')}",
                ["node", "requests", "in flight", "failures", "state", "weight", "last seen"],
                rows, ["down" if n["death_mark"] else "up" for n in nodes],
                tableId="pool-" + pool["key"]))
    page = (
        "<!DOCTYPE html><html><head><meta charset=\"utf-8\">"
        f"<meta http-equiv=\"refresh\" content=\"{REFRESH}\">"
        f"<title>txrouter {escape(shortName)} stats</title><style>{_STYLE}</style></head>"
        f"<body>{''.join(body)}<p>Also: <a href=\"/stats.json\">JSON</a>,"
        " <a href=\"/metrics\">Prometheus metrics</a>.</p></body></html>"
    )
    return page.encode("utf-8")
