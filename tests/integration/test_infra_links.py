"""infra/ links the way the Bicep compiler links it: every module call matches the module it calls.

The Bicep CLI cannot be installed here, and checkov reads each file on its own, so a module call that passes a
parameter the module does not declare, or a reference to an output the module does not have, passed every offline
check and only failed in `azd up`. This test closes that gap with pycep-parser (the parser checkov itself uses, pinned
in requirements-dev.txt to checkov's version):

- every module call passes only parameters the module file declares, and every required one (a parameter without a
  default value); where both sides' types are known (a parameter of the calling file, a module output, an int or bool
  literal) they must agree;
- every `<symbol>.outputs.<name>` names a module of the same file and an output that module declares;
- infra/main.parameters.json names only parameters main.bicep declares and supplies every required one;
- every resource's API version is one Microsoft documents for its type (KNOWN_API_VERSIONS below);
- every key read from a `loadJsonContent()` variable exists in that JSON file.

Modules are followed from every .bicep file under infra/ (and from main.bicep wherever a relative module path leads).
The linker is a handful of functions (`link`) so that the tests at the end can run it on broken copies of infra/ and
show that it reports each kind of break, naming the file, the module or resource and the name at fault.
"""
from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.integration.bicep import parse_text

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"
ENTRY = "main.bicep"
PARAMETERS_FILE = "main.parameters.json"

