#!/usr/bin/env python3
"""Generates the Grafana dashboards in this folder.

    python3 dashboards/generate.py          # rewrite the JSON files
    python3 dashboards/generate.py --check  # exit 1 if they differ from what this script makes

Conventions (checked by tests/dashboards.rs): a fixed uid; a `datasource`
variable used by every panel and target; `job` and `instance` variables;
every panel has a title, a description and a unit; rates use
$__rate_interval; schemaVersion 39 (imports into Grafana 10.4, 11 and 12).
"""
import json
import os
import sys

DS = {"type": "prometheus", "uid": "${datasource}"}
HERE = os.path.dirname(os.path.abspath(__file__))


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
            "current": {}, "hide": 0, "refresh": 1, "regex": "", "options": [], "includeAll": False, "multi": False}


def var_query(name, label, query, multi=False, include_all=False, all_value=".+"):
    v = {"name": name, "label": label, "type": "query", "datasource": DS,
         "query": {"query": query, "refId": f"var-{name}"}, "definition": query,
         "refresh": 2, "sort": 1, "hide": 0, "regex": "", "current": {}, "options": [],
         "multi": multi, "includeAll": include_all}
    if include_all:
        v["allValue"] = all_value
    return v


def dashboard(uid, title, description, panels, variables):
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
        "links": [],
        "panels": panels,
    }


