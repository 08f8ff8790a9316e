"""An on-demand export through the local Functions host: accounting, idempotence, failures, crashes, bad files."""
from __future__ import annotations

import base64
import json
import time
from datetime import datetime, timezone

import requests
from azure.storage.blob import BlobServiceClient
from azure.storage.queue import QueueClient

from shared.config import QUEUE_CHUNKS
from shared.sample_segments import write_sample_export
from tests.e2e.conftest import (DEMO_AUDIENCE, assert_accounted, create_destination, start_export, wait_for_run)

TAKEN = datetime(2026, 11, 28, 17, 0, tzinfo=timezone.utc)


def upload(container, **kwargs):
    return write_sample_export(lambda name, data: container.upload_blob(name, data, overwrite=True),
                               taken_at=kwargs.pop("taken_at", TAKEN), **kwargs)


def audience_members(mailchimp) -> list[dict]:
    return mailchimp.admin("GET", f"lists/{DEMO_AUDIENCE}/members").json()["members"]


def test_function_key_is_required(start_host):
    host = start_host()
    assert requests.get(f"{host.url}/destinations", timeout=10).status_code == 401
    assert host.call("GET", "destinations").status_code == 200


def test_full_export_accounts_for_every_row_and_a_second_run_creates_nothing(start_host, segments, mailchimp, storage):
    stats = upload(segments, segments={"HighValueCustomers": 1500, "LapsedBuyers": 700}, rows_per_partition=400)
    host = start_host()
    destination = create_destination(host, segments=["HighValueCustomers", "LapsedBuyers"])
    assert "apiKey" not in json.dumps(destination) and mailchimp_key_absent(destination)

    run = wait_for_run(host, start_export(host, destination["id"]))
    assert_accounted(run)
    c = run["counts"]
    expected_members = sum(s.members for s in stats.values())
    assert c["read"] == sum(s.rows for s in stats.values())
    assert c["invalid"] == sum(s.invalid for s in stats.values()) and c["invalid"] > 0
    assert c["duplicates"] == sum(s.duplicates + s.shared for s in stats.values()) and c["duplicates"] > 0
    assert c["created"] + c["refused"] == expected_members and c["created"] > 0
    assert c["tagged"] == c["created"]
    assert run["trigger"] == "http" and run["status"] in ("succeeded", "completed_with_errors")
    assert {p["segment"]: p["snapshot"] for p in run["segments"]} == {"HighValueCustomers": "2026-11-28T17:00Z", "LapsedBuyers": "2026-11-28T17:00Z"}

    members = audience_members(mailchimp)
    assert len(members) == c["created"]
    shared_people = [m for m in members if {t["name"] for t in m["tags"]} == {"HighValueCustomers", "LapsedBuyers"}]
    assert len(shared_people) > 0  # one person in both segments is one member with both tags

    errors = [json.loads(line) for line in host.call("GET", f"exports/{run['id']}/errors").text.splitlines()]
    assert len(errors) == c["invalid"] + c["refused"] + c["failed"]
    work = BlobServiceClient.from_connection_string(storage.connection_string).get_container_client("export-work")
    assert [b.name for b in work.list_blobs(name_starts_with=f"runs/{run['id']}/chunks/")] == []  # no copies of people left
    assert {e["source"] for e in errors} <= {"validation", "mailchimp"}
    assert all(e["segment"] and e["partition"] and e["row"] >= 1 and e["reason"] for e in errors)

    written = mailchimp.stats()["members_written"]
    again = wait_for_run(host, start_export(host, destination["id"]))
    assert_accounted(again)
    assert again["counts"]["created"] == 0 and again["counts"]["unchanged"] == c["created"]
    assert again["counts"]["tagged"] == c["tagged"]
    assert mailchimp.stats()["members_written"] == written  # nothing unchanged or already tagged is sent again
    assert len(audience_members(mailchimp)) == c["created"]
    listed = host.call("GET", f"destinations/{destination['id']}/exports").json()["exports"]
    assert [r["id"] for r in listed] == [again["id"], run["id"]]


def mailchimp_key_absent(document: dict) -> bool:
    return "0123456789abcdef" not in json.dumps(document)


def test_redelivered_chunk_changes_and_counts_nothing(start_host, segments, mailchimp, storage):
    upload(segments, segments={"HighValueCustomers": 600}, rows_per_partition=300)
    host = start_host()
    destination = create_destination(host)
    run = wait_for_run(host, start_export(host, destination["id"]))
    before = mailchimp.stats()["requests_total"]
    queue = QueueClient.from_connection_string(storage.connection_string, QUEUE_CHUNKS)
    for chunk in range(run["chunks"]["total"]):
        queue.send_message(base64.b64encode(json.dumps({"runId": run["id"], "chunk": chunk}).encode()).decode())
    deadline = time.monotonic() + 20
    while queue.get_queue_properties().approximate_message_count and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(1)
    after = host.call("GET", f"exports/{run['id']}").json()
    assert after["counts"] == run["counts"] and after["chunks"] == run["chunks"]
    assert mailchimp.stats()["requests_total"] == before  # not one more call to Mailchimp