# Resource type -> API versions that Microsoft's template reference documents for it (a subset is enough: every
# version listed here exists). Sources, per type, are the reference page
# learn.microsoft.com/azure/templates/<provider>/<type> and its change log
# learn.microsoft.com/azure/templates/<provider>/change-log/<type> (each lists the type's API versions).
# A type not listed here fails the test: add it, with the versions from its page and that page cited beside it.
_STORAGE_VERSIONS = frozenset({
    "2021-01-01", "2021-02-01", "2021-04-01", "2021-06-01", "2021-08-01", "2021-09-01", "2022-05-01", "2022-09-01",
    "2023-01-01", "2023-04-01", "2023-05-01", "2024-01-01",
})
_WEB_VERSIONS = frozenset({"2022-03-01", "2022-09-01", "2023-01-01", "2023-12-01", "2024-04-01"})
_KEY_VAULT_VERSIONS = frozenset({"2021-10-01", "2022-07-01", "2022-11-01", "2023-02-01", "2023-07-01"})
_EVENT_GRID_VERSIONS = frozenset({"2021-12-01", "2022-06-15", "2023-06-01-preview", "2023-12-15-preview"})
# Microsoft.Network versions its types together; each version here has a page learn.microsoft.com/azure/templates/
# microsoft.network/<version>/<type> for virtualnetworks, virtualnetworks/subnets, privateendpoints and
# privateendpoints/privatednszonegroups (e.g. .../microsoft.network/2023-11-01/privateendpoints).
_NETWORK_VERSIONS = frozenset({
    "2022-09-01", "2023-04-01", "2023-05-01", "2023-06-01", "2023-09-01", "2023-11-01", "2024-01-01", "2024-05-01",
    "2024-07-01",
})
# learn.microsoft.com/azure/templates/microsoft.network/change-log/privatednszones/virtualnetworklinks (and the same
# change log of privatednszones): 2018-09-01, 2020-01-01, 2020-06-01, 2024-06-01.
_PRIVATE_DNS_VERSIONS = frozenset({"2018-09-01", "2020-01-01", "2020-06-01", "2024-06-01"})
KNOWN_API_VERSIONS: dict[str, frozenset[str]] = {
    # learn.microsoft.com/azure/templates/microsoft.resources/resourcegroups (version list on the 2020-08-01 page)
    "Microsoft.Resources/resourceGroups": frozenset({
        "2020-06-01", "2020-08-01", "2020-10-01", "2021-01-01", "2021-04-01", "2022-09-01", "2023-07-01",
        "2024-03-01", "2024-07-01", "2024-11-01", "2025-03-01", "2025-04-01",
    }),
    # learn.microsoft.com/azure/templates/microsoft.storage/allversions, which lists every Microsoft.Storage type
    # with the same versions; reference pages learn.microsoft.com/azure/templates/microsoft.storage/storageaccounts,
    # .../storageaccounts/blobservices, .../storageaccounts/blobservices/containers,
    # .../storageaccounts/managementpolicies, .../storageaccounts/queueservices,
    # .../storageaccounts/queueservices/queues, .../storageaccounts/tableservices,
    # .../storageaccounts/tableservices/tables
    "Microsoft.Storage/storageAccounts": _STORAGE_VERSIONS,
    "Microsoft.Storage/storageAccounts/blobServices": _STORAGE_VERSIONS,
    "Microsoft.Storage/storageAccounts/blobServices/containers": _STORAGE_VERSIONS,
    "Microsoft.Storage/storageAccounts/managementPolicies": _STORAGE_VERSIONS,
    "Microsoft.Storage/storageAccounts/queueServices": _STORAGE_VERSIONS,
    "Microsoft.Storage/storageAccounts/queueServices/queues": _STORAGE_VERSIONS,
    "Microsoft.Storage/storageAccounts/tableServices": _STORAGE_VERSIONS,
    "Microsoft.Storage/storageAccounts/tableServices/tables": _STORAGE_VERSIONS,
    # learn.microsoft.com/azure/templates/microsoft.eventgrid/systemtopics and
    # learn.microsoft.com/azure/templates/microsoft.eventgrid/change-log/systemtopics
    "Microsoft.EventGrid/systemTopics": _EVENT_GRID_VERSIONS,
    # learn.microsoft.com/azure/templates/microsoft.eventgrid/systemtopics/eventsubscriptions and
    # learn.microsoft.com/azure/templates/microsoft.eventgrid/change-log/systemtopics/eventsubscriptions
    "Microsoft.EventGrid/systemTopics/eventSubscriptions": _EVENT_GRID_VERSIONS,
    # learn.microsoft.com/azure/templates/microsoft.authorization/roleassignments and
    # learn.microsoft.com/azure/templates/microsoft.authorization/change-log/roleassignments
    "Microsoft.Authorization/roleAssignments": frozenset({"2020-10-01-preview", "2022-04-01"}),
    # learn.microsoft.com/azure/templates/microsoft.keyvault/vaults (and its 2021-10-01 page)
    "Microsoft.KeyVault/vaults": _KEY_VAULT_VERSIONS,
    # learn.microsoft.com/azure/templates/microsoft.keyvault/vaults/secrets and
    # learn.microsoft.com/azure/templates/microsoft.keyvault/change-log/vaults/secrets
    "Microsoft.KeyVault/vaults/secrets": _KEY_VAULT_VERSIONS,
    # learn.microsoft.com/azure/templates/microsoft.insights/components and
    # learn.microsoft.com/azure/templates/microsoft.insights/change-log/components
    "Microsoft.Insights/components": frozenset({"2015-05-01", "2018-05-01-preview", "2020-02-02-preview", "2020-02-02"}),
    # learn.microsoft.com/azure/templates/microsoft.operationalinsights/workspaces
    "Microsoft.OperationalInsights/workspaces": frozenset({
        "2020-08-01", "2020-10-01", "2021-06-01", "2022-10-01", "2023-09-01",
    }),
    # learn.microsoft.com/azure/templates/microsoft.managedidentity/userassignedidentities (and its 2018-11-30 and
    # 2023-01-31 pages)
    "Microsoft.ManagedIdentity/userAssignedIdentities": frozenset({"2018-11-30", "2023-01-31"}),
    # learn.microsoft.com/azure/templates/microsoft.web/serverfarms and
    # learn.microsoft.com/azure/templates/microsoft.web/change-log/serverfarms
    "Microsoft.Web/serverfarms": _WEB_VERSIONS,
    # learn.microsoft.com/azure/templates/microsoft.web/sites (and learn.microsoft.com/azure/templates/microsoft.web/
    # change-log/sites/instances, which lists the same Microsoft.Web versions for the sites family)
    "Microsoft.Web/sites": _WEB_VERSIONS,
    # learn.microsoft.com/azure/templates/microsoft.web/sites/basicpublishingcredentialspolicies-ftp and -scm
    "Microsoft.Web/sites/basicPublishingCredentialsPolicies": _WEB_VERSIONS,
    # learn.microsoft.com/azure/templates/microsoft.web/sites/config-appsettings
    "Microsoft.Web/sites/config": _WEB_VERSIONS,
    # learn.microsoft.com/azure/templates/microsoft.insights/diagnosticsettings (2021-05-01-preview) and
    # learn.microsoft.com/azure/templates/microsoft.insights/2017-05-01-preview/diagnosticsettings; 2016-09-01 and
    # 2020-01-01-preview are the subscription and management-group forms, not resource-scoped ones.
    "Microsoft.Insights/diagnosticSettings": frozenset({"2017-05-01-preview", "2021-05-01-preview"}),
    # learn.microsoft.com/azure/templates/microsoft.insights/allversions (actionGroups) and
    # learn.microsoft.com/azure/templates/microsoft.insights/change-log/actiongroups
    "Microsoft.Insights/actionGroups": frozenset({
        "2018-09-01", "2019-03-01", "2019-06-01", "2021-09-01", "2022-04-01", "2022-06-01", "2023-01-01",
    }),
    # learn.microsoft.com/azure/templates/microsoft.insights/change-log/scheduledqueryrules
    "Microsoft.Insights/scheduledQueryRules": frozenset({
        "2018-04-16", "2021-02-01-preview", "2021-08-01", "2022-06-15", "2022-08-01-preview", "2023-03-15-preview",
        "2023-12-01",
    }),
    # learn.microsoft.com/azure/templates/microsoft.insights/workbooks (2023-06-01) and its 2021-08-01 and 2020-10-20
    # pages
    "Microsoft.Insights/workbooks": frozenset({"2020-10-20", "2021-08-01", "2022-04-01", "2023-06-01"}),
    # learn.microsoft.com/azure/templates/microsoft.network/virtualnetworks (see _NETWORK_VERSIONS)
    "Microsoft.Network/virtualNetworks": _NETWORK_VERSIONS,
    # learn.microsoft.com/azure/templates/microsoft.network/privateendpoints (see _NETWORK_VERSIONS)
    "Microsoft.Network/privateEndpoints": _NETWORK_VERSIONS,
    # learn.microsoft.com/azure/templates/microsoft.network/privateendpoints/privatednszonegroups
    "Microsoft.Network/privateEndpoints/privateDnsZoneGroups": _NETWORK_VERSIONS,
    # learn.microsoft.com/azure/templates/microsoft.network/privatednszones (see _PRIVATE_DNS_VERSIONS)
    "Microsoft.Network/privateDnsZones": _PRIVATE_DNS_VERSIONS,
    # learn.microsoft.com/azure/templates/microsoft.network/privatednszones/virtualnetworklinks
    "Microsoft.Network/privateDnsZones/virtualNetworkLinks": _PRIVATE_DNS_VERSIONS,
}
_KNOWN_BY_LOWER = {kind.lower(): (kind, versions) for kind, versions in KNOWN_API_VERSIONS.items()}

