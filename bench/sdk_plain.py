"""What a user would write instead of this connector: the official `mailchimp-marketing` SDK, one call after another.

The script reads the segment's rows from a Customer Insights export folder (model.json for the columns, then the
headerless CSV partitions; the same generated rows bench/export_end_to_end.py exports, from bench/segment_data.py)
and, 500 rows at a time:

1. `client.lists.batch_list_members(list_id, {"members": [...500...], "update_existing": True})`: Mailchimp's "Batch
   subscribe or unsubscribe" (POST /lists/{list_id}, at most 500 members a call),
   https://mailchimp.com/developer/marketing/api/lists/batch-subscribe-or-unsubscribe/
2. `client.lists.batch_segment_members({"members_to_add": [...the same 500 addresses...]}, list_id, segment_id)`:
   "Batch add or remove members" of a static segment (POST /lists/{list_id}/segments/{segment_id}, at most 500 a
   call), https://mailchimp.com/developer/marketing/api/list-segments/batch-add-or-remove-members/ . A tag is a static
   segment in the API; the tag is created once with `client.lists.create_segment(list_id, {"name": ...,
   "static_segment": []})` ("Add segment", https://mailchimp.com/developer/marketing/api/list-segments/add-segment/)
   unless `list_segments(type="static")` already has it.

The client is set up as the SDK's README shows (https://github.com/mailchimp/mailchimp-marketing-python:
`client = MailchimpMarketing.Client(); client.set_config({"api_key": ..., "server": ...})`), which builds its root
as `https://{server}.api.mailchimp.com/3.0`; to reach the local Mailchimp the script then sets
`client.api_client.host` (mailchimp_marketing 3.0.80 keeps the root there and calls `requests.post(host + path)`,
a new connection per call). Same choices as the connector's benchmark destination: status `subscribed`, FNAME and
LNAME from FirstName and LastName, the tag named after the segment. No threads, no retries, no reading of the
audience first: the plain script the docs lead to (note `update_existing: True` sets the status of existing members
to the one sent, which the connector refuses to do; on the fresh audience of the benchmark nobody exists yet).

Alone it generates the data, starts a local Mailchimp (latency profile `realistic` by default) and prints its time:

    .venv/bin/python bench/sdk_plain.py [--rows 5000] [--profile realistic]

bench/export_end_to_end.py runs it as a separate process against its own local Mailchimp and data folder
(`--mailchimp-url`, `--data`, `--json-out`), so its peak memory is the script's own.
"""
from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import mailchimp_marketing as MailchimpMarketing  # noqa: E402

from bench.segment_data import SEGMENT, read_segment_rows, write_segment  # noqa: E402
from mailchimp_local.demo import DEMO_API_KEY, DEMO_AUDIENCE_ID  # noqa: E402

BATCH = 500  # Mailchimp's limit for both calls


def export_with_sdk(api_root: str, api_key: str, list_id: str, data: Path, segment: str = SEGMENT) -> dict:
    """Sends every row of `segment` in the export folder `data`; returns what happened and how long it took."""
    started_at = time.time()
    started = time.perf_counter()
    client = MailchimpMarketing.Client()
    client.set_config({"api_key": api_key, "server": api_key.rsplit("-", 1)[-1]})
    client.api_client.host = api_root  # instead of https://{server}.api.mailchimp.com/3.0
    calls = 0
    existing = client.lists.list_segments(list_id, type="static", count=1000)["segments"]
    calls += 1
    tag = next((s for s in existing if s["name"].casefold() == segment.casefold()), None)
    if tag is None:
        tag = client.lists.create_segment(list_id, {"name": segment, "static_segment": []})
        calls += 1
    totals = {"rows": 0, "skipped_blank": 0, "created": 0, "updated": 0, "errors": 0, "tagged": 0, "tag_errors": 0}

    def send(batch: list[dict]) -> None:
        nonlocal calls
        answer = client.lists.batch_list_members(list_id, {"members": batch, "update_existing": True})
        totals["created"] += answer["total_created"]
        totals["updated"] += answer["total_updated"]
        totals["errors"] += answer["error_count"]
        added = client.lists.batch_segment_members({"members_to_add": [m["email_address"] for m in batch]},
                                                   list_id, tag["id"])
        totals["tagged"] += added["total_added"]
        totals["tag_errors"] += added["error_count"]
        calls += 2

    batch: list[dict] = []
    for row in read_segment_rows(data, segment):
        totals["rows"] += 1
        email = row["Email"].strip()
        if not email:
            totals["skipped_blank"] += 1
            continue
        batch.append({"email_address": email, "status": "subscribed",
                      "merge_fields": {"FNAME": row["FirstName"], "LNAME": row["LastName"]}})
        if len(batch) == BATCH:
            send(batch)
            batch = []
    if batch:
        send(batch)
    seconds = time.perf_counter() - started
    return {**totals, "calls": calls, "seconds": seconds, "started_at": started_at,
            "peak_memory_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=5000, help="rows to generate (without --data)")
    parser.add_argument("--profile", default="realistic", choices=["none", "realistic"],
                        help="latency profile of the local Mailchimp it starts (without --mailchimp-url)")
    parser.add_argument("--mailchimp-url", help="a running local Mailchimp (its root, without /3.0)")
    parser.add_argument("--data", type=Path, help="an export folder bench/segment_data.write_segment wrote")
    parser.add_argument("--json-out", type=Path, help="also write the result there as JSON")
    args = parser.parse_args()
    data = args.data
    if data is None:
        data = Path(tempfile.mkdtemp(prefix="bench-sdk-"))
        written = write_segment(data, args.rows)
        print(f"generated {written.rows:,} rows ({written.invalid} invalid, {written.duplicates} duplicates) in {data}")
    server = None
    if args.mailchimp_url:
        root = args.mailchimp_url.rstrip("/")
    else:
        from tests.services import start_local_mailchimp

        server = start_local_mailchimp("--latency-profile", args.profile)
        root = server.url
    try:
        result = export_with_sdk(f"{root}/3.0", DEMO_API_KEY, DEMO_AUDIENCE_ID, data)
    finally:
        if server:
            server.stop()
    if args.json_out:
        args.json_out.write_text(json.dumps(result))
    print(f"SDK plain script: {result['rows']:,} rows in {result['seconds']:.1f} s "
          f"({result['rows'] / result['seconds']:,.0f} rows/s), {result['calls']} Mailchimp calls; "
          f"created {result['created']:,}, updated {result['updated']:,}, refused {result['errors']:,}, "
          f"tagged {result['tagged']:,}; peak memory {result['peak_memory_mb']:.0f} MB")


if __name__ == "__main__":
    main()
