"""Request limits and the paged errors report, through the real function_app in the local Functions host."""
from __future__ import annotations

import json
import re

import requests

from tests.e2e.conftest import assert_accounted, create_destination, destination_body, start_export, wait_for_run


def refused_body(response: requests.Response) -> str:
    """A 400 with a JSON error, no-store; returns what it says about the body."""
    assert response.status_code == 400, (response.status_code, response.text[:300])
    assert response.headers["Cache-Control"] == "no-store"
    doc = response.json()
    assert doc["error"]
    return " ".join(d["message"] for d in doc.get("details", []) if d["field"] == "(body)")


def test_oversize_deep_and_broken_bodies_are_400_and_nothing_is_stored(start_host, segments, mailchimp) -> None:
    host = start_host()
    valid = json.dumps(destination_body()).encode()
    oversize = valid + b" " * ((1 << 20) - len(valid) + 1)  # valid JSON, one byte over HTTP_MAX_BODY_BYTES
    deep = b"[" * 100_000 + b"]" * 100_000
    headers = {"content-type": "application/json"}

    said = refused_body(host.call("POST", "destinations", data=oversize, headers=headers))
    assert "at most 1,048,576" in said and "HTTP_MAX_BODY_BYTES" in said
    said = refused_body(host.call("POST", "destinations", data=deep, headers=headers))
    assert "more than 32 deep" in said and "HTTP_MAX_JSON_DEPTH" in said
    assert host.call("GET", "destinations").json() == {"destinations": []}

    destination = create_destination(host)
    for method, path in (("PATCH", f"destinations/{destination['id']}"), ("POST", f"destinations/{destination['id']}/exports")):
        assert "HTTP_MAX_BODY_BYTES" in refused_body(host.call(method, path, data=oversize, headers=headers))
        assert "HTTP_MAX_JSON_DEPTH" in refused_body(host.call(method, path, data=deep, headers=headers))
        assert "JSON object" in refused_body(host.call(method, path, data=b"[]", headers=headers))
    # a lone surrogate escape parses, but no table, log or answer could encode it
    said = refused_body(host.call("PATCH", f"destinations/{destination['id']}", data=b'{"displayName": "\\ud800"}',
                                  headers=headers))
    assert "unpaired surrogate" in said
    shown = host.call("GET", f"destinations/{destination['id']}")
    assert shown.status_code == 200 and shown.json()["displayName"] == "Newsletter"
    assert shown.headers["Cache-Control"] == "no-store"
    assert host.call("GET", f"destinations/{destination['id']}/exports").json() == {"exports": []}


def test_errors_report_pages_hold_every_row_exactly_once(start_host, segments, mailchimp) -> None:
    rows = ["Email,FirstName,LastName"]
    invalid, refused = set(), set()
    for number in range(1, 12_101):  # data row numbers
        if number % 200 == 0:
            rows.append(f"fake@shop{number}.com,Fay,Kay")  # Mailchimp refuses it: a line from a chunk
            refused.add(number)
        elif number % 100 == 0:
            rows.append(f"person{number}@contoso.com,Per,Son")
        else:
            rows.append(f"not-an-email-{number},Bad,Row")  # invalid: a line from planning
            invalid.add(number)
    segments.upload_blob("Bulk/2026/11/28/1700/part-0.csv", ("\r\n".join(rows) + "\r\n").encode())
    segments.upload_blob("Bulk/2026/11/28/1700/_SUCCESS", b"")
    host = start_host(EXPORT_CHUNK_SIZE="20")  # several chunks, so the report spans planning's blobs and chunks' ones
    destination = create_destination(host, segments=["Bulk"], mapping={"email": "Email"})
    run = wait_for_run(host, start_export(host, destination["id"]))
    assert_accounted(run)
    assert (run["counts"]["invalid"], run["counts"]["refused"]) == (len(invalid), len(refused)) == (11_979, 60)
    assert run["status"] == "completed_with_errors" and run["chunks"]["total"] > 1

    def pages(limit: int | None) -> list[list[str]]:
        found = []
        url = f"http://127.0.0.1:{host.port}/api/exports/{run['id']}/errors" + (f"?limit={limit}" if limit else "")
        while url:
            page = requests.get(url, headers=host.auth(), timeout=60)
            assert page.status_code == 200, page.text[:300]
            assert page.headers["Cache-Control"] == "no-store"
            assert page.headers["Content-Type"].startswith("application/x-ndjson")
            found.append(page.text.splitlines())
            link = page.headers.get("Link")
            assert (link is None) == (page.headers.get("x-continuation") is None)
            if link:
                target = re.fullmatch(r'<(/api/exports/[^>]+/errors\?[^>]+)>; rel="next"', link)
                assert target and page.headers["x-continuation"] in target[1], link
                url = f"http://127.0.0.1:{host.port}{target[1]}"
            else:
                url = None
        return found

    small = pages(1_000)
    assert [len(p) for p in small] == [1_000] * 12 + [39]
    lines = [json.loads(line) for page in small for line in page]
    by_source = {"validation": [], "mailchimp": []}
    for line in lines:
        by_source[line["source"]].append(line["row"])
    assert sorted(by_source["validation"]) == sorted(invalid)  # each invalid row once, none missing
    assert sorted(by_source["mailchimp"]) == sorted(refused)
    assert [line for page in pages(None) for line in page] == [line for page in small for line in page]
    assert [len(p) for p in pages(None)] == [10_000, 2_039]  # the default page
    assert [len(p) for p in pages(50_000)] == [12_039]

    assert host.call("GET", f"exports/{run['id']}/errors", params={"limit": "50001"}).status_code == 400
    wrong = host.call("GET", f"exports/{run['id']}/errors", params={"continuation": "bm90LW1pbmU"})
    assert wrong.status_code == 400 and "continuation" in wrong.json()["error"]
    assert wrong.headers["Cache-Control"] == "no-store"
    assert host.call("GET", f"exports/{run['id']}").headers["Cache-Control"] == "no-store"


