"""Erasure at a person's request through the local stack: the API and the drop folder, the local Mailchimp's
delete-permanent, every blob of the work container, the record and the logs."""
from __future__ import annotations

import json
import time

import pytest
from azure.storage.blob import BlobServiceClient
from azure.storage.queue import QueueClient

from devhost.queue_listener import ensure_queue
from shared.config import CONTAINER_ERASURES, CONTAINER_WORK, QUEUE_ERASURE_EVENTS, QUEUE_SEGMENT_EVENTS
from shared.emails import subscriber_hash
from tests.e2e.conftest import (DEMO_AUDIENCE, DEMO_KEY, blob_created, create_destination, handled_messages, host_log,
                                log_lines, start_export, wait_for, wait_for_clean_up, wait_for_run)
from tests.e2e.test_logs import LOOKS_LIKE_EMAIL

EVENTS = ("--blob-events", f"segments={QUEUE_SEGMENT_EVENTS}", "--blob-events", f"{CONTAINER_ERASURES}={QUEUE_ERASURE_EVENTS}")
ANN = "ann.erased@contoso.com"
PEOPLE = [ANN, *(f"person{i}@fabrikam.com" for i in range(5))]


def snapshot(segments, stamp: str = "2026/11/28/1700") -> None:
    rows = "".join(f"{email},P{i},L{i}\r\n" for i, email in enumerate(PEOPLE))
    segments.upload_blob(f"People/{stamp}/part-0.csv", ("Email,FirstName,LastName\r\n" + rows).encode(), overwrite=True)
    segments.upload_blob(f"People/{stamp}/_SUCCESS", b"", overwrite=True)


def audience(mailchimp, list_id: str) -> dict:
    return mailchimp.admin("GET", f"lists/{list_id}/members").json()


def work_blobs_naming(storage, address: str) -> list[str]:
    container = BlobServiceClient.from_connection_string(storage.connection_string).get_container_client(CONTAINER_WORK)
    return [blob.name for blob in container.list_blobs()
            if address.encode() in container.download_blob(blob.name).readall().lower()]


def wait_for_erasure(host, erasure_id: str) -> dict:
    return wait_for(lambda: (found := host.call("GET", f"erasures/{erasure_id}").json())["status"] not in
                    ("queued", "running") and found, f"erasure {erasure_id}", timeout=90)


@pytest.fixture
def two_exported(start_host, segments, storage, mailchimp):
    """One person exported to two destinations' audiences, and named in a stored per-row report (a preview)."""
    host = start_host(extra_args=EVENTS)
    second = mailchimp.admin("POST", "audiences", json={"api_key": DEMO_KEY, "name": "Second"}).json()["id"]
    snapshot(segments)
    mapping = {"email": "Email", "mergeFields": {"FNAME": "FirstName"}}
    first = create_destination(host, segments=["People"], mapping=mapping, exportOnArrival=False)
    other = create_destination(host, segments=["People"], mapping=mapping, exportOnArrival=False, audienceId=second)
    preview = start_export(host, first["id"], dryRun=True)  # before the export: every row a change, in its report
    wait_for(lambda: host.call("GET", f"exports/{preview}").json()["status"] == "previewed", "the preview")
    for destination in (first, other):
        run = wait_for_run(host, start_export(host, destination["id"]))
        assert run["status"] == "succeeded", run
        wait_for_clean_up(storage, run["id"])  # its chunk files deleted: the scans below read a container at rest
    for list_id in (DEMO_AUDIENCE, second):
        assert ANN in {m["email_address"] for m in audience(mailchimp, list_id)["members"]}
    assert work_blobs_naming(storage, ANN), "the preview's report names her: the scan below must find something"
    return host, first, other, second