def test_a_chunk_mailchimp_keeps_failing_is_poisoned_and_its_members_counted_failed(start_host, segments, mailchimp):
    upload(segments, segments={"HighValueCustomers": 300}, rows_per_partition=300, invalid_rate=0, duplicate_rate=0)
    host = start_host(MAILCHIMP_RETRY_SECONDS="1")
    destination = create_destination(host)
    mailchimp.admin("POST", "faults", json={"rates": {"500": 1.0}, "path": f"/lists/{DEMO_AUDIENCE}$", "method": "POST", "seed": 1})
    run = wait_for_run(host, start_export(host, destination["id"]), timeout=180)
    assert_accounted(run)
    assert run["status"] == "failed"
    assert run["counts"]["failed"] == 300 and run["counts"]["created"] == 0
    errors = [json.loads(line) for line in host.call("GET", f"exports/{run['id']}/errors").text.splitlines()]
    assert len(errors) == 300 and all(e["source"] == "failure" and "gave up" in e["reason"] for e in errors)


def test_host_killed_mid_run_finishes_after_restart_with_nothing_lost_or_duplicated(start_host, segments, mailchimp):
    stats = upload(segments, segments={"HighValueCustomers": 6000}, rows_per_partition=1000)
    mailchimp.admin("POST", "latency", json={"profile": "realistic"})
    host = start_host(lease_seconds=5, name="first")
    destination = create_destination(host)
    run_id = start_export(host, destination["id"])
    deadline = time.monotonic() + 60
    while host.call("GET", f"exports/{run_id}").json()["chunks"]["done"] < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    host.kill()
    progress = None
    restarted = start_host(lease_seconds=5, name="second")
    run = wait_for_run(restarted, run_id, timeout=240)
    assert_accounted(run)
    expected = stats["HighValueCustomers"]
    assert run["counts"]["read"] == expected.rows
    delivered = run["counts"]["created"] + run["counts"]["updated"] + run["counts"]["unchanged"]
    assert delivered + run["counts"]["refused"] == expected.members and run["counts"]["failed"] == 0
    assert len(audience_members(mailchimp)) == delivered
    assert progress is None


def test_bad_files_give_clear_errors_while_good_rows_go_through(start_host, segments, mailchimp):
    header = "Email,FirstName,LastName\r\n"
    folder = "Plain/2026/11/28/1700/"
    segments.upload_blob(folder + "a.csv", (header + 'ann@contoso.com,Ann,"Lee, Jr."\r\n'
                                            'bad-row-without-enough-fields\r\n'
                                            'not-an-email,Bob,Ray\r\n').encode())
    segments.upload_blob(folder + "b.csv", header.encode() + b"cy@fabrikam.com,C\xe9line,Dion\r\ndan@fabrikam.com,Dan,Fry\r\n")
    segments.upload_blob(folder + "c.csv", header.encode())  # an empty partition
    segments.upload_blob(folder + "_SUCCESS", b"")
    host = start_host()
    destination = create_destination(host, segments=["Plain"])
    run = wait_for_run(host, start_export(host, destination["id"]))
    assert_accounted(run)
    assert run["counts"]["read"] == 5 and run["counts"]["invalid"] == 3 and run["counts"]["created"] == 2
    errors = [json.loads(line) for line in host.call("GET", f"exports/{run['id']}/errors").text.splitlines()]
    by_row = {(e["partition"].rsplit("/", 1)[-1], e["row"]): e["reason"] for e in errors}
    assert "field" in by_row[("a.csv", 2)]
    assert "email" in by_row[("a.csv", 3)]
    assert "UTF-8" in by_row[("b.csv", 1)] or "utf-8" in by_row[("b.csv", 1)].lower()


def test_export_refused_when_the_mapping_names_a_missing_column_or_the_segment_has_no_snapshot(start_host, segments, mailchimp):
    upload(segments, segments={"HighValueCustomers": 50})
    host = start_host()
    destination = create_destination(host, segments=["HighValueCustomers", "NotThereYet"],
                                     mapping={"email": "EmailAddress", "mergeFields": {}})
    refused = host.call("POST", f"destinations/{destination['id']}/exports", json={"segments": ["HighValueCustomers"]})
    assert refused.status_code == 422 and "EmailAddress" in refused.json()["error"] and "fix the mapping" in refused.json()["error"]
    missing = host.call("POST", f"destinations/{destination['id']}/exports", json={"segments": ["NotThereYet"]})
    assert missing.status_code == 409 and "no complete snapshot" in missing.json()["error"]
    unknown = host.call("POST", f"destinations/{destination['id']}/exports", json={"segments": ["Other"]})
    assert unknown.status_code == 400


