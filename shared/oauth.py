"""OAuth 2 with Mailchimp: the `state` that guards the anonymous callback, the authorize URL and the code exchange.

The callback is the one route without a function key (Mailchimp's redirect cannot carry one), so the state is its
protection: `<payload>.<signature>`, payload = base64url JSON {d: destination id, n: random nonce, e: expiry (Unix
seconds), m: create missing merge fields}, signature = HMAC-SHA256 with a key kept in the secret store (secret
`oauth-state-key`, 32 random bytes made on first use). Every instance thus verifies what any instance issued, and
deleting that secret voids all states in flight. A state is spent when redeemed (a create-only marker per nonce),
before the code is exchanged: a replayed callback fails even if it carries a fresh code.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
import threading
import time
from dataclasses import dataclass
from typing import Callable, Protocol
from urllib.parse import urlencode

import requests

from shared.adapters.secrets import SecretStore
from shared.config import OAuthSettings

STATE_TTL_SECONDS = 600
STATE_KEY_SECRET = "oauth-state-key"
_TIMEOUT = (5.0, 30.0)
_RESTART = "start again from GET /api/destinations/{id}/mailchimp/connect"


class OAuthFailed(Exception):
    """The flow cannot finish; the message is safe to show (never a code, token or secret) and says what to do."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class UsedStates(Protocol):
    def first_use(self, nonce: str) -> bool: ...


@dataclass(frozen=True)
class State:
    destination_id: str
    nonce: str
    expires: int
    create_missing_merge_fields: bool


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class StateSigner:
    def __init__(self, secrets_store: SecretStore, used: UsedStates, *, ttl_seconds: int = STATE_TTL_SECONDS,
                 clock: Callable[[], float] = time.time) -> None:
        self._secrets = secrets_store
        self._used = used
        self._ttl = ttl_seconds
        self._clock = clock
        self._cached: bytes | None = None
        self._lock = threading.Lock()

    def issue(self, destination_id: str, create_missing_merge_fields: bool) -> str:
        doc = {"d": destination_id, "n": secrets.token_urlsafe(16), "e": int(self._clock()) + self._ttl,
               "m": create_missing_merge_fields}
        payload = _b64(json.dumps(doc, separators=(",", ":")).encode("utf-8"))
        return f"{payload}.{_b64(self._sign(payload, self._key()))}"

    def redeem(self, state: str | None) -> State:
        """The state's content once its signature, age and first use are checked; it cannot be redeemed again."""
        bad = OAuthFailed(400, f"the OAuth state is missing, altered or not issued by this app: nothing was stored; {_RESTART}")
        payload, _, signature = (state or "").partition(".")
        try:
            given = _unb64(signature)
            doc = json.loads(_unb64(payload))
            parsed = State(str(doc["d"]), str(doc["n"]), int(doc["e"]), bool(doc["m"]))
        except (ValueError, KeyError, TypeError, binascii.Error):
            raise bad from None
        if not hmac.compare_digest(given, self._sign(payload, self._key())):
            # another instance may have made the key at the same moment as this one: read it again, once
            if not hmac.compare_digest(given, self._sign(payload, self._key(refresh=True))):
                raise bad
        if parsed.expires < self._clock():
            raise OAuthFailed(400, f"the OAuth state has expired (they last {self._ttl // 60} minutes): nothing was stored; {_RESTART}")
        if not self._used.first_use(parsed.nonce):
            raise OAuthFailed(400, f"this OAuth state was already used (a replayed or reloaded callback): nothing was stored; {_RESTART}")
        return parsed

    @staticmethod
    def _sign(payload: str, key: bytes) -> bytes:
        return hmac.new(key, payload.encode("ascii"), hashlib.sha256).digest()

    def _key(self, refresh: bool = False) -> bytes:
        with self._lock:
            if self._cached is None or refresh:
                stored = self._secrets.get(STATE_KEY_SECRET)
                if stored is None:
                    self._secrets.set(STATE_KEY_SECRET, secrets.token_hex(32))
                    stored = self._secrets.get(STATE_KEY_SECRET) or ""
                self._cached = bytes.fromhex(stored)
            return self._cached


def authorize_url(settings: OAuthSettings, state: str) -> str:
    query = urlencode({"response_type": "code", "client_id": settings.client_id,
                       "redirect_uri": settings.redirect_uri, "state": state})
    return f"{settings.authorize_url}?{query}"


def exchange_code(settings: OAuthSettings, code: str) -> str:
    """The access token for an authorization code; Mailchimp's tokens never expire and come without refresh token."""
    form = {"grant_type": "authorization_code", "client_id": settings.client_id,
            "client_secret": settings.client_secret, "redirect_uri": settings.redirect_uri, "code": code}
    try:
        response = requests.post(settings.token_url, data=form, timeout=_TIMEOUT)
    except requests.RequestException as error:
        raise OAuthFailed(502, f"Mailchimp's token endpoint could not be reached ({type(error).__name__}): nothing was stored; {_RESTART}") from None
    try:
        body = response.json()
    except ValueError:  # not JSON: handled below like an answer without a token
        body = {}
    error = body.get("error") if isinstance(body, dict) else None
    if response.status_code == 401 or error == "invalid_client":
        raise OAuthFailed(502, "Mailchimp refused this app's OAuth client (invalid_client): check the settings "
                               "MAILCHIMP_OAUTH_CLIENT_ID and MAILCHIMP_OAUTH_CLIENT_SECRET")
    token = body.get("access_token") if isinstance(body, dict) else None
    if response.status_code != 200 or not isinstance(token, str) or not token:
        reason = f"{response.status_code}, {error}" if isinstance(error, str) else str(response.status_code)
        raise OAuthFailed(400 if error == "invalid_grant" else 502,
                          f"Mailchimp did not exchange the authorization code for a token ({reason}): nothing was stored; {_RESTART}")
    return token
