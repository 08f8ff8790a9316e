"""MailchimpClient reads, tags, paging and OAuth against the real local Mailchimp process.

Also holds the helpers the other test_mailchimp_client_* files share (no test names are imported from here).
"""
from __future__ import annotations

from contextlib import nullcontext
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from shared.mailchimp import (Credentials, MailchimpAuthError, MailchimpClient, MailchimpNotFound, MailchimpRequestError,
                              RetryPolicy, fetch_oauth_metadata)
from shared.members import Member, RowRef
from tests.services import LocalMailchimp

KEY = "0123456789abcdef0123456789abcdef-us6"
LIST = "a1b2c3d4e5"
QUICK_RETRY = RetryPolicy(attempts=4, max_seconds=10, base_backoff=0.02, max_backoff=0.1)


def make_client(target: LocalMailchimp | str, key: str = KEY, **options) -> MailchimpClient:
    """A client of the local Mailchimp (or of any API root given as a string), retrying quickly."""
    options.setdefault("retry", QUICK_RETRY)
    root = target if isinstance(target, str) else target.api_root
    return MailchimpClient(Credentials.from_api_key(key, base_url=root), **options)


def member(email: str, existing=None, **merge_fields) -> Member:
    return Member(email, merge_fields, ["VIP"], RowRef("VIP", "part-0", 1), existing)


def put_member(mailchimp: LocalMailchimp, email: str, status: str = "subscribed", **extra) -> None:
    mailchimp.admin("POST", "members", json={"list_id": LIST, "email": email, "status": status, **extra})


def members_by_email(mailchimp: LocalMailchimp) -> dict[str, dict]:
    dump = mailchimp.admin("GET", f"lists/{LIST}/members").json()["members"]
    return {m["email_address"].lower(): m for m in dump}


def requests_made(mailchimp: LocalMailchimp) -> int:
    return mailchimp.stats()["requests_total"]


@pytest.fixture
def client(mailchimp: LocalMailchimp):
    with make_client(mailchimp) as c:
        yield c


def test_ping_and_audience(client, mailchimp):
    client.ping()
    put_member(mailchimp, "ann@example.com")
    put_member(mailchimp, "bob@example.com", status="pending")  # a contact, not a subscribed member
    audience = client.get_audience(LIST)
    assert (audience.id, audience.name, audience.double_optin, audience.member_count, audience.total_contacts) == (
        LIST, "Demo audience", False, 1, 2)


def test_wrong_audience_is_not_found_and_says_what_to_check(client):
    with pytest.raises(MailchimpNotFound, match="audience id"):
        client.get_audience("nope000000")


def test_merge_fields_listed_and_created(client):
    assert [f.tag for f in client.list_merge_fields(LIST)] == ["FNAME", "LNAME"]
    created = client.create_merge_field(LIST, "CITY", "City", "text")
    assert (created.tag, created.name, created.type, created.required) == ("CITY", "City", "text", False)
    assert created in client.list_merge_fields(LIST)


def test_ensure_tags_creates_only_the_missing(client, mailchimp):
    vip = client.create_tag(LIST, "VIP")
    before = requests_made(mailchimp)
    ids = client.ensure_tags(LIST, ["VIP", "Churn risk", "VIP"])
    assert ids["VIP"] == vip and set(ids) == {"VIP", "Churn risk"}
    assert requests_made(mailchimp) - before == 2  # one list, one create
    assert client.list_tags(LIST) == ids


def test_ensure_tags_picks_up_a_tag_another_run_created_meanwhile(mailchimp):
    rival = make_client(mailchimp)
    entries = []

    def gate():
        entries.append(1)
        if len(entries) == 2:  # ensure_tags listed the tags; another run creates "VIP" before our create
            rival.create_tag(LIST, "VIP")
        return nullcontext()

    with make_client(mailchimp, gate=gate) as racing:
        ids = racing.ensure_tags(LIST, ["VIP"])
    assert ids == rival.list_tags(LIST)
    rival.close()


def test_tag_members_splits_batches_and_reports_only_the_untagged(client, mailchimp):
    emails = [f"p{i}@example.com" for i in range(600)]
    results = client.upsert_members(LIST, [member(e) for e in emails], status_for_new="subscribed",
                                    existing_as_of=None)
    assert {r.outcome.value for r in results} == {"created"}
    tag = client.create_tag(LIST, "VIP")
    asked = [e.upper() for e in emails] + ["stranger@example.com"]
    missed = client.tag_members(LIST, tag, asked)
    assert list(missed) == ["stranger@example.com"] and "not members of this audience" in missed["stranger@example.com"]
    assert client.tag_members(LIST, tag, emails[:3]) == {}  # already tagged counts as tagged
    dump = members_by_email(mailchimp)
    assert all(dump[e]["tags"] == [{"id": tag, "name": "VIP"}] for e in emails)


