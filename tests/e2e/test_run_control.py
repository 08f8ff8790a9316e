"""Run control end to end, through the HTTP API of the local host: previews (dry runs), cancelling a run part way and
retrying only what failed.

Expected counts come from the rows written here (plain CSV snapshots built in this module, or the sample generator's
read back by `expect`), the audience seeded through the local Mailchimp's admin API, and the local Mailchimp's
documented "looks fake" rule, which a preview cannot foresee (shared/exports/preview.py says so): the fake addresses
below are predicted `created` by a preview and refused by the real run, and the comparisons account for exactly them.
"""
from __future__ import annotations

import json

import requests

from tests.e2e.conftest import (DEMO_AUDIENCE, DEMO_KEY, assert_accounted, create_destination, start_export, wait_for)
from tests.e2e.test_export import (audience_by_identity, audience_members, equation_terms, expect, identity,
                                   upload)
from tests.services import LOCAL_USERS

ENDED = ("succeeded", "completed_with_errors", "failed", "cancelled", "previewed")
ADMIN_LABEL = LOCAL_USERS["admin"]["email"]  # how runs and reasons name the local admin (Principal.label)


def wait_until_ended(host, run_id: str, timeout: float = 120) -> dict:
    """conftest.wait_for_run, with `previewed` among the end states."""
    return wait_for(lambda: (run := host.call("GET", f"exports/{run_id}").json())["status"] in ENDED and run,
                    f"run {run_id} to end", timeout=timeout)


def errors_of(host, run_id: str) -> list[dict]:
    answer = host.call("GET", f"exports/{run_id}/errors")
    assert answer.status_code == 200, answer.text
    return [json.loads(line) for line in answer.text.splitlines()]


def tag_names(mailchimp) -> set[str]:
    """The audience's tags (static segments), through the Mailchimp API itself."""
    answer = requests.get(f"{mailchimp.api_root}/lists/{DEMO_AUDIENCE}/segments", auth=("any", DEMO_KEY),
                          params={"count": 1000}, timeout=10)
    answer.raise_for_status()
    return {s["name"] for s in answer.json()["segments"]}


# --- 1. preview -----------------------------------------------------------------------------------------------------

FAKES = ["test@fabrikam.com", "someone@mailinator.com"]  # the local Mailchimp refuses these; a preview cannot know


def vip_snapshot(container, stamp: str, people: range, renamed: range = range(0), newcomers: int = 0) -> None:
    """A plain-layout snapshot of segment Vip in two partitions: m<i>@contoso.com (F<i>, L<i>; "New<i>" as first name
    for `renamed`), n<i>@fabrikam.com newcomers, two duplicates (one in another case, padded), one invalid row and the
    two fake addresses."""
    rows = [f"m{i}@contoso.com,{'New' if i in renamed else 'F'}{i},L{i}" for i in people]
    rows += [f"n{i}@fabrikam.com,N{i},Comer" for i in range(newcomers)]
    rows += [f" M{people[3]}@Contoso.COM ,F{people[3]},L{people[3]}", f"m{people[7]}@contoso.com,F{people[7]},L{people[7]}",
             "not-an-email,Bad,Row", *(f"{fake},Fa,Ke" for fake in FAKES)]
    half = len(rows) // 2
    for number, part in enumerate((rows[:half], rows[half:])):
        body = "Email,FirstName,LastName\r\n" + "".join(row + "\r\n" for row in part)
        container.upload_blob(f"Vip/{stamp}/part-{number}.csv", body.encode())
    container.upload_blob(f"Vip/{stamp}/_SUCCESS", b"")