# Parameter and output types that can be compared without evaluating anything.
_PRIMITIVE_TYPES = {"string", "int", "bool", "object", "array"}


@dataclass(frozen=True)
class Problem:
    """One thing the Bicep compiler (or Resource Manager) would refuse."""

    file: str  # the .bicep (or parameters) file, relative to the infra folder
    symbol: str | None  # the module or resource at fault, if any
    name: str  # the parameter, output, type, version or key at fault
    message: str

    def __str__(self) -> str:
        return f"{self.file}: {self.message}"


# ---------------------------------------------------------------------------------------------------------- parsing


def _strip_comments(text: str) -> str:
    """The source with // and /* */ comments blanked out (line numbers kept); strings and interpolations stay."""
    out: list[str] = []
    i, n = 0, len(text)
    while i < n:
        if text.startswith("'''", i):
            end = text.find("'''", i + 3)
            end = n if end < 0 else end + 3
            out.append(text[i:end])
            i = end
        elif text[i] == "'":
            j = i + 1
            while j < n and text[j] != "'":
                j += 2 if text[j] == "\\" else 1
            out.append(text[i:j + 1])
            i = j + 1
        elif text.startswith("//", i):
            end = text.find("\n", i)
            end = n if end < 0 else end
            out.append(" " * (end - i))
            i = end
        elif text.startswith("/*", i):
            end = text.find("*/", i + 2)
            end = n if end < 0 else end + 2
            out.append(re.sub(r"[^\n]", " ", text[i:end]))
            i = end
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


@dataclass
class BicepFile:
    path: Path
    rel: str  # as reported
    text: str
    doc: dict[str, Any]

    @property
    def code(self) -> str:
        return _strip_comments(self.text)

    def section(self, name: str) -> dict[str, Any]:
        return self.doc.get(name) or {}

    def line_of(self, pattern: str) -> int | None:
        found = re.search(pattern, self.code, re.M)
        return self.code.count("\n", 0, found.start()) + 1 if found else None


def _rel(path: Path, infra: Path) -> str:
    try:
        return path.resolve().relative_to(infra.resolve()).as_posix()
    except ValueError:
        return str(path)


def _required(param: dict[str, Any]) -> bool:
    """Bicep: a parameter is required unless it has a default value (pycep cannot parse nullable `type?` ones)."""
    return param.get("default") is None


def _body(config: Any) -> dict[str, Any]:
    """A module's or resource's own body, under any `if (...)` and `[for ...]` wrappers pycep puts around it."""
    while isinstance(config, dict) and "config" in config and ("condition" in config or "loop_type" in config):
        config = config["config"]
    return config if isinstance(config, dict) else {}


