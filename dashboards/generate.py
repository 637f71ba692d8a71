#!/usr/bin/env python3
"""Generates the Grafana dashboards in this folder.

    python3 dashboards/generate.py          # rewrite the JSON files
    python3 dashboards/generate.py --check  # exit 1 if they differ from what this script makes

Conventions (checked by tests/dashboards_and_rules.rs): a fixed uid; a
`datasource` variable used by every panel and target; `job` and `instance`
variables; every panel has a title, a description and a unit that fits its
query (cores for CPU, seconds for durations, percentunit only for ratios);
rates use $__rate_interval; queries hold no literal label values (ports,
hosts, ranges come from variables) and no long-range functions (those live in
recording rules); tables hide __name__, Time and every label they do not
show; the two dashboards link to each other, and fleet rows link to the host
dashboard with their instance and range; schemaVersion 39 (imports into
Grafana 10.4, 11 and 12).
"""
import json
import os
import sys

DS = {"type": "prometheus", "uid": "${datasource}"}
HERE = os.path.dirname(os.path.abspath(__file__))

HOST_UID = "portrange-host"
FLEET_UID = "portrange-fleet"
# The share of free ports below which PortRangeNearlyExhausted fires and
# `check --warn-free` warns (deploy/prometheus/rules/portrange.rules.yml).
WARN_FREE = 0.10
# PortRangeExhaustionPredicted's horizon, in seconds.
PREDICT_HORIZON = 4 * 3600
# The per-port timeline draws one row per port: only ranges up to this size.
PER_PORT_ROWS = 128
# Grafana custom unit: CPU seconds per second.
CORES = "suffix: cores"


class Board:
    def __init__(self):
        self.panels = []
        self.next_id = 1

    def add(self, panel):
        panel["id"] = self.next_id
        self.next_id += 1
        self.panels.append(panel)
        return panel


def target(expr, legend="", ref="A", instant=False, fmt="time_series"):
    t = {"datasource": DS, "expr": expr, "refId": ref, "legendFormat": legend or "__auto", "format": fmt}
    if instant:
        t["instant"] = True
        t["range"] = False
    else:
        t["range"] = True
    return t


def thresholds(*steps):
    return {"mode": "absolute", "steps": [{"color": c, "value": v} for c, v in steps]}


def panel(kind, title, description, unit, pos, targets, options=None, defaults=None, overrides=None, transformations=None):
    fc_defaults = {"unit": unit}
    fc_defaults.update(defaults or {})
    p = {
        "type": kind,
        "title": title,
        "description": description,
        "datasource": DS,
        "gridPos": dict(zip(("x", "y", "w", "h"), pos)),
        "targets": targets,
        "fieldConfig": {"defaults": fc_defaults, "overrides": overrides or []},
        "options": options or {},
    }
    if transformations:
        p["transformations"] = transformations
    return p


