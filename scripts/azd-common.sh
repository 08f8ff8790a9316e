# Shared by the azd hook scripts (sourced, not run): messages prefixed with the script's name, and azd env values.
# shellcheck shell=bash

say() { printf '%s: %s\n' "$(basename "$0" .sh)" "$*" >&2; }
die() { say "$*"; exit 1; }

# A value of the azd environment: azd passes them to hooks as environment variables; run by hand, ask azd.
env_value() {
    local value="${!1:-}"
    if [ -z "$value" ] && command -v azd >/dev/null; then
        value="$(azd env get-value "$1" 2>/dev/null)" || value=""
    fi
    printf '%s' "$value"
}
