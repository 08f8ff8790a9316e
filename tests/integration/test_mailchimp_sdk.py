"""The official mailchimp_marketing SDK works against the local Mailchimp: the stand-in speaks Mailchimp's API,
not just our client's dialect."""
from __future__ import annotations

import mailchimp_marketing
import pytest
from mailchimp_marketing.api_client import ApiClientError

from shared.emails import subscriber_hash
from tests.integration.test_mailchimp_client import KEY, LIST


@pytest.fixture
def sdk(mailchimp):
    client = mailchimp_marketing.Client()
    client.set_config({"api_key": KEY, "server": "us6", "timeout": 10})
    client.api_client.host = mailchimp.api_root  # this SDK version keeps the root here (no .configuration)
    return client


def test_ping_and_audience(sdk):
    assert sdk.ping.get() == {"health_status": "Everything's Chimpy!"}
    audience = sdk.lists.get_list(LIST)
    assert audience["id"] == LIST and audience["double_optin"] is False


def test_batch_subscribe_and_read_members(sdk):
    body = {"members": [{"email_address": "Ann@Example.com", "status": "subscribed", "merge_fields": {"FNAME": "Ann"}},
                        {"email_address": "fake@example.com", "status": "subscribed"}], "update_existing": False}
    answer = sdk.lists.batch_list_members(LIST, body)
    assert answer["total_created"] == 1 and answer["error_count"] == 1
    assert "looks fake" in answer["errors"][0]["error"]
    page = sdk.lists.get_list_members_info(LIST, count=10, fields=["members.email_address", "members.status"])
    assert [(m["email_address"].lower(), m["status"]) for m in page["members"]] == [("ann@example.com", "subscribed")]
    assert sdk.lists.get_list_member(LIST, subscriber_hash("ann@example.com"))["merge_fields"]["FNAME"] == "Ann"


def test_tags_through_segments_and_member_tags(sdk):
    sdk.lists.batch_list_members(LIST, {"members": [{"email_address": "bo@example.com", "status": "subscribed"}]})
    segment = sdk.lists.create_segment(LIST, {"name": "VIP", "static_segment": []})
    added = sdk.lists.batch_segment_members({"members_to_add": ["bo@example.com"]}, LIST, segment["id"])
    assert added["total_added"] == 1
    assert [s["name"] for s in sdk.lists.list_segments(LIST, type="static")["segments"]] == ["VIP"]
    sdk.lists.update_list_member_tags(LIST, subscriber_hash("bo@example.com"),
                                      {"tags": [{"name": "Churn risk", "status": "active"}]})
    tags = sdk.lists.get_list_member(LIST, subscriber_hash("bo@example.com"))["tags"]
    assert sorted(t["name"] for t in tags) == ["Churn risk", "VIP"]


def test_sdk_sees_mailchimps_errors(sdk):
    with pytest.raises(ApiClientError) as caught:
        sdk.lists.get_list("nope000000")
    assert caught.value.status_code == 404
