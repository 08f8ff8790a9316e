"""OAuth 2 on the local Mailchimp, the way login.mailchimp.com does it."""
from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import requests

from mailchimp_local.demo import DEMO_OAUTH_CLIENT_ID, DEMO_OAUTH_CLIENT_SECRET
from tests.integration.test_local_mailchimp import Api, problem
from tests.services import LocalMailchimp

REDIRECT = "https://connector.example/callback"


def authorize(mailchimp: LocalMailchimp, **extra: str) -> dict[str, list[str]]:
    """Follows nothing: returns the query the 302 sends back to the redirect URI."""
    response = requests.get(f"{mailchimp.url}/oauth2/authorize", allow_redirects=False, timeout=10, params={
        "response_type": "code", "client_id": DEMO_OAUTH_CLIENT_ID, "redirect_uri": REDIRECT, "state": "s-1",
        **extra})
    assert response.status_code == 302, response.text
    location = urlsplit(response.headers["Location"])
    assert f"{location.scheme}://{location.netloc}{location.path}" == REDIRECT
    return parse_qs(location.query)


def exchange(mailchimp: LocalMailchimp, code: str, **overrides: str) -> requests.Response:
    form = {"grant_type": "authorization_code", "client_id": DEMO_OAUTH_CLIENT_ID,
            "client_secret": DEMO_OAUTH_CLIENT_SECRET, "redirect_uri": REDIRECT, "code": code, **overrides}
    return requests.post(f"{mailchimp.url}/oauth2/token", data=form, timeout=10)


def metadata(mailchimp: LocalMailchimp, token: str) -> dict:
    response = requests.get(f"{mailchimp.url}/oauth2/metadata", headers={"Authorization": f"OAuth {token}"},
                            timeout=10)
    assert response.status_code == 200
    return response.json()


def test_authorization_code_flow_gives_a_token_that_works_on_the_api(mailchimp: LocalMailchimp) -> None:
    answer = authorize(mailchimp)
    assert answer["state"] == ["s-1"]
    granted = exchange(mailchimp, answer["code"][0])
    assert granted.status_code == 200
    token = granted.json()
    assert (token["expires_in"], token["scope"]) == (0, None) and token["access_token"]
    meta = metadata(mailchimp, token["access_token"])
    assert meta["api_endpoint"] == mailchimp.url and meta["dc"] == "us6"
    assert meta["accountname"] == "Demo account" and {"email", "login_id"} <= meta["login"].keys()
    via_token = requests.get(meta["api_endpoint"] + "/3.0/ping", timeout=10,
                             headers={"Authorization": f"Bearer {token['access_token']}"})
    assert via_token.json() == {"health_status": "Everything's Chimpy!"}


def test_codes_are_single_use_and_bound_to_client_and_redirect(mailchimp: LocalMailchimp) -> None:
    code = authorize(mailchimp)["code"][0]
    assert exchange(mailchimp, code).status_code == 200
    replayed = exchange(mailchimp, code)
    assert (replayed.status_code, replayed.json()["error"]) == (400, "invalid_grant")
    other_redirect = exchange(mailchimp, authorize(mailchimp)["code"][0], redirect_uri="https://evil.example/cb")
    assert (other_redirect.status_code, other_redirect.json()["error"]) == (400, "invalid_grant")
    wrong_secret = exchange(mailchimp, authorize(mailchimp)["code"][0], client_secret="guess")
    assert (wrong_secret.status_code, wrong_secret.json()["error"]) == (401, "invalid_client")
    assert "guess" not in wrong_secret.text


def test_a_denial_comes_back_as_access_denied(mailchimp: LocalMailchimp) -> None:
    assert authorize(mailchimp, deny="true") == {"error": ["access_denied"], "state": ["s-1"]}
    mailchimp.admin("POST", "oauth", json={"deny": True})
    assert authorize(mailchimp)["error"] == ["access_denied"]
    mailchimp.admin("POST", "oauth", json={"deny": False})
    assert "code" in authorize(mailchimp)
    unknown_client = requests.get(f"{mailchimp.url}/oauth2/authorize", allow_redirects=False, timeout=10,
                                  params={"response_type": "code", "client_id": "nobody", "redirect_uri": REDIRECT})
    assert unknown_client.status_code == 400  # never redirected to an unverified client


def test_bad_and_revoked_tokens(mailchimp: LocalMailchimp) -> None:
    assert metadata(mailchimp, "not-a-token") == {"error": "invalid_token"}
    token = exchange(mailchimp, authorize(mailchimp)["code"][0]).json()["access_token"]
    api = Api(mailchimp)
    api.session.auth = None
    api.session.headers["Authorization"] = f"Bearer {token}"
    assert api.ok("GET", "/ping")
    mailchimp.admin("POST", "revoke", json={"token": token})
    problem(api.call("GET", "/ping"), 401, "API Key Invalid")
    assert metadata(mailchimp, token) == {"error": "invalid_token"}