def test_names_too_long_to_store_are_400_naming_the_field_and_nothing_is_stored(start_host, segments, mailchimp) -> None:
    # These bodies are well under HTTP_MAX_BODY_BYTES, and each used to answer 500: Table storage refuses a string
    # property over 64 KiB (PropertyValueTooLarge), and 20,000 segment names took 15 s of CPU to check
    host = start_host()
    long_column = destination_body(mapping={"email": "E" * 40_000})
    long_segments = destination_body(segments=[f"{i}" + "S" * 2_000 for i in range(50)])
    many_segments = destination_body(segments=[f"{i}" for i in range(100_000)])  # 890 KB
    for body, fields, said in ((long_column, {"mapping.email"}, "at most 255 characters (a column name)"),
                               (long_segments, {f"segments[{i}]" for i in range(50)}, "at most 255 characters (a segment name)"),
                               (many_segments, {"segments"}, "at most 50 segments per destination (100,000 were sent)")):
        response = host.call("POST", "destinations", json=body)
        assert response.status_code == 400, response.text[:300]
        details = response.json()["details"]
        assert {d["field"] for d in details} == fields and all(said in d["message"] for d in details), details[:2]
    assert host.call("GET", "destinations").json() == {"destinations": []}

    destination = create_destination(host)
    for change in ({"mapping": long_column["mapping"]}, {"segments": long_segments["segments"]}):
        assert host.call("PATCH", f"destinations/{destination['id']}", json=change).status_code == 400
    assert host.call("GET", f"destinations/{destination['id']}").json() == destination


def test_a_266_kb_partition_with_a_130000_character_column_makes_a_small_report_in_pages(start_host, segments,
                                                                                       mailchimp) -> None:
    # a later partition whose header names one 130,000-character column twice, then 2,000 lines: its header problem
    # stands on each of its rows, and named the column: 260 MB of errors report, one page of 2,000 lines 260 MB
    name = "X" * 130_000
    segments.upload_blob("Seg/2026/11/28/1700/part-0.csv", b"Email,FirstName,LastName\r\nann@contoso.com,Ann,Lee\r\n")
    segments.upload_blob("Seg/2026/11/28/1700/part-1.csv", f"{name},{name}\r\n".encode() + b"bo@contoso.com,Bo\r\n" * 2_000)
    segments.upload_blob("Seg/2026/11/28/1700/_SUCCESS", b"")
    host = start_host()
    destination = create_destination(host, segments=["Seg"], mapping={"email": "Email"})
    run = wait_for_run(host, start_export(host, destination["id"]))
    assert_accounted(run)
    assert (run["counts"]["invalid"], run["counts"]["created"]) == (2_000, 1)

    page = host.call("GET", f"exports/{run['id']}/errors", params={"limit": "50000"})
    assert page.status_code == 200 and "x-continuation" not in page.headers
    lines = page.content.splitlines()
    assert len(lines) == 2_000 and len(page.content) < 600_000, len(page.content)
    assert "gives columns 1 and 2 the same name" in json.loads(lines[0])["reason"]
    as_csv = host.call("GET", f"exports/{run['id']}/errors", params={"limit": "50000", "format": "csv"})
    assert as_csv.status_code == 200 and len(as_csv.content) < len(page.content)
