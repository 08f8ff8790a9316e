"""App Service Authentication ("Easy Auth") with Microsoft Entra ID, emulated where the app can tell the difference.

In Azure, Easy Auth stands in front of the Functions host. For every request it removes client-sent
`X-MS-CLIENT-PRINCIPAL*` headers, then, when the caller is signed in (session cookie `AppServiceAuthSession`) or
sends a valid `Authorization: Bearer` token, adds its own: `X-MS-CLIENT-PRINCIPAL` (base64 JSON of the claims),
`-NAME`, `-ID` and `-IDP`. An invalid bearer token is answered 401 before the app sees the request; a request
with no identity goes through unauthenticated (the "allow anonymous" action: the app decides). It serves
`/.auth/login/aad`, `/.auth/me` and `/.auth/logout`, and the platform sets `WEBSITE_AUTH_ENABLED=True` for the app.

Locally there is no Entra ID: `/.auth/login/aad` shows a form where you say who you are and which app roles you
hold (it is a development host: anyone who can reach it can be anyone), and bearer tokens are looked up in an
owner-only JSON file (`--auth-tokens`). Sessions are HMAC-signed with a secret made at start, so they end when the
host stops. See devhost/README.md, "Authentication".
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import html
import json
import re
import secrets
import stat
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping
from urllib.parse import parse_qsl, urlsplit

from devhost.errors import ConfigError
from shared.auth import ADMIN, OPERATOR, ROLES, Principal, encode_principal

COOKIE = "AppServiceAuthSession"
SESSION_SECONDS = 8 * 3600
PRINCIPAL_PREFIX = "x-ms-client-principal"  # and -name, -id, -idp: every header starting so is the platform's
TOKEN_PREFIX = "x-ms-token-"  # the token store's headers, also the platform's own
LOGIN = "/.auth/login/aad"
ME = "/.auth/me"
LOGOUT = "/.auth/logout"
IDP = "aad"
KINDS = ("user", "app")
_EMAIL = re.compile(r"[^@\s]{1,64}@[^@\s]{1,251}\.[^@\s.]{1,63}")
_NO_STORE = ("Cache-Control", "no-store")
# The sign-in page runs no script and loads nothing; it may post only to this host.
_PAGE_POLICY = ("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
                                           "frame-ancestors 'none'")


def object_id(email: str) -> str:
    """A local user's Entra object ID: the same for the same address (any letter case), every time."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, "mailto:" + email.strip().lower()))


@dataclass(frozen=True)
class Reply:
    """What Easy Auth answers itself, instead of the app."""

    status: int
    headers: list[tuple[str, str]]
    body: bytes = b""


@dataclass(frozen=True)
class Passed:
    """The request goes on to the app with these headers (the platform's own, client-sent ones removed)."""

    headers: dict[str, str]
    principal: Principal | None


def strip_platform_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """`headers` without any a client could use to pose as the platform (names compared in any letter case)."""
    return {name: value for name, value in headers.items()
            if not name.lower().startswith((PRINCIPAL_PREFIX, TOKEN_PREFIX))}


def same_origin_path(value: str | None) -> str | None:
    """`value` when it is a path on this host (`/x?y`), else None: never another host (`//evil`, `/\\evil`,
    `https://evil`), never a control character (a header split)."""
    if not value or not value.startswith("/") or value.startswith(("//", "/\\")) or "\\" in value:
        return None
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in value) or len(value) > 2000:
        return None
    parts = urlsplit(value)
    return value if not parts.scheme and not parts.netloc else None


def load_tokens(path: Path) -> dict[str, Principal]:
    """The bearer tokens file: {"<token>": {"id", "name", "email", "roles": [...], "kind": "user"|"app"}}, owner-only."""
    try:
        mode = path.stat().st_mode
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"--auth-tokens: {path} does not exist") from None
    if stat.S_IMODE(mode) & 0o077:
        raise ConfigError(f"--auth-tokens: {path} is readable by other users (mode {stat.S_IMODE(mode):o}): it holds "
                          f"access tokens; chmod 600 {path}")
    try:
        document = json.loads(text)
    except json.JSONDecodeError as error:
        raise ConfigError(f"--auth-tokens: {path} is not valid JSON (line {error.lineno}: {error.msg})") from None
    if not isinstance(document, dict):
        raise ConfigError(f'--auth-tokens: {path} must hold an object {{"<token>": {{"email": ..., "roles": [...]}}}}')
    tokens = {}
    for number, (token, entry) in enumerate(document.items(), 1):
        where = f"--auth-tokens: {path}, token {number}"
        if not isinstance(token, str) or len(token) < 16:
            raise ConfigError(f"{where}: a token must be a string of at least 16 characters")
        if not isinstance(entry, dict) or set(entry) - {"id", "name", "email", "roles", "kind"}:
            raise ConfigError(f"{where}: give an object with id, name, email, roles and kind only")
        texts = {key: entry.get(key) for key in ("id", "name", "email", "kind")}
        roles = entry.get("roles", [])
        if any(value is not None and not isinstance(value, str) for value in texts.values()) or \
                not isinstance(roles, list) or not all(isinstance(role, str) for role in roles):
            raise ConfigError(f"{where}: id, name, email and kind are strings, roles a list of strings")
        kind = texts["kind"] or "user"
        if kind not in KINDS:
            raise ConfigError(f"{where}: kind is user or app, not {kind!r}")
        email = texts["email"] or None
        if not texts["id"] and not email:
            raise ConfigError(f"{where}: give an id (object ID), an email, or both")
        oid = texts["id"] or object_id(email)
        tokens[token] = Principal(id=oid, name=texts["name"] or email or oid, email=email, roles=frozenset(roles),
                                  kind=kind)
    return tokens