# ------------------------------------------------------------------------------------------------ output references


@dataclass(frozen=True)
class OutputRef:
    symbol: str
    name: str
    nested: bool  # `<symbol>.outputs.<name>.<more>`: the output's own type is not what the expression yields


def _chain_head(node: Any) -> str | None:
    """The first name of `a.b.c` / `a[0]` / `a['b']` as pycep nests it (right-nested property accessors)."""
    if isinstance(node, str):
        return node
    if isinstance(node, dict) and isinstance(node.get("operator"), dict):
        op = node["operator"]
        if op.get("type") in ("property_accessor", "index_accessor"):
            return _chain_head(op["operands"]["operand_1"])
    return None


def _as_output_ref(node: Any) -> OutputRef | None:
    """`<symbol>.outputs.<name>`, `<symbol>[i].outputs.<name>` or `<symbol>.outputs['<name>']`, else None."""
    if not (isinstance(node, dict) and isinstance(node.get("operator"), dict)):
        return None
    op = node["operator"]
    if op.get("type") != "property_accessor":
        return None
    head, rest = op["operands"]["operand_1"], op["operands"]["operand_2"]
    if isinstance(head, dict):  # <symbol>[i].outputs...
        head_op = head.get("operator") or {}
        if head_op.get("type") != "index_accessor" or not isinstance(head_op["operands"]["operand_1"], str):
            return None
        head = head_op["operands"]["operand_1"]
    if not isinstance(head, str) or not isinstance(rest, dict) or not isinstance(rest.get("operator"), dict):
        return None
    rest_op = rest["operator"]
    if rest_op.get("type") not in ("property_accessor", "index_accessor"):
        return None
    if rest_op["operands"]["operand_1"] != "outputs":
        return None
    tail = rest_op["operands"]["operand_2"]
    name = _chain_head(tail)
    if name is None:
        return None
    return OutputRef(head, name, nested=not isinstance(tail, str))


_INTERPOLATION = re.compile(r"\$\{([^{}]*)\}")
_SOURCE_OUTPUT_REF = re.compile(
    r"(?<![\w.$])([A-Za-z_]\w*)\s*(?:\[[^\]\n]*\]\s*)?\.\s*outputs\s*(?:\.\s*([A-Za-z_]\w*)|\[\s*'([^'\n]+)'\s*\])"
)


def _walk(node: Any) -> Iterator[Any]:
    yield node
    if isinstance(node, dict):
        for value in node.values():
            yield from _walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from _walk(value)


def _json_output_refs(file: BicepFile) -> set[tuple[str, str]]:
    """Every `<symbol>.outputs.<name>` in pycep's JSON: expressions, and `${...}` interpolations inside strings."""
    refs: set[tuple[str, str]] = set()
    for node in _walk(file.doc):
        ref = _as_output_ref(node)
        if ref is not None:
            refs.add((ref.symbol, ref.name))
        elif isinstance(node, str) and "${" in node:
            for interpolation in _INTERPOLATION.findall(node):
                for found in _SOURCE_OUTPUT_REF.finditer(interpolation):
                    refs.add((found.group(1), found.group(2) or found.group(3)))
    return refs


def _source_output_refs(file: BicepFile) -> dict[tuple[str, str], int]:
    """Every `<symbol>.outputs.<name>` in the comment-free source -> the first line it is on."""
    refs: dict[tuple[str, str], int] = {}
    code = file.code
    for found in _SOURCE_OUTPUT_REF.finditer(code):
        refs.setdefault((found.group(1), found.group(2) or found.group(3)), code.count("\n", 0, found.start()) + 1)
    return refs


def _output_refs(file: BicepFile) -> dict[tuple[str, str], int | None]:
    """Every `<symbol>.outputs.<name>` in the file -> a line it is on (None if only the parsed JSON showed it).

    The parsed JSON is the reading; the comment-free source is a safety net for expression shapes the JSON walk
    might not know (test_both_readings_of_output_references_agree keeps the two in step on the real infra/)."""
    refs: dict[tuple[str, str], int | None] = dict(_source_output_refs(file))
    for key in _json_output_refs(file):
        refs.setdefault(key, None)
    return refs


# ------------------------------------------------------------------------------------------------------ the linker


