"""Members on the local Mailchimp: paging, fields, filters, and the single-member calls."""
from __future__ import annotations

import pytest
import requests

from shared.emails import subscriber_hash
from tests.integration.test_local_mailchimp import LIST, Api, api, problem  # noqa: F401  (api is a fixture)


def path(email: str) -> str:
    return f"/lists/{LIST}/members/{subscriber_hash(email)}"


def test_pages_follow_creation_order_with_a_stable_total(api: Api) -> None:
    emails = [f"m{i:02}@shop.io" for i in range(25)]
    api.batch([{"email_address": e, "status": "subscribed"} for e in emails])
    api.batch([{"email_address": "m03@shop.io", "status": "subscribed", "merge_fields": {"FNAME": "changed"}}],
              update_existing=True)  # an update does not move a member
    first = api.members()
    assert [m["email_address"] for m in first["members"]] == emails[:10] and first["total_items"] == 25
    last = api.members(count=10, offset=20)
    assert [m["email_address"] for m in last["members"]] == emails[20:]
    assert api.members(count=1000, offset=25)["members"] == []


@pytest.mark.parametrize("params, field", [({"count": 1001}, "count"), ({"count": 0}, "count"),
                                           ({"offset": -1}, "offset"), ({"status": "gone"}, "status"),
                                           ({"since_last_changed": "yesterday"}, "since_last_changed")])
def test_bad_paging_and_filter_values_name_the_parameter(api: Api, params: dict, field: str) -> None:
    body = problem(api.call("GET", f"/lists/{LIST}/members", params=params), 400, "Invalid Resource")
    assert body["errors"][0]["field"] == field


def test_fields_and_exclude_fields_trim_the_answer_with_dot_paths(api: Api) -> None:
    api.batch([{"email_address": "ann@shop.io", "status": "subscribed", "merge_fields": {"FNAME": "Ann"}}])
    trimmed = api.members(fields="members.email_address,members.status,members.merge_fields,total_items")
    assert trimmed == {"members": [{"email_address": "ann@shop.io", "status": "subscribed",
                                    "merge_fields": {"FNAME": "Ann", "LNAME": ""}}], "total_items": 1}
    nested = api.members(fields="members.merge_fields.FNAME")
    assert nested == {"members": [{"merge_fields": {"FNAME": "Ann"}}]}
    excluded = api.members(exclude_fields="members.merge_fields,members.location,_links")
    member = excluded["members"][0]
    assert "merge_fields" not in member and "location" not in member and member["status"] == "subscribed"
    assert excluded["total_items"] == 1


def test_status_and_time_filters(api: Api) -> None:
    api.put_state("old@shop.io", "subscribed", last_changed="2020-01-01T00:00:00+00:00")
    api.put_state("left-long-ago@shop.io", "unsubscribed", unsubscribed_at="2020-01-01T00:00:00Z",
                  last_changed="2020-01-01T00:00:00Z")
    api.put_state("left-lately@shop.io", "unsubscribed", unsubscribed_at="2024-06-01T12:00:00Z")
    api.put_state("new@shop.io", "pending")

    def emails(**params: str) -> list[str]:
        return [m["email_address"] for m in api.members(count=1000, **params)["members"]]

    assert emails(status="unsubscribed") == ["left-long-ago@shop.io", "left-lately@shop.io"]
    assert emails(unsubscribed_since="2024-01-01T00:00:00+00:00") == ["left-lately@shop.io"]
    assert emails(status="unsubscribed", unsubscribed_since="2024-01-01") == ["left-lately@shop.io"]
    assert emails(since_last_changed="2021-01-01T00:00:00Z") == ["left-lately@shop.io", "new@shop.io"]
    assert api.members(status="pending")["total_items"] == 1
    body = problem(api.call("GET", f"/lists/{LIST}/members",
                            params={"status": "subscribed", "unsubscribed_since": "2024-01-01"}),
                   400, "Invalid Resource")
    assert body["errors"][0]["field"] == "status"


def test_put_uses_status_if_new_only_for_new_members(api: Api) -> None:
    created = api.ok("PUT", path("ann@shop.io"), json={"email_address": "ann@shop.io", "status_if_new": "pending",
                                                       "merge_fields": {"FNAME": "Ann"}})
    assert (created["status"], created["id"]) == ("pending", subscriber_hash("ann@shop.io"))
    kept = api.ok("PUT", path("ann@shop.io"), json={"email_address": "ANN@shop.io", "status_if_new": "subscribed",
                                                    "merge_fields": {"LNAME": "Lee"}})
    assert (kept["status"], kept["merge_fields"]) == ("pending", {"FNAME": "Ann", "LNAME": "Lee"})
    overwritten = api.ok("PUT", path("ann@shop.io"), json={"email_address": "ann@shop.io",
                                                           "status_if_new": "subscribed", "status": "unsubscribed"})
    assert overwritten["status"] == "unsubscribed"


