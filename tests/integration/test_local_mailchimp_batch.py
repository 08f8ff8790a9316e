"""Batch subscribe on the local Mailchimp: Mailchimp's status trap, its refusals, identity and merge rules."""
from __future__ import annotations

from typing import Any

import pytest

from shared.emails import subscriber_hash
from tests.integration.test_local_mailchimp import LIST, Api, api, problem  # noqa: F401  (api is a fixture)

MEMBER_KEYS = {"id", "email_address", "unique_email_id", "email_type", "status", "merge_fields", "stats",
               "timestamp_signup", "timestamp_opt", "last_changed", "tags", "tags_count", "list_id"}
COMPLIANCE = " is in a compliance state due to unsubscribe, bounce, or compliance review and cannot be subscribed."


def one_error(answer: dict[str, Any]) -> dict[str, Any]:
    assert answer["error_count"] == 1 and answer["total_created"] == answer["total_updated"] == 0, answer
    return answer["errors"][0]


def status_of(api: Api, email: str) -> str:
    """Read one member by its hash: archived members are only listed when asked for with status=archived."""
    return api.ok("GET", f"/lists/{LIST}/members/{subscriber_hash(email)}")["status"]


def test_new_members_come_back_as_full_member_objects(api: Api) -> None:
    answer = api.batch([{"email_address": "ann@shop.io", "status": "subscribed", "merge_fields": {"FNAME": "Ann"}},
                        {"email_address": "bob@shop.io", "status": "pending"}])
    assert (answer["total_created"], answer["total_updated"], answer["error_count"]) == (2, 0, 0)
    ann, bob = answer["new_members"]
    assert MEMBER_KEYS <= ann.keys()
    assert (ann["email_address"], ann["status"], ann["merge_fields"]) == ("ann@shop.io", "subscribed",
                                                                         {"FNAME": "Ann", "LNAME": ""})
    assert ann["id"] == subscriber_hash("ann@shop.io")
    assert bob["status"] == "pending"  # pending on a new member is fine
    assert answer["updated_members"] == [] and answer["errors"] == []


def test_existing_member_without_update_existing_is_refused_as_contact_exists(api: Api) -> None:
    api.batch([{"email_address": "ann@shop.io", "status": "subscribed"}])
    error = one_error(api.batch([{"email_address": "ann@shop.io", "status": "subscribed"}]))
    assert error == {"email_address": "ann@shop.io", "error_code": "ERROR_CONTACT_EXISTS", "field": "",
                     "error": "ann@shop.io is already a list member. Use PUT to insert or update list members.",
                     "field_message": ""}


def test_update_existing_overwrites_status_and_resubscribes_an_admin_unsubscribe(api: Api) -> None:
    """The trap a connector must avoid: Mailchimp sets the status sent, whatever the member had."""
    api.batch([{"email_address": "ann@shop.io", "status": "unsubscribed"}])
    answer = api.batch([{"email_address": "ann@shop.io", "status": "subscribed", "merge_fields": {"LNAME": "Lee"}}],
                       update_existing=True)
    (member,) = answer["updated_members"]
    assert (member["status"], member["merge_fields"]["LNAME"]) == ("subscribed", "Lee")
    assert answer["total_updated"] == 1


@pytest.mark.parametrize("state, sent", [({"status": "unsubscribed", "unsubscribed_by": "self"}, "subscribed"),
                                         ({"status": "unsubscribed", "unsubscribed_by": "self"}, "pending"),
                                         ({"status": "cleaned"}, "subscribed"),
                                         ({"status": "cleaned"}, "unsubscribed")])
def test_members_in_a_compliance_state_keep_their_status(api: Api, state: dict[str, str], sent: str) -> None:
    api.put_state("ann@shop.io", **state)
    error = one_error(api.batch([{"email_address": "ann@shop.io", "status": sent}], update_existing=True))
    assert error["error"] == "ann@shop.io" + COMPLIANCE
    assert error["error_code"] == "ERROR_GENERIC"
    assert status_of(api, "ann@shop.io") == state["status"]


def test_sending_the_current_status_of_a_compliance_member_updates_its_merge_fields(api: Api) -> None:
    api.put_state("ann@shop.io", "unsubscribed", unsubscribed_by="self")
    answer = api.batch([{"email_address": "ann@shop.io", "status": "unsubscribed", "merge_fields": {"FNAME": "A"}}],
                       update_existing=True)
    (member,) = answer["updated_members"]
    assert (member["status"], member["merge_fields"]["FNAME"]) == ("unsubscribed", "A")