def stat(title, description, unit, pos, targets, steps, mappings=None, text_mode="auto"):
    return panel(
        "stat", title, description, unit, pos, targets,
        options={"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                 "colorMode": "background", "graphMode": "none", "textMode": text_mode, "justifyMode": "auto"},
        defaults={"thresholds": thresholds(*steps), "color": {"mode": "thresholds"}, "mappings": mappings or []},
    )


def timeseries(title, description, unit, pos, targets, defaults=None):
    d = {"custom": {"drawStyle": "line", "lineWidth": 1, "fillOpacity": 10, "showPoints": "never"},
         "color": {"mode": "palette-classic"}}
    d.update(defaults or {})
    return panel("timeseries", title, description, unit, pos, targets,
                 options={"legend": {"displayMode": "table", "placement": "right", "calcs": ["lastNotNull"]},
                          "tooltip": {"mode": "multi", "sort": "desc"}},
                 defaults=d)


def var_datasource():
    return {"name": "datasource", "label": "Data source", "type": "datasource", "query": "prometheus",
            "hide": 0, "refresh": 1, "regex": "", "options": [], "includeAll": False, "multi": False}


def var_query(name, label, query, multi=False, include_all=False, all_value=".+"):
    v = {"name": name, "label": label, "type": "query", "datasource": DS,
         "query": {"query": query, "refId": f"var-{name}"},
         "refresh": 2, "sort": 1, "hide": 0, "regex": "", "options": [],
         "multi": multi, "includeAll": include_all}
    if include_all:
        v["allValue"] = all_value
    return v


def dashboard_link(title, uid, tooltip, params):
    """A link in the dashboard's header to the other dashboard, keeping the
    time range and passing the variables both dashboards share."""
    return {"type": "link", "title": title, "tooltip": tooltip, "icon": "dashboard",
            "url": f"/d/{uid}?" + "&".join(params), "keepTime": True, "includeVars": False,
            "targetBlank": False, "asDropdown": False, "tags": []}


def host_link(instance, range_):
    """A data link from one row of a fleet panel to the host dashboard, with
    the row's instance, a range (`var-range=...` or the fleet's selection)
    and the time range."""
    return {"title": "Open the host dashboard",
            "url": f"/d/{HOST_UID}?${{__url_time_range}}&${{datasource:queryparam}}&${{job:queryparam}}"
                   f"&var-instance={instance}&{range_}",
            "targetBlank": False}


def links_by_name(column, link):
    return {"matcher": {"id": "byName", "options": column}, "properties": [{"id": "links", "value": [link]}]}


# A table of listeners: sorted by expected, which is coloured red (false),
# green (true) or orange (unknown).
EXPECTED_TABLE = {
    "options": {"showHeader": True, "sortBy": [{"displayName": "expected", "desc": False}]},
    "defaults": {"custom": {"align": "auto", "cellOptions": {"type": "auto"}}},
    "overrides": [{"matcher": {"id": "byName", "options": "expected"},
                   "properties": [{"id": "custom.cellOptions", "value": {"type": "color-background"}},
                                  {"id": "mappings", "value": [{"type": "value", "options": {
                                      "false": {"color": "red", "index": 0},
                                      "true": {"color": "green", "index": 1},
                                      "unknown": {"color": "orange", "index": 2}}}]}]}],
}


def organize(exclude, index, rename=None):
    """Hides Time, __name__ and the given labels; orders the shown columns."""
    hidden = {"Time": True, "__name__": True}
    hidden.update({k: True for k in exclude})
    return {"id": "organize", "options": {"excludeByName": hidden, "indexByName": index, "renameByName": rename or {}}}


def dashboard(uid, title, description, panels, variables, links):
    return {
        "uid": uid,
        "title": title,
        "description": description,
        "tags": ["portrange", "prometheus"],
        "timezone": "browser",
        "editable": True,
        "graphTooltip": 1,
        "schemaVersion": 39,
        "version": 1,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "templating": {"list": variables},
        "annotations": {"list": []},
        "links": links,
        "panels": panels,
    }


def host():
    # netns=~"$netns": with --collector.netns each series has a netns label;
    # without it, "All" (.*) also matches series that have none.
    sel = 'job="$job",instance="$instance",range=~"$range",netns=~"$netns"'
    host_sel = 'job="$job",instance="$instance"'
    b = Board()
    by = "{{range}}/{{protocol}} {{netns}}"
    b.add(stat("Free ports (share of range)",
               f"Free ports of each range as a share of its capacity (portrange_ports_free / portrange_ports): a new session needs one. "
               f"Orange below {WARN_FREE:.0%}, where PortRangeNearlyExhausted fires and `check` warns; red when none is free. "
               "The counts are in 'Ports in use and free'.",
               "percentunit", (0, 0, 5, 5), [target(f"portrange_ports_free{{{sel}}} / portrange_ports{{{sel}}}", by)],
               [("red", None), ("orange", 1e-9), ("green", WARN_FREE)]))
    b.add(stat("Ports in use", "Distinct ports of each range holding at least one socket not in TIME_WAIT.",
               "none", (5, 0, 5, 5), [target(f"portrange_ports_in_use{{{sel}}}", by)],
               [("blue", None)]))
    g = panel("gauge", "Utilisation", "Ports in use as a share of the range's capacity.", "percentunit",
              (10, 0, 5, 5), [target(f"portrange_ports_in_use{{{sel}}} / portrange_ports{{{sel}}}", by)],
              options={"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                       "showThresholdLabels": False, "showThresholdMarkers": True},
              defaults={"min": 0, "max": 1, "color": {"mode": "thresholds"},
                        "thresholds": thresholds(("green", None), ("orange", 0.8), ("red", 1 - WARN_FREE))})
    b.add(g)
    b.add(stat("Unexpected listeners", "Listeners in the selected ranges that the range's allowlist does not match. Red above 0.",
               "none", (15, 0, 5, 5), [target(f"sum(portrange_unexpected_listeners{{{sel}}}) or vector(0)", "unexpected")],
               [("green", None), ("red", 1)]))
    b.add(stat("Listeners with unknown owner",
               "Listeners in the selected ranges whose owning process the exporter could not find (expected=\"unknown\"): "
               "they are judged neither expected nor unexpected, so UnexpectedListener cannot fire for them. Orange above 0; "
               "the exporter most likely lacks CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH.",
               "none", (20, 0, 4, 5),
               [target(f'sum(portrange_listeners{{{sel},expected="unknown"}}) or vector(0)', "unknown")],
               [("green", None), ("orange", 1)]))
    b.add(timeseries("Ports in use and free", "Ports in use and free per range and protocol over time.",
                     "none", (0, 5, 12, 8),
                     [target(f"portrange_ports_in_use{{{sel}}}", "in use " + by),
                      target(f"portrange_ports_free{{{sel}}}", "free " + by, ref="B")]))
    b.add(timeseries("Sockets by state", "Sockets in the ranges by TCP state (udp: unconn, established).",
                     "none", (12, 5, 12, 8),
                     [target(f"sum by (range, protocol, netns, state) (portrange_sockets{{{sel}}})", "{{range}}/{{protocol}} {{netns}} {{state}}")]))
    b.add(panel("state-timeline", "Per-port occupancy",
                f"One row per port (portrange_port_in_use), for ranges of at most {PER_PORT_ROWS} ports with per_port on; "
                "larger ranges (mosh's 1,001 ports, RTP ranges) would draw a row per port and are left out: see "
                "'Ports in use and free'. Blue while the port holds a socket, which is normal use; blank while free.",
                "none", (0, 13, 24, 12),
                [target(f"portrange_port_in_use{{{sel}}} and on (job, instance, range, protocol, netns) "
                        f"(portrange_ports{{{sel}}} <= {PER_PORT_ROWS})", "{{range}} {{protocol}}/{{port}} {{netns}}")],
                options={"showValue": "never", "mergeValues": True, "rowHeight": 0.9, "alignValue": "left",
                         "legend": {"showLegend": False, "displayMode": "list", "placement": "bottom"}},
                defaults={"color": {"mode": "thresholds"},
                          "thresholds": thresholds(("transparent", None), ("blue", 1)),
                          "mappings": [{"type": "value", "options": {"0": {"text": "free", "color": "transparent"},
                                                                       "1": {"text": "in use", "color": "blue"}}}]}))
    b.add(panel("table", "Listeners by owner",
                "Listeners (TCP sockets in LISTEN and UDP sockets with no peer) counted per owning process and user "
                "(portrange_listeners): one row per owner, however many ports it holds. expected is false for owners "
                "not on the allowlist, unknown when the owner could not be found.",
                "none", (0, 25, 8, 9),
                [target(f"portrange_listeners{{{sel}}}", "", instant=True, fmt="table")],
                **EXPECTED_TABLE,
                transformations=[organize(["job", "instance"],
                                          {"process": 0, "user": 1, "expected": 2, "Value": 3, "protocol": 4, "range": 5, "netns": 6},
                                          {"Value": "listeners"})]))
    b.add(panel("table", "Listeners to act on",
                "Unexpected and unknown listeners one by one (portrange_listener_info): address and port of each, up to the "
                "range's max_listener_series (what the cap left out is in portrange_listener_info_dropped); allowed "
                "listeners appear here too in ranges with per_port.",
                "none", (8, 25, 10, 9),
                [target(f"portrange_listener_info{{{sel}}}", "", instant=True, fmt="table")],
                **EXPECTED_TABLE,
                transformations=[organize(["Value", "job", "instance"],
                                          {"protocol": 0, "address": 1, "port": 2, "process": 3, "user": 4, "expected": 5, "range": 6, "netns": 7})]))
    b.add(stat("Ports exposed to the ephemeral range",
               "Ports of each range inside net.ipv4.ip_local_port_range and not in ip_local_reserved_ports: outgoing connections can take them. Reserve them to get 0.",
               "none", (18, 25, 6, 9), [target(f"portrange_ephemeral_overlap_ports{{{sel}}}", by)],
               [("green", None), ("orange", 1)]))
    b.add({"type": "row", "title": "Exporter health", "collapsed": False, "panels": [],
           "gridPos": {"x": 0, "y": 34, "w": 24, "h": 1}})
    b.add(stat("Sampling",
               "OK when the last scrape could sample the sockets (portrange_up 1); FAILED when the kernel refused (portrange_up 0, "
               "the exporter log says why); DOWN when Prometheus cannot scrape the exporter at all (up 0).",
               "none", (0, 35, 4, 6), [target(f"portrange_up{{{host_sel}}} or (up{{{host_sel}}} - 1)", "sampling")],
               [("red", None), ("green", 1)],
               mappings=[{"type": "value", "options": {"-1": {"text": "DOWN"}, "0": {"text": "FAILED"}, "1": {"text": "OK"}}}]))
    b.add(stat("Configuration",
               "OK when the exporter's last load of its configuration file succeeded; FAILED when a reload was refused "
               "(it keeps the last good ranges; PortRangeConfigReloadFailed, and the log names file, line and key).",
               "none", (4, 35, 4, 6), [target(f"portrange_config_last_reload_successful{{{host_sel}}}", "config")],
               [("red", None), ("green", 1)],
               mappings=[{"type": "value", "options": {"0": {"text": "FAILED"}, "1": {"text": "OK"}}}]))
    b.add(timeseries("Scrape duration", "Time each scrape spent sampling, attributing and counting.",
                     "s", (8, 35, 6, 6), [target(f"portrange_scrape_duration_seconds{{{host_sel}}}", "scrape")]))
    b.add(timeseries("Unattributed sockets", "Sockets whose owning process could not be found: the exporter likely lacks CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH.",
                     "none", (14, 35, 5, 6), [target(f"portrange_unattributed_sockets{{{sel}}}", by)]))
    b.add(timeseries("Exporter CPU", "CPU used by the exporter, in cores (CPU seconds per second).",
                     CORES, (19, 35, 5, 6),
                     [target(f"rate(process_cpu_seconds_total{{{host_sel}}}[$__rate_interval])", "cpu")]))
    b.add({"type": "row", "title": "Traffic to the ranges (--collector.traffic)", "collapsed": False, "panels": [],
           "gridPos": {"x": 0, "y": 41, "w": 24, "h": 1}})
    b.add(timeseries("Packets received",
                     "Packets per second received for each range's ports, by whether a socket could take them (listening) or none "
                     "could (closed), counted before the host's firewall rules (portrange_received_packets_total; needs "
                     "--collector.traffic and CAP_NET_ADMIN). Closed-port traffic above 1 packet a second for 10 minutes fires "
                     "PortRangeProbed; the status page names the busiest closed ports.",
                     "pps", (0, 42, 12, 8),
                     [target(f"sum by (range, protocol, netns, port_state) (rate(portrange_received_packets_total{{{sel}}}[$__rate_interval]))",
                             "{{range}}/{{protocol}} {{port_state}} {{netns}}")]))
    b.add(timeseries("TCP connection attempts",
                     "TCP SYNs without ACK per second to each range's ports, by port_state: attempts to closed ports are scans or "
                     "clients whose session is gone (portrange_connection_attempts_total).",
                     "pps", (12, 42, 12, 8),
                     [target(f"sum by (range, protocol, netns, port_state) (rate(portrange_connection_attempts_total{{{sel}}}[$__rate_interval]))",
                             "{{range}} {{port_state}} {{netns}}")]))
    # The dynamic (ephemeral) range: per protocol (and netns), no range label.
    eph_sel = 'job="$job",instance="$instance",netns=~"$netns"'
    b.add({"type": "row", "title": "Ephemeral ports", "collapsed": False, "panels": [],
           "gridPos": {"x": 0, "y": 50, "w": 24, "h": 1}})
    b.add(timeseries("Ephemeral ports left toward the busiest destination",
                     "portrange_ephemeral_ports_free_min: the fewest ports of the dynamic range still free toward any one "
                     "destination (tcp: the range less ports held with no peer less the busiest destination's ports; udp: the "
                     "range less the ports in use), against the range's size. At 0 connect() toward that destination fails "
                     "with EADDRNOTAVAIL; EphemeralPortsNearlyExhausted fires below 20%. `check` names the destination.",
                     "none", (0, 51, 12, 8),
                     [target(f"portrange_ephemeral_ports_free_min{{{eph_sel}}}", "left {{protocol}} {{netns}}"),
                      target(f"portrange_ephemeral_ports{{{eph_sel}}}", "range {{protocol}} {{netns}}", ref="B"),
                      target(f'portrange_ephemeral_sockets{{{eph_sel},state="time_wait"}}', "time_wait {{protocol}} {{netns}}", ref="C")]))
    b.add(panel("table", "Ephemeral port holders",
                "Sockets of the dynamic range per owning process and user (portrange_ephemeral_holders): the top owners "
                "and process=other for the rest; TIME_WAIT has no owner and is counted only in the sockets by state.",
                "none", (12, 51, 12, 8),
                [target(f"portrange_ephemeral_holders{{{eph_sel}}}", "", instant=True, fmt="table")],
                options={"showHeader": True, "sortBy": [{"displayName": "sockets", "desc": True}]},
                transformations=[organize(["job", "instance"],
                                          {"process": 0, "user": 1, "Value": 2, "protocol": 3, "netns": 4},
                                          {"Value": "sockets"})]))
    variables = [
        var_datasource(),
        var_query("job", "Job", "label_values(portrange_up, job)"),
        # From up, so that a host whose exporter is down can still be picked.
        var_query("instance", "Instance", 'label_values(up{job="$job"}, instance)'),
        var_query("range", "Range", 'label_values(portrange_ports{job="$job",instance="$instance"}, range)', multi=True, include_all=True),
        var_query("netns", "Network namespace", 'label_values(portrange_ports{job="$job",instance="$instance"}, netns)',
                  multi=True, include_all=True, all_value=".*"),
    ]
    links = [dashboard_link("Fleet", FLEET_UID, "Every host of this job",
                            ["${datasource:queryparam}", "${job:queryparam}", "${range:queryparam}"])]
    return dashboard(HOST_UID, "Port ranges / Host",
                     "Ports in use, free capacity and unexpected listeners of the watched port ranges on one host (portrange_exporter).",
                     b.panels, variables, links)


def fleet():
    sel = 'job="$job",instance=~"$instance",range=~"$range"'
    host_sel = 'job="$job",instance=~"$instance"'
    row_link = host_link("${__data.fields.instance}", "var-range=${__data.fields.range}")
    b = Board()
    b.add(panel("table", "Hosts by free capacity",
                "Every host and range, fewest free ports first, with its utilisation as a bar gauge. Click a host for its dashboard.",
                "none", (0, 0, 12, 10),
                [target(f"portrange_ports_free{{{sel}}}", "", ref="A", instant=True, fmt="table"),
                 target(f"portrange_ports_in_use{{{sel}}} / portrange_ports{{{sel}}}", "", ref="B", instant=True, fmt="table")],
                options={"showHeader": True, "sortBy": [{"displayName": "Free ports", "desc": False}]},
                overrides=[{"matcher": {"id": "byName", "options": "Free ports"},
                            "properties": [{"id": "unit", "value": "none"}]},
                           {"matcher": {"id": "byName", "options": "Utilisation"},
                            "properties": [{"id": "unit", "value": "percentunit"}, {"id": "min", "value": 0},
                                           {"id": "max", "value": 1},
                                           {"id": "custom.cellOptions", "value": {"type": "gauge", "mode": "lcd"}},
                                           {"id": "thresholds", "value": thresholds(("green", None), ("orange", 0.8), ("red", 1 - WARN_FREE))}]},
                           links_by_name("instance", row_link)],
                transformations=[{"id": "merge", "options": {}},
                                 organize(["job"], {"instance": 0, "netns": 1, "range": 2, "protocol": 3, "Value #A": 4, "Value #B": 5},
                                          {"Value #A": "Free ports", "Value #B": "Utilisation"})]))
    b.add(timeseries("Ports in use across the fleet",
                     "Sum over hosts of the ports in use per range and protocol, with the total capacity of the hosts that can sample "
                     "(a host with portrange_up 0 reports its capacity but no ports in use, so it is left out of both).",
                     "none", (12, 0, 12, 10),
                     [target(f"sum by (range, protocol) (portrange_ports_in_use{{{sel}}})", "in use {{range}}/{{protocol}}"),
                      target(f"sum by (range, protocol) (portrange_ports{{{sel}}} and on (job, instance) (portrange_up{{{host_sel}}} == 1))",
                             "capacity {{range}}/{{protocol}}", ref="B")]))
    b.add(panel("table", "Hosts with unexpected listeners",
                "Hosts where a range has listeners its allowlist does not match. Click a host for its dashboard, which lists the process and user.",
                "none", (0, 10, 12, 8),
                [target(f"sum by (instance, netns, range, protocol) (portrange_unexpected_listeners{{{sel}}}) > 0", "", instant=True, fmt="table")],
                options={"showHeader": True},
                overrides=[links_by_name("instance", row_link)],
                transformations=[organize([], {"instance": 0, "netns": 1, "range": 2, "protocol": 3, "Value": 4},
                                          {"Value": "Unexpected listeners"})]))
    b.add(panel("table", "Time to exhaustion",
                "How long until each filling range has no free port, at the rate its ports were taken over the last 6 hours "
                "(the recording rule instance:portrange_exhaustion_seconds:predict_linear6h). 0: no port is free now. Ranges that "
                f"are not filling up are not listed. Red below {PREDICT_HORIZON // 3600} hours, where PortRangeExhaustionPredicted "
                "fires once the range is more than half in use. Click a host for its dashboard.",
                "s", (12, 10, 12, 8),
                [target(f"instance:portrange_exhaustion_seconds:predict_linear6h{{{sel}}}", "", instant=True, fmt="table")],
                options={"showHeader": True, "sortBy": [{"displayName": "Time to exhaustion", "desc": False}]},
                defaults={"color": {"mode": "thresholds"},
                          "thresholds": thresholds(("red", None), ("orange", PREDICT_HORIZON), ("green", 24 * 3600))},
                overrides=[{"matcher": {"id": "byName", "options": "Time to exhaustion"},
                            "properties": [{"id": "custom.cellOptions", "value": {"type": "color-text"}}]},
                           links_by_name("instance", row_link)],
                transformations=[organize(["job"], {"instance": 0, "range": 1, "protocol": 2, "Value": 3},
                                          {"Value": "Time to exhaustion"})]))
    heat = panel("state-timeline", "Utilisation heatmap (host × time)",
                 "One row per host, coloured by the highest utilisation of its selected ranges over time. Click a row for the host's dashboard.",
                 "percentunit", (0, 18, 24, 10),
                 [target(f"max by (instance) (portrange_ports_in_use{{{sel}}} / portrange_ports{{{sel}}})", "{{instance}}")],
                 options={"showValue": "never", "mergeValues": False, "rowHeight": 0.9,
                          "legend": {"showLegend": True, "displayMode": "list", "placement": "bottom"}},
                 defaults={"min": 0, "max": 1, "color": {"mode": "continuous-GrYlRd"},
                           "thresholds": thresholds(("green", None), ("red", 1 - WARN_FREE)),
                           "links": [host_link("${__field.labels.instance}", "${range:queryparam}")]})
    b.add(heat)
    b.add(panel("table", "Probed hosts",
                "Hosts and ranges whose closed ports received packets recently (--collector.traffic), most "
                "first, in packets per second; PortRangeProbed fires above 1 for 10 minutes. Click a host for its dashboard; "
                "its status page names the ports.",
                "pps", (0, 33, 24, 8),
                [target(f'sum by (instance, range, protocol) (rate(portrange_received_packets_total{{{sel},port_state="closed"}}[$__rate_interval])) > 0',
                        "", instant=True, fmt="table")],
                options={"showHeader": True, "sortBy": [{"displayName": "Packets per second to closed ports", "desc": True}]},
                overrides=[links_by_name("instance", row_link)],
                transformations=[organize([], {"instance": 0, "range": 1, "protocol": 2, "Value": 3},
                                          {"Value": "Packets per second to closed ports"})]))
    b.add(stat("Exporters not sampling", "Hosts whose exporter answers but cannot sample sockets (portrange_up == 0).",
               "none", (0, 28, 8, 5), [target(f"count(portrange_up{{{host_sel}}} == 0) or vector(0)", "failing")],
               [("green", None), ("red", 1)]))
    b.add(stat("Exporters down", "Targets of the job Prometheus cannot scrape.",
               "none", (8, 28, 8, 5), [target(f"count(up{{{host_sel}}} == 0) or vector(0)", "down")],
               [("green", None), ("red", 1)]))
    b.add(timeseries("Exporter CPU across the fleet", "CPU used by all exporters together, in cores (CPU seconds per second).",
                     CORES, (16, 28, 8, 5),
                     [target(f"sum(rate(process_cpu_seconds_total{{{host_sel}}}[$__rate_interval]))", "cpu")]))
    b.add(panel("table", "Hosts by ephemeral headroom",
                "Every host and protocol, fewest dynamic-range ports left toward its busiest destination first "
                "(portrange_ephemeral_ports_free_min): the hosts closest to EADDRNOTAVAIL. Click a host for its dashboard; "
                "`check` on the host names the destination and the top holder.",
                "none", (0, 41, 24, 8),
                [target(f"portrange_ephemeral_ports_free_min{{{host_sel}}}", "", instant=True, fmt="table")],
                options={"showHeader": True, "sortBy": [{"displayName": "ports left", "desc": False}]},
                overrides=[links_by_name("instance", host_link("${__data.fields.instance}", "${range:queryparam}"))],
                transformations=[organize(["job"], {"instance": 0, "protocol": 1, "Value": 2, "netns": 3},
                                          {"Value": "ports left"})]))
    variables = [
        var_datasource(),
        var_query("job", "Job", "label_values(portrange_up, job)"),
        var_query("instance", "Instance", 'label_values(up{job="$job"}, instance)', multi=True, include_all=True),
        var_query("range", "Range", 'label_values(portrange_ports{job="$job"}, range)', multi=True, include_all=True),
    ]
    links = [dashboard_link("Host", HOST_UID, "One host's ranges, listeners and exporter health",
                            ["${datasource:queryparam}", "${job:queryparam}", "${range:queryparam}"])]
    return dashboard(FLEET_UID, "Port ranges / Fleet",
                     "Free capacity, growth and unexpected listeners of the watched port ranges across every host (portrange_exporter).",
                     b.panels, variables, links)


def main():
    check = "--check" in sys.argv[1:]
    stale = []
    for name, board in ((HOST_UID + ".json", host()), (FLEET_UID + ".json", fleet())):
        text = json.dumps(board, indent=2, ensure_ascii=False) + "\n"
        path = os.path.join(HERE, name)
        if check:
            with open(path, encoding="utf-8") as f:
                if f.read() != text:
                    stale.append(name)
        else:
            with open(path, "w", encoding="utf-8") as f:
                f.write(text)
    if stale:
        sys.exit(f"out of date, run python3 dashboards/generate.py: {', '.join(stale)}")


if __name__ == "__main__":
    main()