class Linker:
    def __init__(self, infra: Path) -> None:
        self.infra = infra
        self.files: dict[Path, BicepFile] = {}
        self.problems: list[Problem] = []

    def load(self, path: Path) -> BicepFile | None:
        path = path.resolve()
        if path in self.files:
            return self.files[path]
        rel = _rel(path, self.infra)
        text = path.read_text(encoding="utf-8")
        try:
            doc = parse_text(text)
        except Exception as error:  # lark raises several kinds; all mean "cannot read this file"
            first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            self.problems.append(Problem(rel, None, path.name, f"pycep-parser cannot parse it: {first_line}"))
            return None
        self.files[path] = BicepFile(path, rel, text, doc)
        return self.files[path]

    def run(self) -> list[Problem]:
        pending = sorted(self.infra.rglob("*.bicep"))
        seen: set[Path] = set()
        while pending:
            path = pending.pop(0).resolve()
            if path in seen:
                continue
            seen.add(path)
            file = self.load(path)
            if file is None:
                continue
            self.check_api_versions(file)
            self.check_json_keys(file)
            for target in self.check_modules(file):
                if target.resolve() not in seen:
                    pending.append(target)
            self.check_output_refs(file)
        entry = self.files.get((self.infra / ENTRY).resolve())
        if entry is not None:
            self.check_parameters_file(entry, self.infra / PARAMETERS_FILE)
        return self.problems

    def report(self, file: BicepFile, symbol: str | None, name: str, message: str) -> None:
        self.problems.append(Problem(file.rel, symbol, name, message))

    # --- modules ------------------------------------------------------------------------------------------------

    def module_target(self, file: BicepFile, symbol: str) -> tuple[Path | None, BicepFile | None]:
        module = file.section("modules")[symbol]
        if module.get("type") != "local":
            return None, None
        target = (file.path.parent / module["detail"]["path"]).resolve()
        if not target.is_file() or target.suffix != ".bicep":
            return target, None
        return target, self.load(target)

    def check_modules(self, file: BicepFile) -> list[Path]:
        """(a) Each module call passes only declared parameters, every required one, of matching types."""
        targets: list[Path] = []
        for symbol, module in file.section("modules").items():
            kind, detail = module.get("type"), module.get("detail") or {}
            if kind != "local":
                self.report(file, symbol, str(detail.get("full", "")),
                            f"module '{symbol}' comes from {kind} '{detail.get('full')}', which cannot be linked "
                            "offline (nor read by checkov): declare its resources under infra/ instead")
                continue
            target, callee = self.module_target(file, symbol)
            assert target is not None
            shown = _rel(target, self.infra)
            if not target.is_file():
                resolved = "" if shown == detail["path"] else f" ({shown})"
                self.report(file, symbol, detail["path"], f"module '{symbol}' calls '{detail['path']}', "
                            f"which does not exist{resolved}")
                continue
            if target.suffix != ".bicep":
                self.report(file, symbol, detail["path"], f"module '{symbol}' calls '{detail['path']}', "
                            "which is not a .bicep file: this linker reads Bicep only")
                continue
            targets.append(target)
            if callee is None:
                continue  # its parse problem is reported already
            declared = callee.section("parameters")
            params = _body(module.get("config")).get("params")
            if params is None:
                params = {}
            if not isinstance(params, dict):
                self.report(file, symbol, "params", f"module '{symbol}' ({shown}): params is not an object literal, "
                            "so its names cannot be checked; write them out")
                continue
            line = file.line_of(rf"^\s*module\s+{re.escape(symbol)}\b")
            where = f"{file.rel}:{line}" if line else file.rel
            for name in params:
                if name not in declared:
                    self.report(file, symbol, name,
                                f"module '{symbol}' ({shown}) is passed param '{name}', which {shown} does not "
                                f"declare (it declares: {', '.join(declared) or 'nothing'}) [{where}]")
            for name, param in declared.items():
                if _required(param) and name not in params:
                    self.report(file, symbol, name,
                                f"module '{symbol}' ({shown}) is not passed param '{name}', which {shown} requires "
                                f"(no default value) [{where}]")
            for name, value in params.items():
                if name in declared:
                    self.check_param_type(file, symbol, shown, name, declared[name].get("type"), value)
        return targets

    def value_type(self, file: BicepFile, value: Any) -> tuple[str | None, str]:
        """(type, what) of a module parameter value, where it is known without evaluating anything."""
        if isinstance(value, bool):
            return "bool", f"the literal {str(value).lower()}"
        if isinstance(value, int):
            return "int", f"the literal {value}"
        if isinstance(value, list):
            return "array", "an array literal"
        if isinstance(value, str):
            # pycep writes identifiers and string literals alike; a file's own parameter names win.
            param = file.section("parameters").get(value)
            if param is not None:
                return param.get("type"), f"param '{value}' ({param.get('type')})"
            return None, ""
        ref = _as_output_ref(value)
        if ref is not None and not ref.nested and ref.symbol in file.section("modules"):
            _, callee = self.module_target(file, ref.symbol)
            output = callee.section("outputs").get(ref.name) if callee else None
            if output is not None:
                return output.get("type"), f"{ref.symbol}.outputs.{ref.name} ({output.get('type')})"
        return None, ""

    def check_param_type(self, file: BicepFile, symbol: str, shown: str, name: str, expected: Any,
                         value: Any) -> None:
        """(e) The value's type, where known, is the parameter's type."""
        actual, what = self.value_type(file, value)
        if expected in _PRIMITIVE_TYPES and actual in _PRIMITIVE_TYPES and actual != expected:
            self.report(file, symbol, name, f"module '{symbol}' ({shown}) param '{name}' is {expected}, "
                        f"but it is passed {what}")

    # --- output references --------------------------------------------------------------------------------------

    def check_output_refs(self, file: BicepFile) -> None:
        """(b) Every `<symbol>.outputs.<name>` names a module of this file and an output it declares."""
        modules = file.section("modules")
        for (symbol, name), line in sorted(_output_refs(file).items()):
            where = f"{file.rel}:{line}" if line else file.rel
            if symbol not in modules:
                self.report(file, symbol, name, f"{symbol}.outputs.{name}: '{symbol}' is not a module of this file "
                            f"(its modules: {', '.join(modules) or 'none'}) [{where}]")
                continue
            target, callee = self.module_target(file, symbol)
            if callee is None:
                continue  # the module call itself is reported
            outputs = callee.section("outputs")
            if name not in outputs:
                shown = _rel(target, self.infra) if target else symbol
                self.report(file, symbol, name, f"{symbol}.outputs.{name}: module '{symbol}' ({shown}) declares no "
                            f"output '{name}' (its outputs: {', '.join(outputs) or 'none'}) [{where}]")

    # --- API versions -------------------------------------------------------------------------------------------

    def check_api_versions(self, file: BicepFile) -> None:
        """(d) Every resource's API version is one Microsoft documents for its type."""
        for symbol, resource in file.section("resources").items():
            kind, version = str(resource.get("type")), str(resource.get("api_version"))
            known = _KNOWN_BY_LOWER.get(kind.lower())
            if known is None:
                provider, _, rest = kind.partition("/")
                page = f"learn.microsoft.com/azure/templates/{provider.lower()}/{rest.lower()}"
                self.report(file, symbol, kind,
                            f"resource '{symbol}' has type {kind}, which KNOWN_API_VERSIONS in "
                            f"tests/integration/test_infra_links.py does not list: add it with the API versions "
                            f"from {page} and cite that page as its source")
            elif version not in known[1]:
                self.report(file, symbol, version,
                            f"resource '{symbol}' uses API version {version} of {kind}, which is not one Microsoft "
                            f"documents for it (known: {', '.join(sorted(known[1]))}); if it is new, add it to "
                            "KNOWN_API_VERSIONS with its source")

    # --- loadJsonContent ----------------------------------------------------------------------------------------

    def check_json_keys(self, file: BicepFile) -> None:
        """Keys read from `var x = loadJsonContent('file.json')` exist in the file (Bicep types it from the JSON)."""
        for var, declaration in file.section("variables").items():
            value = declaration.get("value")
            function = value.get("function") if isinstance(value, dict) else None
            if not isinstance(function, dict) or function.get("type") != "load_json_content":
                continue
            parameters = function.get("parameters") or {}
            json_path = file.path.parent / str(parameters.get("file_path"))
            if not json_path.is_file():
                self.report(file, var, str(parameters.get("file_path")),
                            f"var '{var}' loads '{parameters.get('file_path')}', which does not exist")
                continue
            if parameters.get("json_path"):
                continue
            content = json.loads(json_path.read_text(encoding="utf-8"))
            if not isinstance(content, dict):
                continue
            code = file.code
            pattern = rf"(?<![\w.]){re.escape(var)}\s*(?:\.\s*([A-Za-z_]\w*)|\[\s*'([^'\n]+)'\s*\])"
            for found in re.finditer(pattern, code):
                key = found.group(1) or found.group(2)
                if key not in content:
                    line = code.count("\n", 0, found.start()) + 1
                    self.report(file, var, key, f"{var}.{key}: '{json_path.name}' (loaded into var '{var}') has no "
                                f"key '{key}' [{file.rel}:{line}]")

    # --- main.parameters.json -----------------------------------------------------------------------------------

    def check_parameters_file(self, entry: BicepFile, path: Path) -> None:
        """(c) azd's parameters file names only declared parameters and supplies every required one."""
        rel = _rel(path, self.infra)
        if not path.is_file():
            self.problems.append(Problem(rel, None, path.name, f"{path.name} is missing; azd reads it"))
            return
        supplied = json.loads(path.read_text(encoding="utf-8")).get("parameters") or {}
        declared = entry.section("parameters")
        for name in supplied:
            if name not in declared:
                self.problems.append(Problem(rel, None, name, f"parameter '{name}' is not declared in {entry.rel} "
                                             f"(it declares: {', '.join(declared)})"))
        for name, param in declared.items():
            entry_value = supplied.get(name)
            given = isinstance(entry_value, dict) and (
                entry_value.get("value") not in (None, "") or "reference" in entry_value)
            if _required(param) and not given:
                self.problems.append(Problem(rel, None, name, f"required parameter '{name}' of {entry.rel} (no "
                                             "default) has no value or azd ${...} substitution here"))