def test_two_hosts_sharing_one_account_keep_mailchimps_connection_cap_together(start_host, segments, mailchimp, tmp_path):
    stats = upload(segments, segments={"HighValueCustomers": 8000}, rows_per_partition=2000)
    mailchimp.admin("POST", "latency", json={"profile": "realistic", "base_ms": 60, "per_member_written_ms": 0.3})
    mailchimp.admin("POST", "connection-cap", json={"cap": 4})
    # Each host alone may open 4 connections; only the shared blob-lease slots keep the two at 4 together.
    settings = {"MAILCHIMP_MAX_CONNECTIONS": "4", "PYTHON_THREADPOOL_THREAD_COUNT": "16", "EXPORT_CHUNK_SIZE": "100"}
    first = start_host(name="first", **settings)
    second = start_host(name="second", **settings)
    destination = create_destination(first)
    run = wait_for_run(second, start_export(first, destination["id"]), timeout=240)
    assert_accounted(run)
    assert run["counts"]["created"] + run["counts"]["refused"] == stats["HighValueCustomers"].members
    server = mailchimp.stats()
    assert server["max_concurrent"] == 4 and server["by_status"].get("429", 0) == 0
    worked = [(tmp_path / f"{name}.log").read_text().count("function=export_chunk") for name in ("first", "second")]
    assert all(count > 0 for count in worked), worked  # both instances took chunks


def plain_snapshot(container, segment: str, stamp: str, emails: list[str]) -> None:
    folder = f"{segment}/{stamp}/"
    body = "Email,FirstName,LastName\r\n" + "".join(f"{e},First,Last\r\n" for e in emails)
    container.upload_blob(folder + "part-0.csv", body.encode(), overwrite=True)
    container.upload_blob(folder + "_SUCCESS", b"", overwrite=True)


def test_members_who_leave_a_segment_lose_its_tag_but_hand_made_tags_are_only_added_to(start_host, segments, mailchimp):
    vip = [f"vip{i}@contoso.com" for i in range(10)]
    lapsed = [f"lapsed{i}@fabrikam.com" for i in range(5)]
    auth = ("any", "0123456789abcdef0123456789abcdef-us6")
    mailchimp.admin("POST", "members", json={"list_id": DEMO_AUDIENCE, "email": "outsider@fabrikam.com", "status": "subscribed"})
    made = requests.post(f"{mailchimp.api_root}/lists/{DEMO_AUDIENCE}/segments", auth=auth, timeout=10,
                         json={"name": "Lapsed", "static_segment": ["outsider@fabrikam.com"]})
    assert made.status_code == 200, made.text  # a tag a marketer made by hand before the connector came
    plain_snapshot(segments, "Vip", "2026/11/28/1700", vip)
    plain_snapshot(segments, "Lapsed", "2026/11/28/1700", lapsed)
    host = start_host()
    destination = create_destination(host, segments=["Vip", "Lapsed"], mapping={"email": "Email", "mergeFields": {}})
    first = wait_for_run(host, start_export(host, destination["id"]))
    assert first["counts"]["created"] == 15 and first["counts"]["untagged"] == 0

    plain_snapshot(segments, "Vip", "2026/11/28/1800", vip[:6] + ["newvip@contoso.com"])
    plain_snapshot(segments, "Lapsed", "2026/11/28/1800", lapsed[:3])
    second = wait_for_run(host, start_export(host, destination["id"]))
    assert_accounted(second)
    by_segment = {p["segment"]: p["counts"] for p in second["segments"]}
    assert by_segment["Vip"]["untagged"] == 4 and by_segment["Lapsed"]["untagged"] == 0
    assert second["counts"]["created"] == 1 and second["counts"]["read"] == 10
    tags = {m["email_address"]: {t["name"] for t in m["tags"]} for m in audience_members(mailchimp)}
    assert all(tags[e] == set() for e in vip[6:])  # still in the audience, no longer tagged
    assert all(tags[e] == {"Vip"} for e in vip[:6] + ["newvip@contoso.com"])
    assert all(tags[e] == {"Lapsed"} for e in lapsed)  # the hand-made tag keeps everyone it had
    assert tags["outsider@fabrikam.com"] == {"Lapsed"}


def test_a_customer_insights_snapshot_missing_a_partition_is_never_exported(start_host, segments, mailchimp):
    written: list[tuple[str, bytes]] = []
    write_sample_export(lambda name, data: written.append((name, data)), segments={"HighValueCustomers": 900},
                        rows_per_partition=300, taken_at=TAKEN)
    partitions = [name for name, _ in written if name.endswith(".csv")]
    for name, data in written:
        if name != partitions[1]:  # model.json lists three partitions; the second never arrives
            segments.upload_blob(name, data, overwrite=True)
    host = start_host()
    destination = create_destination(host)
    refused = host.call("POST", f"destinations/{destination['id']}/exports")
    assert refused.status_code == 409 and "no complete snapshot" in refused.json()["error"]
    segments.upload_blob(partitions[1], dict(written)[partitions[1]])  # the late partition completes it
    run = wait_for_run(host, start_export(host, destination["id"]))
    assert run["counts"]["read"] == 900 and run["segments"][0]["snapshot"] == "2026-11-28T17:00Z"
