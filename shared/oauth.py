"""OAuth 2 with Mailchimp: the `state` that guards the anonymous callback, the authorize URL and the code exchange.

The callback is the one route without a function key (Mailchimp's redirect cannot carry one), so the state is its
protection: `<payload>.<signature>`, payload = base64url JSON {d: destination id, n: random nonce, e: expiry (Unix
seconds), m: create missing merge fields}, signature = HMAC-SHA256 with a key kept in the secret store (secret
`oauth-state-key`, 32 random bytes as hex, made on first use). Every instance thus verifies what any instance issued.
A state is spent when redeemed (a create-only marker per nonce), before the code is exchanged: a replayed callback
fails even if it carries a fresh code.

The key is cached: it is read at most every KEY_REFRESH_SECONDS, and a signature no cached key matches may cause
one more read at most every KEY_RECHECK_SECONDS per instance, so forged states (anyone can send them) cannot make
the app hammer Key Vault and throttle the credential reads exports depend on. One request reads while the others go
on with the cached key; no lock is held while the secret store is asked.

Rotation writes a new version of the secret (never delete it: with soft delete and purge protection a deleted name
cannot be used again for up to 90 days). States are signed with the newest version; the version before it is still
accepted until every state signed with it has expired (the new version's age exceeds the state lifetime plus the
refresh interval plus clock slack). A state signed with an older version is refused.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import logging
import math
import secrets
import threading
import time
from dataclasses import dataclass
from typing import Callable, Protocol
from urllib.parse import urlencode

import requests

from shared.adapters.secrets import SecretStore, SecretVersion
from shared.config import OAuthSettings

STATE_TTL_SECONDS = 600
STATE_KEY_SECRET = "oauth-state-key"
KEY_REFRESH_SECONDS = 300  # the key is re-read at most this often when every state verifies
KEY_RECHECK_SECONDS = 30  # a state no cached key verifies may re-read the key at most this often (per instance)
KEY_CLOCK_SLACK_SECONDS = 120  # Key Vault's clock against ours, when judging the age of a version
_TIMEOUT = (5.0, 30.0)
log = logging.getLogger(__name__)
_RESTART = "start again from POST /api/destinations/{id}/mailchimp/connect (\"Authenticate with Mailchimp\" in the admin page)"


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
    requested_by: str = ""  # object ID of the admin who asked to connect (the state passes through Mailchimp: no address)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True)
class _Keys:
    current: bytes
    previous: bytes | None
    previous_until: float  # on the signer's clock: after this no state signed with `previous` can still be live
    read_at: float  # monotonic


class StateSigner:
    def __init__(self, secrets_store: SecretStore, used: UsedStates, *, ttl_seconds: int = STATE_TTL_SECONDS,
                 clock: Callable[[], float] = time.time, monotonic: Callable[[], float] = time.monotonic) -> None:
        self._secrets = secrets_store
        self._used = used
        self._ttl = ttl_seconds
        self._clock = clock
        self._monotonic = monotonic
        self._cached: _Keys | None = None
        self._reading = False  # one thread reads the secret store at a time; the others use the cached keys
        self._changed = threading.Condition()

    def issue(self, destination_id: str, create_missing_merge_fields: bool, requested_by: str = "") -> str:
        doc = {"d": destination_id, "n": secrets.token_urlsafe(16), "e": int(self._clock()) + self._ttl,
               "m": create_missing_merge_fields, "b": requested_by}
        payload = _b64(json.dumps(doc, separators=(",", ":")).encode("utf-8"))
        return f"{payload}.{_b64(self._sign(payload, self._keys(KEY_REFRESH_SECONDS).current))}"

    def redeem(self, state: str | None) -> State:
        """The state's content once its signature, age and first use are checked; it cannot be redeemed again."""
        bad = OAuthFailed(400, f"the OAuth state is missing, altered or not issued by this app: nothing was stored; {_RESTART}")
        payload, _, signature = (state or "").partition(".")
        try:
            given = _unb64(signature)
            payload.encode("ascii")
        except (ValueError, binascii.Error):
            raise bad from None
        # The signature is checked before the payload is parsed: nothing an anonymous caller makes up is parsed.
        keys = self._keys(KEY_REFRESH_SECONDS)
        if not self._verifies(keys, payload, given):
            # Another instance may already sign with a version this one has not read yet: look again, but only if
            # the cached keys are older than KEY_RECHECK_SECONDS, so forged states cost (almost) no reads.
            again = self._keys(KEY_RECHECK_SECONDS)
            if again is keys or not self._verifies(again, payload, given):
                raise bad
        try:
            doc = json.loads(_unb64(payload))
            parsed = State(str(doc["d"]), str(doc["n"]), int(doc["e"]), bool(doc["m"]), str(doc.get("b") or ""))
        except (ValueError, KeyError, TypeError, binascii.Error, RecursionError):
            raise bad from None
        if parsed.expires < self._clock():
            raise OAuthFailed(400, f"the OAuth state has expired (they last {self._ttl // 60} minutes): nothing was stored; {_RESTART}")
        if not self._used.first_use(parsed.nonce):
            raise OAuthFailed(400, f"this OAuth state was already used (a replayed or reloaded callback): nothing was stored; {_RESTART}")
        return parsed

    @staticmethod
    def _sign(payload: str, key: bytes) -> bytes:
        return hmac.new(key, payload.encode("ascii"), hashlib.sha256).digest()

    def _verifies(self, keys: _Keys, payload: str, given: bytes) -> bool:
        if hmac.compare_digest(given, self._sign(payload, keys.current)):
            return True
        return (keys.previous is not None and self._clock() < keys.previous_until
                and hmac.compare_digest(given, self._sign(payload, keys.previous)))

    def _keys(self, max_age: float) -> _Keys:
        """Keys read at most `max_age` seconds ago. While one thread reads the store, the others use the cached keys
        (or, before the first read, wait for it without holding the lock)."""
        with self._changed:
            while True:
                cached = self._cached
                if cached is not None and self._monotonic() - cached.read_at < max_age:
                    return cached
                if not self._reading:
                    self._reading = True
                    break
                if cached is not None:
                    return cached
                self._changed.wait(1.0)
        keys: _Keys | None = None
        try:
            keys = self._load()
            return keys
        except Exception as error:
            if cached is None:
                raise
            log.warning("the OAuth state key could not be re-read (%s); the cached key stays in use", type(error).__name__)
            keys = _Keys(cached.current, cached.previous, cached.previous_until, self._monotonic())  # try again later
            return keys
        finally:
            with self._changed:
                self._reading = False
                if keys is not None:
                    self._cached = keys
                self._changed.notify_all()

    def _load(self) -> _Keys:
        found = self._versions()
        if not found:
            self._secrets.set(STATE_KEY_SECRET, secrets.token_hex(32))
            found = self._versions()  # read back: another instance may have made one at the same moment
            if not found:
                raise RuntimeError(f"the secret store did not keep {STATE_KEY_SECRET}")
        current, previous = found[0], (found[1] if len(found) > 1 else None)
        until = (math.inf if current.created is None
                 else current.created + self._ttl + KEY_REFRESH_SECONDS + KEY_CLOCK_SLACK_SECONDS)
        return _Keys(bytes.fromhex(current.value.strip()), bytes.fromhex(previous.value.strip()) if previous else None,
                     until, self._monotonic())

    def _versions(self) -> list[SecretVersion]:
        """Newest first: current and previous; a store without versions gives the current key only."""
        versions = getattr(self._secrets, "versions", None)
        if versions is not None:
            return versions(STATE_KEY_SECRET, 2)
        value = self._secrets.get(STATE_KEY_SECRET)
        return [] if value is None else [SecretVersion(value, None)]


def rotate_state_key(store: SecretStore) -> None:
    """Write a new version of the signing key: states signed with the one before stay valid until they expire."""
    store.set(STATE_KEY_SECRET, secrets.token_hex(32))


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