def preview_then_real(host, mailchimp, destination_id: str) -> tuple[dict, dict]:
    """A preview and then the real export of the same data: (preview, real). Checks what holds for every preview:
    previewed, dryRun, nothing written to Mailchimp, no tag created, no address in the run record."""
    written, tags = mailchimp.stats()["members_written"], tag_names(mailchimp)
    preview = wait_until_ended(host, start_export(host, destination_id, dryRun=True))
    assert preview["status"] == "previewed" and preview["dryRun"] is True, preview
    assert_accounted(preview)
    assert mailchimp.stats()["members_written"] == written, "a preview wrote members to Mailchimp"
    assert tag_names(mailchimp) == tags, "a preview created a tag"
    record = dict(preview)
    assert record.pop("startedBy") == ADMIN_LABEL  # the caller, by design; nobody else may be named
    assert "@" not in json.dumps(record), "the preview's run record names a member"
    real = wait_until_ended(host, start_export(host, destination_id))  # 202 right away: the preview held nothing
    assert real["dryRun"] is False and real["status"] in ("succeeded", "completed_with_errors"), real
    assert_accounted(real)
    return preview, real


def assert_predicted(preview: dict, real: dict, fakes_offered: int) -> None:
    """The real run's counts are the preview's, but for the fake addresses: predicted created (and tagged), refused."""
    want = {**preview["counts"], "created": preview["counts"]["created"] - fakes_offered,
            "tagged": preview["counts"]["tagged"] - fakes_offered, "refused": preview["counts"]["refused"] + fakes_offered}
    assert real["counts"] == want, (preview["counts"], real["counts"])


def test_a_preview_predicts_the_real_run_sends_nothing_and_holds_nothing(start_host, segments, mailchimp):
    # already in the audience: m0 as the data has it (unchanged), m1 with another first name (updated), m2 bounced
    for i, status, first in ((0, "subscribed", "F0"), (1, "subscribed", "Old"), (2, "cleaned", "F2")):
        mailchimp.admin("POST", "members", json={"list_id": DEMO_AUDIENCE, "email": f"m{i}@contoso.com", "status": status,
                                                 "merge_fields": {"FNAME": first, "LNAME": f"L{i}"}})
    vip_snapshot(segments, "2026/11/28/1700", range(120))
    expected = expect(segments, ["Vip"])
    assert expected.refused == set(FAKES) and expected.invalid == 1 and expected.duplicates == 2
    host = start_host()
    destination = create_destination(host, segments=["Vip"])
    bad = host.call("POST", f"destinations/{destination['id']}/exports", json={"dryRun": "yes"})
    assert bad.status_code == 400 and "dryRun" in bad.json()["error"], bad.text

    preview, real = preview_then_real(host, mailchimp, destination["id"])
    members = len(expected.members)  # 122: m0..m119 and the two fakes
    assert equation_terms(preview["counts"]) == {"read": expected.read, "invalid": 1, "duplicates": 2,
                                                 "created": members - 3, "updated": 1, "unchanged": 1, "refused": 1,
                                                 "failed": 0}, preview["counts"]
    assert preview["counts"]["tagged"] == members - 1  # everyone delivered gets the tag, the bounced one not
    assert_predicted(preview, real, len(FAKES))
    lines = errors_of(host, preview["id"])
    said = {identity(line["email"]): line["reason"] for line in lines if line["source"] == "preview"}
    assert set(said) == set(expected.members), "the preview's report does not name every member it would change"
    assert said["m1@contoso.com"].startswith("would be updated: FNAME") and "would be refused" in said["m2@contoso.com"]
    assert said["m0@contoso.com"] == "would get tag 'Vip'" and said[FAKES[0]].startswith("would be created")
    assert {line["source"] for line in lines} == {"preview", "validation"}
    assert host.call("POST", f"exports/{preview['id']}/cancel").json() == {
        "error": f"export {preview['id']} had already finished (previewed): there is nothing to cancel", "status": "previewed"}
    assert host.call("POST", f"exports/{preview['id']}/retry").status_code == 409

    # a second run on an audience that holds them now: 10 renamed, 10 newcomers, 5 gone (under the untag guard)
    vip_snapshot(segments, "2026/11/28/1800", range(115), renamed=range(10, 20), newcomers=10)
    second = expect(segments, ["Vip"])
    preview, real = preview_then_real(host, mailchimp, destination["id"])
    assert equation_terms(preview["counts"]) == {"read": second.read, "invalid": 1, "duplicates": 2,
                                                 "created": 10 + len(FAKES), "updated": 10, "unchanged": 115 - 10 - 1,
                                                 "refused": 1, "failed": 0}, preview["counts"]
    assert preview["counts"]["untagged"] == 5 and preview["counts"]["untagHeld"] == 0
    assert_predicted(preview, real, len(FAKES))
    assert audience_by_identity(mailchimp)["m119@contoso.com"] == set()  # the real run did take the tag off

    # a preview runs beside a real run: with slow Mailchimp calls the preview is still going when the real one starts
    mailchimp.admin("POST", "latency", json={"profile": "none", "base_ms": 700})
    preview_id = start_export(host, destination["id"], dryRun=True)
    real_id = start_export(host, destination["id"])  # asserts 202: not refused as "already running"
    assert host.call("GET", f"exports/{preview_id}").json()["status"] not in ENDED, "the overlap was not tested"
    preview, real = wait_until_ended(host, preview_id), wait_until_ended(host, real_id)
    assert preview["status"] == "previewed" and preview["counts"]["unchanged"] == 115 + 10 - 1
    assert_predicted(preview, real, len(FAKES))