def link(infra: Path) -> list[Problem]:
    return Linker(infra).run()


def _listing(problems: list[Problem]) -> str:
    return "\n".join(f"  {problem}" for problem in problems)


# ------------------------------------------------------------------------------------------------ the real infra/


def test_infra_links_like_the_bicep_compiler_would() -> None:
    problems = link(INFRA)
    assert not problems, f"infra/ does not link ({len(problems)} problems):\n{_listing(problems)}"


def test_the_parser_sees_every_declaration_in_the_source() -> None:
    """No vacuous pass: pycep's JSON holds every module, resource, param and output the source declares."""
    linker = Linker(INFRA)
    linker.run()
    assert len(linker.files) == len(list(INFRA.rglob("*.bicep")))
    module_calls = 0
    for file in linker.files.values():
        for section, keyword in (("modules", "module"), ("resources", "resource"), ("parameters", "param"),
                                 ("outputs", "output")):
            in_source = set(re.findall(rf"^{keyword}\s+(\w+)\s", file.code, re.M))
            assert set(file.section(section)) == in_source, f"{file.rel}: pycep's {section} differ from the source"
        module_calls += len(file.section("modules"))
    assert module_calls >= 6, "main.bicep calls six modules"


def test_both_readings_of_output_references_agree() -> None:
    """The JSON walk and the source scan find the same `<symbol>.outputs.<name>`, and there are some to find."""
    linker = Linker(INFRA)
    linker.run()
    for file in linker.files.values():
        assert _json_output_refs(file) == set(_source_output_refs(file)), file.rel
    main = linker.files[(INFRA / ENTRY).resolve()]
    assert len(_json_output_refs(main)) >= 10, "main.bicep reads a dozen distinct module outputs"


