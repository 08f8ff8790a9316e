"""Status-safe upsert against the real local Mailchimp: no export ever changes an existing member's status."""
from __future__ import annotations

import threading
import time
from datetime import datetime, timezone

import pytest

from shared.members import Outcome
from tests.integration.test_mailchimp_client import LIST, make_client, member, members_by_email, put_member


@pytest.fixture
def client(mailchimp):
    with make_client(mailchimp) as c:
        yield c


def mirror(client) -> tuple[dict, datetime]:
    """What an export reads before planning: the audience's members and when the read started."""
    read_at = datetime.now(timezone.utc)
    return {m.email: m for m in client.iter_audience(LIST)}, read_at


def test_no_one_is_resubscribed_and_each_outcome_is_right(client, mailchimp):
    put_member(mailchimp, "admin-unsub@example.com", "unsubscribed", unsubscribed_by="admin")
    put_member(mailchimp, "self-unsub@example.com", "unsubscribed", unsubscribed_by="self")
    put_member(mailchimp, "cleaned@example.com", "cleaned")
    put_member(mailchimp, "later-unsub@example.com", "subscribed")
    put_member(mailchimp, "kept@example.com", "subscribed")
    mailchimp.admin("POST", "members", json={"list_id": LIST, "email": "deleted@example.com",
                                             "permanently_deleted": True})
    existing, read_at = mirror(client)
    time.sleep(0.01)
    # after the read: an admin unsubscribes one member, and another appears, already unsubscribed
    put_member(mailchimp, "later-unsub@example.com", "unsubscribed", unsubscribed_by="admin")
    put_member(mailchimp, "appeared@example.com", "unsubscribed", unsubscribed_by="admin")
    emails = ["admin-unsub@example.com", "self-unsub@example.com", "cleaned@example.com",
              "later-unsub@example.com", "kept@example.com", "deleted@example.com", "appeared@example.com"]
    results = client.upsert_members(LIST, [member(e, existing.get(e), FNAME="New") for e in emails],
                                    status_for_new="subscribed", existing_as_of=read_at)
    outcomes = {r.email: r.outcome for r in results}
    assert outcomes == {
        "admin-unsub@example.com": Outcome.UPDATED, "self-unsub@example.com": Outcome.UPDATED,
        "cleaned@example.com": Outcome.REFUSED, "later-unsub@example.com": Outcome.UPDATED,
        "kept@example.com": Outcome.UPDATED, "deleted@example.com": Outcome.REFUSED,
        "appeared@example.com": Outcome.UPDATED}
    reasons = {r.email: r.reason for r in results}
    assert "cleaned" in reasons["cleaned@example.com"]
    assert "permanently deleted" in reasons["deleted@example.com"]
    after = members_by_email(mailchimp)
    assert {e: after[e]["status"] for e in after} == {
        "admin-unsub@example.com": "unsubscribed", "self-unsub@example.com": "unsubscribed",
        "cleaned@example.com": "cleaned", "later-unsub@example.com": "unsubscribed",
        "kept@example.com": "subscribed", "appeared@example.com": "unsubscribed"}
    assert after["admin-unsub@example.com"]["unsubscribed_by"] == "admin"
    assert after["self-unsub@example.com"]["unsubscribed_by"] == "self"
    assert after["later-unsub@example.com"]["merge_fields"]["FNAME"] == "New"  # updated, status kept
    assert after["cleaned@example.com"]["merge_fields"]["FNAME"] == ""  # cleaned: not written at all


def test_status_is_refreshed_even_without_a_read_time(client, mailchimp):
    put_member(mailchimp, "a@example.com", "subscribed")
    existing, _ = mirror(client)
    put_member(mailchimp, "a@example.com", "unsubscribed", unsubscribed_by="admin")
    results = client.upsert_members(LIST, [member("a@example.com", existing["a@example.com"], FNAME="X")],
                                    status_for_new="subscribed", existing_as_of=None)
    assert results[0].outcome is Outcome.UPDATED
    assert members_by_email(mailchimp)["a@example.com"]["status"] == "unsubscribed"


def test_case_variants_land_on_one_member(client, mailchimp):
    first = client.upsert_members(LIST, [member("Ann.Lee@Example.COM", FNAME="Ann"), member(" ann.lee@example.com ")],
                                  status_for_new="subscribed", existing_as_of=None)
    assert [r.outcome for r in first] == [Outcome.CREATED, Outcome.CREATED]
    # a later export whose (stale) read did not know her, spelled another way
    again = client.upsert_members(LIST, [member("ANN.LEE@example.com", FNAME="Annie")],
                                  status_for_new="subscribed", existing_as_of=datetime.now(timezone.utc))
    assert again[0].outcome is Outcome.UPDATED and again[0].email == "ann.lee@example.com"
    after = members_by_email(mailchimp)
    assert list(after) == ["ann.lee@example.com"]
    assert after["ann.lee@example.com"]["merge_fields"]["FNAME"] == "Annie"