# --- 2. cancel ------------------------------------------------------------------------------------------------------

CHUNK = 200
CONNECTIONS = 1  # Mailchimp calls at once: when the cancel lands, at most this many batches can be on their way


def test_a_run_cancelled_at_30_percent_stops_sending_and_accounts_for_everyone(start_host, segments, mailchimp):
    upload(segments, segments={"HighValueCustomers": 6000}, rows_per_partition=1000)
    expected = expect(segments, ["HighValueCustomers"])
    assert not expected.refused
    mailchimp.admin("POST", "latency", json={"profile": "realistic"})
    # threads to spare (more than the queue's batchSize + newBatchThreshold), so the cancel is not queued behind chunks
    host = start_host(EXPORT_CHUNK_SIZE=str(CHUNK), MAILCHIMP_MAX_CONNECTIONS=str(CONNECTIONS),
                      PYTHON_THREADPOOL_THREAD_COUNT="32")
    destination = create_destination(host)
    run_id = start_export(host, destination["id"])

    def at_30_percent():
        chunks = host.call("GET", f"exports/{run_id}").json()["chunks"]
        return chunks["total"] and chunks["done"] >= 0.3 * chunks["total"] and chunks

    chunks = wait_for(at_30_percent, "30 % of the chunks done", timeout=90)
    assert chunks["total"] >= 10 and chunks["done"] < chunks["total"] / 2, chunks
    cancelled = host.call("POST", f"exports/{run_id}/cancel")
    in_audience_at_cancel = len(audience_members(mailchimp))
    assert cancelled.status_code == 202, cancelled.text
    assert cancelled.json()["status"] == "cancelling", cancelled.json()
    assert cancelled.json()["message"].startswith(f"cancelled by {ADMIN_LABEL} at "), cancelled.json()
    assert cancelled.json()["chunks"]["done"] < chunks["total"] / 2, cancelled.json()["chunks"]  # the cancel was quick
    again = host.call("POST", f"exports/{run_id}/cancel")
    assert again.status_code == 202 and again.json()["message"] == cancelled.json()["message"], again.text

    run = wait_until_ended(host, run_id, timeout=90)
    assert run["status"] == "cancelled" and run["message"] == cancelled.json()["message"], run
    assert_accounted(run)
    c = run["counts"]
    assert {k: c[k] for k in ("read", "invalid", "duplicates", "refused")} == {
        "read": expected.read, "invalid": expected.invalid, "duplicates": expected.duplicates, "refused": 0}, c
    failures = [e for e in errors_of(host, run_id) if e["source"] == "failure"]
    assert len(failures) == c["failed"] > 0 and all("cancelled by" in e["reason"] for e in failures), c
    failed = {identity(e["email"]) for e in failures}
    audience = audience_by_identity(mailchimp)
    assert len(audience) == c["created"] + c["updated"] + c["unchanged"], c
    assert set(audience) == set(expected.delivered) - failed  # exactly the members counted delivered
    # a member written but whose tag the cancel stopped is counted tagFailed (its tag is the only thing missing)
    assert sum(tags != {"HighValueCustomers"} for tags in audience.values()) == c["tagFailed"], c
    written_after = len(audience) - in_audience_at_cancel
    assert written_after <= CONNECTIONS * CHUNK, (
        f"{written_after} members written after the cancel answered; at most {CONNECTIONS * CHUNK} "
        f"(the batches already holding a connection) could still be on their way: {c}")

    after = host.call("POST", f"exports/{run_id}/cancel")  # cancelling the cancelled run: still harmless
    assert after.status_code == 202 and after.json()["status"] == "cancelled" and after.json()["counts"] == c
    next_id = start_export(host, destination["id"])  # the destination is free at once
    assert host.call("POST", f"exports/{next_id}/cancel").status_code == 202  # and that one stops too
    stopped = wait_until_ended(host, next_id, timeout=60)
    assert stopped["status"] == "cancelled", stopped
    assert_accounted(stopped)
    assert len(audience_members(mailchimp)) - len(audience) <= CONNECTIONS * CHUNK