# ------------------------------------------------------------------------------------------ broken copies of infra/


def _edit(path: Path, old: str, new: str, count: int = 1) -> None:
    text = path.read_text(encoding="utf-8")
    assert text.count(old) >= count, f"{path.name} no longer contains {old!r}: update this test's break"
    path.write_text(text.replace(old, new), encoding="utf-8")


def _break_renamed_output(infra: Path) -> None:
    _edit(infra / "app/keyvault.bicep", "output name string = vault.name", "output vaultName string = vault.name")


def _break_missing_required_param(infra: Path) -> None:
    _edit(infra / ENTRY, "    planName: '${abbrs.webServerFarms}${resourceToken}'\n", "")


def _break_unknown_param(infra: Path) -> None:
    _edit(infra / ENTRY, "    logAnalyticsName: '${abbrs.operationalInsightsWorkspaces}${resourceToken}'\n",
          "    logAnalyticsName: '${abbrs.operationalInsightsWorkspaces}${resourceToken}'\n    retentionDays: 30\n")


def _break_made_up_api_version(infra: Path) -> None:
    _edit(infra / "app/function.bicep", "resource functionApp 'Microsoft.Web/sites@2024-04-01'",
          "resource functionApp 'Microsoft.Web/sites@2024-13-01'")


def _break_unknown_resource_type(infra: Path) -> None:
    with (infra / "app/monitoring.bicep").open("a", encoding="utf-8") as bicep:
        bicep.write("\nresource cache 'Microsoft.Cache/redis@2024-03-01' = {\n  name: 'cache'\n  location: location\n}\n")


def _break_output_of_a_non_module(infra: Path) -> None:
    _edit(infra / ENTRY, "output RESOURCE_GROUP string = rg.name", "output RESOURCE_GROUP string = rg.outputs.name")


def _break_param_type(infra: Path) -> None:
    _edit(infra / ENTRY, "    mailchimpMaxConnections: mailchimpMaxConnections\n",
          "    mailchimpMaxConnections: exportSchedule\n")