def test_untag_members_takes_the_tag_off_only_the_members_named(client, mailchimp):
    emails = [f"u{i}@example.com" for i in range(3)]
    client.upsert_members(LIST, [member(e) for e in emails], status_for_new="subscribed", existing_as_of=None)
    tag = client.create_tag(LIST, "Leavers")
    assert client.tag_members(LIST, tag, emails) == {}
    missed = client.untag_members(LIST, tag, [emails[0].upper(), emails[1], "stranger@example.com"])
    assert list(missed) == ["stranger@example.com"]
    dump = members_by_email(mailchimp)
    assert [e for e in emails if dump[e]["tags"]] == [emails[2]]
    assert client.untag_members(LIST, tag, emails[:1]) == {}  # untagging twice is harmless


def test_iter_members_pages_past_1000_with_normalized_emails(client, mailchimp):
    emails = [f"Page{i}@Example.com" for i in range(2300)]
    client.upsert_members(LIST, [member(e, FNAME=f"n{i}") for i, e in enumerate(emails)],
                          status_for_new="subscribed", existing_as_of=None)
    before = requests_made(mailchimp)
    seen = list(client.iter_members(LIST))
    assert requests_made(mailchimp) - before == 3
    assert [m.email for m in seen] == [e.lower() for e in emails]
    assert seen[5].merge_fields["FNAME"] == "n5" and seen[5].status == "subscribed"


def test_iter_members_filters_by_status(client, mailchimp):
    put_member(mailchimp, "in@example.com")
    put_member(mailchimp, "out@example.com", "unsubscribed")
    assert [m.email for m in client.iter_members(LIST, status="unsubscribed", page_size=1)] == ["out@example.com"]


def test_archive_member_is_idempotent(client, mailchimp):
    put_member(mailchimp, "gone@example.com")
    client.archive_member(LIST, "Gone@Example.com")
    client.archive_member(LIST, "gone@example.com")
    client.archive_member(LIST, "never@example.com")
    assert members_by_email(mailchimp)["gone@example.com"]["status"] == "archived"


def test_archiving_a_pending_member_is_refused_not_taken_as_done(client, mailchimp):
    # Mailchimp answers 405 for pending, cleaned and archived contacts alike; only "already archived" is done.
    put_member(mailchimp, "waiting@example.com", "pending")
    with pytest.raises(MailchimpRequestError, match="Can not archive"):
        client.archive_member(LIST, "waiting@example.com")
    assert members_by_email(mailchimp)["waiting@example.com"]["status"] == "pending"


def oauth_token(mailchimp: LocalMailchimp) -> str:
    """The authorization-code flow against the local login server, as the app's connect page runs it."""
    redirect = "http://127.0.0.1/callback"
    answer = requests.get(f"{mailchimp.url}/oauth2/authorize", allow_redirects=False, timeout=10, params={
        "response_type": "code", "client_id": "demo-client", "redirect_uri": redirect, "state": "s"})
    code = parse_qs(urlsplit(answer.headers["Location"]).query)["code"][0]
    token = requests.post(f"{mailchimp.url}/oauth2/token", timeout=10, data={
        "grant_type": "authorization_code", "client_id": "demo-client", "client_secret": "demo-client-secret",
        "redirect_uri": redirect, "code": code})
    return token.json()["access_token"]


def test_oauth_token_works_until_revoked(mailchimp):
    token = oauth_token(mailchimp)
    metadata = fetch_oauth_metadata(token, f"{mailchimp.url}/oauth2/metadata")
    # The API host comes from the data centre alone, never from the metadata's api_endpoint.
    assert Credentials.from_oauth_token(token, metadata).api_root == f"https://{metadata['dc']}.api.mailchimp.com/3.0"
    credentials = Credentials.from_oauth_token(token, metadata, base_url=mailchimp.api_root)
    assert credentials.api_root == mailchimp.api_root and credentials.kind == "oauth"
    with MailchimpClient(credentials, retry=QUICK_RETRY) as oauth_client:
        assert oauth_client.get_audience(LIST).id == LIST
        mailchimp.admin("POST", "revoke", json={"token": token})
        with pytest.raises(MailchimpAuthError, match="reconnect"):
            oauth_client.ping()
    with pytest.raises(MailchimpAuthError, match="reconnect") as caught:
        fetch_oauth_metadata(token, f"{mailchimp.url}/oauth2/metadata")
    assert token not in str(caught.value)


def test_the_audience_read_lists_archived_contacts_completely_even_when_the_list_moves_during_the_read(client, mailchimp):
    # Offset paging skips a contact when one before it leaves the list mid-read; a skipped archived contact would
    # look new and be re-created. The read is repeated until the list's size held still while it was read.
    for i in range(3):
        put_member(mailchimp, f"arch{i}@example.com", "unsubscribed", unsubscribed_by="self", archived=True)
    put_member(mailchimp, "live@example.com", "subscribed")
    real = client.iter_members
    reads = []

    def first_read_skips_one(list_id, **kwargs):
        found = list(real(list_id, **kwargs))
        if kwargs.get("status") == "archived":
            reads.append(len(found))
            if len(reads) == 1:
                return iter(found[1:])
        return iter(found)

    client.iter_members = first_read_skips_one
    seen = {m.email: m.status for m in client.iter_audience(LIST)}
    assert seen == {"arch0@example.com": "archived", "arch1@example.com": "archived", "arch2@example.com": "archived",
                    "live@example.com": "subscribed"}
    assert len(reads) == 2
