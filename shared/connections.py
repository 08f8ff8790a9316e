"""Mailchimp connections of destinations: credentials kept in the secret store, clients reused while they work.

Credentials are cached for a short while so chunk workers do not read Key Vault for every chunk; a 401 drops the
cached copy, so a credential rotated in Key Vault is picked up on the next try.

Each credential the app stores is a secret of its own, named by the destination record (`Destination.secret_name`),
and the record is written after the credential, conditionally: two changes racing each store their own secret, one
record write wins, and the loser removes its secret. A new version written by hand in Key Vault under the secret
the record names is an operator's rotation, and is used.
"""
from __future__ import annotations

import json
import threading
import time
from typing import Any, Callable, ContextManager

from shared.adapters.secrets import SecretStore
from shared.destinations import Destination
from shared.mailchimp.client import MailchimpClient
from shared.mailchimp.credentials import Credentials
from shared.mailchimp.errors import MailchimpAuthError
from shared.mailchimp.retry import RetryPolicy

GateFactory = Callable[[str, int], Callable[[], ContextManager[None]]]


def api_key_secret(api_key: str) -> dict[str, Any]:
    return {"kind": "api_key", "apiKey": api_key}


def oauth_secret(token: str, metadata: dict[str, Any]) -> dict[str, Any]:
    """OAuth tokens carry no data centre, so the metadata's data centre is kept with the token. The API host is
    built from it (https://<dc>.api.mailchimp.com/3.0) each time; no URL is stored."""
    return {"kind": "oauth", "accessToken": token, "dc": metadata.get("dc")}


class NotConnected(Exception):
    """The destination has no Mailchimp credentials (never connected, or they were removed)."""


class MailchimpConnections:
    def __init__(self, secrets: SecretStore, *, base_url: str | None, max_connections: int,
                 gate_factory: GateFactory | None = None, retry: RetryPolicy | None = None,
                 ttl_seconds: float = 300.0) -> None:
        self._secrets = secrets
        self._base_url = base_url
        self._max_connections = max_connections
        self._gate_factory = gate_factory
        self._retry = retry
        self._ttl = ttl_seconds
        self._cache: dict[str, tuple[float, MailchimpClient]] = {}
        self._lock = threading.Lock()

    def store(self, destination: Destination, secret: dict[str, Any]) -> None:
        """Keep a checked credential (see `api_key_secret`, `oauth_secret`) under the secret the record will name."""
        self._secrets.set(destination.secret_name, json.dumps(secret))
        self.forget(destination)

    def remove(self, destination: Destination) -> None:
        self._secrets.delete(destination.secret_name)
        self.forget(destination)

    def forget(self, destination: Destination) -> None:
        with self._lock:
            cached = self._cache.pop(destination.secret_name, None)
        if cached:
            cached[1].close()

    def client_for_secret(self, secret: dict[str, Any]) -> MailchimpClient:
        """A client for a credential that is not stored yet (it is checked before it is saved)."""
        return self._client(self._credentials(secret))

    def client(self, destination: Destination) -> MailchimpClient:
        now = time.monotonic()
        with self._lock:
            cached = self._cache.get(destination.secret_name)
            if cached and now - cached[0] < self._ttl:
                return cached[1]
        # a secret left by a change that lost to one that disconnected the destination does not count
        raw = None if destination.credential_kind == "none" else self._secrets.get(destination.secret_name)
        if raw is None:
            raise NotConnected(f"destination {destination.id} is not connected to Mailchimp: connect it with OAuth or an API key")
        client = self._client(self._credentials(json.loads(raw)))
        with self._lock:
            old = self._cache.get(destination.secret_name)
            self._cache[destination.secret_name] = (now, client)
        if old:
            old[1].close()
        return client

    def _credentials(self, secret: dict[str, Any]) -> Credentials:
        if secret["kind"] == "api_key":
            return Credentials.from_api_key(secret["apiKey"], base_url=self._base_url)
        # an `apiEndpoint` kept by older versions is ignored: the host comes from the checked data centre only
        return Credentials.from_oauth_token(secret["accessToken"], {"dc": secret.get("dc")}, base_url=self._base_url)

    def call(self, destination: Destination, action: Callable[[MailchimpClient], Any]) -> Any:
        """Run `action` with the destination's client; after a 401, re-read the credential once and try again."""
        try:
            return action(self.client(destination))
        except MailchimpAuthError:
            self.forget(destination)
            return action(self.client(destination))

    def _client(self, credentials: Credentials) -> MailchimpClient:
        gate = self._gate_factory(credentials.account, self._max_connections) if self._gate_factory else None
        # The read timeout stays under the 60 s lease of a connection slot: a request on a new lease ends before it
        # runs out even if no renewal gets through. One on a warm slot starts with 20 s left at least and relies on the
        # renewals (every 20 s, tried again every 2 s): should storage refuse them that long, another instance may take
        # the slot meanwhile and Mailchimp answer 429, which is retried (shared/adapters/slots.py).
        return MailchimpClient(credentials, max_connections=self._max_connections, gate=gate, retry=self._retry,
                               timeout=(5.0, 55.0))
