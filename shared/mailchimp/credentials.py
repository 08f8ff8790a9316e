"""Who we talk to Mailchimp as: the secret, where the account lives, and what its connection cap is keyed on."""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from typing import Any, Mapping

import requests

from .errors import RENEW, MailchimpAuthError, MailchimpUnavailable, error_for_answer

_DC = "[a-z]{2,4}[0-9]{1,3}"  # a Mailchimp data centre: us6, us19, ...
_API_KEY = re.compile(rf"^[0-9a-fA-F]{{32}}-({_DC})$")
_DATA_CENTRE = re.compile(rf"^{_DC}$")
_METADATA_TIMEOUT = (5.0, 30.0)


@dataclass(frozen=True)
class Credentials:
    secret: str = field(repr=False)  # API key or OAuth access token: kept out of repr/str so it cannot reach a log
    api_root: str
    kind: str  # "api_key" | "oauth"
    account: str  # what the 10-connection cap is counted against; never the secret itself

    @classmethod
    def from_api_key(cls, api_key: str, base_url: str | None = None) -> "Credentials":
        """The data centre is the key's suffix, so the key alone says where the account lives."""
        key = api_key.strip()
        if not key:
            raise ValueError("Mailchimp API key is empty: paste the key from Mailchimp (Profile > Extras > API keys)")
        match = _API_KEY.fullmatch(key)
        if not match:
            raise ValueError("Mailchimp API key is malformed: expected 32 hexadecimal characters, a dash and the "
                             "data centre (like '…-us6'); copy the whole key again from Mailchimp "
                             "(Profile > Extras > API keys)")
        dc = match.group(1)
        # The cap is per Mailchimp user; a key cannot tell us its user without a call, so the key's digest stands in.
        return cls(key, _root(base_url, api_root_for(dc)), "api_key", f"{dc}:key-{_digest(key)}")

    @classmethod
    def from_oauth_token(cls, token: str, metadata: Mapping[str, Any], base_url: str | None = None) -> "Credentials":
        """OAuth tokens carry no data centre: Mailchimp's metadata answer names it (`dc`).

        Only the data centre is taken from the answer, checked, and the host built from it; the answer's
        `api_endpoint` is never used, so neither a forged answer nor a tampered stored secret can send the token to
        another host. MAILCHIMP_API_BASE_URL (the local stand-in) is the one override.
        """
        token = token.strip()
        if not token:
            raise ValueError(f"Mailchimp OAuth token is empty; {RENEW}")
        dc = metadata.get("dc")
        valid = isinstance(dc, str) and _DATA_CENTRE.fullmatch(dc) is not None
        if not valid and base_url is None:
            raise ValueError(f"Mailchimp OAuth metadata names no valid data centre (like 'us6'); {RENEW}")
        dc = dc if valid else ""
        login = metadata.get("login") if isinstance(metadata.get("login"), Mapping) else {}
        user = login.get("login_id") or metadata.get("user_id")
        account = f"{dc}:user-{user}" if user else f"{dc}:token-{_digest(token)}"
        return cls(token, _root(base_url, api_root_for(dc) if valid else ""), "oauth", account)


def api_root_for(data_centre: str) -> str:
    """Mailchimp's API root for a data centre, which must look like one (us6, us19)."""
    if not _DATA_CENTRE.fullmatch(data_centre):
        raise ValueError(f"{data_centre!r} is not a Mailchimp data centre (like 'us6')")
    return f"https://{data_centre}.api.mailchimp.com/3.0"


def fetch_oauth_metadata(token: str, metadata_url: str, session: requests.Session | None = None) -> dict:
    """Mailchimp answers a dead token with 200 and an `error` field, so both shapes are treated as 'reconnect'."""
    http = session or requests.Session()
    try:
        response = http.get(metadata_url, headers={"Authorization": f"OAuth {token}"}, timeout=_METADATA_TIMEOUT)
    except requests.RequestException as exc:
        raise MailchimpUnavailable(
            f"could not reach Mailchimp's OAuth metadata endpoint ({type(exc).__name__})") from None
    finally:
        if session is None:
            http.close()
    try:
        body = response.json()
    except ValueError:
        body = None
    status = response.status_code
    if status == 401 or (status in (200, 400) and isinstance(body, dict) and "error" in body):
        raise MailchimpAuthError(f"Mailchimp did not accept the OAuth token ({status}); {RENEW}", status=401)
    if status == 200 and isinstance(body, dict):
        return body
    raise error_for_answer(status, body, "GET oauth2/metadata", token)


def _root(base_url: str | None, default: str) -> str:
    root = (base_url or default).strip().rstrip("/")
    if not root.startswith(("https://", "http://")):
        raise ValueError("MAILCHIMP_API_BASE_URL must be an http(s) URL such as https://us6.api.mailchimp.com/3.0")
    return root


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()[:16]