class EasyAuth:
    """One host's authentication: its session secret, its bearer tokens."""

    def __init__(self, tokens: dict[str, Principal] | None = None, secret: bytes | None = None) -> None:
        self._tokens = dict(tokens or {})
        self._secret = secret or secrets.token_bytes(32)

    # --- a request on its way to the app -------------------------------------------------------------------------

    def process(self, method: str, path: str, query: Mapping[str, str], headers: Mapping[str, str],
                body: bytes) -> Reply | Passed:
        """`headers` lower-case keyed. The platform's answer (its own routes, an invalid bearer token), or the
        headers the app gets."""
        if path == "/.auth" or path.startswith("/.auth/"):
            return self._own_route(method, path, query, headers, body)
        clean = strip_platform_headers(headers)
        bearer = _bearer(headers.get("authorization", ""))
        if bearer is not None:
            who = self._token(bearer)
            if who is None:
                return Reply(401, [("WWW-Authenticate", 'Bearer error="invalid_token"'), _NO_STORE,
                                   ("Content-Type", "text/plain; charset=utf-8")],
                             b"The access token is not valid (devhost's App Service Authentication).\n")
        else:
            who = self._session(headers.get("cookie", ""))
        if who is not None:
            clean.update(principal_headers(who))
        return Passed(clean, who)

    def _token(self, given: str) -> Principal | None:
        found = None
        for token, who in self._tokens.items():  # every token compared, in constant time each
            if hmac.compare_digest(token.encode(), given.encode()):
                found = who
        return found

    # --- the session cookie ---------------------------------------------------------------------------------------

    def session_cookie(self, who: Principal, now: float | None = None) -> str:
        doc = {"id": who.id, "name": who.name, "email": who.email, "roles": sorted(who.roles), "kind": who.kind,
               "exp": int((now or time.time()) + SESSION_SECONDS)}
        payload = base64.urlsafe_b64encode(json.dumps(doc, separators=(",", ":")).encode()).decode().rstrip("=")
        return f"{payload}.{self._sign(payload)}"

    def _sign(self, payload: str) -> str:
        return hmac.new(self._secret, payload.encode(), hashlib.sha256).hexdigest()

    def _session(self, cookie_header: str) -> Principal | None:
        value = _cookie(cookie_header, COOKIE)
        if not value or value.count(".") != 1 or len(value) > 8192:
            return None
        payload, signature = value.split(".")
        if not hmac.compare_digest(signature.encode(), self._sign(payload).encode()):
            return None
        try:
            doc = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
            if doc["exp"] < time.time():
                return None
            return Principal(id=doc["id"], name=doc["name"], email=doc["email"], roles=frozenset(doc["roles"]),
                             kind=doc["kind"])
        except (ValueError, KeyError, TypeError):  # signed by this host, so only a change of format gets here
            return None

    # --- /.auth/* --------------------------------------------------------------------------------------------------

    def _own_route(self, method: str, path: str, query: Mapping[str, str], headers: Mapping[str, str],
                   body: bytes) -> Reply:
        if path == LOGIN and method in ("GET", "HEAD"):
            return _page(200, sign_in_form(same_origin_path(query.get("post_login_redirect_uri")) or "/"))
        if path == LOGIN and method == "POST":
            return self._sign_in(headers, body)
        if path == ME and method in ("GET", "HEAD"):
            bearer = _bearer(headers.get("authorization", ""))
            who = self._token(bearer) if bearer is not None else self._session(headers.get("cookie", ""))
            if who is None:
                return Reply(401, [_NO_STORE, ("Content-Type", "application/json")], b"[]")
            return Reply(200, [_NO_STORE, ("Content-Type", "application/json")], json.dumps([me(who)]).encode())
        if path == LOGOUT:
            target = same_origin_path(query.get("post_logout_redirect_uri")) or "/"
            return Reply(302, [("Location", target), _NO_STORE,
                               ("Set-Cookie", f"{COOKIE}=; Max-Age=0; Path=/; HttpOnly; SameSite=Lax")])
        return Reply(404, [_NO_STORE])

    def _sign_in(self, headers: Mapping[str, str], body: bytes) -> Reply:
        site = headers.get("sec-fetch-site", "").lower()
        if site and site not in ("same-origin", "none"):  # another site signing this browser in as someone
            return Reply(403, [_NO_STORE, ("Content-Type", "text/plain; charset=utf-8")],
                         b"A sign-in posted from another site is refused.\n")
        try:
            fields = parse_qsl(body.decode("utf-8"), keep_blank_values=True, max_num_fields=20)
        except (UnicodeDecodeError, ValueError):
            fields = []
        form = {name: value.strip() for name, value in fields if name != "role"}
        roles = frozenset(value for name, value in fields if name == "role" and value in ROLES)
        email, name = form.get("email", ""), form.get("name", "")
        target = same_origin_path(form.get("post_login_redirect_uri")) or "/"
        problem = None
        if not _EMAIL.fullmatch(email) or len(email) > 254:
            problem = "Enter an email address, such as alex@contoso.example."
        elif len(name) > 200:
            problem = "Enter a name of at most 200 characters."
        if problem:
            return _page(400, sign_in_form(target, name=name, email=email, roles=roles, problem=problem))
        who = Principal(id=object_id(email), name=name or email, email=email, roles=roles)
        cookie = f"{COOKIE}={self.session_cookie(who)}; Max-Age={SESSION_SECONDS}; Path=/; HttpOnly; SameSite=Lax"
        return Reply(303, [("Location", target), ("Set-Cookie", cookie), _NO_STORE])


