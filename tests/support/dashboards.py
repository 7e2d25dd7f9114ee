"""The Grafana dashboards' queries, parsed: which metrics each panel reads and with which labels."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import promql_parser

REPO_ROOT = Path(__file__).resolve().parents[2]
DASHBOARDS = sorted((REPO_ROOT / "dashboards").glob("*.json"))
# Added by Prometheus to every series it scrapes, so never in /metrics itself: `instance` and `job` always, `node`
# by the relabeling of the scrape jobs this repository ships (docker/prometheus/prometheus.yml,
# deploy/k8s/prometheus/scrape-config.yaml; tests/test_deploy.py and tests/test_k8s.py check that they add it).
TARGET_LABELS = frozenset({"instance", "job", "node"})
CLUSTER_METRIC_PREFIX = "streamsrv_cluster_"  # only a node in cluster mode has these


@dataclass(frozen=True)
class Query:
    dashboard: str
    panel: str
    expr: str


@dataclass(frozen=True)
class Selector:
    """One metric a query reads, and the labels the query needs it to have."""

    metric: str
    labels: frozenset[str]


def dashboard_queries(path: Path) -> list[Query]:
    dashboard = json.loads(path.read_text())
    queries = []

    def panels(items: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        for panel in items:
            yield panel
            yield from panels(panel.get("panels", []))  # a collapsed row holds its panels

    for panel in panels(dashboard["panels"]):
        queries += [Query(path.name, panel["title"], t["expr"]) for t in panel.get("targets", [])]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            queries.append(Query(path.name, f"${variable['name']}", variable["query"]["query"]))
    return queries


ALL_QUERIES = [q for path in DASHBOARDS for q in dashboard_queries(path)]
_LABEL_VALUES = re.compile(r"label_values\((?P<selector>.+),\s*(?P<label>\w+)\)")


def selectors(expr: str) -> list[Selector]:
    """The metrics ``expr`` selects. Grafana's ``label_values(selector, label)`` needs ``label`` on the selector."""
    if match := _LABEL_VALUES.fullmatch(expr):
        inner = selectors(match["selector"])
        return [Selector(s.metric, s.labels | {match["label"]}) for s in inner]
    # Grafana substitutes its variables before Prometheus sees the query: intervals, then label values.
    promql = re.sub(r"\$\{?\w+\}?", ".*", re.sub(r"\$__\w+", "5m", expr))
    found: list[Selector] = []

    def visit(node: promql_parser.Expr, grouping: frozenset[str]) -> None:
        """Depth first; ``grouping``: labels an enclosing ``by (...)`` groups on, which the selectors must carry."""
        match node:
            case promql_parser.VectorSelector():
                assert node.name, f"{expr!r}: a selector without a metric name"
                matched = {m.name for m in node.matchers.matchers}
                found.append(Selector(node.name, frozenset(matched) | grouping))
            case promql_parser.MatrixSelector():
                visit(node.vector_selector, grouping)
            case promql_parser.AggregateExpr():
                by = node.modifier
                labels = by.labels if by is not None and by.type == promql_parser.AggModifierType.By else []
                visit(node.expr, grouping | frozenset(labels))
                if node.param is not None:
                    visit(node.param, grouping)
            case promql_parser.BinaryExpr():
                visit(node.lhs, grouping)
                visit(node.rhs, grouping)
            case promql_parser.Call():
                for arg in node.args:
                    visit(arg, grouping)
            case promql_parser.ParenExpr() | promql_parser.UnaryExpr() | promql_parser.SubqueryExpr():
                visit(node.expr, grouping)
            case promql_parser.NumberLiteral() | promql_parser.StringLiteral():
                pass
            case _:
                raise AssertionError(f"{expr!r}: unexpected PromQL node {type(node).__name__}")

    visit(promql_parser.parse(promql), frozenset())
    return found


def queried() -> list[tuple[Query, Selector]]:
    return [(q, s) for q in ALL_QUERIES for s in selectors(q.expr)]
