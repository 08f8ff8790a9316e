"""Tags (static segments) on the local Mailchimp: creation, batch add/remove, per-member tags."""
from __future__ import annotations

from datetime import datetime

import pytest

from shared.emails import subscriber_hash
from tests.integration.test_local_mailchimp import LIST, Api, api, problem  # noqa: F401  (api is a fixture)

SEGMENTS = f"/lists/{LIST}/segments"


def subscribe(api: Api, *emails: str) -> None:
    api.batch([{"email_address": e, "status": "subscribed"} for e in emails])


def test_created_tags_hold_only_audience_members(api: Api) -> None:
    subscribe(api, "ann@shop.io", "bob@shop.io")
    tag = api.ok("POST", SEGMENTS, json={"name": "VIP", "static_segment": ["ann@shop.io", "stranger@shop.io"]})
    assert (tag["name"], tag["type"], tag["member_count"], tag["list_id"]) == ("VIP", "static", 1, LIST)
    assert api.ok("GET", f"{SEGMENTS}/{tag['id']}")["member_count"] == 1
    listed = api.ok("GET", SEGMENTS, params={"type": "static", "count": 1000})
    assert [(s["id"], s["name"]) for s in listed["segments"]] == [(tag["id"], "VIP")] and listed["total_items"] == 1
    assert api.ok("GET", SEGMENTS, params={"type": "saved"})["total_items"] == 0
    problem(api.call("POST", SEGMENTS, json={"name": "VIP"}), 400, "Invalid Resource")
    problem(api.call("GET", f"{SEGMENTS}/999999"), 404, "Resource Not Found")


def test_adding_and_removing_reports_members_and_ignores_strangers(api: Api) -> None:
    subscribe(api, "ann@shop.io", "bob@shop.io")
    api.put_state("left@shop.io", "subscribed", archived=True)
    tag_id = api.ok("POST", SEGMENTS, json={"name": "Spring"})["id"]
    answer = api.ok("POST", f"{SEGMENTS}/{tag_id}", json={
        "members_to_add": ["ANN@shop.io", "bob@shop.io", "stranger@shop.io", "left@shop.io"]})
    assert [m["email_address"] for m in answer["members_added"]] == ["ann@shop.io", "bob@shop.io"]
    assert answer["errors"] == [{"email_addresses": ["stranger@shop.io", "left@shop.io"],
                                 "error": answer["errors"][0]["error"]}]
    assert (answer["total_added"], answer["total_removed"], answer["error_count"]) == (2, 0, 2)
    ann = answer["members_added"][0]
    assert (ann["tags"], ann["tags_count"]) == ([{"id": tag_id, "name": "Spring"}], 1)
    assert api.members(status="archived")["members"][0]["tags"] == []  # never added

    again = api.ok("POST", f"{SEGMENTS}/{tag_id}", json={"members_to_add": ["ann@shop.io"],
                                                         "members_to_remove": ["bob@shop.io"]})
    assert again["total_added"] == 1 and again["errors"] == []  # adding twice is harmless
    assert [m["email_address"] for m in again["members_removed"]] == ["bob@shop.io"]
    assert again["members_removed"][0]["tags"] == []
    members = api.ok("GET", f"{SEGMENTS}/{tag_id}/members")
    assert [m["email_address"] for m in members["members"]] == ["ann@shop.io"] and members["total_items"] == 1


def test_at_most_500_addresses_each_way(api: Api) -> None:
    tag_id = api.ok("POST", SEGMENTS, json={"name": "Big"})["id"]
    many = [f"m{i}@shop.io" for i in range(501)]
    body = problem(api.call("POST", f"{SEGMENTS}/{tag_id}", json={"members_to_remove": many}), 400,
                   "Invalid Resource")
    assert body["errors"][0]["field"] == "members_to_remove"
    assert api.ok("POST", f"{SEGMENTS}/{tag_id}", json={"members_to_add": many[:500]})["error_count"] == 500


def test_segment_members_hide_unsubscribed_unless_asked(api: Api) -> None:
    subscribe(api, "ann@shop.io")
    api.put_state("bob@shop.io", "unsubscribed", tags=["Spring"])
    tag_id = api.ok("GET", SEGMENTS)["segments"][0]["id"]
    api.ok("POST", f"{SEGMENTS}/{tag_id}", json={"members_to_add": ["ann@shop.io"]})
    shown = api.ok("GET", f"{SEGMENTS}/{tag_id}/members")
    assert [m["email_address"] for m in shown["members"]] == ["ann@shop.io"]
    everyone = api.ok("GET", f"{SEGMENTS}/{tag_id}/members", params={"include_unsubscribed": "true"})
    assert [m["email_address"] for m in everyone["members"]] == ["bob@shop.io", "ann@shop.io"]


