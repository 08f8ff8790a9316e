"""Never wrong in Mailchimp, end to end: the guards that keep an export from doing harm while its counts add up.

Each test runs the real function_app in the local Functions host, on empty storage in Azurite, against the local Mailchimp.
Expected values are computed here from the rows written, never by the app's own helpers.
"""
from __future__ import annotations

import json
import time

import requests

from shared.adapters.tables import RunTable
from shared.config import TABLE_RUNS

from tests.e2e.conftest import (DEMO_AUDIENCE, DEMO_KEY, assert_accounted, assert_cut_mid_run, chunks_counted,
                                create_destination, start_export, wait_for, wait_for_run)
from tests.services import table_service

AUTH = ("any", DEMO_KEY)


def plain_snapshot(container, segment: str, stamp: str, rows: list[str], header: str = "Email,FirstName,LastName") -> None:
    folder = f"{segment}/{stamp}/"
    container.upload_blob(folder + "part-0.csv", (header + "\r\n" + "".join(r + "\r\n" for r in rows)).encode(), overwrite=True)
    container.upload_blob(folder + "_SUCCESS", b"", overwrite=True)


def members(mailchimp) -> dict[str, dict]:
    dump = mailchimp.admin("GET", f"lists/{DEMO_AUDIENCE}/members").json()["members"]
    return {m["email_address"].lower(): m for m in dump}


def tags_of(mailchimp) -> dict[str, set[str]]:
    return {email: {t["name"] for t in m["tags"]} for email, m in members(mailchimp).items()}


def errors_of(host, run_id: str) -> list[dict]:
    return [json.loads(line) for line in host.call("GET", f"exports/{run_id}/errors").text.splitlines()]


def test_mass_departure_holds_untags_back_until_confirmed(start_host, segments, mailchimp):
    vip = [f"vip{i}@contoso.com" for i in range(10)]
    plain_snapshot(segments, "Vip", "2026/11/28/1700", [f"{e},A,B" for e in vip])
    host = start_host()
    destination = create_destination(host, segments=["Vip"], mapping={"email": "Email", "mergeFields": {}})
    assert wait_for_run(host, start_export(host, destination["id"]))["counts"]["created"] == 10

    # A broken upstream export: 7 of the 10 members seem to have left (70 % > UNTAG_GUARD_PERCENT 20 %).
    plain_snapshot(segments, "Vip", "2026/11/28/1800", [f"{e},A,B" for e in vip[:3]])
    held = wait_for_run(host, start_export(host, destination["id"]))
    assert_accounted(held)
    assert held["status"] == "completed_with_errors"
    assert (held["counts"]["untagged"], held["counts"]["untagHeld"]) == (0, 7)
    assert "7 of the 10 members carrying tag 'Vip'" in held["message"] and '"confirmUntag": true' in held["message"]
    assert sorted(e for e, tags in tags_of(mailchimp).items() if "Vip" in tags) == sorted(vip)  # nobody lost it

    confirmed = wait_for_run(host, start_export(host, destination["id"], confirmUntag=True))
    assert (confirmed["counts"]["untagged"], confirmed["counts"]["untagHeld"], confirmed["status"]) == (7, 0, "succeeded")
    tags = tags_of(mailchimp)
    assert {e for e, t in tags.items() if "Vip" in t} == set(vip[:3])


def test_a_mapping_in_another_letter_case_exports_instead_of_untagging_everyone(start_host, segments, mailchimp):
    people = [f"p{i}@contoso.com" for i in range(6)]
    plain_snapshot(segments, "Vip", "2026/11/28/1700", [f"{e},Ann,Lee" for e in people])
    host = start_host(UNTAG_GUARD_PERCENT="100")  # no guard: the column rule alone must keep the tags on
    destination = create_destination(host, segments=["Vip"], mapping={"email": "Email", "mergeFields": {"FNAME": "FirstName"}})
    assert wait_for_run(host, start_export(host, destination["id"]))["counts"]["created"] == 6

    # The same people, in a snapshot whose header now says "email" and "firstname".
    plain_snapshot(segments, "Vip", "2026/11/28/1800", [f"{e},Anna,Lee" for e in people], header="email,firstname,lastname")
    run = wait_for_run(host, start_export(host, destination["id"]))
    assert_accounted(run)
    assert (run["status"], run["counts"]["invalid"], run["counts"]["updated"], run["counts"]["untagged"]) == ("succeeded", 0, 6, 0)
    after = members(mailchimp)
    assert all(after[e]["merge_fields"]["FNAME"] == "Anna" and {t["name"] for t in after[e]["tags"]} == {"Vip"} for e in people)


