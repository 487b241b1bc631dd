"""What watches the programs: the Grafana dashboard and the alert rules query only metrics the
programs export, and the consumers' probes ask the right questions."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest

from tests.deploy.conftest import KUBERNETES, render
from tests.deploy.rendered import WORKLOAD_BUILDS, describe, of_kind, our_containers
from tests.deploy.test_manifests import exported_metrics

MONITORING = KUBERNETES / "components" / "monitoring"
DASHBOARD = MONITORING / "grafana-dashboard.json"

KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset"}
KEYWORDS |= {"and", "or", "unless", "inf", "nan"}


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects: its identifiers less functions, keywords,
    label names and values, durations and Grafana's variables."""
    text = re.sub(r"\$\{?\w+\}?", " ", expr)
    text = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'', " ", text)
    text = re.sub(r"\{[^}]*\}", " ", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", " ", text)  # ranges
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    names = set()
    for match in re.finditer(r"(?<![\w.])([a-zA-Z_:][a-zA-Z0-9_:]*)(\s*\()?", text):
        name, call = match.groups()
        if call is None and name.lower() not in KEYWORDS:
            names.add(name)
    return names


def test_metric_names_come_out_of_promql() -> None:
    expr = (
        "histogram_quantile(0.99, sum by (le, consumer) (rate(audit_consumer_event_latency"
        '_seconds_bucket{namespace=~"$namespace", x="a{b}"}[$__rate_interval])))'
        " / on(pod) group_left(code) relay_requests_total offset 5m > bool 1e3"
    )
    assert metric_names(expr) == {
        "audit_consumer_event_latency_seconds_bucket",
        "relay_requests_total",
    }


def panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])


def test_the_dashboard_is_valid_json_and_queries_only_exported_metrics() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] and dashboard["title"]
    exported = exported_metrics()
    used: set[str] = set()
    ids = []
    for panel in panels(dashboard):
        ids.append(panel["id"])
        if panel["type"] == "row":
            continue
        assert panel["title"] and panel["targets"], panel.get("title")
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        for target in panel["targets"]:
            names = metric_names(target["expr"])
            assert names, f"{panel['title']}: no metric in {target['expr']}"
            used |= names
    assert len(ids) == len(set(ids)), "panel ids repeat"
    assert used <= exported, f"not exported: {sorted(used - exported)}"
    # What the operator looks for first; a panel removed by mistake shows here.
    wanted = {
        "relay_requests_total",
        "relay_spool_bytes",
        "relay_kafka_connected",
        "relay_kafka_last_ack_timestamp_seconds",
        "audit_consumer_events_total",
        "audit_consumer_newest_event_timestamp_seconds",
        "audit_consumer_group_lag",
        "audit_consumer_event_latency_seconds_bucket",
    }
    assert wanted <= used, sorted(wanted - used)


@pytest.mark.parametrize("build", ["overlays/production"])
def test_the_dashboard_ships_as_a_configmap_grafana_picks_up(build: str) -> None:
    maps = [m for m in of_kind(render(build), "ConfigMap") if "grafana-dashboard.json" in m["data"]]
    (config_map,) = maps
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(config_map["data"]["grafana-dashboard.json"]) == json.loads(
        DASHBOARD.read_text()
    )


def test_every_alert_queries_only_exported_metrics() -> None:
    (rules,) = of_kind(render("overlays/production"), "PrometheusRule")
    exported = exported_metrics()
    for group in rules["spec"]["groups"]:
        for rule in group["rules"]:
            names = metric_names(rule["expr"])
            assert names, rule["alert"]
            assert names <= exported, f"{rule['alert']}: not exported {sorted(names - exported)}"


@pytest.mark.parametrize("build", WORKLOAD_BUILDS)
def test_consumers_probe_liveness_and_readiness_apart(build: str) -> None:
    consumers = 0
    for workload, container in our_containers(render(build)):
        if container["command"][0] != "audit-consumer":
            continue
        consumers += 1
        where = describe(workload)
        env = {variable["name"]: variable.get("value") for variable in container["env"]}
        port = env["AUDIT_CONSUMER_METRICS_LISTEN"].rsplit(":", 1)[1]
        ports = {p["name"]: str(p["containerPort"]) for p in container["ports"]}
        live, ready = container["livenessProbe"], container["readinessProbe"]
        assert (live["httpGet"]["path"], ready["httpGet"]["path"]) == ("/healthz", "/readyz")
        assert ports[live["httpGet"]["port"]] == ports[ready["httpGet"]["port"]] == port, where
        # The consumer itself waits --stall-timeout before /healthz fails: the kubelet adds
        # only a few failed probes, never restarts on one slow answer.
        assert live.get("failureThreshold", 3) >= 3, where
    assert consumers >= 2