def test_member_tags_endpoint_creates_and_removes_tags_by_name(api: Api) -> None:
    subscribe(api, "ann@shop.io")
    member_tags = f"/lists/{LIST}/members/{subscriber_hash('ann@shop.io')}/tags"
    response = api.call("POST", member_tags, json={"tags": [{"name": "VIP", "status": "active"},
                                                            {"name": "Trial", "status": "active"}]})
    assert response.status_code == 204 and response.content == b""
    api.call("POST", member_tags, json={"tags": [{"name": "Trial", "status": "inactive"},
                                                 {"name": "Never", "status": "inactive"}]})
    member = api.members()["members"][0]
    assert [t["name"] for t in member["tags"]] == ["VIP"]
    assert sorted(s["name"] for s in api.ok("GET", SEGMENTS)["segments"]) == ["Trial", "VIP"]
    problem(api.call("POST", member_tags, json={"tags": [{"name": "X", "status": "on"}]}), 400, "Invalid Resource")
    problem(api.call("POST", f"/lists/{LIST}/members/{subscriber_hash('bob@shop.io')}/tags",
                     json={"tags": []}), 404, "Resource Not Found")


def test_archiving_a_member_drops_its_tags(api: Api) -> None:
    api.batch([{"email_address": "ann@shop.io", "status": "subscribed", "tags": ["VIP"]}])
    api.call("DELETE", f"/lists/{LIST}/members/{subscriber_hash('ann@shop.io')}")
    assert api.ok("GET", SEGMENTS)["segments"][0]["member_count"] == 0


# Tag names are case-insensitive in Mailchimp ("Customers" equals "customers": REFERENCE.md §4, spree_chimpy PR 15).

def tags_of(api: Api, email: str) -> list[tuple[int, str]]:
    member = api.ok("GET", f"/lists/{LIST}/members/{subscriber_hash(email)}")
    assert member["tags_count"] == len(member["tags"])
    return [(t["id"], t["name"]) for t in member["tags"]]


def all_tags(api: Api) -> dict[str, int]:
    return {s["name"]: s["member_count"] for s in api.ok("GET", SEGMENTS, params={"count": 1000})["segments"]}


def test_creating_a_tag_whose_name_differs_only_in_case_is_refused_like_a_duplicate(api: Api) -> None:
    api.ok("POST", SEGMENTS, json={"name": "VIP"})
    for name in ("vip", "Vip", "VIP"):
        body = problem(api.call("POST", SEGMENTS, json={"name": name}), 400, "Invalid Resource")
        assert body["errors"][0]["field"] == "name" and "VIP" in body["errors"][0]["message"]
    api.ok("POST", SEGMENTS, json={"name": "Straße"})
    problem(api.call("POST", SEGMENTS, json={"name": "STRASSE"}), 400, "Invalid Resource")  # casefold, not lower
    assert all_tags(api) == {"VIP": 0, "Straße": 0}


@pytest.mark.parametrize("update_existing, sync_tags", [(False, False), (True, False), (True, True)])
def test_batch_subscribe_tags_match_existing_tags_ignoring_case(api: Api, update_existing: bool,
                                                                 sync_tags: bool) -> None:
    vip = api.ok("POST", SEGMENTS, json={"name": "VIP"})["id"]
    subscribe(api, "old@shop.io")
    api.batch([{"email_address": "new@shop.io", "status": "subscribed", "tags": ["vip", "Vip"]},
               {"email_address": "old@shop.io", "status": "subscribed", "tags": ["vIP"]}],
              update_existing=update_existing, sync_tags=sync_tags)
    assert tags_of(api, "new@shop.io") == [(vip, "VIP")]  # the tag keeps the spelling it was created with
    assert tags_of(api, "old@shop.io") == ([(vip, "VIP")] if update_existing else [])
    assert all_tags(api) == {"VIP": 2 if update_existing else 1}


