"""The shipped Prometheus alerting rules (deploy/prometheus/keyrelay-alerts.yml): the shape
Prometheus loads (promtool is not installed here), and every keyrelay metric and label they
name is one that addon/observe/metrics.py exposes."""

from __future__ import annotations

import re
from pathlib import Path

import yaml
from prometheus_client.metrics_core import CounterMetricFamily
from support.repo import REPO

from addon.budget.refusals import EXHAUSTED
from addon.observe import metrics
from addon.ratelimit.limiter import RATE_LIMITED

RULES = REPO / "deploy" / "prometheus" / "keyrelay-alerts.yml"
_DURATION = re.compile(r"\d+[smhdwy]")
_METRIC = re.compile(r"\b(keyrelay_[a-z_]+)(\{[^}]*\})?")
_MATCHER = re.compile(r"([a-z_]+)\s*(=~|!~|!=|=)\s*\"([^\"]*)\"")
_BY = re.compile(r"\bby\s*\(([^)]*)\)")


def exposed() -> dict[str, list[str]]:
    """Each series name keyrelay exposes, with its labels."""
    names: dict[str, list[str]] = {}
    for metric in metrics._ALL:
        if isinstance(metric, metrics._Histogram):
            for suffix in ("_bucket", "_sum", "_count"):
                names[metric.name + suffix] = [*metric.labels, "le"]
        elif metric.kind is CounterMetricFamily:
            names[metric.name + "_total"] = metric.labels
        else:
            names[metric.name] = metric.labels
    return names


def rules() -> list[dict]:
    doc = yaml.safe_load(Path(RULES).read_text())
    assert set(doc) == {"groups"}
    found = []
    for group in doc["groups"]:
        assert set(group) <= {"name", "interval", "rules"} and group["name"] and group["rules"]
        found += group["rules"]
    return found


def test_the_rules_have_the_shape_prometheus_loads() -> None:
    seen = set()
    for rule in rules():
        assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}, rule
        assert re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", rule["alert"]), rule["alert"]
        assert rule["alert"] not in seen
        seen.add(rule["alert"])
        assert isinstance(rule["expr"], str) and rule["expr"].strip()
        assert rule["expr"].count("(") == rule["expr"].count(")"), rule["alert"]
        assert _DURATION.fullmatch(rule.get("for", "0s")), rule["alert"]
        assert rule["labels"]["severity"] in ("critical", "warning", "info")
        assert all(isinstance(v, str) for v in rule["labels"].values())
        assert rule["annotations"]["summary"]


def test_every_metric_and_label_named_exists() -> None:
    series = exposed()
    named = set()
    for rule in rules():
        expr = rule["expr"]
        used = _METRIC.findall(expr)
        assert used or "up{" in expr, rule["alert"]
        labels_here = set()
        for name, selector in used:
            assert name in series, f"{rule['alert']}: {name} is not exposed"
            named.add(name)
            labels_here |= set(series[name])
            for label, _, _ in _MATCHER.findall(selector):
                assert label in series[name], f"{rule['alert']}: {name} has no label {label}"
        for group in _BY.findall(expr):
            for label in filter(None, (x.strip() for x in group.split(","))):
                assert label in labels_here, f"{rule['alert']}: no metric of it has {label}"
    assert {"keyrelay_spend_usd_total", "keyrelay_requests_total"} <= named


def test_the_refusal_reasons_named_are_keyrelays() -> None:
    text = Path(RULES).read_text()
    assert f'reason="{EXHAUSTED}"' in text
    assert f'"{EXHAUSTED}|{RATE_LIMITED}"' in text
