"""Hostile segment files through the local Functions host: each stays with its own segment.

The segments container holds good segments beside a hostile file of every kind: model.json files nested 100,000
deep, of 50 MB, with an unknown encoding, a multi-character delimiter, partitions outside the export and a partition
missing; partitions with a 10 MB line, 100,000 fields in a row, an unclosed quote, NUL bytes, invalid UTF-8, gzip
(with and without Content-Encoding), a JSONL row nested 100,000 deep, a headerless plain CSV, a partition storage
refuses to serve (Archive tier) and a snapshot dated ahead of now; and a model.json of `[[[` at the container's root,
beside the plain segments, which stay exportable. An admin's export of a broken segment is refused naming the file
(never a 500) and GET /api/segments lists it with that problem; the good segments and the good rows go through with
every bad row reported by file and row; the timer and the arrival events go on past every hostile file, the run
says which segments it left out and why, no invocation fails, and no email address reaches the log.
"""
from __future__ import annotations

import gzip
import json
from datetime import datetime, timezone

from azure.storage.blob import ContentSettings
from azure.storage.queue import QueueClient

from shared.config import QUEUE_SEGMENT_EVENTS
from shared.sample_segments import write_sample_export
from tests.e2e.conftest import (assert_accounted, blob_created, create_destination, handled_messages, host_log, log_lines, start_export,
                                wait_for, wait_for_run)

TAKEN = datetime(2026, 11, 28, 17, 0, tzinfo=timezone.utc)
STAMP = "2026/11/28/1700/"
MB = 1 << 20
HEADER = b"Email,FirstName,LastName\r\n"
HEADLESS_EMAILS = ("hostile.headless1@contoso.com", "hostile.headless2@contoso.com")

# segment -> what the refusal of an export of it names (the file) and says
REFUSED = {
    "Deep": (422, "CI_deep/Segs/model.json", "SEGMENT_MAX_JSON_DEPTH"),
    "Big": (422, "CI_big/Segs/model.json", "MODEL_JSON_MAX_BYTES"),
    "Klingon": (422, "CI_attrs/Segs/model.json", "encoding 'klingon-8' is not known"),
    "Doubled": (422, "CI_attrs/Segs/model.json", "delimiter ',,' is not one character"),
    "Outside": (422, "CI_attrs/Segs/model.json", "partition location 'https://evil.blob.core.windows.net/loot/x.csv'"),
    "DotDot": (422, "CI_attrs/Segs/model.json", "partition location '../../CI_good/Segs/"),
    "Gz": (422, f"Gz/{STAMP}part-00001.csv", "gzip-compressed"),
    "Missing": (409, f"CI_attrs/Segs/Missing/{STAMP}Missing_2.csv", "no complete snapshot"),
    "Archived": (422, f"Archived/{STAMP}part-00001.csv", "could not be read (BlobArchived)"),
    "Ahead": (422, "Ahead/2099/12/31/2359/", "ahead of now"),
}
GOOD = ["HighValueCustomers", "GoodToo", "Broken", "Nested"]


def entity(name: str, locations: list[str], **settings: str) -> dict:
    return {"name": name, "attributes": [{"name": "Email"}, {"name": "FirstName"}, {"name": "LastName"}],
            "partitions": [{"location": location, "fileFormatSettings": {"delimiter": ",", "encoding": "UTF-8", **settings}}
                           for location in locations]}


