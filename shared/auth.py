"""Who is calling, and what they may do: the identity App Service Authentication ("Easy Auth") vouches for.

In Azure, App Service Authentication with Microsoft Entra ID stands in front of the app. It signs people in (a
session cookie) and validates bearer tokens of machines (service principals, managed identities); for either it
removes any client-sent `X-MS-CLIENT-PRINCIPAL*` headers and adds its own, `X-MS-CLIENT-PRINCIPAL` being base64 JSON
of the caller's claims (https://learn.microsoft.com/azure/app-service/configure-authentication-user-identities).
Locally the devhost does the same (devhost/easyauth.py).

The app trusts those headers only when App Service says authentication is on (`WEBSITE_AUTH_ENABLED=True`, set by
the platform, and by the devhost for the app it runs); otherwise nobody is signed in and every route answers 401,
so an app deployed without authentication fails closed instead of believing whatever headers a caller sends.

Roles are app roles of the app registration, carried in the `roles` claim:
- Exports.Admin: destinations, consent, credentials, delete; everything an operator may do, on every destination.
- Exports.Operator: start and cancel exports, read runs and per-row reports, of destinations they are an export
  user of (`Destination.export_users`).
"""
from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from typing import Any, Mapping

ADMIN = "Exports.Admin"
OPERATOR = "Exports.Operator"
ROLES = (ADMIN, OPERATOR)

PRINCIPAL_HEADER = "x-ms-client-principal"
MAX_PRINCIPAL_BYTES = 16 * 1024  # App Service's header is a few KB; anything larger is not one of its headers

_OBJECT_ID = ("http://schemas.microsoft.com/identity/claims/objectidentifier", "oid")
_NAME = ("name", "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/name")
_EMAIL = ("preferred_username", "email", "emails", "upn",
          "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/emailaddress",
          "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/upn")
_APP_ID = ("azp", "appid")


@dataclass(frozen=True)
class Principal:
    """A caller App Service Authentication has verified: a person (kind "user") or a machine (kind "app")."""

    id: str  # Entra object ID: stable, unlike names and addresses
    name: str
    email: str | None
    roles: frozenset[str]
    kind: str = "user"

    @property
    def is_admin(self) -> bool:
        return ADMIN in self.roles

    @property
    def is_operator(self) -> bool:
        return OPERATOR in self.roles or self.is_admin

    @property
    def label(self) -> str:
        """How audit records name the caller: the sign-in name, else the object ID (machines have no address)."""
        return self.email or self.name or self.id

    def public(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "email": self.email, "kind": self.kind,
                "roles": sorted(r for r in self.roles if r in ROLES)}


def auth_enabled(value: str | None) -> bool:
    """App Service sets WEBSITE_AUTH_ENABLED to "True" when authentication is configured and enabled."""
    return (value or "").strip().lower() == "true"


def principal_from_headers(headers: Mapping[str, str], enabled: bool) -> Principal | None:
    """The verified caller, or None (not signed in, or authentication is off, or the header is not App Service's).

    `headers` must be case-insensitive or lower-case keyed (azure.functions.HttpRequest.headers is)."""
    if not enabled:
        return None
    raw = headers.get(PRINCIPAL_HEADER) or headers.get(PRINCIPAL_HEADER.upper())
    if not raw or len(raw) > MAX_PRINCIPAL_BYTES:
        return None
    try:
        doc = json.loads(base64.b64decode(raw, validate=False))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        return None
    if not isinstance(doc, dict) or not isinstance(doc.get("claims"), list):
        return None
    claims: dict[str, list[str]] = {}
    for claim in doc["claims"]:
        if isinstance(claim, dict) and isinstance(claim.get("typ"), str) and isinstance(claim.get("val"), str):
            claims.setdefault(claim["typ"], []).append(claim["val"])
    role_type = doc.get("role_typ") if isinstance(doc.get("role_typ"), str) else "roles"
    name_type = doc.get("name_typ") if isinstance(doc.get("name_typ"), str) else "name"

    def first(types: tuple[str, ...]) -> str | None:
        return next((claims[t][0] for t in types if claims.get(t)), None)

    object_id = first(_OBJECT_ID)
    if not object_id:
        return None
    roles = frozenset(claims.get(role_type, []) + claims.get("roles", []))
    email = first(_EMAIL)
    name = first((name_type, *_NAME)) or email or object_id
    app_only = claims.get("idtyp") == ["app"] or (email is None and "scp" not in claims and first(_APP_ID) is not None)
    kind = "app" if app_only else "user"
    return Principal(id=object_id, name=name, email=email, roles=roles, kind=kind)


def encode_principal(principal: Principal, identity_provider: str = "aad") -> str:
    """The X-MS-CLIENT-PRINCIPAL value App Service would send for `principal` (used by the local emulator)."""
    claims = [{"typ": "http://schemas.microsoft.com/identity/claims/objectidentifier", "val": principal.id},
              {"typ": "name", "val": principal.name}]
    if principal.email:
        claims.append({"typ": "preferred_username", "val": principal.email})
    if principal.kind == "app":
        claims.append({"typ": "idtyp", "val": "app"})
    claims += [{"typ": "roles", "val": role} for role in sorted(principal.roles)]
    doc = {"auth_typ": identity_provider, "name_typ": "name", "role_typ": "roles", "claims": claims}
    return base64.b64encode(json.dumps(doc).encode()).decode()