def test_a_mapping_matching_two_columns_by_case_is_refused_before_anything_is_sent(start_host, segments, mailchimp):
    plain_snapshot(segments, "Twice", "2026/11/28/1700", ["a@contoso.com,b@contoso.com"], header="Mail,MAIL")
    host = start_host()
    destination = create_destination(host, segments=["Twice"], mapping={"email": "mail", "mergeFields": {}})
    refused = host.call("POST", f"destinations/{destination['id']}/exports")
    assert refused.status_code == 422
    assert "'mail' matches ['Mail', 'MAIL']" in refused.json()["error"] and "map one of them exactly" in refused.json()["error"]
    assert mailchimp.stats()["members_written"] == 0


def test_a_bad_optional_value_sends_the_member_without_it_and_keeps_its_tag(start_host, segments, mailchimp):
    made = requests.post(f"{mailchimp.api_root}/lists/{DEMO_AUDIENCE}/merge-fields", auth=AUTH, timeout=10,
                         json={"tag": "BDAY", "name": "Birthday", "type": "birthday"})
    assert made.status_code == 200, made.text
    plain_snapshot(segments, "Vip", "2026/11/28/1700", ["ann@contoso.com,Ann,31/12", "bo@contoso.com,Bo,12/31"],
                   header="Email,FirstName,Birthday")
    host = start_host()
    destination = create_destination(host, segments=["Vip"],
                                     mapping={"email": "Email", "mergeFields": {"FNAME": "FirstName", "BDAY": "Birthday"}})
    run = wait_for_run(host, start_export(host, destination["id"]))
    assert_accounted(run)
    assert (run["status"], run["counts"]["created"], run["counts"]["invalid"], run["counts"]["fieldProblems"]) == (
        "completed_with_errors", 2, 0, 1)
    after = members(mailchimp)
    assert after["ann@contoso.com"]["merge_fields"]["FNAME"] == "Ann" and after["ann@contoso.com"]["merge_fields"]["BDAY"] == ""
    assert after["bo@contoso.com"]["merge_fields"]["BDAY"] == "12/31"
    assert all({t["name"] for t in m["tags"]} == {"Vip"} for m in after.values())
    [line] = errors_of(host, run["id"])
    assert (line["source"], line["row"], line["column"], line["mergeTag"], line["segment"]) == ("field", 1, "Birthday", "BDAY", "Vip")
    assert "04/17" in line["reason"] and "31/12" not in line["reason"]


def test_withdrawn_consent_stops_a_running_export_at_the_next_chunk(start_host, segments, mailchimp):
    people = [f"c{i}@contoso.com" for i in range(3000)]
    plain_snapshot(segments, "Vip", "2026/11/28/1700", [f"{e},A,B" for e in people])
    mailchimp.admin("POST", "latency", json={"profile": "realistic"})
    host = start_host(EXPORT_CHUNK_SIZE="20", MAILCHIMP_MAX_CONNECTIONS="1")  # 150 chunks, more than run at once
    destination = create_destination(host, segments=["Vip"], mapping={"email": "Email", "mergeFields": {}})
    run_id = start_export(host, destination["id"])
    wait_for(lambda: (host.call("GET", f"exports/{run_id}").json()["chunks"]["done"] or 0) >= 2, "two chunks done")
    withdrawn = host.call("PATCH", f"destinations/{destination['id']}", json={"consent": {"accepted": False}})
    assert withdrawn.status_code == 200, withdrawn.text
    run = wait_for_run(host, run_id, timeout=180)
    assert_accounted(run)
    sent = len(members(mailchimp))
    assert run["status"] == "cancelled" and "consent withdrawn by" in run["message"]
    assert run["counts"]["created"] == sent and run["counts"]["failed"] == 3000 - sent and sent < 3000
    failures = [e for e in errors_of(host, run_id) if e["source"] == "failure"]
    assert len(failures) == 3000 - sent and all("consent withdrawn by" in e["reason"] for e in failures)
    time.sleep(1)
    assert len(members(mailchimp)) == sent  # nothing more left after the run ended
    again = host.call("POST", f"destinations/{destination['id']}/exports")
    assert again.status_code == 409 and "consent" in again.json()["error"]


