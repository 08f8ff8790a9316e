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

echo "== checkov: infra/ (Bicep)"
"$TOOLS/bin/checkov" -d infra --framework bicep --skip-download --compact --quiet

echo "== azure-functions-doctor: the app, as deployed to Flex Consumption"
"$TOOLS/bin/azure-functions-doctor" doctor --path . --profile deploy --hosting-plan flex-consumption --target-python 3.11