def test_unchanged_members_cost_no_write(client, mailchimp):
    put_member(mailchimp, "u@example.com", merge_fields={"FNAME": "Ulla", "LNAME": "x" * 255})
    existing, read_at = mirror(client)
    written = mailchimp.stats()["members_written"]
    results = client.upsert_members(
        LIST, [member("u@example.com", existing["u@example.com"], FNAME=" Ulla ", LNAME="x" * 300)],
        status_for_new="subscribed", existing_as_of=read_at)
    assert results[0].outcome is Outcome.UNCHANGED
    assert mailchimp.stats()["members_written"] == written


def test_empty_values_never_erase_what_mailchimp_holds(client, mailchimp):
    put_member(mailchimp, "e@example.com", merge_fields={"FNAME": "Eva", "LNAME": "Ek"})
    existing, read_at = mirror(client)
    results = client.upsert_members(LIST, [member("e@example.com", existing["e@example.com"], FNAME="Eve", LNAME="")],
                                    status_for_new="subscribed", existing_as_of=read_at)
    assert results[0].outcome is Outcome.UPDATED
    assert members_by_email(mailchimp)["e@example.com"]["merge_fields"] == {"FNAME": "Eve", "LNAME": "Ek"}


def test_new_members_get_the_status_for_new(client, mailchimp):
    results = client.upsert_members(LIST, [member("p@example.com")], status_for_new="pending", existing_as_of=None)
    assert results[0].outcome is Outcome.CREATED
    assert members_by_email(mailchimp)["p@example.com"]["status"] == "pending"


@pytest.mark.parametrize("before", ["unsubscribed", "subscribed"])
def test_archived_members_are_left_archived_and_refused_with_how_to_restore_them(client, mailchimp, before):
    # Mailchimp cannot tell what an archived contact was before; whatever status is written, it takes. So an
    # archived contact in a segment is never written, whatever it was (an unsubscribed one must never come back).
    put_member(mailchimp, "arch@example.com", before, unsubscribed_by="admin", archived=True)
    existing, read_at = mirror(client)
    assert existing["arch@example.com"].status == "archived"
    written = mailchimp.stats()["members_written"]
    results = client.upsert_members(LIST, [member("arch@example.com", existing["arch@example.com"], FNAME="Al")],
                                    status_for_new="subscribed", existing_as_of=read_at)
    assert results[0].outcome is Outcome.REFUSED
    assert "archived" in results[0].reason and "unarchive them in Mailchimp" in results[0].reason
    assert members_by_email(mailchimp)["arch@example.com"]["status"] == "archived"
    assert mailchimp.stats()["members_written"] == written


def test_status_changes_after_the_audience_read_are_never_undone(client, mailchimp):
    # Each member changes status between the read and the write; the write must carry the new status (or none).
    for email, status in [("confirms@example.com", "pending"), ("bounces@example.com", "subscribed"),
                          ("archived-later@example.com", "subscribed"), ("leaves@example.com", "subscribed"),
                          ("stays@example.com", "pending"), ("comes-back@example.com", "unsubscribed"),
                          ("opts-in@example.com", "transactional")]:
        put_member(mailchimp, email, status, unsubscribed_by="admin")
    existing, read_at = mirror(client)
    time.sleep(1.1)  # Mailchimp's "changed since" filters have one-second resolution
    put_member(mailchimp, "confirms@example.com", "subscribed")
    put_member(mailchimp, "bounces@example.com", "cleaned")
    put_member(mailchimp, "archived-later@example.com", "subscribed", archived=True)
    put_member(mailchimp, "leaves@example.com", "unsubscribed", unsubscribed_by="admin")
    put_member(mailchimp, "comes-back@example.com", "subscribed")  # re-subscribes through a form during the run
    put_member(mailchimp, "opts-in@example.com", "subscribed")
    emails = ["confirms@example.com", "bounces@example.com", "archived-later@example.com", "leaves@example.com",
              "stays@example.com", "comes-back@example.com", "opts-in@example.com"]
    results = {r.email: r for r in client.upsert_members(LIST, [member(e, existing[e], FNAME="New") for e in emails],
                                                         status_for_new="subscribed", existing_as_of=read_at)}
    assert {e: r.outcome for e, r in results.items()} == {
        "confirms@example.com": Outcome.UPDATED, "bounces@example.com": Outcome.REFUSED,
        "archived-later@example.com": Outcome.REFUSED, "leaves@example.com": Outcome.UPDATED,
        "stays@example.com": Outcome.UPDATED, "comes-back@example.com": Outcome.UPDATED,
        "opts-in@example.com": Outcome.UPDATED}
    after = members_by_email(mailchimp)
    assert {e: after[e]["status"] for e in emails} == {
        "confirms@example.com": "subscribed", "bounces@example.com": "cleaned",
        "archived-later@example.com": "archived", "leaves@example.com": "unsubscribed",
        "stays@example.com": "pending", "comes-back@example.com": "subscribed", "opts-in@example.com": "subscribed"}
    assert after["leaves@example.com"]["merge_fields"]["FNAME"] == "New"