def upload_hostile_container(segments) -> None:
    def put(name: str, data: bytes, **kwargs) -> None:
        segments.upload_blob(name, data, overwrite=True, **kwargs)

    write_sample_export(put, {"HighValueCustomers": 300}, root="CI_good", export_name="Segs", taken_at=TAKEN,
                        invalid_rate=0, duplicate_rate=0)
    # model.json files: 100,000 deep; 50 MB; an export whose entities are each broken their own way, beside a good one
    put(f"CI_deep/Segs/Deep/{STAMP}Deep_1.csv", b"hostile.deep@contoso.com,D,Eep\r\n")
    put("CI_deep/Segs/model.json", b'{"entities": ' + b"[" * 100_000 + b"]" * 100_000 + b"}")
    put(f"CI_big/Segs/Big/{STAMP}Big_1.csv", b"hostile.big@contoso.com,B,Ig\r\n")
    big = entity("Big", [f"Big/{STAMP}Big_1.csv"])
    big["description"] = "x" * (50 * MB)
    put("CI_big/Segs/model.json", json.dumps({"entities": [big]}).encode())
    base = "https://contosoinsights.blob.core.windows.net/customerinsights/CI_attrs/Segs/"
    attrs = [
        entity("Klingon", [f"{base}Klingon/{STAMP}Klingon_1.csv"], encoding="klingon-8"),
        entity("Doubled", [f"{base}Doubled/{STAMP}Doubled_1.csv"], delimiter=",,"),
        entity("Outside", ["https://evil.blob.core.windows.net/loot/x.csv"]),
        entity("DotDot", [f"../../CI_good/Segs/HighValueCustomers/{STAMP}HighValueCustomers_1.csv"]),
        entity("Missing", [f"{base}Missing/{STAMP}Missing_1.csv", f"{base}Missing/{STAMP}Missing_2.csv"]),
        entity("GoodToo", [f"{base}GoodToo/{STAMP}GoodToo_1.csv"]),
    ]
    for name in ("Klingon", "Doubled", "Outside", "DotDot", "Missing", "GoodToo"):
        put(f"CI_attrs/Segs/{name}/{STAMP}{name}_1.csv", f"hostile.{name.lower()}@contoso.com,A,B\r\n".encode())
    put(f"CI_attrs/Segs/GoodToo/{STAMP}GoodToo_1.csv", b"hostile.good1@contoso.com,Good,One\r\nhostile.good2@contoso.com,Good,Two\r\n")
    put("CI_attrs/Segs/model.json", json.dumps({"entities": attrs}).encode())
    # partitions: every kind of bad row, among good rows
    put(f"Broken/{STAMP}a.csv", HEADER + b"hostile.ann@contoso.com,Ann,Lee\r\n"
        + b"hostile.long@contoso.com," + b"x" * (10 * MB) + b",Long\r\n"
        + b"hostile.wide@contoso.com,Wide,Row" + b"," * 99_997 + b"\r\n"
        + b'hostile.open@contoso.com,"Never closed,Quote\r\n'
        + b"hostile.bob@contoso.com,Bob,Ray\r\nhostile.cy@contoso.com,Cy,Fox\r\nhostile.dan@contoso.com,Dan,Fry\r\n")
    put(f"Broken/{STAMP}b.csv", HEADER + b"hostile.nul@contoso.com,Nu\x00l,Byte\r\nhostile.utf@contoso.com,Ren\xe9e,Bad\r\n"
        + b"hostile.eve@contoso.com,Eve,Ok\r\n")
    put(f"Broken/{STAMP}c.csv", gzip.compress(HEADER + b"hostile.gz@contoso.com,G,Z\r\n"))
    put(f"Broken/{STAMP}d.csv", gzip.compress(HEADER + b"hostile.fay@contoso.com,Fay,Gz\r\nhostile.gus@contoso.com,Gus,Gz\r\n"),
        content_settings=ContentSettings(content_type="text/csv", content_encoding="gzip"))
    put(f"Broken/{STAMP}_SUCCESS", b"")
    deep_row = b'{"Email": "hostile.deep.row@contoso.com", "FirstName": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    put(f"Nested/{STAMP}a.jsonl", b'{"Email": "hostile.jo@contoso.com", "FirstName": "Jo", "LastName": "Ng"}\n' + deep_row
        + b'\n{"Email": "hostile.kim@contoso.com", "FirstName": "Kim", "LastName": "Ho"}\n')
    put(f"Nested/{STAMP}_SUCCESS", b"")
    put(f"Gz/{STAMP}part-00001.csv", gzip.compress(HEADER + b"hostile.gzh@contoso.com,G,Z\r\n"))
    put(f"Gz/{STAMP}_SUCCESS", b"")
    put(f"Headless/{STAMP}part-00001.csv", ",".join(HEADLESS_EMAILS).encode() + b"\r\nhostile.h3@contoso.com,x\r\n")
    put(f"Headless/{STAMP}_SUCCESS", b"")
    # storage refuses to serve a partition (Archive tier); a snapshot dated ahead of now; and a model.json at the root
    # of the container, which must leave the plain segments beside it (Broken, Nested, Gz, Headless, ...) as they are
    put(f"Archived/{STAMP}part-00001.csv", HEADER + b"hostile.archived@contoso.com,Ar,Chived\r\n")
    segments.get_blob_client(f"Archived/{STAMP}part-00001.csv").set_standard_blob_tier("Archive")
    put(f"Archived/{STAMP}_SUCCESS", b"")
    put("Ahead/2099/12/31/2359/part-00001.csv", HEADER + b"hostile.ahead@contoso.com,Ah,Ead\r\n")
    put("Ahead/2099/12/31/2359/_SUCCESS", b"")
    put("model.json", b"[[[")


