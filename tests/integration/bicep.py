"""Parsing the Bicep templates for the infra tests: one parser for every file and test module, since building one (its
grammar) costs about a second of CPU and parsing a file far less. Also the KQL in infra/ (the alert rules' queries, the
workbook's), read one way for the alert tests and the KQL check."""
from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

INFRA = Path(__file__).resolve().parents[2] / "infra"


@lru_cache(maxsize=1)
def _parser() -> Any:
    from pycep import BicepParser  # pycep-parser, pinned in requirements-dev.txt

    return BicepParser()


@lru_cache(maxsize=256)
def parse_text(text: str) -> dict[str, Any]:
    return _parser().parse(text=text)


def infra_doc(rel: str) -> dict[str, Any]:
    """infra/<rel>, parsed."""
    return parse_text((INFRA / rel).read_text(encoding="utf-8"))


RULE = "Microsoft.Insights/scheduledQueryRules"


@dataclass(frozen=True)
class RuleQuery:
    """A log search alert rule's query as its Bicep file writes it: a string, or `format(template, args...)` of one."""

    text: str  # the query, or format()'s template when there are args
    format_args: tuple[Any, ...] = ()  # format()'s arguments after the template, as pycep gives them (names: str)


def _string(doc: dict[str, Any], value: Any) -> Any:
    """A variable's value when `value` names one, else `value` itself (pycep gives a name and a literal alike)."""
    variables = doc.get("variables", {})
    return variables[value]["value"] if isinstance(value, str) and value in variables else value


def rule_queries(rel: str = "app/alerts.bicep") -> dict[str, RuleQuery]:
    """The query of each scheduled query rule in infra/<rel> (its one criterion), by the rule's symbol: what the
    alert tests read and the KQL check (test_infra_kql.py) parses."""
    doc = infra_doc(rel)
    queries = {}
    for name, resource in doc["resources"].items():
        if resource["type"] != RULE:
            continue
        [criterion] = resource["config"]["properties"]["criteria"]["allOf"]
        query = _string(doc, criterion["query"])
        if isinstance(query, dict):  # format(template, deployedAt)
            function = query["function"]
            assert function["type"] == "format", f"{name}: a query made by {function['type']}() is not read here"
            parameters = function["parameters"]
            args = tuple(parameters[f"arg_{i}"] for i in range(1, len(parameters)))
            queries[name] = RuleQuery(_string(doc, parameters["format_string"]), args)
        else:
            queries[name] = RuleQuery(query)
    return queries


def workbook_queries(rel: str = "app/workbook.json") -> dict[str, str]:
    """The KQL of each query item of the workbook infra/<rel> (workbook.bicep loads it), by its title; items in
    groups included."""
    def items(parent: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        for item in parent:
            yield item
            if item["type"] == 12:  # a group
                yield from items(item["content"]["items"])

    data = json.loads((INFRA / rel).read_text(encoding="utf-8"))
    queries = [(item["content"].get("title") or item["name"], item["content"]["query"])
               for item in items(data["items"]) if item["type"] == 3]
    named = dict(queries)
    assert len(named) == len(queries), f"two query items of {rel} share a title: give each its own"
    return named