def _break_interpolated_output(infra: Path) -> None:
    _edit(infra / ENTRY, "output SERVICE_API_BASE_URL string = functionApp.outputs.baseUrl",
          "output SERVICE_API_BASE_URL string = '${functionApp.outputs.baseUri}/'")


def _break_missing_module_file(infra: Path) -> None:
    _edit(infra / ENTRY, "module events 'app/events.bicep'", "module events 'app/event.bicep'")


def _break_nested_module(infra: Path) -> None:
    """A module inside a module, with a path relative to the calling file, passed a param it does not declare."""
    (infra / "app/nested.bicep").write_text("param location string\noutput region string = location\n",
                                            encoding="utf-8")
    with (infra / "app/storage.bicep").open("a", encoding="utf-8") as bicep:
        bicep.write("\nmodule nested 'nested.bicep' = {\n  name: 'nested'\n  params: {\n    location: location\n"
                    "    region: 'x'\n  }\n}\n\noutput nestedRegion string = nested.outputs.regions\n")


def _break_json_key(infra: Path) -> None:
    _edit(infra / ENTRY, "${abbrs.webServerFarms}", "${abbrs.webServerFarm}")


def _break_parameters_file(infra: Path) -> None:
    path = infra / PARAMETERS_FILE
    parameters = json.loads(path.read_text(encoding="utf-8"))
    del parameters["parameters"]["location"]
    parameters["parameters"]["retentionDays"] = {"value": "${RETENTION_DAYS=30}"}
    path.write_text(json.dumps(parameters, indent=2), encoding="utf-8")


def _break_as_before_the_fix(infra: Path) -> None:
    """The break `azd up` hit: main.bicep passed the key vault's secret *name*, as an output that does not exist."""
    _edit(infra / ENTRY, "    oauthClientSecretReference: keyVault.outputs.oauthClientSecretReference\n",
          "    oauthClientSecretName: keyVault.outputs.oauthClientSecretName\n")


# break -> the (file, symbol, name) problems it must produce
BREAKS: dict[str, tuple[Callable[[Path], None], set[tuple[str, str | None, str]]]] = {
    "renamed output": (_break_renamed_output, {("main.bicep", "keyVault", "name")}),
    "missing required param": (_break_missing_required_param, {("main.bicep", "functionApp", "planName")}),
    "unknown param": (_break_unknown_param, {("main.bicep", "monitoring", "retentionDays")}),
    "made-up API version": (_break_made_up_api_version, {("app/function.bicep", "functionApp", "2024-13-01")}),
    "unknown resource type": (_break_unknown_resource_type, {("app/monitoring.bicep", "cache", "Microsoft.Cache/redis")}),
    "outputs of a non-module": (_break_output_of_a_non_module, {("main.bicep", "rg", "name")}),
    "param of the wrong type": (_break_param_type, {("main.bicep", "functionApp", "mailchimpMaxConnections")}),
    "unknown output in an interpolation": (_break_interpolated_output, {("main.bicep", "functionApp", "baseUri")}),
    "missing module file": (_break_missing_module_file, {("main.bicep", "events", "app/event.bicep")}),
    "nested module": (_break_nested_module, {("app/storage.bicep", "nested", "region"),
                                             ("app/storage.bicep", "nested", "regions")}),
    "unknown loadJsonContent key": (_break_json_key, {("main.bicep", "abbrs", "webServerFarm")}),
    "parameters file": (_break_parameters_file, {("main.parameters.json", None, "location"),
                                                 ("main.parameters.json", None, "retentionDays")}),
    "as before the fix": (_break_as_before_the_fix, {("main.bicep", "functionApp", "oauthClientSecretName"),
                                                     ("main.bicep", "functionApp", "oauthClientSecretReference"),
                                                     ("main.bicep", "keyVault", "oauthClientSecretName")}),
}


@pytest.mark.parametrize("kind", BREAKS)
def test_the_linker_reports_each_break_by_file_module_and_name(kind: str, tmp_path: Path) -> None:
    infra = tmp_path / "infra"
    shutil.copytree(INFRA, infra)
    assert link(infra) == [], "the copy of infra/ should link before it is broken"
    breaker, expected = BREAKS[kind]
    breaker(infra)
    problems = link(infra)
    found = {(problem.file, problem.symbol, problem.name) for problem in problems}
    assert expected <= found, f"{kind}: expected {sorted(expected, key=str)}, got:\n{_listing(problems)}"
    assert found <= expected, f"{kind}: more problems than the one break:\n{_listing(problems)}"
    for problem in problems:  # the message a developer reads names them too
        shown = str(problem)
        assert problem.file in shown and problem.name in shown, shown
        assert problem.symbol is None or problem.symbol in shown, shown