def test_host_killed_while_planning_and_again_while_sending_loses_and_duplicates_nothing(start_host, segments, mailchimp, storage):
    people = [f"k{i}@contoso.com" for i in range(1500)]
    rows = [f"{e},A,B" for e in people] + ["not-an-address,A,B", f"{people[0].upper()},A,B"]
    plain_snapshot(segments, "Vip", "2026/11/28/1700", rows)
    # 150 chunks: planning writes (and streams) chunk files for a few seconds, watched closely below, so the kill lands
    # in it; every chunk costs storage round trips again when sent, so no more chunks than that.
    settings = {"EXPORT_CHUNK_SIZE": "10"}
    host = start_host(lease_seconds=5, name="first", **settings)
    destination = create_destination(host, segments=["Vip"], mapping={"email": "Email", "mergeFields": {}})
    run_id = start_export(host, destination["id"])
    runs = RunTable(table_service(storage.connection_string), TABLE_RUNS)
    # chunks recorded as streamed (their messages go out while planning reads on): planning again must reuse them;
    # watched closely, so the kill lands while planning
    wait_for(lambda: sum(1 for chunk in runs.chunks(run_id) if chunk.get("streamed")) >= 5, "planning streaming chunks",
             timeout=60, every=0.02)
    host.kill()  # only the host restarts; storage and Mailchimp keep running
    assert runs.get(run_id).total_chunks is None  # killed while planning: before the plan was frozen
    second = start_host(lease_seconds=5, name="second", **settings)
    wait_for(chunks_counted(runs, run_id, 20), "chunks being sent", timeout=120)  # the plan made again and frozen
    second.kill()
    assert_cut_mid_run(runs, run_id)
    third = start_host(lease_seconds=5, name="third", **settings)
    run = wait_for_run(third, run_id, timeout=300)
    assert_accounted(run)
    assert (run["counts"]["read"], run["counts"]["invalid"], run["counts"]["duplicates"]) == (1502, 1, 1)
    assert (run["counts"]["created"], run["counts"]["failed"], run["counts"]["refused"]) == (1500, 0, 0)
    after = members(mailchimp)
    assert sorted(after) == sorted(people)  # each exactly once (the dump is keyed by address, so count too)
    assert len(mailchimp.admin("GET", f"lists/{DEMO_AUDIENCE}/members").json()["members"]) == 1500
    assert all({t["name"] for t in m["tags"]} == {"Vip"} for m in after.values())


def test_a_chunk_whose_tagging_keeps_failing_counts_its_members_written_and_only_the_tag_failed(start_host, segments, mailchimp):
    people = [f"t{i}@contoso.com" for i in range(40)]
    plain_snapshot(segments, "Vip", "2026/11/28/1700", [f"{e},A,B" for e in people])
    # New members get their tag inside the batch-subscribe call; the static-segment call is left for members not
    # written that only miss the tag. So they are in the audience already, untagged, and nothing else changes.
    for email in people:
        mailchimp.admin("POST", "members", json={"list_id": DEMO_AUDIENCE, "email": email, "status": "subscribed"})
    host = start_host(MAILCHIMP_RETRY_SECONDS="1")
    destination = create_destination(host, segments=["Vip"], mapping={"email": "Email", "mergeFields": {}})
    # Every tag call fails (500): the chunk is poisoned after 5 deliveries.
    mailchimp.admin("POST", "faults", json={"rates": {"500": 1.0}, "path": f"/lists/{DEMO_AUDIENCE}/segments/[0-9]+$",
                                            "method": "POST", "seed": 1})
    run = wait_for_run(host, start_export(host, destination["id"]), timeout=180)
    assert_accounted(run)
    assert (run["status"], run["counts"]["unchanged"], run["counts"]["failed"], run["counts"]["tagged"], run["counts"]["tagFailed"]) == (
        "completed_with_errors", 40, 0, 0, 40)
    assert sorted(members(mailchimp)) == sorted(people)
    lines = errors_of(host, run["id"])
    assert len(lines) == 40 and all(e["source"] == "tag" and "gave up after repeated failures" in e["reason"] for e in lines)
