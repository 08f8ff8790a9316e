#!/usr/bin/env bash
# azd hook (azure.yaml: preprovision and postprovision): the Microsoft Entra ID app registration that App Service
# Authentication signs people and machines in with (infra/app/function.bicep, authsettingsV2). Bicep cannot create app
# registrations without the Microsoft Graph extension, so this script does, with the Azure CLI. It is safe to run any
# number of times; each run leaves the registration as described here and changes nothing else in it:
# - finds the registration by AZURE_AUTH_CLIENT_ID, else by its display name "customer-insights-mailchimp (<env>)",
#   else creates it (this tenant only);
# - its application ID URI api://<client id>; v2 access tokens; the app roles Exports.Admin and Exports.Operator, for
#   users and for applications (people, and the service principals and managed identities of pipelines); a delegated
#   scope user_impersonation with the Azure CLI pre-authorized, so that a person signed in with `az login` can run
#   `az account get-access-token --resource api://<client id>` too; ID token issuance; and, once the function app
#   exists (postprovision, AUTH_REDIRECT_URI), the redirect URI https://<app>.azurewebsites.net/.auth/login/aad/callback;
# - makes sure its service principal (the enterprise application, where roles are assigned) exists;
# - creates a client secret, valid one year, when the azd environment has none (AZURE_AUTH_CLIENT_SECRET is empty) or
#   the registration is new;
# - stores AZURE_AUTH_CLIENT_ID, AZURE_AUTH_TENANT_ID and AZURE_AUTH_CLIENT_SECRET with `azd env set`; azd passes them
#   to infra/main.bicep (infra/main.parameters.json).
# Needs the Azure CLI signed in (`az login --tenant <tenant>`) as someone who may create app registrations (or owns this
# one). AZURE_AUTH_APP_REGISTRATION=manual: change nothing in Entra ID, only check that AZURE_AUTH_CLIENT_ID and
# AZURE_AUTH_CLIENT_SECRET are set (an administrator made the registration as docs/deploy.md "Sign-in" describes).
set -euo pipefail

ADMIN_ROLE=Exports.Admin
OPERATOR_ROLE=Exports.Operator
SCOPE=user_impersonation
# The ids the roles and the scope get when the registration does not have them yet (a GUID unique within the app);
# existing ones keep theirs, so role assignments survive every run.
ADMIN_ROLE_ID=0cb35239-7703-4fba-843b-222e9e45d476
OPERATOR_ROLE_ID=0db00f59-4073-4433-949e-265162158b93
SCOPE_ID=a5d4c7e1-7176-4b37-a896-657ed5fe2e39
AZURE_CLI_APP_ID=04b07795-8ddb-461a-bbee-02f9e1bf7b46  # Microsoft Azure CLI (a first-party public client)

# shellcheck source=scripts/azd-common.sh
. "$(dirname "$0")/azd-common.sh"

# The JSON array items (without brackets) of an `az ... -o json` answer: "" for [] and for null (no such property).
items() {
    local json
    json="$(cat)"
    case "$json" in
        *"["*) json="${json#*[}"; json="${json%]*}" ;;
        *) json="" ;;
    esac
    if [ -z "${json//[[:space:]]/}" ]; then json=""; fi
    printf '%s' "$json"
}

# "a, b" from the non-empty arguments.
join() {
    local out="" part
    for part in "$@"; do
        if [ -n "$part" ]; then out="${out:+$out, }$part"; fi
    done
    printf '%s' "$out"
}

command -v az >/dev/null || die "needs the Azure CLI (az): https://aka.ms/installazurecli"
command -v azd >/dev/null || die "needs the Azure Developer CLI (azd)"

env_name="$(env_value AZURE_ENV_NAME)"
[ -n "$env_name" ] || die "no azd environment: run it through azd (azd provision), or select one with azd env select"
client_id="$(env_value AZURE_AUTH_CLIENT_ID)"
secret="$(env_value AZURE_AUTH_CLIENT_SECRET)"

if [ "$(env_value AZURE_AUTH_APP_REGISTRATION)" = "manual" ]; then
    [ -n "$client_id" ] || die "AZURE_AUTH_APP_REGISTRATION=manual, but AZURE_AUTH_CLIENT_ID is not set"
    [ -n "$secret" ] || die "AZURE_AUTH_APP_REGISTRATION=manual, but AZURE_AUTH_CLIENT_SECRET is not set"
    say "AZURE_AUTH_APP_REGISTRATION=manual: the app registration $client_id is used as it is"
    exit 0
fi

tenant="$(az account show --query tenantId -o tsv 2>/dev/null)" ||
    die "the Azure CLI is not signed in: az login --tenant <the tenant of the deployment>"
known_tenant="$(env_value AZURE_AUTH_TENANT_ID)"
if [ -n "$known_tenant" ] && [ "$known_tenant" != "$tenant" ]; then
    die "the Azure CLI is signed in to tenant $tenant, but this environment's app registration is in $known_tenant: az login --tenant $known_tenant"
fi
graph="$(az cloud show --query endpoints.microsoftGraphResourceId -o tsv)"
graph="${graph%/}"
display_name="customer-insights-mailchimp ($env_name)"

created=false
if [ -n "$client_id" ]; then
    az ad app show --id "$client_id" --query appId -o tsv >/dev/null 2>&1 ||
        die "AZURE_AUTH_CLIENT_ID=$client_id is no app registration of tenant $tenant (sign in to its tenant, or azd env set AZURE_AUTH_CLIENT_ID '' to create one)"
