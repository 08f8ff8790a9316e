#!/usr/bin/env bash
# Offline checks of what `azd up` would deploy: checkov over the Bicep in infra/ and azure-functions-doctor over the
# app. Both run from their own venv (.venv-tools) so their dependencies never touch the app's .venv; it is installed
# once and reinstalled only when the pins below change. Fails on any failed check: every skip is explained in the
# template with `//checkov:skip=CKV_...:reason`.
set -euo pipefail
cd "$(dirname "$0")/.."

TOOLS=.venv-tools
PINS="checkov==3.3.30 azure-functions-doctor==0.23.1"

if [ "$(cat "$TOOLS/.installed" 2>/dev/null)" != "$PINS" ]; then
    rm -rf "$TOOLS"
    "${PYTHON:-python3}" -m venv "$TOOLS"
    echo '*' > "$TOOLS/.gitignore"  # a tool cache, never committed
    # shellcheck disable=SC2086  # PINS is a list of requirement specifiers
    "$TOOLS/bin/pip" install -qq --disable-pip-version-check $PINS
    echo "$PINS" > "$TOOLS/.installed"
fi

# checkov reads every .bicep file under infra/, modules in infra/app/ included (the VNet and private endpoints too).
# A file it cannot parse is left out of the scan, and checkov still exits 0: the JSON report's parsing_errors says
# which, and this script fails on them.
echo "== checkov: infra/ (Bicep): $(find infra -name '*.bicep' | sort | tr '\n' ' ')"
REPORT="$TOOLS/checkov-report.json"
rm -f "$REPORT"
"$TOOLS/bin/checkov" -d infra --framework bicep --skip-download --compact --quiet \
    -o cli -o json --output-file-path "console,$REPORT"
"$TOOLS/bin/python" - "$REPORT" <<'PY'
import json, sys
summary = json.load(open(sys.argv[1]))["summary"]
if summary["parsing_errors"]:
    sys.exit(f"checkov could not parse {summary['parsing_errors']} .bicep file(s), so it did not check them; "
             "run checkov -d infra --framework bicep -o json and read results.parsing_errors")
PY

echo "== azure-functions-doctor: the app, as deployed to Flex Consumption"
"$TOOLS/bin/azure-functions-doctor" doctor --path . --profile deploy --hosting-plan flex-consumption --target-python 3.11
