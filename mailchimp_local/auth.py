"""Which account a request speaks for: API keys and OAuth tokens, however the client presents them."""
from __future__ import annotations

import base64
import binascii

from .accounts import Account
from .world import World


def account_for(world: World, authorization: str | None) -> Account | None:
    """None for missing, unknown or revoked credentials. A key's -dcN suffix is not checked locally."""
    return world.credentials.get(presented_secret(authorization) or "")


def presented_secret(header: str | None) -> str | None:
    """HTTP Basic (any user name, the key as password), Bearer, or the `OAuth` scheme of Mailchimp's login."""
    scheme, _, value = (header or "").strip().partition(" ")
    if scheme.lower() in ("bearer", "oauth"):
        return value.strip() or None
    if scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return None
        return decoded.partition(":")[2] or None
    return None
