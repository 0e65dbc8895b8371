"""Issue #19 item 4: the alert rules, their promtool tests and the Grafana dashboard.

- promtool accepts kubernetes/monitoring/pyroute2-cni.rules.yaml and passes its
  unit tests (pyroute2-cni.rules.test.yaml), which make every alert fire.
- The PrometheusRule of the kustomize component carries the rules file's groups
  unchanged (scripts/gen-prometheusrule writes it) and renders next to the release.
- Every PromQL expression in the rules, in the promtool input series and in the
  dashboard names only metrics that a real Metrics() registry exports.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.metrics import MetricWrapperBase

from pyroute2_cni.runtime.metrics import Metrics

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
MONITORING = REPO / "kubernetes" / "monitoring"
RULES = MONITORING / "pyroute2-cni.rules.yaml"
RULE_TESTS = MONITORING / "pyroute2-cni.rules.test.yaml"
PROMETHEUS_RULE = MONITORING / "prometheusrule.yaml"
DASHBOARD = MONITORING / "pyroute2-cni-dashboard.json"
RELEASE = REPO / "kubernetes" / "releases" / "0.1.0"

Obj = dict[str, Any]


def load_yaml(path: Path) -> Obj:
    data: Obj = yaml.safe_load(path.read_text())
    return data


def run(argv: list[str], cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=60, check=False)


def promtool() -> str:
    path = shutil.which("promtool")
    assert path, "promtool is required: Debian's prometheus package (scripts/install-deps.sh)"
    return path


def alerts(rules: Obj) -> list[Obj]:
    return [rule for group in rules["groups"] for rule in group["rules"] if "alert" in rule]


# --- PromQL: the metric names an expression selects ---------------------------------

_TOKEN = re.compile(
    r"""
    (?P<space>\s+|\#[^\n]*)
    | (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`)
    | (?P<variable>\$\{[^}]*\}|\$\w+)
    | (?P<number>\.?\d[\w.]*)
    | (?P<ident>[A-Za-z_:][\w:]*)
    | (?P<punct>\S)
    """,
    re.VERBOSE,
)
# Words that are PromQL syntax, not series, where a name could stand.
_KEYWORDS = frozenset(
    {"and", "or", "unless", "bool", "offset", "atan2", "inf", "nan", "group_left", "group_right"}
)
# Followed by a parenthesised list of label names.
_LABEL_LISTS = frozenset({"by", "without", "on", "ignoring", "group_left", "group_right"})


def _tokens(expr: str) -> Iterator[tuple[str, str]]:
    for match in _TOKEN.finditer(expr):
        kind = match.lastgroup
        assert kind is not None
        if kind != "space":
            yield kind, match.group()


def metric_names(expr: str) -> set[str]:
    """The metric names that expr selects: bare names and {__name__="..."} matchers.

    Label names (in braces and in by/without/on/... lists), functions,
    aggregations, keywords, numbers, durations, strings and Grafana variables are
    not metric names.
    """
    tokens = list(_tokens(expr))
    names: set[str] = set()
    nesting = 0  # inside {...} or [...]: label matchers, ranges
    i = 0
    while i < len(tokens):
        kind, text = tokens[i]
        following = tokens[i + 1][1] if i + 1 < len(tokens) else ""
        if kind == "punct" and text in "{[":
            nesting += 1
        elif kind == "punct" and text in "}]":
            nesting -= 1
        elif kind == "ident" and nesting:
            if text == "__name__" and following == "=" and tokens[i + 2][0] == "string":
                names.add(tokens[i + 2][1][1:-1])
        elif kind == "ident" and text in _LABEL_LISTS and following == "(":
            while tokens[i][1] != ")":
                i += 1
        elif kind == "ident" and text not in _KEYWORDS and following not in ("(", "by", "without"):
            names.add(text)
        i += 1
    assert nesting == 0, f"unbalanced braces or brackets in {expr!r}"
    return names


def unknown_metrics(exprs: Iterable[str], exported: set[str]) -> dict[str, set[str]]:
    """Each expression that names a metric the daemon does not export, with those names."""
    found = {expr: metric_names(expr) - exported for expr in exprs}
    return {expr: names for expr, names in found.items() if names}


@pytest.fixture(scope="module")
def exported() -> set[str]:
    """Every sample name a real Metrics() registry exposes on /metrics.

    A labelled metric shows no sample until a child exists, so each gets one first.
    """
    metrics = Metrics()
    for metric in vars(metrics).values():
        if isinstance(metric, MetricWrapperBase) and metric._labelnames:
            metric.labels(*("x" for _ in metric._labelnames))
    names: set[str] = set()
    for family in metrics.registry.collect():
        samples = {sample.name for sample in family.samples}
        assert samples, f"{family.name} shows no sample: prime it above"
        names |= samples
    return names


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        (
            'sum without (result) (rate(a_total{verb="ADD", result!="ok"}[10m]))'
            " / on (job) group_left (node) b",
            {"a_total", "b"},
        ),
        (
            'histogram_quantile(0.99, sum by (le) (rate(c_bucket{instance=~"$instance"}'
            "[$__rate_interval])))",
            {"c_bucket"},
        ),
        ("d unless d offset 15m > bool 1", {"d"}),
        ("count by (job) (e) > 1 and on (job) f == 0", {"e", "f"}),
        ('{__name__="g", job="x"} # a comment naming h', {"g"}),
        ("sum(i) by (vrf) - 1e3", {"i"}),
    ],
)
def test_metric_names(expr: str, names: set[str]) -> None:
    assert metric_names(expr) == names


def test_a_made_up_metric_is_reported(exported: set[str]) -> None:
    made_up = 'sum by (verb) (rate(pyroute2_cni_made_up_total{verb="ADD"}[5m]))'
    real = 'sum by (verb) (rate(pyroute2_cni_requests_total{verb="ADD"}[5m]))'
    assert unknown_metrics([made_up, real], exported) == {made_up: {"pyroute2_cni_made_up_total"}}


def test_exported_names_come_with_their_suffixes(exported: set[str]) -> None:
    # prometheus-client's suffixes, which the rules and the dashboard rely on.
    assert {
        "pyroute2_cni_requests_total",
        "pyroute2_cni_request_duration_seconds_bucket",
        "pyroute2_cni_evpn_held_entries",
    } <= exported
    assert "pyroute2_cni_requests" not in exported


# --- the rules file and promtool -----------------------------------------------------


def test_promtool_check_rules() -> None:
    proc = run([promtool(), "check", "rules", str(RULES)])
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_promtool_test_rules() -> None:
    proc = run([promtool(), "test", "rules", str(RULE_TESTS)])
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_every_alert_has_a_firing_test() -> None:
    names = [rule["alert"] for rule in alerts(load_yaml(RULES))]
    assert len(names) == len(set(names)), "alert names repeat"
    tested = load_yaml(RULE_TESTS)
    assert tested["rule_files"] == [RULES.name]
    cases = [case for test in tested["tests"] for case in test.get("alert_rule_test", [])]
    firing = {case["alertname"] for case in cases if case.get("exp_alerts")}
    assert set(names) - firing == set(), "alerts without a test where they fire"
    assert {case["alertname"] for case in cases} <= set(names), "tests of unknown alerts"


def test_every_alert_says_what_and_what_to_do() -> None:
    for rule in alerts(load_yaml(RULES)):
        assert rule["labels"]["severity"] in ("info", "warning", "critical"), rule["alert"]
        assert set(rule["annotations"]) == {"summary", "description"}, rule["alert"]


# --- the PrometheusRule component ------------------------------------------------------


def test_prometheusrule_groups_are_the_rules_file() -> None:
    manifest = load_yaml(PROMETHEUS_RULE)
    assert manifest["apiVersion"] == "monitoring.coreos.com/v1"
    assert manifest["kind"] == "PrometheusRule"
    assert manifest["metadata"]["namespace"] == "pyroute2-cni"
    assert manifest["spec"]["groups"] == load_yaml(RULES)["groups"]


def test_prometheusrule_is_what_the_script_writes() -> None:
    proc = run([str(REPO / "scripts" / "gen-prometheusrule"), "--check"])
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_component_renders_beside_the_release(tmp_path: Path) -> None:
    component = load_yaml(MONITORING / "kustomization.yaml")
    assert component["apiVersion"] == "kustomize.config.k8s.io/v1alpha1"
    assert component["kind"] == "Component"
    # kustomize takes relative paths only; tmp_path stands for a user's overlay.
    (tmp_path / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "resources": [os.path.relpath(RELEASE, tmp_path)],
                "components": [os.path.relpath(MONITORING, tmp_path)],
            }
        )
    )
    kubectl = shutil.which("kubectl") or "/usr/bin/kubectl"
    proc = run([kubectl, "kustomize", str(tmp_path)])
    assert proc.returncode == 0, proc.stderr
    objs = [doc for doc in yaml.safe_load_all(proc.stdout) if doc]
    assert any(o["kind"] == "DaemonSet" for o in objs)
    rules = [o for o in objs if o["kind"] == "PrometheusRule"]
    assert len(rules) == 1
    assert rules[0]["metadata"]["namespace"] == "pyroute2-cni"
    assert rules[0]["spec"]["groups"] == load_yaml(RULES)["groups"]


# --- every query names an exported metric -------------------------------------------


def _exprs(node: Any) -> Iterator[str]:
    """Every "expr" string anywhere under node (panels, rows, their targets)."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "expr" and isinstance(value, str):
                yield value
            else:
                yield from _exprs(value)
    elif isinstance(node, list):
        for item in node:
            yield from _exprs(item)


def dashboard_exprs(dashboard: Obj) -> list[str]:
    exprs = list(_exprs(dashboard["panels"]))
    for variable in dashboard["templating"]["list"]:
        if variable["type"] != "query":
            continue
        query = variable["query"]
        text = query["query"] if isinstance(query, dict) else query
        # label_values(SELECTOR, label) is Grafana's, not PromQL: the selector is.
        match = re.fullmatch(r"label_values\((.+),\s*\w+\)", text.strip())
        assert match, f"variable {variable['name']}: cannot read {text!r}"
        exprs.append(match.group(1))
    return exprs


def test_dashboard_panels_have_queries() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] == "pyroute2-cni"
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        assert panel["targets"], panel["title"]
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]


def test_dashboard_queries_parse(tmp_path: Path) -> None:
    """promtool parses each panel query once Grafana's variables are filled in."""
    dashboard = json.loads(DASHBOARD.read_text())
    filled = {"$__rate_interval": "5m", "$instance": ".*"}
    rules = []
    for n, expr in enumerate(_exprs(dashboard["panels"])):
        for variable, value in filled.items():
            expr = expr.replace(variable, value)
        assert "$" not in expr, expr
        rules.append({"record": f"dashboard:query_{n}", "expr": expr})
    path = tmp_path / "dashboard.rules.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    proc = run([promtool(), "check", "rules", str(path)])
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_every_query_names_an_exported_metric(exported: set[str]) -> None:
    rule_exprs = [rule["expr"] for group in load_yaml(RULES)["groups"] for rule in group["rules"]]
    series = [
        item["series"] for test in load_yaml(RULE_TESTS)["tests"] for item in test["input_series"]
    ]
    dashboard = dashboard_exprs(json.loads(DASHBOARD.read_text()))
    for exprs in (rule_exprs, series, dashboard):
        assert exprs
        assert all(metric_names(expr) for expr in exprs)
        assert unknown_metrics(exprs, exported) == {}