else
    # --display-name matches names starting with it; the query keeps the exact one.
    found="$(az ad app list --display-name "$display_name" --query "[?displayName=='$display_name'].appId" -o tsv)"
    case "$(printf '%s' "$found" | grep -c . || true)" in
        0)
            say "creating the app registration '$display_name'"
            client_id="$(az ad app create --display-name "$display_name" --sign-in-audience AzureADMyOrg \
                --query appId -o tsv)"
            created=true
            ;;
        1) client_id="$found" ;;
        *) die "several app registrations are named '$display_name': azd env set AZURE_AUTH_CLIENT_ID <the one to use>" ;;
    esac
fi
say "app registration $client_id ('$display_name') in tenant $tenant"
object_id="$(az ad app show --id "$client_id" --query id -o tsv)"

# What the registration holds besides what this script manages is kept as it is.
show() { az ad app show --id "$client_id" --query "$1" -o "${2:-tsv}"; }
role_id() {
    local id
    id="$(show "appRoles[?value=='$1'].id | [0]")"
    printf '%s' "${id:-$2}"
}
admin_id="$(role_id "$ADMIN_ROLE" "$ADMIN_ROLE_ID")"
operator_id="$(role_id "$OPERATOR_ROLE" "$OPERATOR_ROLE_ID")"
scope_id="$(show "api.oauth2PermissionScopes[?value=='$SCOPE'].id | [0]")"
scope_id="${scope_id:-$SCOPE_ID}"
other_roles="$(show "appRoles[?value!='$ADMIN_ROLE' && value!='$OPERATOR_ROLE'].{allowedMemberTypes: allowedMemberTypes, description: description, displayName: displayName, id: id, isEnabled: isEnabled, value: value}" json | items)"
other_scopes="$(show "api.oauth2PermissionScopes[?value!='$SCOPE']" json | items)"
other_preauthorized="$(show "api.preAuthorizedApplications[?appId!='$AZURE_CLI_APP_ID']" json | items)"
other_uris="$(show "identifierUris[?@!='api://$client_id']" json | items)"
redirect_uri="$(env_value AUTH_REDIRECT_URI)"
if [ -n "$redirect_uri" ]; then
    redirects="$(join "$(show "web.redirectUris[?@!='$redirect_uri']" json | items)" "\"$redirect_uri\"")"
else
    redirects="$(show "web.redirectUris" json | items)"
    say "no AUTH_REDIRECT_URI yet: the sign-in redirect URI is added after provisioning (postprovision)"
fi

admin_role="{\"allowedMemberTypes\": [\"User\", \"Application\"], \"displayName\": \"Exports admin\",
  \"description\": \"Manages destinations, consent and Mailchimp credentials, and every export.\",
  \"id\": \"$admin_id\", \"isEnabled\": true, \"value\": \"$ADMIN_ROLE\"}"
operator_role="{\"allowedMemberTypes\": [\"User\", \"Application\"], \"displayName\": \"Exports operator\",
  \"description\": \"Starts and cancels exports and reads runs and error reports of the destinations naming them.\",
  \"id\": \"$operator_id\", \"isEnabled\": true, \"value\": \"$OPERATOR_ROLE\"}"
scope="{\"adminConsentDisplayName\": \"Use the Mailchimp export API\",
  \"adminConsentDescription\": \"Calls the Mailchimp export API as the signed-in user, with that user's app roles.\",
  \"userConsentDisplayName\": \"Use the Mailchimp export API\",
  \"userConsentDescription\": \"Calls the Mailchimp export API as you, with your roles.\",
  \"id\": \"$scope_id\", \"isEnabled\": true, \"type\": \"User\", \"value\": \"$SCOPE\"}"
scopes="[$(join "$other_scopes" "$scope")]"

body="$(mktemp)"
trap 'rm -f "$body"' EXIT
patch() {
    az rest --method PATCH --uri "$graph/v1.0/applications/$object_id" \
        --headers Content-Type=application/json --body "@$body" --output none
}
# The scope must exist before an application can be pre-authorized for it: two requests.
cat > "$body" <<JSON
{
  "identifierUris": [$(join "$other_uris" "\"api://$client_id\"")],
  "appRoles": [$(join "$other_roles" "$admin_role" "$operator_role")],
  "api": {"requestedAccessTokenVersion": 2, "oauth2PermissionScopes": $scopes},
  "web": {"redirectUris": [$redirects], "implicitGrantSettings": {"enableIdTokenIssuance": true}}
}
JSON
patch
cat > "$body" <<JSON
{
  "api": {"requestedAccessTokenVersion": 2, "oauth2PermissionScopes": $scopes,
          "preAuthorizedApplications": [$(join "$other_preauthorized" "{\"appId\": \"$AZURE_CLI_APP_ID\", \"delegatedPermissionIds\": [\"$scope_id\"]}")]}
}
JSON
patch
say "roles $ADMIN_ROLE and $OPERATOR_ROLE, api://$client_id, ID tokens${redirect_uri:+, redirect URI $redirect_uri}"

if ! az ad sp show --id "$client_id" --query id -o tsv >/dev/null 2>&1; then
    say "creating its service principal (enterprise application)"
    az ad sp create --id "$client_id" --output none
fi

if [ "$created" = true ] || [ -z "$secret" ]; then
    say "creating a client secret for App Service Authentication (valid one year; stored in Key Vault by azd provision)"
    secret="$(az ad app credential reset --id "$client_id" --append --years 1 \
        --display-name "App Service Authentication ($env_name)" --query password -o tsv 2>/dev/null)"
    [ -n "$secret" ] || die "could not create a client secret for $client_id"
    azd env set AZURE_AUTH_CLIENT_SECRET "$secret"
fi
azd env set AZURE_AUTH_CLIENT_ID "$client_id"
azd env set AZURE_AUTH_TENANT_ID "$tenant"
