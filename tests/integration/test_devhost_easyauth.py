"""App Service Authentication in front of a real devhost process (devhost/easyauth.py), seen from the sample app's
`whoami` route: what reaches the app, what the platform answers itself, and the sign-in pages."""
from __future__ import annotations

import base64
import json
import os
import re
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from devhost.easyauth import COOKIE, object_id
from devhost.launcher import HostFailed, RunningHost
from shared.auth import ADMIN, OPERATOR, Principal, encode_principal, principal_from_headers
from tests.devhost_app.harness import SampleApp
from tests.services import Azurite

ADMIN_TOKEN = "admin-token-0123456789abcdef"
APP_TOKEN = "machine-token-0123456789abcdef"
MALLORY = Principal(id="11111111-1111-1111-1111-111111111111", name="mallory", email="mallory@evil.example",
                    roles=frozenset({ADMIN}))


def write_tokens(folder: Path, mode: int = 0o600) -> Path:
    path = folder / "tokens.json"
    path.write_text(json.dumps({
        ADMIN_TOKEN: {"id": "aaaaaaaa-0000-0000-0000-000000000001", "name": "Ada Admin", "email": "ada@contoso.example",
                      "roles": [ADMIN]},
        APP_TOKEN: {"id": "bbbbbbbb-0000-0000-0000-000000000002", "name": "nightly-sync", "roles": [OPERATOR],
                    "kind": "app"},
    }))
    path.chmod(mode)
    return path


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory, azurite: Azurite) -> SampleApp:
    return SampleApp.create(tmp_path_factory.mktemp("easyauth"), azurite)


@pytest.fixture(scope="module")
def host(sample: SampleApp) -> Iterator[RunningHost]:
    running = sample.start("--auth-tokens", str(write_tokens(sample.root)))
    yield running
    running.stop()


def whoami(host: RunningHost, session: requests.Session | None = None, **kwargs) -> requests.Response:
    return (session or requests).get(f"{host.url}/api/whoami", timeout=15, **kwargs)


def verified(seen: dict) -> Principal | None:
    return principal_from_headers(seen["headers"], seen["WEBSITE_AUTH_ENABLED"] == "True")


def sign_in(host: RunningHost, email: str, roles: list[str], name: str = "", target: str = "/") -> requests.Session:
    session = requests.Session()
    answer = session.post(f"{host.url}/.auth/login/aad", allow_redirects=False, timeout=15,
                          data={"name": name, "email": email, "role": roles, "post_login_redirect_uri": target})
    assert answer.status_code == 303, answer.text
    return session


def test_the_app_runs_with_website_auth_enabled_and_anonymous_requests_pass_without_identity(host: RunningHost):
    seen = whoami(host).json()
    assert seen["WEBSITE_AUTH_ENABLED"] == "True"
    assert seen["headers"] == {} and verified(seen) is None


@pytest.mark.parametrize("case", [str.lower, str.upper, str.title])
def test_client_sent_principal_headers_in_any_case_never_reach_the_app(host: RunningHost, case):
    forged = {case("X-MS-CLIENT-PRINCIPAL"): encode_principal(MALLORY), case("X-MS-CLIENT-PRINCIPAL-NAME"): "mallory",
              case("X-MS-CLIENT-PRINCIPAL-ID"): MALLORY.id, case("X-MS-CLIENT-PRINCIPAL-IDP"): "aad",
              case("X-MS-TOKEN-AAD-ACCESS-TOKEN"): "forged"}
    seen = whoami(host, headers=forged).json()
    assert seen["headers"] == {} and verified(seen) is None
    # signed in, the forged headers are replaced by the platform's own, not added to them
    seen = whoami(host, headers={**forged, "Authorization": f"Bearer {ADMIN_TOKEN}"}).json()
    assert verified(seen).email == "ada@contoso.example"
    assert seen["headers"]["x-ms-client-principal-name"] == "ada@contoso.example"
    assert "mallory" not in json.dumps(seen["headers"])