# --- 3. retry -------------------------------------------------------------------------------------------------------

def test_retry_after_mailchimp_failed_sends_exactly_the_failed_members_once(start_host, segments, mailchimp):
    upload(segments, segments={"HighValueCustomers": 300}, rows_per_partition=300)
    expected = expect(segments, ["HighValueCustomers"])
    assert expected.invalid and expected.duplicates and not expected.refused  # neither invalid nor duplicates retried
    host = start_host(MAILCHIMP_RETRY_SECONDS="1", EXPORT_CHUNK_SIZE="100")
    destination = create_destination(host)
    mailchimp.admin("POST", "faults", json={"rates": {"500": 1.0}, "path": f"/lists/{DEMO_AUDIENCE}$", "method": "POST", "seed": 1})
    first = wait_until_ended(host, start_export(host, destination["id"]), timeout=180)
    assert first["status"] == "failed" and first["counts"]["failed"] == len(expected.members), first["counts"]
    assert host.call("POST", f"exports/{first['id']}/retry", user="operator").status_code == 404  # not their destination
    assert host.call("GET", f"exports/{first['id']}").json()["retriedBy"] is None
    mailchimp.admin("POST", "faults", json={})

    answer = host.call("POST", f"exports/{first['id']}/retry")
    assert answer.status_code == 202, answer.text
    retry_id = answer.json()["id"]
    assert answer.json()["retryOf"] == first["id"] and answer.headers["Location"] == f"/api/exports/{retry_id}"
    twice = host.call("POST", f"exports/{first['id']}/retry")
    assert twice.status_code == 409 and retry_id in twice.json()["error"], twice.text
    retry = wait_until_ended(host, retry_id)
    assert_accounted(retry)
    assert retry["trigger"] == "retry" and retry["retryOf"] == first["id"] and retry["status"] == "succeeded", retry
    assert equation_terms(retry["counts"]) == {"read": first["counts"]["failed"], "invalid": 0, "duplicates": 0,
                                               "created": len(expected.members), "updated": 0, "unchanged": 0,
                                               "refused": 0, "failed": 0}, retry["counts"]
    assert host.call("GET", f"exports/{first['id']}").json()["retriedBy"] == retry_id
    assert audience_by_identity(mailchimp) == expected.delivered  # everyone once, with the segment's tag
    assert mailchimp.stats()["members_written"] == expected.writes_of_one_delivery()  # and sent once

    nothing = host.call("POST", f"exports/{retry_id}/retry")
    assert nothing.status_code == 409 and "no failed members" in nothing.json()["error"], nothing.text
    finished = host.call("POST", f"exports/{retry_id}/cancel")
    assert finished.status_code == 409 and finished.json()["status"] == "succeeded", finished.text