def principal_headers(who: Principal) -> dict[str, str]:
    """The headers App Service adds for a signed-in caller (lower-case, as the host passes every header)."""
    return {"x-ms-client-principal": encode_principal(who, IDP),
            "x-ms-client-principal-name": who.email or who.name,
            "x-ms-client-principal-id": who.id,
            "x-ms-client-principal-idp": IDP}


def me(who: Principal) -> dict[str, Any]:
    """One entry of `/.auth/me`, in App Service's shape (no tokens: this emulator issues none)."""
    claims = json.loads(base64.b64decode(encode_principal(who, IDP)))["claims"]
    return {"provider_name": IDP, "identity_provider": IDP, "user_id": who.email or who.id, "user_claims": claims}


def _bearer(value: str) -> str | None:
    scheme, _, token = value.strip().partition(" ")
    return token.strip() if scheme.lower() == "bearer" else None


def _cookie(header: str, name: str) -> str | None:
    for part in header.split(";"):
        key, _, value = part.strip().partition("=")
        if key == name:
            return value.strip().strip('"')
    return None


def _page(status: int, text: str) -> Reply:
    return Reply(status, [("Content-Type", "text/html; charset=utf-8"), _NO_STORE, _PAGE_POLICY,
                          ("X-Frame-Options", "DENY")], text.encode("utf-8"))


def sign_in_form(target: str, *, name: str = "", email: str = "", roles: frozenset[str] = frozenset(),
                 problem: str | None = None) -> str:
    """A plain, accessible form: every field labelled, roles grouped in a fieldset, an error announced and tied to
    its field."""
    e = html.escape
    invalid = ' aria-invalid="true" aria-describedby="problem"' if problem else ""
    alert = f'<p id="problem" role="alert">{e(problem)}</p>\n' if problem else ""
    boxes = "".join(
        f'<div><input type="checkbox" id="role-{i}" name="role" value="{e(role)}" aria-describedby="role-{i}-hint"{" checked" if role in roles else ""}>'
        f' <label for="role-{i}">{e(role)}</label> <span id="role-{i}-hint">({e(hint)})</span></div>\n'
        for i, (role, hint) in enumerate(((ADMIN, "destinations, consent, credentials"),
                                          (OPERATOR, "start and cancel exports, read runs"))))
    return f"""<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>Sign in (local development)</title>
<style>body{{font:16px/1.5 system-ui,sans-serif;max-width:32rem;margin:2rem auto;padding:0 1rem}}
label,input{{font-size:1rem}} input[type=text],input[type=email]{{display:block;width:100%;padding:.4rem}}
fieldset{{margin:1rem 0}} [role=alert]{{color:#a4000f;font-weight:600}} button{{font-size:1rem;padding:.5rem 1rem}}</style>
</head>
<body>
<main>
<h1>Sign in</h1>
<p>Local development stands in for Microsoft Entra ID: say who you are and which app roles you hold.</p>
{alert}<form method="post" action="{LOGIN}">
<input type="hidden" name="post_login_redirect_uri" value="{e(target)}">
<p><label for="name">Name</label><input type="text" id="name" name="name" autocomplete="name" value="{e(name)}"></p>
<p><label for="email">Email (required)</label><input type="email" id="email" name="email" required autocomplete="email" value="{e(email)}"{invalid}></p>
<fieldset><legend>App roles</legend>
{boxes}</fieldset>
<button type="submit">Sign in</button>
</form>
</main>
</body>
</html>
"""