def test_a_bearer_token_from_the_file_becomes_the_principal_headers(host: RunningHost):
    seen = whoami(host, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}).json()
    who = verified(seen)
    assert who == Principal(id="aaaaaaaa-0000-0000-0000-000000000001", name="Ada Admin", email="ada@contoso.example",
                            roles=frozenset({ADMIN}))
    assert seen["headers"]["x-ms-client-principal-id"] == who.id
    assert seen["headers"]["x-ms-client-principal-idp"] == "aad"
    machine = verified(whoami(host, headers={"Authorization": f"bearer {APP_TOKEN}"}).json())
    assert machine.kind == "app" and machine.roles == {OPERATOR} and machine.label == "nightly-sync"


@pytest.mark.parametrize("token", ["not-a-token", ADMIN_TOKEN[:-1], ADMIN_TOKEN + "x", ""])
def test_an_unknown_bearer_token_is_answered_401_by_the_platform(host: RunningHost, token: str):
    answer = whoami(host, headers={"Authorization": f"Bearer {token}"})
    assert answer.status_code == 401
    assert "whoami" not in answer.text and answer.headers["WWW-Authenticate"].startswith("Bearer")


def test_sign_in_form_is_labelled_and_carries_a_same_origin_redirect_only(host: RunningHost):
    page = requests.get(f"{host.url}/.auth/login/aad", params={"post_login_redirect_uri": "/admin/?x=1"}, timeout=15)
    assert page.status_code == 200 and page.headers["Content-Type"].startswith("text/html")
    assert page.headers["Cache-Control"] == "no-store" and "form-action 'self'" in page.headers["Content-Security-Policy"]
    text = page.text
    assert '<html lang="en">' in text and "<title>" in text
    for field in ("name", "email", "role-0", "role-1"):
        assert re.search(rf'<label for="{field}">', text) and re.search(rf'id="{field}"', text), field
    assert "<legend>App roles</legend>" in text and ADMIN in text and OPERATOR in text
    assert 'name="post_login_redirect_uri" value="/admin/?x=1"' in text
    for foreign in ("https://evil.example/", "//evil.example/", "/\\evil.example", "javascript:alert(1)"):
        page = requests.get(f"{host.url}/.auth/login/aad", params={"post_login_redirect_uri": foreign}, timeout=15)
        assert 'name="post_login_redirect_uri" value="/"' in page.text, foreign


def test_signing_in_sets_a_signed_http_only_session_and_me_and_logout_answer_like_app_service(host: RunningHost):
    session = requests.Session()
    answer = session.post(f"{host.url}/.auth/login/aad", allow_redirects=False, timeout=15,
                          data={"name": "Olga", "email": "Olga@Contoso.example", "role": [OPERATOR, "Exports.God"],
                                "post_login_redirect_uri": "/admin/"})
    assert answer.status_code == 303 and answer.headers["Location"] == "/admin/"
    cookie = answer.headers["Set-Cookie"]
    assert cookie.startswith(f"{COOKIE}=") and "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Path=/" in cookie
    who = verified(whoami(host, session).json())
    assert who == Principal(id=object_id("olga@contoso.example"), name="Olga", email="Olga@Contoso.example",
                            roles=frozenset({OPERATOR}))  # an unknown role is not granted
    assert object_id("olga@contoso.example") == object_id(" OLGA@contoso.example")
    me = session.get(f"{host.url}/.auth/me", timeout=15)
    assert me.status_code == 200
    [entry] = me.json()
    assert entry["provider_name"] == "aad" and entry["identity_provider"] == "aad"
    assert entry["user_id"] == "Olga@Contoso.example"
    assert {"typ": "roles", "val": OPERATOR} in entry["user_claims"]
    out = session.get(f"{host.url}/.auth/logout", params={"post_logout_redirect_uri": "/bye"}, allow_redirects=False,
                      timeout=15)
    assert out.status_code == 302 and out.headers["Location"] == "/bye"
    assert "Max-Age=0" in out.headers["Set-Cookie"]
    assert session.get(f"{host.url}/.auth/me", timeout=15).status_code == 401
    assert verified(whoami(host, session).json()) is None