@pytest.mark.parametrize("update_existing", [False, True])
def test_permanently_deleted_addresses_cannot_be_reimported(api: Api, update_existing: bool) -> None:
    api.put_state("gone@shop.io", "subscribed", permanently_deleted=True)
    error = one_error(api.batch([{"email_address": "Gone@Shop.io", "status": "subscribed"}], update_existing))
    assert error["error"] == ("Gone@Shop.io was permanently deleted and cannot be re-imported. "
                              "The contact must re-subscribe to get back on the list.")


@pytest.mark.parametrize("email", ["test@shop.io", "noreply@shop.io", "ann@mailinator.com", "ann@example.invalid",
                                   "ann@@shop.io", "ann shop.io", "ann@shop"])
def test_fake_or_invalid_addresses_are_refused(api: Api, email: str) -> None:
    error = one_error(api.batch([{"email_address": email, "status": "subscribed"}]))
    assert error["error"] == f"{email} looks fake or invalid, please enter a real email address."
    assert error["email_address"] == email


def test_case_and_space_variants_are_one_member(api: Api) -> None:
    created = api.batch([{"email_address": "Foo@X-Shop.com", "status": "subscribed"}])["new_members"][0]
    answer = api.batch([{"email_address": "  foo@x-shop.COM ", "status": "subscribed",
                         "merge_fields": {"FNAME": "F"}}], update_existing=True)
    (updated,) = answer["updated_members"]
    assert updated["id"] == created["id"] == subscriber_hash("foo@x-shop.com")
    assert api.members()["total_items"] == 1
    error = one_error(api.batch([{"email_address": "FOO@x-shop.com", "status": "subscribed"}]))
    assert error["error_code"] == "ERROR_CONTACT_EXISTS"


def test_one_address_twice_in_a_call_is_written_once(api: Api) -> None:
    members = [{"email_address": "ann@shop.io", "status": "subscribed"},
               {"email_address": "ANN@shop.io", "status": "unsubscribed"}]
    answer = api.batch(members)
    assert (answer["total_created"], answer["error_count"]) == (1, 1)
    assert "appears more than once" in answer["errors"][0]["error"]
    api.server.reset()
    answer = api.ok("POST", f"/lists/{LIST}", params={"skip_duplicate_check": "true"}, json={"members": members})
    assert (answer["total_created"], answer["error_count"], answer["new_members"][0]["status"]) == (1, 0, "subscribed")


def test_at_most_500_members_per_call(api: Api) -> None:
    members = [{"email_address": f"m{i}@shop.io", "status": "subscribed"} for i in range(501)]
    body = problem(api.call("POST", f"/lists/{LIST}", json={"members": members}), 400, "Invalid Resource")
    assert body["errors"][0]["field"] == "members" and "501" in body["errors"][0]["message"]
    assert api.members()["total_items"] == 0
    assert api.batch(members[:500])["total_created"] == 500


def test_malformed_members_fail_the_call_naming_each_field(api: Api) -> None:
    members = [{"email_address": "ann@shop.io", "status": "subscribed"},
               {"email_address": "bob@shop.io", "status": "archived"},
               {"status": "subscribed", "merge_fields": ["x"]}]
    body = problem(api.call("POST", f"/lists/{LIST}", json={"members": members}), 400, "Invalid Resource")
    assert [e["field"] for e in body["errors"]] == ["members[1].status", "members[2].email_address",
                                                    "members[2].merge_fields"]
    assert api.members()["total_items"] == 0


def add_field(api: Api, tag: str, type_: str, **extra: Any) -> None:
    api.ok("POST", f"/lists/{LIST}/merge-fields", json={"name": tag.title(), "type": type_, "tag": tag, **extra})


@pytest.mark.parametrize("tag, type_, extra, good, bad", [
    ("POINTS", "number", {}, "12.5", "twelve"),
    ("JOINED", "date", {}, "2024-02-29", "2023-02-29"),
    ("BDAY", "birthday", {}, "02/29", "2/29/1990"),
    ("ADDRESS", "address", {}, {"addr1": "1 Main St", "city": "Austin", "state": "TX", "zip": "73301"},
     {"addr1": "1 Main St", "city": "Austin"}),
    ("SITE", "url", {}, "https://shop.io", "shop dot io"),
    ("ZIPCODE", "zip", {}, "30308", "3O308"),
    ("SIZE", "dropdown", {"options": {"choices": ["S", "M"]}}, "M", "XL"),
    ("FNAME", "text", {}, "Ann", {"first": "Ann"}),
])
def test_merge_values_of_the_wrong_type_are_refused_naming_the_field(api: Api, tag: str, type_: str,
                                                                     extra: dict, good: Any, bad: Any) -> None:
    if tag != "FNAME":
        add_field(api, tag, type_, **extra)
    error = one_error(api.batch([{"email_address": "ann@shop.io", "status": "subscribed", "merge_fields": {tag: bad}}]))
    assert (error["error"], error["field"]) == ("Your merge fields were invalid.", tag)
    assert error["field_message"]
    answer = api.batch([{"email_address": "ann@shop.io", "status": "subscribed", "merge_fields": {tag: good}}])
    stored = answer["new_members"][0]["merge_fields"][tag]
    assert stored == (12.5 if type_ == "number" else {**good, "addr2": "", "country": "US"}
                      if type_ == "address" else good)