def test_an_erasure_removes_the_person_from_both_audiences_and_every_stored_file(two_exported, storage, mailchimp, tmp_path):
    host, first, other, second = two_exported
    for user in ("operator", "norole"):
        assert host.call("POST", "erasures", user=user, json={"emails": [ANN]}).status_code == 403
        assert host.call("GET", "erasures", user=user).status_code == 403
    refused = host.call("POST", "erasures", json={"emails": ["person0@fabrikam.com", "not@@an.address"]})
    assert refused.status_code == 400 and refused.json()["details"][0]["field"] == "emails[1]"
    assert "not@@an.address" not in refused.text

    answer = host.call("POST", "erasures", json={"emails": [" Ann.Erased@Contoso.com "]})
    assert answer.status_code == 202, answer.text
    assert answer.json()["addresses"] == 1 and answer.headers["Location"] == f"/api/erasures/{answer.json()['id']}"
    done = wait_for_erasure(host, answer.json()["id"])

    assert done["status"] == "done", done
    assert sorted(a["audienceId"] for a in done["audiences"]) == sorted([DEMO_AUDIENCE, second])
    assert all((a["deleted"], a["pending"], a["refused"]) == (1, 0, 0) for a in done["audiences"]), done
    assert done["subscribers"][0]["hash"] == subscriber_hash(ANN) and done["filesScrubbed"] >= 1
    for list_id in (DEMO_AUDIENCE, second):
        held = audience(mailchimp, list_id)
        assert ANN not in {m["email_address"] for m in held["members"]}  # deleted, not archived
        assert subscriber_hash(ANN) in held["permanently_deleted"]
        assert len(held["members"]) == len(PEOPLE) - 1  # nobody else
    assert work_blobs_naming(storage, ANN) == []
    assert work_blobs_naming(storage, "person0@fabrikam.com")  # the others stay
    listed = host.call("GET", "erasures?top=5").json()["erasures"]
    assert [e["id"] for e in listed] == [done["id"]] and listed[0]["requestedBy"]
    assert "@" not in listed[0]["requestedBy"] and " " not in listed[0]["requestedBy"]  # an object id, not a name
    for shown in (json.dumps(done), json.dumps(listed)):
        assert "ann.erased" not in shown.lower()

    time.sleep(0.5)  # the handler's last lines follow its invocation line
    leaks = [line for line in log_lines(host_log(tmp_path)) if "ann.erased" in line.lower() or LOOKS_LIKE_EMAIL.search(line)]
    assert not leaks, leaks[:5]


def test_an_erased_person_in_the_next_snapshot_is_refused_unless_the_destination_re_adds_them(two_exported, segments,
                                                                                              mailchimp):
    host, first, other, second = two_exported
    done = wait_for_erasure(host, host.call("POST", "erasures", json={"emails": [ANN]}).json()["id"])
    assert done["status"] == "done"
    snapshot(segments, "2026/11/29/1700")
    run = wait_for_run(host, start_export(host, first["id"]))
    assert run["counts"]["refused"] == 1 and run["counts"]["created"] == 0, run
    report = [json.loads(line) for line in host.call("GET", f"exports/{run['id']}/errors").text.splitlines()]
    assert ANN not in json.dumps(report)  # the connector keeps no new copy of her address
    erased = [line for line in report if line["source"] == "erasure"]
    assert len(erased) == 1 and erased[0]["memberHash"] == subscriber_hash(ANN) and erased[0]["email"] is None
    assert erased[0]["reason"].startswith("erased on 20") and erased[0]["reason"].endswith("at the person's request")
    assert ANN not in {m["email_address"] for m in audience(mailchimp, DEMO_AUDIENCE)["members"]}
    # a destination that says so exports her again: sent, and Mailchimp itself answers for a permanently deleted contact
    changed = host.call("PATCH", f"destinations/{other['id']}", json={"reAddErased": True})
    assert changed.status_code == 200 and changed.json()["reAddErased"] is True, changed.text
    again = wait_for_run(host, start_export(host, other["id"]))
    sent = [json.loads(line) for line in host.call("GET", f"exports/{again['id']}/errors").text.splitlines()]
    assert [line["source"] for line in sent if line.get("email") == ANN] == ["mailchimp"], sent


