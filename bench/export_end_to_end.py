"""End-to-end throughput: a generated segment exported through the local Functions host(s) to the local Mailchimp.

Prints wall time, the floor Mailchimp itself imposes (service_seconds / connection cap, from /__admin/stats) and their
ratio, so the figure means the same on a fast or a slow machine. Not a test: run it with `make bench` or directly:

    .venv/bin/python bench/export_end_to_end.py [--rows 200000] [--hosts 1] [--profile realistic]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from azure.storage.blob import BlobServiceClient  # noqa: E402

from mailchimp_local.demo import DEMO_API_KEY, DEMO_AUDIENCE_ID  # noqa: E402
from shared.sample_segments import write_sample_export  # noqa: E402
from tests.services import start_azurite, start_functions_host, start_local_mailchimp, wait_until  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--hosts", type=int, default=1, help="function host processes sharing the work (and the cap)")
    parser.add_argument("--profile", default="realistic", choices=["none", "realistic"])
    parser.add_argument("--second-run", action="store_true", help="export the same snapshot again (all unchanged)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-e2e-"))
    azurite = start_azurite()
    mailchimp = start_local_mailchimp("--latency-profile", args.profile)
    hosts = []
    try:
        container = BlobServiceClient.from_connection_string(azurite.connection_string).get_container_client("segments")
        container.create_container()
        began = time.perf_counter()
        stats = write_sample_export(lambda name, data: container.upload_blob(name, data, overwrite=True),
                                    segments={"HighValueCustomers": args.rows}, taken_at=datetime.now(timezone.utc))
        print(f"uploaded {args.rows:,} rows in {time.perf_counter() - began:.1f} s "
              f"({stats['HighValueCustomers'].invalid} invalid, {stats['HighValueCustomers'].duplicates} duplicates)")
        values = {"FUNCTIONS_WORKER_RUNTIME": "python", "AzureWebJobsStorage": azurite.connection_string,
                  "SEGMENTS_CONTAINER": "segments", "MAILCHIMP_API_BASE_URL": mailchimp.api_root,
                  "EXPORT_SCHEDULE": "0 0 0 1 1 *", "LOCAL_SECRETS_DIR": str(work / "secrets"),
                  "PYTHON_THREADPOOL_THREAD_COUNT": "16"}
        hosts = [start_functions_host(values, log=work / f"host{i}.log", settings_path=work / f"host{i}.json")
                 for i in range(args.hosts)]
        host = hosts[0]
        destination = host.call("POST", "destinations", json={
            "displayName": "Bench", "consent": {"accepted": True}, "audienceId": DEMO_AUDIENCE_ID,
            "mailchimp": {"apiKey": DEMO_API_KEY}, "segments": ["HighValueCustomers"],
            "mapping": {"email": "Email", "mergeFields": {"FNAME": "FirstName", "LNAME": "LastName"}}}).json()
        for label in ("first run (new members)", "second run (same snapshot: all unchanged)")[: 1 + args.second_run]:
            measure(label, host, mailchimp, destination["id"], args)
        for i, running in enumerate(hosts):
            print(f"host {i} peak memory (VmHWM): {peak_memory_mb(running.process.pid):.0f} MB")
    finally:
        for host in hosts:
            host.stop()
        mailchimp.stop()
        azurite.stop()


def peak_memory_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def measure(label: str, host, mailchimp, destination_id: str, args: argparse.Namespace) -> None:
    before = mailchimp.stats()
    started = time.perf_counter()
    run_id = host.call("POST", f"destinations/{destination_id}/exports").json()["id"]
    run: dict = {}

    def finished() -> bool:
        nonlocal run
        run = host.call("GET", f"exports/{run_id}").json()
        return run["status"] in ("succeeded", "completed_with_errors", "failed", "cancelled")

    wait_until(finished, "the export", timeout=3600)
    wall = time.perf_counter() - started
    after = mailchimp.stats()
    service = after["service_seconds"] - before["service_seconds"]
    floor = service / after["connection_cap"]
    print(f"\n{label}: {run['status']}, counts {run['counts']}")
    print(f"  hosts: {args.hosts}, profile: {args.profile}, Mailchimp requests: {after['requests_total'] - before['requests_total']}, "
          f"429s: {after['by_status'].get('429', 0) - before['by_status'].get('429', 0)}, max concurrent: {after['max_concurrent']}")
    print(f"  wall time: {wall:.1f} s ({args.rows / wall:,.0f} rows/s)")
    print(f"  floor (service_seconds / cap): {floor:.1f} s")
    print(f"  ratio wall / floor: {wall / floor:.3f}  (target <= 1.25)")


if __name__ == "__main__":
    main()
