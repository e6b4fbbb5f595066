"""deploy/: Prometheus config and rules (promtool and strict structure), the Grafana
dashboards, and every metric they name being exported by the router or the capture service.

promtool comes with Debian's `prometheus` package, which bin/setup installs: without it the
promtool test fails (it is never skipped), saying what to install.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

from capture.metrics import CaptureMetrics
from router.metrics import RouterMetrics

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
PROM = DEPLOY / "prometheus"
DASHBOARD = DEPLOY / "grafana" / "router-dashboard.json"
CAPTURE_DASHBOARD = DEPLOY / "grafana" / "capture-dashboard.json"
PROMETHEUS_OWN = {"up"}  # written by Prometheus itself for every scrape target

KEYWORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless",
    "bool", "offset", "inf", "nan", "time",
}  # fmt: skip


def exported_sample_names() -> set[str]:
    """Sample names the router's and the capture service's registries expose, from the text
    exposition's TYPE lines."""
    text = RouterMetrics().exposition().decode() + CaptureMetrics().exposition().decode()
    names: set[str] = set()
    for line in text.splitlines():
        m = re.match(r"# TYPE (\S+) (\S+)", line)
        if not m:
            continue
        name, kind = m.groups()
        if kind == "counter":  # the TYPE line may or may not carry the _total suffix
            base = name.removesuffix("_total")
            names |= {base + "_total", base + "_created"}
        elif kind == "histogram":
            names |= {name + s for s in ("_bucket", "_sum", "_count", "_created")}
        else:
            names.add(name)
    return names


def metric_names(expr: str) -> set[str]:
    """Metric names referenced by a PromQL expression."""
    e = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # string literals
    e = re.sub(r"\{[^}]*\}", "", e)  # label matchers
    e = re.sub(r"\[[^\]]*\]", "", e)  # range and subquery durations
    e = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", e)
    out = set()
    for m in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", e):
        name, rest = m.group(0), e[m.end() :].lstrip()
        if rest.startswith("(") or name.lower() in KEYWORDS:
            continue  # a function or a keyword
        if re.fullmatch(r"\d+[smhdwy]", name):
            continue
        out.add(name)
    return out


def rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load((PROM / "alerts.yml").read_text())
    return [r for g in doc["groups"] for r in g["rules"]]


def dashboard_exprs(path: Path = DASHBOARD) -> list[str]:
    doc = json.loads(path.read_text())
    exprs = []
    for panel in doc["panels"]:
        for target in panel.get("targets", []):
            exprs.append(target["expr"])
    for var in doc["templating"]["list"]:
        if var["type"] == "query":
            exprs.append(re.sub(r"label_values\((\w+),.*", r"\1", var["definition"]))
    return exprs


def test_metric_name_extraction() -> None:
    assert metric_names(
        'histogram_quantile(0.99, sum by (instance, le) (rate(a_bucket{x="y"}[5m]))) > 30'
        " and on (instance) (time() - b_seconds > 300)"
    ) == {"a_bucket", "b_seconds"}


def test_every_metric_in_rules_and_dashboards_is_exported() -> None:
    exported = exported_sample_names()
    assert "router_events_routed_total" in exported
    assert "router_end_to_end_latency_seconds_bucket" in exported
    assert "capture_events_accepted_total" in exported
    assert "capture_request_duration_seconds_bucket" in exported
    used: dict[str, set[str]] = {}
    for rule in rules():
        used[f"rule {rule['alert']}"] = metric_names(rule["expr"])
    for path in (DASHBOARD, CAPTURE_DASHBOARD):
        for i, expr in enumerate(dashboard_exprs(path)):
            used[f"{path.name} expr {i}: {expr}"] = metric_names(expr)
    unknown = {
        where: names - exported - PROMETHEUS_OWN
        for where, names in used.items()
        if names - exported - PROMETHEUS_OWN
    }
    assert not unknown, f"metrics exported by neither router nor capture metrics: {unknown}"
    assert all(names for names in used.values()), "an expression names no metric"