def test_required_merge_fields_unknown_tags_and_long_text(api: Api) -> None:
    add_field(api, "CITY", "text", required=True)
    error = one_error(api.batch([{"email_address": "ann@shop.io", "status": "subscribed"}]))
    assert (error["field"], error["field_message"]) == ("CITY", "Please enter a value")
    skipped = api.ok("POST", f"/lists/{LIST}", params={"skip_merge_validation": "true"},
                     json={"members": [{"email_address": "ann@shop.io", "status": "subscribed"}]})
    assert skipped["total_created"] == 1
    long_name = "é" * 200  # 400 bytes in UTF-8: cut to 127 characters (254 bytes), never inside a character
    answer = api.batch([{"email_address": "bob@shop.io", "status": "subscribed",
                         "merge_fields": {"CITY": "Paris", "FNAME": long_name, "NOSUCHTAG": "ignored"}}])
    fields = answer["new_members"][0]["merge_fields"]
    assert fields["FNAME"] == "é" * 127 and "NOSUCHTAG" not in fields


def test_archived_members_are_recreated_with_the_status_sent(api: Api) -> None:
    created = api.batch([{"email_address": "ann@shop.io", "status": "subscribed"}])["new_members"][0]
    assert api.call("DELETE", f"/lists/{LIST}/members/{created['id']}").status_code == 204
    assert status_of(api, "ann@shop.io") == "archived"
    answer = api.batch([{"email_address": "ann@shop.io", "status": "pending"}])
    (again,) = answer["new_members"]
    assert (again["id"], again["status"]) == (created["id"], "pending")


def test_tags_sent_with_members_are_added_and_synced(api: Api) -> None:
    api.batch([{"email_address": "ann@shop.io", "status": "subscribed", "tags": ["VIP", "Spring"]}])
    answer = api.batch([{"email_address": "ann@shop.io", "status": "subscribed", "tags": ["Spring", "Autumn"]}],
                       update_existing=True, sync_tags=True)
    member = answer["updated_members"][0]
    assert sorted(t["name"] for t in member["tags"]) == ["Autumn", "Spring"] and member["tags_count"] == 2
    segments = api.ok("GET", f"/lists/{LIST}/segments", params={"type": "static", "count": 1000})
    assert {s["name"]: s["member_count"] for s in segments["segments"]} == {"VIP": 0, "Spring": 1, "Autumn": 1}


@pytest.mark.parametrize("update_existing", [False, True])
def test_per_member_tags_on_new_members_are_created_on_first_use_and_shown_in_the_answer(api: Api,
                                                                                      update_existing: bool) -> None:
    """members[].tags on new members (Mailchimp's batch subscribe; REFERENCE.md §4), with or without update_existing."""
    answer = api.batch([{"email_address": "ann@shop.io", "status": "subscribed", "tags": ["Segment A", "segment b"]},
                        {"email_address": "bob@shop.io", "status": "subscribed", "tags": ["SEGMENT A"]}],
                       update_existing=update_existing)
    ann, bob = answer["new_members"]
    assert [t["name"] for t in ann["tags"]] == ["Segment A", "segment b"]
    assert [t["name"] for t in bob["tags"]] == ["Segment A"] and bob["tags"][0]["id"] == ann["tags"][0]["id"]
    segments = api.ok("GET", f"/lists/{LIST}/segments", params={"type": "static"})["segments"]
    assert {s["name"]: s["member_count"] for s in segments} == {"Segment A": 2, "segment b": 1}


def test_per_member_tags_on_existing_members_need_update_existing(api: Api) -> None:
    """Since 2022 tags apply to existing members sent with update_existing: true (Mailchimp release notes, "added
    ability to sync tags for existing members"); without it the member is refused as existing, tags and all."""
    api.batch([{"email_address": "ann@shop.io", "status": "unsubscribed", "tags": ["Old"]}])
    refused = one_error(api.batch([{"email_address": "ann@shop.io", "status": "unsubscribed", "tags": ["New"]}]))
    assert refused["error_code"] == "ERROR_CONTACT_EXISTS"
    answer = api.batch([{"email_address": "ann@shop.io", "status": "unsubscribed", "tags": ["new"]}],
                       update_existing=True)
    (ann,) = answer["updated_members"]
    # added to its tags, status as sent; "New" was never created by the refused call, so "new" is a new tag
    assert (ann["status"], [t["name"] for t in ann["tags"]]) == ("unsubscribed", ["Old", "new"])