def host():
    # netns=~"$netns": with --collector.netns each series has a netns label;
    # without it, "All" (.*) also matches series that have none.
    sel = 'job="$job",instance="$instance",range=~"$range",netns=~"$netns"'
    host_sel = 'job="$job",instance="$instance"'
    b = Board()
    by = "{{range}}/{{protocol}} {{netns}}"
    b.add(stat("Free ports", "Ports of each range still free (portrange_ports_free): a new session needs one.",
               "none", (0, 0, 5, 5), [target(f"portrange_ports_free{{{sel}}}", by)],
               [("red", None), ("orange", 1), ("green", 10)]))
    b.add(stat("Ports in use", "Distinct ports of each range holding at least one socket not in TIME_WAIT.",
               "none", (5, 0, 5, 5), [target(f"portrange_ports_in_use{{{sel}}}", by)],
               [("blue", None)]))
    g = panel("gauge", "Utilisation", "Ports in use as a share of the range's capacity.", "percentunit",
              (10, 0, 5, 5), [target(f"portrange_ports_in_use{{{sel}}} / portrange_ports{{{sel}}}", by)],
              options={"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                       "showThresholdLabels": False, "showThresholdMarkers": True},
              defaults={"min": 0, "max": 1, "color": {"mode": "thresholds"},
                        "thresholds": thresholds(("green", None), ("orange", 0.8), ("red", 0.9))})
    b.add(g)
    b.add(stat("Unexpected listeners", "Listeners in the selected ranges that the range's allowlist does not match. Red above 0.",
               "none", (15, 0, 5, 5), [target(f"sum(portrange_unexpected_listeners{{{sel}}}) or vector(0)", "unexpected")],
               [("green", None), ("red", 1)]))
    b.add(stat("Unexpected on port 3224", "Unexpected listeners on port 3224 alone: IANA lists it as unassigned, so anything there but the expected service deserves a look.",
               "none", (20, 0, 4, 5),
               [target(f'count(portrange_listener_info{{{host_sel},port="3224",expected="false"}}) or vector(0)', "3224")],
               [("green", None), ("red", 1)]))
    b.add(timeseries("Ports in use and free", "Ports in use and free per range and protocol over time.",
                     "none", (0, 5, 12, 8),
                     [target(f"portrange_ports_in_use{{{sel}}}", "in use " + by),
                      target(f"portrange_ports_free{{{sel}}}", "free " + by, ref="B")]))
    b.add(timeseries("Sockets by state", "Sockets in the ranges by TCP state (udp: unconn, established).",
                     "none", (12, 5, 12, 8),
                     [target(f"sum by (range, protocol, netns, state) (portrange_sockets{{{sel}}})", "{{range}}/{{protocol}} {{netns}} {{state}}")]))
    b.add(panel("state-timeline", "Per-port occupancy",
                "One row per port of ranges with per_port on (portrange_port_in_use): red while the port holds a socket.",
                "none", (0, 13, 24, 12),
                [target(f"portrange_port_in_use{{{sel}}}", "{{range}} {{protocol}}/{{port}} {{netns}}")],
                options={"showValue": "never", "mergeValues": True, "rowHeight": 0.9, "alignValue": "left",
                         "legend": {"showLegend": False, "displayMode": "list", "placement": "bottom"}},
                defaults={"color": {"mode": "thresholds"},
                          "thresholds": thresholds(("green", None), ("red", 1)),
                          "mappings": [{"type": "value", "options": {"0": {"text": "free", "color": "green"},
                                                                       "1": {"text": "in use", "color": "red"}}}]}))
    b.add(panel("table", "Listeners",
                "Every listener in the ranges (portrange_listener_info): TCP sockets in LISTEN and UDP sockets with no peer. expected is false for processes not on the allowlist, unknown when the owner could not be found.",
                "none", (0, 25, 16, 9),
                [target(f"portrange_listener_info{{{sel}}}", "", instant=True, fmt="table")],
                options={"showHeader": True, "sortBy": [{"displayName": "expected", "desc": False}]},
                defaults={"custom": {"align": "auto", "cellOptions": {"type": "auto"}}},
                overrides=[{"matcher": {"id": "byName", "options": "expected"},
                            "properties": [{"id": "custom.cellOptions", "value": {"type": "color-background"}},
                                           {"id": "mappings", "value": [{"type": "value", "options": {
                                               "false": {"color": "red", "index": 0},
                                               "true": {"color": "green", "index": 1},
                                               "unknown": {"color": "orange", "index": 2}}}]}]}],
                transformations=[{"id": "organize", "options": {
                    "excludeByName": {"Time": True, "Value": True, "__name__": True, "job": True, "instance": True},
                    "indexByName": {"protocol": 0, "address": 1, "port": 2, "process": 3, "user": 4, "expected": 5, "range": 6, "netns": 7},
                    "renameByName": {}}}]))
    b.add(stat("Ports exposed to the ephemeral range",
               "Ports of each range inside net.ipv4.ip_local_port_range and not in ip_local_reserved_ports: outgoing connections can take them. Reserve them to get 0.",
               "none", (16, 25, 8, 9), [target(f"portrange_ephemeral_overlap_ports{{{sel}}}", by)],
               [("green", None), ("orange", 1)]))
    b.add({"type": "row", "title": "Exporter health", "collapsed": False, "panels": [],
           "gridPos": {"x": 0, "y": 34, "w": 24, "h": 1}})
    b.add(stat("Sampling", "portrange_up: 1 when the last scrape could sample the sockets, 0 when the kernel refused (the exporter log says why).",
               "none", (0, 35, 4, 6), [target(f"portrange_up{{{host_sel}}}", "up")],
               [("red", None), ("green", 1)],
               mappings=[{"type": "value", "options": {"0": {"text": "FAILED"}, "1": {"text": "OK"}}}]))
    b.add(timeseries("Scrape duration", "Time each scrape spent sampling, attributing and counting.",
                     "s", (4, 35, 7, 6), [target(f"portrange_scrape_duration_seconds{{{host_sel}}}", "scrape")]))
    b.add(timeseries("Unattributed sockets", "Sockets whose owning process could not be found: the exporter likely lacks CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH.",
                     "none", (11, 35, 7, 6), [target(f"portrange_unattributed_sockets{{{sel}}}", by)]))
    b.add(timeseries("Exporter CPU", "CPU used by the exporter, in cores.",
                     "percentunit", (18, 35, 6, 6),
                     [target(f"rate(process_cpu_seconds_total{{{host_sel}}}[$__rate_interval])", "cpu")]))
    variables = [
        var_datasource(),
        var_query("job", "Job", "label_values(portrange_up, job)"),
        var_query("instance", "Instance", 'label_values(portrange_up{job="$job"}, instance)'),
        var_query("range", "Range", 'label_values(portrange_ports{job="$job",instance="$instance"}, range)', multi=True, include_all=True),
        var_query("netns", "Network namespace", 'label_values(portrange_ports{job="$job",instance="$instance"}, netns)',
                  multi=True, include_all=True, all_value=".*"),
    ]
    return dashboard("portrange-host", "Port ranges / Host",
                     "Ports in use, free capacity and unexpected listeners of the watched port ranges on one host (portrange_exporter).",
                     b.panels, variables)


def fleet():
    sel = 'job="$job",instance=~"$instance",range=~"$range"'
    b = Board()
    b.add(panel("table", "Hosts by free capacity",
                "Every host and range, fewest free ports first, with its utilisation as a bar gauge.",
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
                                           {"id": "thresholds", "value": thresholds(("green", None), ("orange", 0.8), ("red", 0.9))}]}],
                transformations=[{"id": "merge", "options": {}},
                                 {"id": "organize", "options": {
                                     "excludeByName": {"Time": True, "job": True},
                                     "indexByName": {"instance": 0, "netns": 1, "range": 2, "protocol": 3, "Value #A": 4, "Value #B": 5},
                                     "renameByName": {"Value #A": "Free ports", "Value #B": "Utilisation"}}}]))
    b.add(timeseries("Ports in use across the fleet", "Sum over hosts of the ports in use per range and protocol, with the fleet's total capacity.",
                     "none", (12, 0, 12, 10),
                     [target(f"sum by (range, protocol) (portrange_ports_in_use{{{sel}}})", "in use {{range}}/{{protocol}}"),
                      target(f"sum by (range, protocol) (portrange_ports{{{sel}}})", "capacity {{range}}/{{protocol}}", ref="B")]))
    b.add(panel("table", "Hosts with unexpected listeners",
                "Hosts where a range has listeners its allowlist does not match; open the host dashboard for the process and user.",
                "none", (0, 10, 12, 8),
                [target(f"sum by (instance, netns, range, protocol) (portrange_unexpected_listeners{{{sel}}}) > 0", "", instant=True, fmt="table")],
                options={"showHeader": True},
                transformations=[{"id": "organize", "options": {"excludeByName": {"Time": True},
                                                                 "renameByName": {"Value": "Unexpected listeners"}}}]))
    free = f"portrange_ports_free{{{sel}}}"
    b.add(panel("table", "Time to exhaustion",
                "Free ports divided by the rate at which they are being taken, from predict_linear over the last 6 hours. +Inf: the range is not filling up.",
                "s", (12, 10, 12, 8),
                [target(f"{free} / clamp_min(predict_linear({free}[6h], 0) - predict_linear({free}[6h], 1), 0)",
                        "", instant=True, fmt="table")],
                options={"showHeader": True, "sortBy": [{"displayName": "Time to exhaustion", "desc": False}]},
                transformations=[{"id": "organize", "options": {"excludeByName": {"Time": True, "job": True},
                                                                 "renameByName": {"Value": "Time to exhaustion"}}}]))
    b.add(panel("state-timeline", "Utilisation heatmap (host × time)",
                "One row per host, coloured by the highest utilisation of its selected ranges over time.",
                "percentunit", (0, 18, 24, 10),
                [target(f"max by (instance) (portrange_ports_in_use{{{sel}}} / portrange_ports{{{sel}}})", "{{instance}}")],
                options={"showValue": "never", "mergeValues": False, "rowHeight": 0.9,
                         "legend": {"showLegend": True, "displayMode": "list", "placement": "bottom"}},
                defaults={"min": 0, "max": 1, "color": {"mode": "continuous-GrYlRd"},
                          "thresholds": thresholds(("green", None), ("red", 0.9))}))
    b.add(stat("Exporters not sampling", "Hosts whose exporter answers but cannot sample sockets (portrange_up == 0).",
               "none", (0, 28, 8, 5), [target('count(portrange_up{job="$job",instance=~"$instance"} == 0) or vector(0)', "failing")],
               [("green", None), ("red", 1)]))
    b.add(stat("Exporters down", "Targets of the job Prometheus cannot scrape.",
               "none", (8, 28, 8, 5), [target('count(up{job="$job",instance=~"$instance"} == 0) or vector(0)', "down")],
               [("green", None), ("red", 1)]))
    b.add(timeseries("Exporter CPU across the fleet", "CPU used by all exporters together, in cores.",
                     "percentunit", (16, 28, 8, 5),
                     [target('sum(rate(process_cpu_seconds_total{job="$job",instance=~"$instance"}[$__rate_interval]))', "cpu")]))
    variables = [
        var_datasource(),
        var_query("job", "Job", "label_values(portrange_up, job)"),
        var_query("instance", "Instance", 'label_values(portrange_up{job="$job"}, instance)', multi=True, include_all=True),
        var_query("range", "Range", 'label_values(portrange_ports{job="$job"}, range)', multi=True, include_all=True),
    ]
    return dashboard("portrange-fleet", "Port ranges / Fleet",
                     "Free capacity, growth and unexpected listeners of the watched port ranges across every host (portrange_exporter).",
                     b.panels, variables)


def main():
    check = "--check" in sys.argv[1:]
    stale = []
    for name, board in (("portrange-host.json", host()), ("portrange-fleet.json", fleet())):
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