def test_rules_cover_the_required_alerts_and_are_well_formed() -> None:
    by_name = {r["alert"]: r for r in rules()}
    for required in (
        "RouterDown",
        "RouterConsumerLagGrowing",
        "RouterDeadLettersRising",
        "RouterClickHouseInsertErrors",
        "RouterCommitsStalled",
        "CaptureDown",
        "CaptureKafkaUnreachable",
        "CaptureServerErrors",
        "CaptureLatencyHigh",
        "CaptureClientOverQuota",
        "CaptureQuotaRedisFallback",
    ):
        assert required in by_name
    for rule in by_name.values():
        assert set(rule) <= {"alert", "expr", "for", "labels", "annotations", "keep_firing_for"}
        assert rule["labels"]["severity"] in {"warning", "critical"}
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]
        assert re.fullmatch(r"\d+[smh]", rule["for"])


def test_scrape_config_targets_the_router_and_capture() -> None:
    doc = yaml.safe_load((PROM / "prometheus.yml").read_text())
    assert doc["rule_files"] == ["alerts.yml"]
    jobs = {job["job_name"]: job for job in doc["scrape_configs"]}
    assert set(jobs) == {"analytics-router", "analytics-capture"}
    router, capture = jobs["analytics-router"], jobs["analytics-capture"]
    assert router["metrics_path"] == "/metrics" == capture["metrics_path"]
    assert router["static_configs"][0]["targets"] == ["127.0.0.1:9108"]
    assert capture["static_configs"][0]["targets"] == ["127.0.0.1:8000"]
    # The alert rules name the jobs that scrape them.
    alerts = (PROM / "alerts.yml").read_text()
    assert 'job="analytics-capture"' in alerts


def test_dashboard_has_the_router_and_per_client_panels() -> None:
    doc = json.loads(DASHBOARD.read_text())
    assert doc["uid"] and doc["title"] and isinstance(doc["schemaVersion"], int)
    ids = [p["id"] for p in doc["panels"]]
    assert len(ids) == len(set(ids))
    joined = "\n".join(dashboard_exprs())
    for needle in (
        "router_messages_consumed_total",
        "sum by (client_id) (rate(router_events_routed_total",
        "sum by (reason) (rate(router_events_dead_lettered_total",
        "router_consumer_lag",
        "histogram_quantile(0.99, sum by (le) (rate(router_end_to_end_latency_seconds_bucket",
        "router_insert_seconds_bucket",
        "router_buffered_rows",
    ):
        assert needle in joined, needle
    for panel in doc["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${datasource}"
            assert all(t["refId"] and t["expr"] for t in panel["targets"])


def test_capture_dashboard_has_traffic_latency_quota_and_kafka_panels() -> None:
    doc = json.loads(CAPTURE_DASHBOARD.read_text())
    assert doc["uid"] == "analytics-capture" and isinstance(doc["schemaVersion"], int)
    ids = [p["id"] for p in doc["panels"]]
    assert len(ids) == len(set(ids))
    joined = "\n".join(dashboard_exprs(CAPTURE_DASHBOARD))
    for needle in (
        "sum by (status) (rate(capture_requests_total",
        "sum by (client_id) (rate(capture_events_accepted_total",
        "sum by (code) (rate(capture_events_rejected_total",
        "histogram_quantile(0.99, sum by (le) (rate(capture_request_duration_seconds_bucket",
        "sum by (client_id) (rate(capture_quota_refusals_total",
        "sum by (cause) (rate(capture_unavailable_total",
        "capture_kafka_up",
        "capture_kafka_queue_messages",
        "capture_inflight_bytes",
    ):
        assert needle in joined, needle
    for panel in doc["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${datasource}"
            assert all(t["refId"] and t["expr"] for t in panel["targets"])


PROMTOOL = shutil.which("promtool")


def test_promtool_validates_config_and_rules() -> None:
    assert PROMTOOL is not None, "promtool missing: apt-get install prometheus (bin/setup does)"
    for args in (
        ["check", "config", "prometheus.yml"],
        ["check", "rules", "alerts.yml"],
        ["test", "rules", "alerts_test.yml"],
    ):
        done = subprocess.run(
            [PROMTOOL, *args], cwd=PROM, capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, f"promtool {' '.join(args)}:\n{done.stdout}{done.stderr}"