def test_a_new_tag_sent_twice_in_different_cases_is_created_once(api: Api) -> None:
    api.batch([{"email_address": "ann@shop.io", "status": "subscribed", "tags": ["Spring"]},
               {"email_address": "bob@shop.io", "status": "subscribed", "tags": ["SPRING", "spring"]}])
    assert all_tags(api) == {"Spring": 2}


def test_sync_tags_keeps_a_tag_named_in_another_case(api: Api) -> None:
    api.batch([{"email_address": "ann@shop.io", "status": "subscribed", "tags": ["VIP", "Spring"]}])
    vip = tags_of(api, "ann@shop.io")[0]
    answer = api.batch([{"email_address": "ann@shop.io", "status": "subscribed", "tags": ["vip", "AUTUMN"]}],
                       update_existing=True, sync_tags=True)
    assert [t["name"] for t in answer["updated_members"][0]["tags"]] == ["VIP", "AUTUMN"]
    assert tags_of(api, "ann@shop.io")[0] == vip  # kept, not removed and added again
    assert all_tags(api) == {"VIP": 1, "Spring": 0, "AUTUMN": 1}


def test_member_tags_endpoint_matches_tags_ignoring_case(api: Api) -> None:
    subscribe(api, "ann@shop.io")
    vip = api.ok("POST", SEGMENTS, json={"name": "VIP"})["id"]
    member_tags = f"/lists/{LIST}/members/{subscriber_hash('ann@shop.io')}/tags"
    assert api.call("POST", member_tags, json={"tags": [{"name": "vip", "status": "active"}]}).status_code == 204
    assert tags_of(api, "ann@shop.io") == [(vip, "VIP")] and all_tags(api) == {"VIP": 1}
    assert api.call("POST", member_tags, json={"tags": [{"name": "Vip", "status": "inactive"}]}).status_code == 204
    assert tags_of(api, "ann@shop.io") == [] and all_tags(api) == {"VIP": 0}


def test_member_tags_are_listed_with_the_date_they_were_added(api: Api) -> None:
    """GET /lists/{id}/members/{hash}/tags answers {tags: [{id, name, date_added}], total_items} (OpenAPI 3.0.55)."""
    api.batch([{"email_address": "ann@shop.io", "status": "subscribed", "tags": ["VIP", "Spring", "Autumn"]},
               {"email_address": "bob@shop.io", "status": "subscribed"}])
    member_tags = f"/lists/{LIST}/members/{subscriber_hash('ann@shop.io')}/tags"
    listed = api.ok("GET", member_tags)
    assert listed.keys() == {"tags", "total_items"} and listed["total_items"] == 3
    assert [(t["id"], t["name"]) for t in listed["tags"]] == tags_of(api, "ann@shop.io")
    for tag in listed["tags"]:
        assert tag.keys() == {"id", "name", "date_added"} and isinstance(tag["id"], int)
        assert datetime.fromisoformat(tag["date_added"]).tzinfo is not None
    page = api.ok("GET", member_tags, params={"count": 1, "offset": 1})
    assert ([t["name"] for t in page["tags"]], page["total_items"]) == (["Spring"], 3)
    assert api.ok("GET", member_tags, params={"fields": "tags.name"}) == {
        "tags": [{"name": "VIP"}, {"name": "Spring"}, {"name": "Autumn"}]}
    by_address = api.ok("GET", f"/lists/{LIST}/members/ANN%40shop.io/tags")
    assert by_address["total_items"] == 3
    assert api.ok("GET", f"/lists/{LIST}/members/{subscriber_hash('bob@shop.io')}/tags") == {"tags": [],
                                                                                         "total_items": 0}
    problem(api.call("GET", f"/lists/{LIST}/members/{subscriber_hash('eve@shop.io')}/tags"), 404,
            "Resource Not Found")
    problem(api.call("GET", member_tags, params={"count": 1001}), 400, "Invalid Resource")


# Per-member tags in batch subscribe (members[].tags, names): REFERENCE.md §4, Mailchimp developer release notes,
# "added ability to sync tags for existing members" (2022): new members, and existing ones with update_existing: true;
# sync_tags replaces a member's tags with those sent, otherwise they are added.

def names(member: dict) -> list[str]:
    return [t["name"] for t in member["tags"]]