@pytest.mark.parametrize("state, title", [({"status": "unsubscribed", "unsubscribed_by": "self"},
                                           "Member In Compliance State"),
                                          ({"status": "cleaned"}, "Member In Compliance State"),
                                          ({"status": "subscribed", "permanently_deleted": True},
                                           "Forgotten Email Not Subscribed")])
def test_put_refusals_are_400_problems(api: Api, state: dict, title: str) -> None:
    api.put_state("ann@shop.io", **state)
    response = api.call("PUT", path("ann@shop.io"), json={"email_address": "ann@shop.io",
                                                          "status_if_new": "subscribed", "status": "subscribed"})
    assert problem(response, 400, title)["detail"].startswith("ann@shop.io ")


def test_put_checks_its_body_against_the_path(api: Api) -> None:
    body = problem(api.call("PUT", path("ann@shop.io"), json={"email_address": "bob@shop.io",
                                                              "status_if_new": "subscribed"}), 400, "Invalid Resource")
    assert body["errors"][0]["field"] == "email_address"
    body = problem(api.call("PUT", path("ann@shop.io"), json={"email_address": "ann@shop.io"}),
                   400, "Invalid Resource")
    assert body["errors"][0]["field"] == "status_if_new"
    fake = problem(api.call("PUT", path("test@shop.io"), json={"email_address": "test@shop.io",
                                                               "status_if_new": "subscribed"}), 400, "Invalid Resource")
    assert "looks fake or invalid" in fake["detail"]


def test_patch_changes_merge_fields_and_404s_for_strangers(api: Api) -> None:
    api.batch([{"email_address": "ann@shop.io", "status": "subscribed"}])
    patched = api.ok("PATCH", path("ann@shop.io"), json={"merge_fields": {"FNAME": "Ann"}})
    assert (patched["merge_fields"]["FNAME"], patched["status"]) == ("Ann", "subscribed")
    invalid = problem(api.call("PATCH", path("ann@shop.io"), json={"merge_fields": {"FNAME": ["x"]}}),
                      400, "Invalid Resource")
    assert invalid["detail"] == "Your merge fields were invalid." and invalid["errors"][0]["field"] == "FNAME"
    problem(api.call("PATCH", path("bob@shop.io"), json={"merge_fields": {"FNAME": "B"}}), 404, "Resource Not Found")
    problem(api.call("GET", path("bob@shop.io")), 404, "Resource Not Found")
    by_address = api.ok("GET", f"/lists/{LIST}/members/ANN%40shop.io")  # Mailchimp also takes the address
    assert by_address["merge_fields"]["FNAME"] == "Ann"


def test_delete_archives_and_delete_permanent_forgets(api: Api) -> None:
    api.batch([{"email_address": "ann@shop.io", "status": "subscribed"},
               {"email_address": "bob@shop.io", "status": "subscribed"}])
    assert api.call("DELETE", path("ann@shop.io")).status_code == 204
    assert api.ok("GET", path("ann@shop.io"))["status"] == "archived"
    assert api.members(status="archived")["total_items"] == 1
    problem(api.call("DELETE", path("ann@shop.io")), 405, "Method Not Allowed")  # already archived
    problem(api.call("DELETE", path("nobody@shop.io")), 404, "Resource Not Found")

    assert api.call("POST", path("bob@shop.io") + "/actions/delete-permanent").status_code == 204
    problem(api.call("GET", path("bob@shop.io")), 404, "Resource Not Found")
    dump = api.server.admin("GET", f"lists/{LIST}/members").json()
    assert dump["permanently_deleted"] == [subscriber_hash("bob@shop.io")]
    assert [m["email_address"] for m in dump["members"]] == ["ann@shop.io"]
    refused = api.batch([{"email_address": "bob@shop.io", "status": "subscribed"}])
    assert "permanently deleted" in refused["errors"][0]["error"]


def test_member_timestamps_are_iso_instants_and_track_changes(api: Api) -> None:
    api.put_state("ann@shop.io", "subscribed", last_changed="2020-01-01T00:00:00Z")
    before = api.ok("GET", path("ann@shop.io"))
    assert before["last_changed"] == "2020-01-01T00:00:00+00:00"
    unchanged = api.batch([{"email_address": "ann@shop.io", "status": "subscribed"}], update_existing=True)
    assert unchanged["updated_members"][0]["last_changed"] == before["last_changed"]
    after = api.ok("PATCH", path("ann@shop.io"), json={"status": "unsubscribed"})
    assert after["last_changed"] > before["last_changed"] and after["timestamp_signup"].endswith("+00:00")
    dump = api.server.admin("GET", f"lists/{LIST}/members").json()["members"][0]
    assert (dump["unsubscribed_by"], dump["unsubscribed_at"]) == ("admin", after["last_changed"])