def test_a_tampered_or_foreign_session_cookie_is_nobody(host: RunningHost, sample: SampleApp):
    session = sign_in(host, "ada@contoso.example", [OPERATOR])
    value = session.cookies[COOKIE]
    payload, signature = value.split(".")
    doc = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    raised = base64.urlsafe_b64encode(json.dumps({**doc, "roles": [ADMIN]}).encode()).decode().rstrip("=")
    for forged in (f"{raised}.{signature}", f"{payload}.{'0' * 64}", payload, "", "a.b.c"):
        assert verified(whoami(host, cookies={COOKIE: forged}).json()) is None, forged
    other = sample.start()  # another host: its own secret
    try:
        assert verified(whoami(other, cookies={COOKIE: value}).json()) is None
    finally:
        other.stop()


@pytest.mark.parametrize("target", ["https://evil.example/", "//evil.example/x", "/\\evil.example", "evil", "/ok\r\nX: y"])
def test_after_sign_in_and_sign_out_only_same_origin_paths_are_followed(host: RunningHost, target: str):
    answer = requests.post(f"{host.url}/.auth/login/aad", allow_redirects=False, timeout=15,
                           data={"email": "ada@contoso.example", "post_login_redirect_uri": target})
    assert answer.status_code == 303 and answer.headers["Location"] == "/"
    out = requests.get(f"{host.url}/.auth/logout", params={"post_logout_redirect_uri": target},
                       allow_redirects=False, timeout=15)
    assert out.headers["Location"] == "/"


def test_a_sign_in_without_an_address_or_from_another_site_sets_no_cookie(host: RunningHost):
    bad = requests.post(f"{host.url}/.auth/login/aad", data={"email": "not an address", "name": "<b>x</b>"},
                        allow_redirects=False, timeout=15)
    assert bad.status_code == 400 and "Set-Cookie" not in bad.headers
    assert 'role="alert"' in bad.text and 'aria-invalid="true"' in bad.text and "<b>x</b>" not in bad.text
    foreign = requests.post(f"{host.url}/.auth/login/aad", data={"email": "ada@contoso.example", "role": ADMIN},
                            headers={"Sec-Fetch-Site": "cross-site"}, allow_redirects=False, timeout=15)
    assert foreign.status_code == 403 and "Set-Cookie" not in foreign.headers


def test_without_authentication_headers_pass_as_sent_and_the_setting_is_unset(sample: SampleApp):
    """An app deployed without App Service Authentication: nothing filters or vouches, which is why the app believes
    the headers only when WEBSITE_AUTH_ENABLED says the platform does (shared/auth.py)."""
    sample.env["WEBSITE_AUTH_ENABLED"] = "True"  # a setting saying so is not the platform saying so
    try:
        running = sample.start("--no-auth")
    finally:
        del sample.env["WEBSITE_AUTH_ENABLED"]
    try:
        forged = encode_principal(MALLORY)
        seen = whoami(running, headers={"X-MS-CLIENT-PRINCIPAL": forged}).json()
        assert seen["WEBSITE_AUTH_ENABLED"] is None
        assert seen["headers"]["x-ms-client-principal"] == forged and verified(seen) is None
        assert requests.get(f"{running.url}/.auth/me", timeout=15).status_code == 404
    finally:
        running.stop()


@pytest.mark.parametrize("mode", [0o640, 0o604])
def test_a_tokens_file_others_may_read_stops_the_host(tmp_path: Path, azurite: Azurite, mode: int):
    sample = SampleApp.create(tmp_path, azurite)
    tokens = write_tokens(tmp_path, mode)
    with pytest.raises(HostFailed, match="chmod 600"):
        sample.start("--auth-tokens", str(tokens))
    assert stat.S_IMODE(os.stat(tokens).st_mode) == mode