def test_per_member_tags_on_a_new_member_match_an_existing_tag_ignoring_case_and_create_the_others(api: Api) -> None:
    vip = api.ok("POST", SEGMENTS, json={"name": "VIP"})["id"]
    answer = api.batch([{"email_address": "ann@shop.io", "status": "subscribed", "tags": ["vip", "Spring 2026"]}])
    (ann,) = answer["new_members"]
    assert names(ann) == ["VIP", "Spring 2026"] and ann["tags_count"] == 2  # the answer shows the tags applied
    assert tags_of(api, "ann@shop.io")[0] == (vip, "VIP")  # the existing tag, not a second "vip"
    assert all_tags(api) == {"VIP": 1, "Spring 2026": 1}  # "Spring 2026" created on first use, as a static segment
    spring = next(s for s in api.ok("GET", SEGMENTS)["segments"] if s["name"] == "Spring 2026")
    assert spring["type"] == "static"


def test_per_member_tags_on_an_existing_member_are_added_not_replaced_without_sync_tags(api: Api) -> None:
    api.batch([{"email_address": "ann@shop.io", "status": "subscribed", "tags": ["Hand", "VIP"]}])
    answer = api.batch([{"email_address": "ANN@shop.io", "status": "subscribed", "tags": ["vip", "Autumn"]}],
                       update_existing=True)
    (ann,) = answer["updated_members"]
    assert names(ann) == ["Hand", "VIP", "Autumn"]
    assert all_tags(api) == {"Hand": 1, "VIP": 1, "Autumn": 1}
    again = api.batch([{"email_address": "ann@shop.io", "status": "subscribed", "tags": ["AUTUMN"]}],
                      update_existing=True)  # the same tag twice: nothing changes, no second tag
    assert names(again["updated_members"][0]) == ["Hand", "VIP", "Autumn"]
    assert api.batch([{"email_address": "ann@shop.io", "status": "subscribed"}],
                     update_existing=True)["updated_members"][0]["tags_count"] == 3  # no `tags`: left alone


def test_per_member_tags_on_an_existing_member_are_replaced_with_sync_tags(api: Api) -> None:
    api.batch([{"email_address": "ann@shop.io", "status": "subscribed", "tags": ["Hand", "VIP"]},
               {"email_address": "bob@shop.io", "status": "subscribed", "tags": ["Hand"]}])
    answer = api.batch([{"email_address": "ann@shop.io", "status": "subscribed", "tags": ["vip", "Autumn"]},
                        {"email_address": "bob@shop.io", "status": "subscribed"},
                        {"email_address": "cy@shop.io", "status": "subscribed", "tags": ["hand"]}],
                       update_existing=True, sync_tags=True)
    ann, bob = answer["updated_members"]
    (cy,) = answer["new_members"]
    assert names(ann) == ["VIP", "Autumn"]
    assert names(bob) == []  # strict: synced to the (no) tags sent
    assert names(cy) == ["Hand"]  # a new member synced: simply its tags, the existing "Hand" matched ignoring case
    assert all_tags(api) == {"Hand": 1, "VIP": 1, "Autumn": 1}


def test_per_member_tags_are_not_applied_to_a_member_the_batch_refuses(api: Api) -> None:
    api.batch([{"email_address": "ann@shop.io", "status": "subscribed"}])
    api.put_state("gone@shop.io", "unsubscribed", unsubscribed_by="self")
    answer = api.batch([{"email_address": "ann@shop.io", "status": "subscribed", "tags": ["Spring"]},  # exists
                        {"email_address": "noreply@shop.io", "status": "subscribed", "tags": ["Spring"]}])  # fake
    assert answer["error_count"] == 2 and answer["total_created"] == 0
    compliance = api.batch([{"email_address": "gone@shop.io", "status": "subscribed", "tags": ["Spring"]}],
                           update_existing=True)
    assert compliance["error_count"] == 1
    assert set(answer["errors"][0]) == {"email_address", "error", "error_code", "field", "field_message"}
    assert tags_of(api, "ann@shop.io") == [] and tags_of(api, "gone@shop.io") == []
    assert all_tags(api) == {}  # a tag is created only when a member written uses it


def test_per_member_tags_must_be_a_list_of_names(api: Api) -> None:
    body = problem(api.call("POST", f"/lists/{LIST}", json={"members": [
        {"email_address": "ann@shop.io", "status": "subscribed", "tags": [{"name": "VIP", "status": "active"}]},
        {"email_address": "bob@shop.io", "status": "subscribed", "tags": "VIP"}]}), 400, "Invalid Resource")
    assert [e["field"] for e in body["errors"]] == ["members[0].tags", "members[1].tags"]
    assert api.members()["total_items"] == 0
