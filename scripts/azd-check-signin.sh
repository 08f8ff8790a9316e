#!/usr/bin/env bash
# azd hook (azure.yaml: postdeploy, so it runs after `azd up` and `azd deploy`, once the code is in the app): checks
# that App Service Authentication removes an X-MS-CLIENT-PRINCIPAL header sent by a client. shared/auth.py trusts that
# header whenever WEBSITE_AUTH_ENABLED=True, and Flex Consumption documents Easy Auth only indirectly (docs/deploy.md,
# "Sign-in"), so this sends GET <SERVICE_API_BASE_URL>/api/me with a forged principal (an object ID and the role
# Exports.Admin) and no credentials:
# - 401: the platform stripped the header; exit 0;
# - 404: the platform has no /api/me, i.e. no code is deployed yet (e.g. run by hand after `azd provision` alone):
#   nothing to check, say so and exit 0; the next `azd deploy` checks;
# - anything else (200 above all: the forged caller was believed), or no answer: say why and exit 1, which stops azd.
#   Then stop the app (az functionapp stop, printed below) until sign-in is fixed.
# Run by hand any time: bash scripts/azd-check-signin.sh (reads the azd environment).
# SIGNIN_CHECK_ATTEMPTS (default 5) and SIGNIN_CHECK_WAIT_SECONDS (10): retries while the app is starting (no answer,
# 502, 503, 504).
set -euo pipefail

FORGED_OID=00000000-0000-0000-0000-00000000f0a9
FORGED_ROLE=Exports.Admin

# shellcheck source=scripts/azd-common.sh
. "$(dirname "$0")/azd-common.sh"

command -v curl >/dev/null || die "needs curl"
base="$(env_value SERVICE_API_BASE_URL)"
[ -n "$base" ] || die "no SERVICE_API_BASE_URL in the azd environment (an output of infra/main.bicep): run azd provision first"
base="${base%/}"
app="$(env_value AZURE_FUNCTION_APP_NAME)"
group="$(env_value RESOURCE_GROUP)"
stop="az functionapp stop -n ${app:-<app>} -g ${group:-<resource group>}"

principal="{\"auth_typ\":\"aad\",\"name_typ\":\"name\",\"role_typ\":\"roles\",\"claims\":[{\"typ\":\"roles\",\"val\":\"$FORGED_ROLE\"},{\"typ\":\"http://schemas.microsoft.com/identity/claims/objectidentifier\",\"val\":\"$FORGED_OID\"},{\"typ\":\"name\",\"val\":\"forged by azd-check-signin\"}]}"
forged="$(printf '%s' "$principal" | base64 | tr -d '\n')"

body="$(mktemp)"
trap 'rm -f "$body"' EXIT
attempts="${SIGNIN_CHECK_ATTEMPTS:-5}"
attempt=1
while :; do
    status="$(curl -sS -o "$body" -w '%{http_code}' --max-time 60 \
        -H "X-MS-CLIENT-PRINCIPAL: $forged" "$base/api/me" 2>/dev/null)" || true
    case "$status" in
        000 | "" | 502 | 503 | 504)
            if [ "$attempt" -ge "$attempts" ]; then break; fi
            say "$base/api/me answered ${status:-nothing} (starting?); trying again ($attempt of $attempts)"
            attempt=$((attempt + 1))
            sleep "${SIGNIN_CHECK_WAIT_SECONDS:-10}"
            ;;
        *) break ;;
    esac
done

case "$status" in
    401)
        say "$base/api/me refused a forged X-MS-CLIENT-PRINCIPAL (401): App Service Authentication strips it"
        ;;
    404)
        say "SKIPPED: $base/api/me answered 404, so no code is deployed yet; the check runs after azd deploy (or run scripts/azd-check-signin.sh)"
        ;;
    000 | "")
        die "could not reach $base/api/me, so nobody knows whether forged X-MS-CLIENT-PRINCIPAL headers are stripped; run scripts/azd-check-signin.sh again once it answers, and stop the app if it does not answer 401: $stop"
        ;;
    200)
        die "DANGER: $base/api/me answered 200 to a forged X-MS-CLIENT-PRINCIPAL ($FORGED_ROLE, oid $FORGED_OID): App Service Authentication does not strip client-sent principal headers, so anyone can act as any user or role. Stop the app now: $stop (docs/deploy.md, \"Sign-in\")"
        ;;
    *)
        die "$base/api/me answered $status to a forged X-MS-CLIENT-PRINCIPAL where 401 was expected: App Service Authentication may not be stripping client-sent principal headers. Stop the app until this is understood: $stop (docs/deploy.md, \"Sign-in\"). Answer: $(head -c 300 "$body")"
        ;;
esac
