"""Every KQL query in infra/ parses and type-checks, by Microsoft's Kusto language service (npm
@kusto/language-service-next, pinned in package.json, driven by kql_check.js beside this file): the log search alert
rules' queries in infra/app/alerts.bicep and the workbook's (infra/app/workbook.json), read as test_infra_alerts.py
reads them (tests/integration/bicep.py), against the workspace tables they read with the columns and types of
Microsoft's Azure Monitor table reference (kql_schema.json names each table's page). Azure itself checks none of it at
deployment: the rules skip query validation (a new workspace has no App* tables yet) and a workbook is stored as text.

Errors (syntax; an unknown table, column or function; an operator or function given the wrong types) fail. Warnings,
the compiler's and the service's analyzers' (a join without a kind, a variable hidden by a column), are shown as
pytest warnings; suggestions (cost advice, such as `contains` where `has` would do) are not.

Under CI (the environment variable CI set) a missing node or package fails the test; elsewhere it is skipped and says
why.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import warnings
from pathlib import Path
from typing import Any

import pytest

from tests.integration.bicep import rule_queries, workbook_queries

ROOT = Path(__file__).resolve().parents[2]
CHECK = Path(__file__).with_name("kql_check.js")
SCHEMA = Path(__file__).with_name("kql_schema.json")
PACKAGE = ROOT / "node_modules" / "@kusto" / "language-service-next"
# What Resource Manager and the workbook put in place of the templates' placeholders, as samples:
FORMAT_ARGS = {"deployedAt": "2026-12-02 10:00:00Z"}  # alerts.bicep's utcNow('u')
WORKBOOK_PARAMETERS = {"TimeRange:grain": "1h"}  # the time range's grain, a timespan
# Queries the check must find an error in: it passing them would mean it checks nothing.
CANARIES = {
    "unknown column": "AppTraces | where Mesage has 'x'",
    "unbalanced parenthesis": "AppTraces | summarize count() by bin(TimeGenerated, 1h",
    "unknown table": "AppTrace | take 1",
    "wrong type": "AppMetrics | summarize sum(Name)",
}


def bicep_format(template: str, args: list[str]) -> str:
    """Bicep's format(): `{n}` is the nth argument, `{{` and `}}` are braces."""
    return re.sub(r"\{\{|\}\}|\{(\d+)\}",
                  lambda m: args[int(m.group(1))] if m.group(1) else m.group(0)[0], template)


def infra_queries() -> dict[str, str]:
    """Each KQL query in infra/ as Azure runs it, by a name that says where it is."""
    queries = {}
    for name, query in rule_queries("app/alerts.bicep").items():
        queries[f"alerts.bicep {name}"] = bicep_format(query.text, [FORMAT_ARGS[arg] for arg in query.format_args])
    for title, query in workbook_queries("app/workbook.json").items():
        def parameter(match: re.Match[str], title: str = title) -> str:
            assert match.group(1) in WORKBOOK_PARAMETERS, f"workbook {title!r}: no sample value for {match.group(0)}"
            return WORKBOOK_PARAMETERS[match.group(1)]
        queries[f"workbook.json {title!r}"] = re.sub(r"\{([^}]*)\}", parameter, query)
    return queries


def require_kusto() -> None:
    """Fail under CI, skip (saying why) elsewhere, when the queries cannot be checked."""
    missing = []
    if not shutil.which("node"):
        missing.append("node is not on PATH")
    if not PACKAGE.exists():
        missing.append(f"@kusto/language-service-next is not installed ({PACKAGE}): run `npm ci` (make install)")
    if not missing:
        return
    if os.environ.get("CI"):
        pytest.fail("CI is set, so the KQL check must run: " + "; ".join(missing), pytrace=False)
    pytest.skip("; ".join(missing))


def kusto_diagnostics(queries: dict[str, str]) -> dict[str, list[dict[str, Any]]]:
    """The language service's diagnostics of each query, in one node process (loading the service takes ~2 s)."""
    request = {"schema": json.loads(SCHEMA.read_text(encoding="utf-8")),
               "queries": [{"name": name, "text": text} for name, text in queries.items()]}
    done = subprocess.run(["node", str(CHECK)], input=json.dumps(request), capture_output=True, text=True,
                          cwd=ROOT, timeout=120)
    assert done.returncode == 0, f"kql_check.js failed ({done.returncode}):\n{done.stderr}"
    answer = json.loads(done.stdout)
    pinned = json.loads((ROOT / "package.json").read_text(encoding="utf-8"))["devDependencies"]["@kusto/language-service-next"]
    assert answer["package"] == pinned, f"node_modules has {answer['package']}, package.json pins {pinned}: run `npm ci`"
    return {result["name"]: result["diagnostics"] for result in answer["results"]}


def describe(name: str, diagnostic: dict[str, Any]) -> str:
    where = f"line {diagnostic['line']}, column {diagnostic['column']}" if diagnostic["line"] else "no location"
    near = f" near {diagnostic['excerpt']!r}" if diagnostic["excerpt"] else ""
    return f"{name}: {where}: {diagnostic['severity']} {diagnostic['code']} {diagnostic['message']}{near}"


@pytest.fixture(scope="module")
def checked() -> dict[str, list[dict[str, Any]]]:
    require_kusto()
    return kusto_diagnostics({**infra_queries(), **{f"canary {name}": text for name, text in CANARIES.items()}})


def test_every_kql_query_in_infra_parses_and_type_checks(checked: dict[str, list[dict[str, Any]]]) -> None:
    names = list(infra_queries())
    assert any(n.startswith("alerts.bicep ") for n in names) and any(n.startswith("workbook.json ") for n in names)
    errors = [describe(name, d) for name in names for d in checked[name] if d["severity"] == "Error"]
    for name in names:
        for diagnostic in checked[name]:
            if diagnostic["severity"] == "Warning":
                warnings.warn(describe(name, diagnostic), stacklevel=1)
    assert not errors, f"{len(errors)} KQL error(s) in infra/:\n" + "\n".join(errors)


def test_the_check_finds_errors(checked: dict[str, list[dict[str, Any]]]) -> None:
    """Broken queries fail it: the schema and the service are in use, not silently checking nothing."""
    for name in CANARIES:
        assert any(d["severity"] == "Error" for d in checked[f"canary {name}"]), f"no error found in the {name} canary"