def test_an_admin_gets_refusals_naming_broken_files_and_good_rows_go_through_with_bad_rows_reported(start_host, segments, mailchimp):
    upload_hostile_container(segments)
    host = start_host()
    destination = create_destination(host, segments=[*GOOD, *REFUSED], schedule={"enabled": False}, exportOnArrival=False)

    for segment, (status, file, words) in REFUSED.items():
        answer = host.call("POST", f"destinations/{destination['id']}/exports", json={"segments": [segment]})
        assert answer.status_code == status, (segment, answer.status_code, answer.text)
        assert file in answer.json()["error"] and words in answer.json()["error"], (segment, answer.json())

    listed = host.call("GET", "segments")
    assert listed.status_code == 200, listed.text
    catalog = {entry["name"].casefold(): entry for entry in listed.json()["segments"]}
    assert all(catalog[name.casefold()]["usable"] for name in GOOD), catalog
    for segment, (status, file, words) in REFUSED.items():
        entry = catalog[segment.casefold()]
        assert not entry["usable"] and file in (entry["problem"] or entry["waiting"]), (segment, entry)

    run = wait_for_run(host, start_export(host, destination["id"], segments=GOOD), timeout=180)

    assert_accounted(run)
    counts = {part["segment"]: part["counts"] for part in run["segments"]}
    assert counts["HighValueCustomers"]["read"] == 300 and counts["GoodToo"]["created"] == 2
    # d.csv is gzip marked with Content-Encoding: read as stored (never unpacked by the storage client), refused
    assert (counts["Broken"]["read"], counts["Broken"]["invalid"], counts["Broken"]["created"]) == (12, 7, 5)
    assert (counts["Nested"]["read"], counts["Nested"]["invalid"], counts["Nested"]["created"]) == (3, 1, 2)
    errors = [json.loads(line) for line in host.call("GET", f"exports/{run['id']}/errors").text.splitlines()]
    reasons = {(e["partition"].rsplit("/", 1)[-1], e["row"]): e["reason"] for e in errors if e["segment"] in ("Broken", "Nested")}
    assert "SEGMENT_MAX_LINE_BYTES" in reasons[("a.csv", 2)]
    assert "SEGMENT_MAX_FIELDS" in reasons[("a.csv", 3)]
    assert "is not valid CSV" in reasons[("a.csv", 4)]
    assert "NUL" in reasons[("b.csv", 1)] and "UTF-8" in reasons[("b.csv", 2)]
    assert "gzip-compressed" in reasons[("c.csv", 1)] and "gzip-compressed" in reasons[("d.csv", 1)]
    assert "SEGMENT_MAX_JSON_DEPTH" in reasons[("a.jsonl", 2)]
    assert len(reasons) == 8


def test_timer_and_arrival_go_on_past_every_hostile_file(start_host, segments, storage, mailchimp, tmp_path):
    upload_hostile_container(segments)
    host = start_host(EXPORT_SCHEDULE="*/2 * * * * *")
    log = host_log(tmp_path)
    manual = create_destination(host, segments=["HighValueCustomers"], schedule={"enabled": False}, exportOnArrival=False)
    followed = create_destination(host, segments=[*GOOD, *REFUSED, "Headless"])

    runs = wait_for(lambda: host.call("GET", f"destinations/{followed['id']}/exports").json()["exports"], "the timer's run")
    run = wait_for_run(host, runs[0]["id"], timeout=180)
    assert run["trigger"] == "schedule" and sorted(part["segment"] for part in run["segments"]) == sorted(GOOD)
    for segment, (status, file, _) in REFUSED.items():
        assert (f"segment {segment!r}" in run["message"] and file in run["message"]) == (status == 422), (segment, run["message"])
    assert "Headless" in run["message"] and not any(email in run["message"] for email in HEADLESS_EMAILS)

    blobs = ["CI_deep/Segs/model.json", "CI_big/Segs/model.json", "CI_attrs/Segs/model.json", f"Gz/{STAMP}_SUCCESS",
             f"Broken/{STAMP}_SUCCESS", f"Nested/{STAMP}_SUCCESS", f"CI_attrs/Segs/Missing/{STAMP}Missing_1.csv",
             f"Archived/{STAMP}_SUCCESS", "Ahead/2099/12/31/2359/_SUCCESS", "model.json"]
    queue = QueueClient.from_connection_string(storage.connection_string, QUEUE_SEGMENT_EVENTS)
    for blob in blobs:
        queue.send_message(blob_created(blob))
    wait_for(lambda: len(set(handled_messages(log, "segment_arrived"))) >= len(blobs), "every arrival event handled", timeout=120)
    assert wait_for_run(host, start_export(host, manual["id"]))["status"] == "succeeded"  # the app still answers and exports

    lines = log_lines(log)
    assert [line for line in lines if "outcome=failed" in line] == []
    assert len(host.call("GET", f"destinations/{followed['id']}/exports").json()["exports"]) == 1  # nothing new arrived
    assert not any(email in line for line in lines for email in (*HEADLESS_EMAILS, "hostile.ann@contoso.com"))
    warnings = "\n".join(line for line in lines if "segment left out of a" in line)
    assert all(file in warnings for status, file, _ in REFUSED.values() if status == 422), warnings
