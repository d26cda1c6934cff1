#!/usr/bin/env python3
"""Checks the Grafana dashboard: valid JSON, every panel and query on the ${datasource} variable,
the node/namespace/pod/workload variables present, every metric a query names either documented
in docs/metrics.md or recorded by the rules (no invented names), and every workload-level
recording rule (namespace_workload:...) shown by a panel.

usage: check_dashboard.py DASHBOARD.json docs/metrics.md deploy/prometheus/rules.yaml
"""
import json
import re
import sys

import yaml

HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


def main():
    dashboard_path, metrics_doc, rules_path = sys.argv[1:4]
    with open(dashboard_path) as f:
        dashboard = json.load(f)
    with open(metrics_doc) as f:
        documented = set(re.findall(r"`(kernsight_[a-z_]+)`", f.read()))
    with open(rules_path) as f:
        recorded = {r["record"] for g in yaml.safe_load(f)["groups"] for r in g["rules"] if "record" in r}

    variables = {v["name"] for v in dashboard["templating"]["list"]}
    missing = {"datasource", "node", "namespace", "pod", "workload"} - variables
    if missing:
        sys.exit(f"check_dashboard: template variables missing: {sorted(missing)}")

    queries = 0
    named = set()
    for panel in dashboard["panels"]:
        if panel["type"] == "row":
            continue
        title = panel["title"]
        for item in [panel, *panel["targets"]]:
            if item.get("datasource", {}).get("uid") != "${datasource}":
                sys.exit(f"check_dashboard: {title}: datasource must be ${{datasource}}")
        for target in panel["targets"]:
            queries += 1
            for name in re.findall(r"[a-z_:]*kernsight_[a-z0-9_:]+", target["expr"]):
                named.add(name)
                base = name
                for suffix in HISTOGRAM_SUFFIXES:
                    if name.endswith(suffix) and name[: -len(suffix)] in documented:
                        base = name[: -len(suffix)]
                if base not in documented and base not in recorded:
                    sys.exit(f"check_dashboard: {title}: {name} is neither in docs/metrics.md nor recorded")
    unshown = sorted(r for r in recorded if r.startswith("namespace_workload:") and r not in named)
    if unshown:
        sys.exit(f"check_dashboard: workload-level rules no panel shows: {unshown}")
    print(f"check_dashboard: {len(dashboard['panels'])} panels, {queries} queries valid", file=sys.stderr)


if __name__ == "__main__":
    main()