def test_files_dropped_as_json_lines_and_csv_become_requests_and_are_deleted_a_bad_one_is_kept(start_host, storage,
                                                                                              mailchimp, tmp_path):
    """A bad line costs only itself: the valid addresses of bad.csv are erased, the file naming them is deleted and
    the bad line alone is kept in bad.rejected.csv (never read as a request); a file with nothing usable is kept."""
    host = start_host(extra_args=EVENTS)
    drops = BlobServiceClient.from_connection_string(storage.connection_string).get_container_client(CONTAINER_ERASURES)
    wait_for(lambda: drops.exists(), "the devhost to create the erasures container")
    drops.upload_blob("platform/one.jsonl", f'{{"email": "{ANN}"}}\n{{"email": "person1@fabrikam.com"}}\n'.encode())
    drops.upload_blob("platform/two.csv", "Id,EMAIL\r\n1,person2@fabrikam.com\r\n".encode())
    drops.upload_blob("platform/bad.csv", "email\r\nperson3@fabrikam.com\r\nperson4@@fabrikam.com\r\n".encode())
    drops.upload_blob("platform/useless.jsonl", b'{"email": "person5@@fabrikam.com"}\n')

    listed = wait_for(lambda: len(found := host.call("GET", "erasures").json()["erasures"]) == 4 and found,
                      "four requests from the drop folder")
    by_file = {e["requestedBy"]: e for e in listed}
    assert set(by_file) == {"storage:platform/one.jsonl", "storage:platform/two.csv", "storage:platform/bad.csv",
                            "storage:platform/useless.jsonl"}
    assert by_file["storage:platform/useless.jsonl"]["status"] == "rejected"
    assert "line 1" in by_file["storage:platform/useless.jsonl"]["message"]
    for name, addresses in (("storage:platform/one.jsonl", 2), ("storage:platform/two.csv", 1)):
        assert by_file[name]["addresses"] == addresses
        assert wait_for_erasure(host, by_file[name]["id"])["status"] == "done"
    bad = wait_for_erasure(host, by_file["storage:platform/bad.csv"]["id"])
    assert bad["addresses"] == 1 and bad["subscribers"][0]["hash"] == subscriber_hash("person3@fabrikam.com")
    assert bad["status"] == "completed_with_errors" and "line 3" in bad["message"], bad
    assert "platform/bad.rejected.csv" in bad["message"]
    time.sleep(2)  # the rejected-lines file raised an event too: it must not become a request
    assert len(host.call("GET", "erasures").json()["erasures"]) == 4
    # used files hold addresses: deleted; only the bad line is kept, and the file nothing could be used from
    assert sorted(blob.name for blob in drops.list_blobs()) == ["platform/bad.rejected.csv", "platform/useless.jsonl"]
    assert drops.download_blob("platform/bad.rejected.csv").readall() == b"email\r\nperson4@@fabrikam.com\r\n"
    assert "person4" not in json.dumps(listed) and "person4" not in json.dumps(bad)


def test_poisoned_arrival_events_are_warned_of_and_handled_once_more(start_host, segments, storage, mailchimp, tmp_path):
    """The event queues' poison handlers: a file announced by a poisoned event is handled once more, as a fresh event
    would be (nothing else would ever record a dropped erasure file; a destination exporting on arrival only would
    not export the snapshot until a newer one lands). Both log the warning with `poisonQueue` the poison-message alert
    reads, naming the message, never the file; nothing the host logged holds an address."""
    host = start_host()  # no blob events: only the messages below announce the files
    snapshot(segments)
    follows = create_destination(host, segments=["People"], schedule={"enabled": False})  # on arrival only
    drops = BlobServiceClient.from_connection_string(storage.connection_string).get_container_client(CONTAINER_ERASURES)
    if not drops.exists():
        drops.create_container()
    drops.upload_blob("platform/late.jsonl", b'{"email": "someone.else@fabrikam.com"}\n')  # not in the snapshot
    for queue, message in ((QUEUE_ERASURE_EVENTS, blob_created("platform/late.jsonl", CONTAINER_ERASURES)),
                           (QUEUE_SEGMENT_EVENTS, blob_created("People/2026/11/28/1700/_SUCCESS"))):
        poison = QueueClient.from_connection_string(storage.connection_string, queue + "-poison")
        ensure_queue(poison)
        poison.send_message(message)

    (erasure,) = wait_for(lambda: host.call("GET", "erasures").json()["erasures"], "the request from the poisoned event")
    assert erasure["requestedBy"] == "storage:platform/late.jsonl" and erasure["addresses"] == 1
    wait_for(lambda: not drops.get_blob_client("platform/late.jsonl").exists(), "the file deleted (it holds an address)")
    (run,) = wait_for(lambda: host.call("GET", f"destinations/{follows['id']}/exports").json()["exports"],
                      "the export of the snapshot the poisoned event announced")
    assert run["trigger"] == "storage" and wait_for_run(host, run["id"])["status"] == "succeeded"
    assert wait_for_erasure(host, erasure["id"])["status"] == "done"
    wait_for(lambda: handled_messages(host_log(tmp_path), "segment_arrived_poisoned"), "the poisoned segment event")
    lines = log_lines(host_log(tmp_path))
    warned = {queue: [line for line in lines if f"poisoned into queue {queue}-poison (message " in line]
              for queue in (QUEUE_ERASURE_EVENTS, QUEUE_SEGMENT_EVENTS)}
    assert all(len(found) == 1 and "handled once more" in found[0] for found in warned.values()), warned
    assert not any(name in line for found in warned.values() for line in found for name in ("late.jsonl", "People/", "_SUCCESS"))
    assert not [line for line in lines if LOOKS_LIKE_EMAIL.search(line)]
    assert len(host.call("GET", f"destinations/{follows['id']}/exports").json()["exports"]) == 1