def test_refusals_carry_mailchimps_reason_and_field(client, mailchimp):
    client.create_merge_field(LIST, "AGE", "Age", "number")
    results = client.upsert_members(LIST, [member("noreply@example.com"), member("ok@example.com", AGE="old"),
                                           member("fine@example.com", AGE=41)],
                                    status_for_new="subscribed", existing_as_of=None)
    assert [r.outcome for r in results] == [Outcome.REFUSED, Outcome.REFUSED, Outcome.CREATED]
    assert "looks fake or invalid" in results[0].reason
    assert results[1].field == "AGE" and "merge fields were invalid" in results[1].reason
    assert "number" in results[1].reason


def test_large_calls_are_split_into_batches_of_500(client, mailchimp):
    results = client.upsert_members(LIST, [member(f"b{i}@example.com") for i in range(1201)],
                                    status_for_new="subscribed", existing_as_of=None)
    assert len(results) == 1201 and {r.outcome for r in results} == {Outcome.CREATED}
    assert mailchimp.stats()["requests_total"] == 3


@pytest.mark.parametrize("fault", ["apply_then_timeout", "apply_then_502"])
def test_a_create_mailchimp_applied_but_never_answered_counts_created_without_a_read_per_member(mailchimp, fault):
    # Mailchimp applies the batch, the answer is lost (a timeout, a CDN 502), the retry finds everyone there.
    mailchimp.admin("POST", "faults", json={"rates": {fault: 1}, "slow_seconds": 3, "method": "POST",
                                            "path": f"/lists/{LIST}$", "limit": 1})
    emails = [f"lost{i}@example.com" for i in range(300)]
    with make_client(mailchimp, timeout=(2.0, 1.0)) as client:
        results = client.upsert_members(LIST, [member(e, FNAME="Lu") for e in emails], status_for_new="subscribed",
                                        existing_as_of=datetime.now(timezone.utc))
    assert [r.outcome for r in results] == [Outcome.CREATED] * 300
    after = members_by_email(mailchimp)
    assert all(after[e]["status"] == "subscribed" and after[e]["merge_fields"]["FNAME"] == "Lu" for e in emails)
    stats = mailchimp.stats()
    assert stats["requests_total"] <= 4, stats  # the write, its retry, one listing (a page or two): not 300 reads


def test_chunks_sent_at_once_through_one_client_share_their_status_listings(client, mailchimp):
    """Six chunks of updates at once through one client: the status listings they ask for together are made fewer
    times than three per chunk (shared/mailchimp/joined_listings.py), and each chunk still sees the unsubscribe made
    after the audience was read."""
    emails = [f"p{n:02d}@example.com" for n in range(30)]
    for email in emails:
        put_member(mailchimp, email, "subscribed")
    existing, read_at = mirror(client)
    time.sleep(1.1)  # Mailchimp's "changed since" filters have one-second resolution
    put_member(mailchimp, "p07@example.com", "unsubscribed", unsubscribed_by="admin")
    put_member(mailchimp, "p22@example.com", "unsubscribed", unsubscribed_by="admin")
    mailchimp.admin("POST", "latency", json={"profile": "none", "base_ms": 300})  # the listings overlap
    before = mailchimp.admin("GET", "stats").json()["requests_total"]
    start = threading.Barrier(6, timeout=10)
    results: dict[str, Outcome] = {}

    def send(chunk: list[str]) -> None:
        start.wait()
        for r in client.upsert_members(LIST, [member(e, existing[e], FNAME="New") for e in chunk],
                                       status_for_new="subscribed", existing_as_of=read_at):
            results[r.email] = r.outcome

    threads = [threading.Thread(target=send, args=(emails[n:n + 5],)) for n in range(0, 30, 5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    calls = mailchimp.admin("GET", "stats").json()["requests_total"] - before
    assert 6 + 3 <= calls < 6 + 3 * 6  # six batch calls; every kind of listing made, but fewer than three a chunk
    assert results == dict.fromkeys(emails, Outcome.UPDATED)
    after = members_by_email(mailchimp)
    assert {e: after[e]["status"] for e in emails} == {
        e: "unsubscribed" if e in ("p07@example.com", "p22@example.com") else "subscribed" for e in emails}
    assert {after[e]["merge_fields"]["FNAME"] for e in emails} == {"New"}