CANNOT_ARCHIVE = "Can not archive a contact that is bounced, pending or archived"


@pytest.mark.parametrize("state", [{"status": "pending"}, {"status": "cleaned"},
                                   {"status": "subscribed", "archived": True}])
def test_pending_cleaned_or_archived_contacts_cannot_be_archived(api: Api, state: dict) -> None:
    """405 as Mailchimp answers it (REFERENCE.md §4, grouparoo's Mailchimp fixtures); the member is unchanged."""
    api.put_state("ann@shop.io", **state)
    before = api.ok("GET", path("ann@shop.io"))
    body = problem(api.call("DELETE", path("ann@shop.io")), 405, "Method Not Allowed")
    assert CANNOT_ARCHIVE in body["detail"]
    assert api.ok("GET", path("ann@shop.io")) == before


@pytest.mark.parametrize("status", ["subscribed", "unsubscribed", "transactional"])
def test_other_contacts_can_be_archived_and_strangers_are_404(api: Api, status: str) -> None:
    api.put_state("ann@shop.io", status)
    assert api.call("DELETE", path("ann@shop.io")).status_code == 204
    assert api.ok("GET", path("ann@shop.io"))["status"] == "archived"
    problem(api.call("DELETE", path("bob@shop.io")), 404, "Resource Not Found")
    api.put_state("gone@shop.io", "subscribed", permanently_deleted=True)
    problem(api.call("DELETE", path("gone@shop.io")), 404, "Resource Not Found")


def test_archived_members_are_listed_only_when_asked_for(api: Api) -> None:
    """Stricter reading (unconfirmed for Mailchimp): no status filter lists no archived contacts."""
    api.batch([{"email_address": f"m{i}@shop.io", "status": "subscribed"} for i in range(4)])
    api.put_state("old@shop.io", "unsubscribed", archived=True, last_changed="2020-01-01T00:00:00Z")
    assert api.call("DELETE", path("m1@shop.io")).status_code == 204

    def emails(**params: str) -> tuple[list[str], int]:
        page = api.members(**{"count": "1000", **params})
        return [m["email_address"] for m in page["members"]], page["total_items"]

    assert emails() == (["m0@shop.io", "m2@shop.io", "m3@shop.io"], 3)
    assert emails(count="2", offset="2") == (["m3@shop.io"], 3)
    assert emails(since_last_changed="2021-01-01T00:00:00Z") == (["m0@shop.io", "m2@shop.io", "m3@shop.io"], 3)
    archived = api.members(status="archived")
    assert [(m["email_address"], m["status"]) for m in archived["members"]] == [("m1@shop.io", "archived"),
                                                                                 ("old@shop.io", "archived")]
    assert archived["total_items"] == 2
    assert api.members(status="unsubscribed")["total_items"] == 0  # an archived contact has no other status
    assert api.ok("GET", f"/lists/{LIST}", params={"include_total_contacts": "true"})["stats"]["total_contacts"] == 3
    api.batch([{"email_address": "m1@shop.io", "status": "subscribed"}])  # re-created: listed again, same place
    assert emails() == (["m0@shop.io", "m1@shop.io", "m2@shop.io", "m3@shop.io"], 4)


def test_aging_an_audience_moves_its_changes_and_tags_a_day_back(api: Api) -> None:
    """POST /__admin/lists/{id}/age: the benchmark's "next day" (bench/export_end_to_end.py). A member changed after
    the ageing is a change since then; the aged ones are not, and their tag dates moved with them."""
    api.batch([{"email_address": "old@shop.io", "status": "subscribed", "tags": ["Vip"]}])
    before = api.ok("GET", path("old@shop.io"))
    tagged = api.ok("GET", path("old@shop.io") + "/tags")["tags"][0]["date_added"]
    assert api.server.admin("POST", f"lists/{LIST}/age", json={"seconds": 86400}).json() == {"members": 1}
    api.batch([{"email_address": "new@shop.io", "status": "subscribed"}])
    cut = before["last_changed"]  # the old member's time before the ageing: the new one changed after it
    assert [m["email_address"] for m in api.members(since_last_changed=cut)["members"]] == ["new@shop.io"]
    after = api.ok("GET", path("old@shop.io"))
    assert after["last_changed"] < cut and api.ok("GET", path("old@shop.io") + "/tags")["tags"][0]["date_added"] < tagged
    refused = requests.post(f"{api.server.url}/__admin/lists/{LIST}/age", json={"seconds": -5}, timeout=10)
    assert refused.status_code == 400 and "seconds" in refused.text
