"""OAuth 2 as login.mailchimp.com does it: authorize (auto-approved), token, metadata.

Authorizations grant a token for the demo account. Tokens never expire (expires_in 0) and die only when revoked
(POST /__admin/revoke), which is when a connector must ask its user to reconnect.
"""
from __future__ import annotations

import secrets
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

from .auth import account_for
from .demo import DATA_CENTER, DEMO_ACCOUNT_ID, DEMO_OAUTH_CLIENT_ID, DEMO_OAUTH_CLIENT_SECRET
from .web import Request, Response, Router, json_response
from .world import World


def authorize(world: World, request: Request) -> Response:
    """302 back to redirect_uri with a single-use code, or with error=access_denied when denying."""
    client_id, redirect_uri, state = (request.param(k) for k in ("client_id", "redirect_uri", "state"))
    if client_id != DEMO_OAUTH_CLIENT_ID:
        return _oauth_error(400, "invalid_client", f"unknown client_id: use {DEMO_OAUTH_CLIENT_ID}")
    if not redirect_uri or urlsplit(redirect_uri).scheme not in ("http", "https"):
        return _oauth_error(400, "invalid_request", "redirect_uri must be an absolute http(s) URL")
    if request.param("response_type") != "code":
        answer = {"error": "unsupported_response_type"}
    elif world.oauth_deny or (request.param("deny") or "").lower() in ("1", "true"):
        answer = {"error": "access_denied"}
    else:
        code = secrets.token_urlsafe(24)
        world.oauth_codes[code] = (client_id, redirect_uri, world.accounts[DEMO_ACCOUNT_ID])
        answer = {"code": code}
    if state is not None:
        answer["state"] = state
    separator = "&" if urlsplit(redirect_uri).query else "?"
    return Response(302, headers={"Location": f"{redirect_uri}{separator}{urlencode(answer)}"})


def token(world: World, request: Request) -> Response:
    form = {k: v[0] for k, v in parse_qs(request.body.decode("utf-8", "replace")).items()}
    if form.get("grant_type") != "authorization_code":
        return _oauth_error(400, "unsupported_grant_type", "grant_type must be authorization_code")
    if form.get("client_id") != DEMO_OAUTH_CLIENT_ID or form.get("client_secret") != DEMO_OAUTH_CLIENT_SECRET:
        return _oauth_error(401, "invalid_client", "client_id or client_secret is wrong")
    grant = world.oauth_codes.pop(form.get("code", ""), None)  # single use, even when the rest is wrong
    if grant is None or grant[0] != form["client_id"] or grant[1] != form.get("redirect_uri"):
        return _oauth_error(400, "invalid_grant", "the code is unknown, used, or was issued for another "
                                                  "redirect_uri: start the authorization again")
    return json_response({"access_token": world.issue_token(grant[2]), "expires_in": 0, "scope": None})


def metadata(world: World, request: Request) -> Response:
    """api_endpoint is this server's own root, so a client finds the API where a real one finds its data centre."""
    account = account_for(world, request.headers.get("Authorization"))
    if account is None:
        return json_response({"error": "invalid_token"})
    root = f"http://{request.headers.get('Host', 'localhost')}"
    login: dict[str, Any] = {"email": account.email, "avatar": None, "login_id": int(account.login_id),
                             "login_name": account.username, "login_email": account.email}
    return json_response({"dc": DATA_CENTER, "role": "owner", "accountname": account.name,
                          "user_id": int(account.login_id), "login": login, "login_url": f"{root}/oauth2",
                          "api_endpoint": root})


def _oauth_error(status: int, error: str, description: str) -> Response:
    return json_response({"error": error, "error_description": description}, status)


ROUTER = Router([("GET", "/oauth2/authorize", authorize), ("POST", "/oauth2/token", token),
                 ("GET", "/oauth2/metadata", metadata)])
