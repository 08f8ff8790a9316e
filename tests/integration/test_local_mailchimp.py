"""The local Mailchimp process: credentials, audience reads, merge fields, stats, reset and the command line.

Also holds the `Api` helper and `api` fixture the other test_local_mailchimp_* modules import.
"""
from __future__ import annotations

import base64
from typing import Any

import pytest
import requests

from mailchimp_local.demo import DEMO_API_KEY, DEMO_AUDIENCE_ID
from tests.services import LocalMailchimp, start_local_mailchimp

LIST = DEMO_AUDIENCE_ID


class Api:
    """/3.0 of one local Mailchimp over a keep-alive session, authenticated with the demo key (HTTP Basic)."""

    def __init__(self, server: LocalMailchimp, key: str = DEMO_API_KEY) -> None:
        self.server = server
        self.session = requests.Session()
        self.session.auth = ("anystring", key)

    def call(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        return self.session.request(method, self.server.api_root + path, **{"timeout": 15, **kwargs})

    def ok(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self.call(method, path, **kwargs)
        assert response.status_code == 200, response.text
        return response.json()

    def batch(self, members: list[dict[str, Any]], update_existing: bool = False, **body: Any) -> dict[str, Any]:
        return self.ok("POST", f"/lists/{LIST}", json={"members": members, "update_existing": update_existing,
                                                       **body})

    def members(self, **params: Any) -> dict[str, Any]:
        return self.ok("GET", f"/lists/{LIST}/members", params=params)

    def put_state(self, email: str, status: str, **state: Any) -> str:
        """Puts a member in a state the API cannot reach (self-unsubscribed, cleaned, ...); returns its id."""
        return self.server.admin("POST", "members", json={"list_id": LIST, "email": email, "status": status,
                                                          **state}).json()["id"]


def problem(response: requests.Response, status: int, title: str) -> dict[str, Any]:
    """Asserts a Mailchimp problem+json answer and returns it."""
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"].startswith("application/problem+json")
    body = response.json()
    assert {"type", "title", "status", "detail", "instance"} <= body.keys()
    assert (body["status"], body["title"]) == (status, title)
    return body


@pytest.fixture
def api(mailchimp: LocalMailchimp) -> Api:
    return Api(mailchimp)


def test_ping_and_root_answer_with_basic_or_bearer_credentials(api: Api) -> None:
    assert api.ok("GET", "/ping") == {"health_status": "Everything's Chimpy!"}
    root = requests.get(api.server.api_root + "/", headers={"Authorization": f"Bearer {DEMO_API_KEY}"},
                        timeout=10).json()
    assert root["account_name"] == "Demo account"
    assert {"account_id", "email", "login_id", "role"} <= root.keys()


@pytest.mark.parametrize("authorization", [None, "Bearer not-a-token-zq9",
                                           "Basic " + base64.b64encode(b"user:hunter2zq9-us6").decode(), "Basic !!"])
def test_missing_or_unknown_credentials_get_401_without_echoing_them(mailchimp: LocalMailchimp,
                                                                     authorization: str | None) -> None:
    headers = {"Authorization": authorization} if authorization else {}
    response = requests.get(mailchimp.api_root + "/ping", headers=headers, timeout=10)
    body = problem(response, 401, "API Key Invalid")
    assert "zq9" not in response.text
    assert body["detail"]


def test_a_revoked_key_stops_working_and_other_accounts_keep_theirs(mailchimp: LocalMailchimp, api: Api) -> None:
    other_key = mailchimp.admin("POST", "accounts", json={"name": "Other"}).json()["api_key"]
    other = Api(mailchimp, other_key)
    assert other.ok("GET", "/")["account_name"] == "Other"
    problem(other.call("GET", f"/lists/{LIST}"), 404, "Resource Not Found")  # the demo audience is not theirs
    mailchimp.admin("POST", "revoke", json={"api_key": other_key})
    problem(other.call("GET", "/ping"), 401, "API Key Invalid")
    assert api.ok("GET", "/ping")


def test_audience_shows_its_settings_and_counts(mailchimp: LocalMailchimp, api: Api) -> None:
    api.batch([{"email_address": "ann@shop.io", "status": "subscribed"},
               {"email_address": "bob@shop.io", "status": "unsubscribed"}])
    audience = api.ok("GET", f"/lists/{LIST}")
    assert (audience["id"], audience["name"], audience["double_optin"]) == (LIST, "Demo audience", False)
    stats = audience["stats"]
    assert (stats["member_count"], stats["unsubscribe_count"], stats["cleaned_count"]) == (1, 1, 0)
    # "total_contacts ... Requires include_total_contacts query parameter to be included" (the API description)
    assert "total_contacts" not in stats
    counted = api.ok("GET", f"/lists/{LIST}", params={"include_total_contacts": "true", "fields": "stats.total_contacts"})
    assert counted == {"stats": {"total_contacts": 2}}
    key = mailchimp.admin("POST", "accounts", json={}).json()["api_key"]
    created = mailchimp.admin("POST", "audiences", json={"api_key": key, "name": "B2B", "double_optin": True})
    mine = Api(mailchimp, key).ok("GET", f"/lists/{created.json()['id']}", params={"fields": "name,double_optin"})
    assert mine == {"name": "B2B", "double_optin": True}
    problem(api.call("GET", "/lists/nosuchlist"), 404, "Resource Not Found")


def test_merge_fields_are_listed_and_created_with_their_rules(api: Api) -> None:
    fields = api.ok("GET", f"/lists/{LIST}/merge-fields")
    assert [(f["tag"], f["type"], f["required"]) for f in fields["merge_fields"]] == [
        ("FNAME", "text", False), ("LNAME", "text", False)]
    assert fields["total_items"] == 2
    created = api.ok("POST", f"/lists/{LIST}/merge-fields",
                     json={"name": "Points", "type": "number", "tag": "points", "required": True})
    assert (created["tag"], created["merge_id"], created["list_id"]) == ("POINTS", 3, LIST)
    assert api.ok("GET", f"/lists/{LIST}/merge-fields", params={"required": "true"})["total_items"] == 1
    duplicate = problem(api.call("POST", f"/lists/{LIST}/merge-fields", json={"name": "P", "type": "number",
                                                                             "tag": "POINTS"}), 400, "Invalid Resource")
    assert duplicate["errors"][0]["field"] == "tag"
    wrong = problem(api.call("POST", f"/lists/{LIST}/merge-fields", json={"name": "X", "type": "boolean"}),
                    400, "Invalid Resource")
    assert [e["field"] for e in wrong["errors"]] == ["type"]


def test_unknown_paths_methods_and_bodies_get_problems(api: Api) -> None:
    problem(api.call("GET", "/campaigns"), 404, "Resource Not Found")
    problem(api.call("DELETE", f"/lists/{LIST}/merge-fields"), 405, "Method Not Allowed")
    problem(api.call("POST", f"/lists/{LIST}", data=b"{not json"), 400, "JSON Parse Exception")


def test_stats_count_api_calls_and_reset_restores_the_demo_state(mailchimp: LocalMailchimp, api: Api) -> None:
    api.batch([{"email_address": f"m{i}@shop.io", "status": "subscribed"} for i in range(3)])
    api.members(count=2)
    api.call("GET", "/lists/nosuchlist")
    mailchimp.admin("POST", "connection-cap", json={"cap": 4})
    mailchimp.admin("POST", "latency", json={"profile": "realistic", "base_ms": 1})
    stats = mailchimp.stats()
    assert stats["requests_total"] == 3
    assert stats["by_status"] == {"200": 2, "404": 1}
    assert (stats["members_written"], stats["members_read"], stats["members"]) == (3, 2, 3)
    assert (stats["connection_cap"], stats["latency"]["base_ms"]) == (4, 1)
    assert stats["max_concurrent"] == 1 and stats["in_flight"] == 0
    assert stats["service_seconds"] > 0

    mailchimp.reset()
    stats = mailchimp.stats()
    assert (stats["requests_total"], stats["by_status"], stats["members"], stats["service_seconds"]) == (0, {}, 0, 0)
    assert (stats["connection_cap"], stats["latency_profile"]) == (10, "none")
    assert api.members()["total_items"] == 0


def test_command_line_and_environment_set_the_start_values() -> None:
    from_env = start_local_mailchimp(env={"MAILCHIMP_LATENCY_PROFILE": "realistic"})
    flagged = start_local_mailchimp("--latency-profile", "none", "--connection-cap", "3", "--seed", "9",
                                    env={"MAILCHIMP_LATENCY_PROFILE": "realistic"})
    try:
        stats = from_env.stats()
        assert (stats["latency_profile"], stats["latency"]["base_ms"]) == ("realistic", 120)
        stats = flagged.stats()
        assert (stats["latency_profile"], stats["connection_cap"], stats["faults"]["seed"]) == ("none", 3, 9)
        flagged.admin("POST", "connection-cap", json={"cap": 5})
        flagged.reset()
        assert flagged.stats()["connection_cap"] == 3  # back to the start value, not the default
    finally:
        from_env.stop()
        flagged.stop()


def test_a_failure_outside_the_handlers_is_logged_by_type_and_place_never_by_its_text(capsys) -> None:
    """socketserver's default error report ends with the exception's text, which can quote the request (an address,
    a key): the local Mailchimp's logs name the exception's type and where it was raised only."""
    from mailchimp_local.server import LocalMailchimpServer
    from mailchimp_local.world import Settings

    server = LocalMailchimpServer("127.0.0.1", 0, Settings())
    try:
        try:
            raise ValueError(f"bad header from ann.leak@contoso.com with key {DEMO_API_KEY}")
        except ValueError:
            server.handle_error(None, ("127.0.0.1", 50000))
    finally:
        server.server_close()
    logged = capsys.readouterr()
    text = logged.out + logged.err
    assert "ValueError" in text and "test_local_mailchimp.py" in text  # what and where
    assert "ann.leak@contoso.com" not in text and DEMO_API_KEY not in text, text
