"""End-to-end throughput: a generated segment exported through the local Functions host(s) to the local Mailchimp,
then (unless --no-sdk) the same rows sent by the plain official-SDK script (bench/sdk_plain.py) to a fresh audience
of the same local Mailchimp, so both are timed in one run on the same machine state. Not a test: run it with
`make bench` or directly:

    .venv/bin/python bench/export_end_to_end.py [--rows 200000] [--hosts 1] [--profile realistic] [--second-run]
                                                [--refresh-changed 1] [--no-sdk]

Figures of the connector's run (wall time: from POST /exports until the run's `finishedAt`; the run is polled every
POLL_SECONDS only, as each GET takes the host's CPU from the run it measures, so the CPU figures run until the end was
seen, up to POLL_SECONDS later, the run's clean-up included):

- floor = service_seconds / connection cap, from /__admin/stats: the time Mailchimp needed for the calls the connector
  really made (reading the audience, batch writes, retries), had all 10 connections been busy all the time; and
  wall / floor. It means the same on a fast or a slow machine.
- ideal floor: what an ideal exporter could not beat. It sends each distinct valid member of the segment once,
  M = rows - invalid rows - duplicate rows (shared.sample_segments counts them), in ceil(M / 500) batch-subscribe
  calls (500 is Mailchimp's limit; the tags can travel in the same call, as members[].tags) and nothing else, spread
  over Mailchimp's 10 connections with none idle. With the latency the local Mailchimp reports in /__admin/stats
  (`latency`: base_ms a call, per_member_written_ms a member; realistic: 120 ms + 1 ms a member, so 0.62 s for a
  full call):

      ideal floor = (ceil(M / 500) * base_ms + M * per_member_written_ms) / 1000 / connection_cap   seconds

  (= ceil(M / 500) * 0.62 s / 10 when M is a multiple of 500), and wall / ideal floor.
- calls per 500 members: the /3.0 requests the run made / (M / 500); the ideal is 1.
- time to first Mailchimp call: /__admin/stats `first_request_at` (its counters are zeroed just before the run
  starts) minus the moment POST /exports was sent; that call is a read (the audience and its settings come first).
  Time to first write: the same with `first_write_at`, the first call that sent members (what a user sees arriving
  in Mailchimp).
- peak memory of each Functions host process (VmHWM from /proc).
- CPU: the seconds of CPU the Functions host(s), the local Mailchimp and Azurite each used during the run, how
  busy the machine's cores were (from /proc), and the CPU floor: their sum over the cores, the least wall time this
  machine allows for that work. Here all three share the machine's cores; in Azure only the host runs on the app's
  instances (and scales out). A run whose cores were busy nearly all the time was held back by CPU, not by Mailchimp.
  Also PYTHON_THREADPOOL_THREAD_COUNT for the host(s) from BENCH_THREADS (default 16, as infra/app sets it).
- with --refresh-changed P: scheduled refreshes after the first run, "the next day" (the local Mailchimp moves its
  members' times a day back, `POST /__admin/lists/{id}/age`, so they are not changes of the last minutes, which the
  audience mirror reads again for clock skew): one of the same snapshot (nothing changed; it also brings the
  audience mirror up to date with the first run's writes, as the previous day's refresh would), then
  a newer snapshot of the same rows where P % of them (every n-th row) have a changed first name, and its time as a
  share of the first run's (the target is at most 5 % at 1 %).

The SDK script's time runs from its first line of work (reading the export folder, as the connector reads the blobs)
to its last answer; data generation is left out of both. Speed-up = SDK time / connector time.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import requests  # noqa: E402
from azure.storage.blob import BlobServiceClient  # noqa: E402

from bench.segment_data import SEGMENT, write_segment  # noqa: E402
from mailchimp_local.demo import DEMO_API_KEY, DEMO_AUDIENCE_ID  # noqa: E402
from shared.sample_segments import SampleStats  # noqa: E402
from tests.services import start_azurite, start_functions_host, start_local_mailchimp  # noqa: E402

BATCH = 500  # members per batch-subscribe call: Mailchimp's limit
POLL_SECONDS = 0.5  # between GETs of the run; its wall time is taken from its finishedAt, not from the poll


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--hosts", type=int, default=1, help="function host processes sharing the work (and the cap)")
    parser.add_argument("--profile", default="realistic", choices=["none", "realistic"])
    parser.add_argument("--second-run", action="store_true", help="export the same snapshot again (all unchanged)")
    parser.add_argument("--refresh-changed", type=float, default=0.0, metavar="PERCENT",
                        help="then export a newer snapshot with PERCENT %% of the rows changed (a scheduled refresh)")
    parser.add_argument("--sdk", action=argparse.BooleanOptionalAction, default=True,
                        help="then time bench/sdk_plain.py on the same rows and print both (default: yes)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-e2e-"))
    azurite = start_azurite()
    mailchimp = start_local_mailchimp("--latency-profile", args.profile)
    hosts = []
    try:
        container = BlobServiceClient.from_connection_string(azurite.connection_string).get_container_client("segments")
        container.create_container()
        began = time.perf_counter()
        def upload(name: str, data: bytes) -> None:
            container.upload_blob(name, data, overwrite=True)

        taken_at = datetime.now(UTC) - timedelta(minutes=10)  # the refresh's snapshot is a minute newer
        written = write_segment(upload, args.rows, taken_at=taken_at)
        print(f"uploaded {args.rows:,} rows in {time.perf_counter() - began:.1f} s "
              f"({written.invalid} invalid, {written.duplicates} duplicates: {written.members:,} members)")
        values = {"FUNCTIONS_WORKER_RUNTIME": "python", "AzureWebJobsStorage": azurite.connection_string,
                  "SEGMENTS_CONTAINER": "segments", "MAILCHIMP_API_BASE_URL": mailchimp.api_root,
                  "EXPORT_SCHEDULE": "0 0 0 1 1 *", "LOCAL_SECRETS_DIR": str(work / "secrets"),
                  "PYTHON_THREADPOOL_THREAD_COUNT": os.environ.get("BENCH_THREADS", "16")}
        hosts = [start_functions_host(values, log=work / f"host{i}.log", settings_path=work / f"host{i}.json")
                 for i in range(args.hosts)]
        host = hosts[0]
        destination = host.call("POST", "destinations", json={
            "displayName": "Bench", "consent": {"accepted": True}, "audienceId": DEMO_AUDIENCE_ID,
            "mailchimp": {"apiKey": DEMO_API_KEY}, "segments": [SEGMENT],
            "mapping": {"email": "Email", "mergeFields": {"FNAME": "FirstName", "LNAME": "LastName"}}}).json()
        processes = {"host": [h.process.pid for h in hosts], "local Mailchimp": [mailchimp.process.pid],
                     "Azurite": [azurite.process.pid]}
        connector = measure("first run (new members)", host, mailchimp, destination["id"], args, written, ideal=True,
                            processes=processes)
        if args.refresh_changed:  # the refreshes run "the next day": Mailchimp's clock moves on (the local one's admin)
            mailchimp.admin("POST", f"lists/{DEMO_AUDIENCE_ID}/age", json={"seconds": 86400})
        if args.second_run or args.refresh_changed:  # a refresh finds the audience mirror current after this one
            measure("second run (same snapshot: all unchanged)", host, mailchimp, destination["id"], args, written,
                    ideal=False, processes=processes)
        if args.refresh_changed:
            write_segment(upload, args.rows, taken_at=taken_at + timedelta(minutes=1), changed_percent=args.refresh_changed)
            refresh = measure(f"refresh ({args.refresh_changed:g} % of the rows changed)", host, mailchimp,
                              destination["id"], args, written, ideal=False, processes=processes)
            share = refresh["seconds"] / connector["seconds"]
            print(f"  refresh / first run: {share:.3f} ({100 * share:.1f} %; target <= 5 % at 1 % changed)")
            connector["refresh"] = refresh
        peaks = [peak_memory_mb(running.process.pid) for running in hosts]
        for i, peak in enumerate(peaks):
            print(f"host {i} peak memory (VmHWM): {peak:.0f} MB")
        connector["peak_memory_mb"] = max(peaks)
        for running in hosts:  # nothing of the connector keeps the 2 cores busy while the SDK script runs
            running.stop()
        azurite.stop()
        if args.sdk:
            compare(connector, run_sdk(mailchimp, args.rows, work), args, written)
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


def cpu_seconds(pid: int) -> float:
    """User + system CPU of one process so far (/proc/<pid>/stat, in clock ticks)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_ticks() -> tuple[int, int]:
    """(busy, total) clock ticks of all cores so far (/proc/stat)."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return sum(values) - idle, sum(values)


def ideal_floor(members: int, stats: dict) -> float:
    """Seconds for ceil(members / 500) batch calls over the connection cap, none idle (see the docstring)."""
    latency = stats["latency"]
    calls = math.ceil(members / BATCH)
    return (calls * latency["base_ms"] + members * latency["per_member_written_ms"]) / 1000 / stats["connection_cap"]


def measure(label: str, host, mailchimp, destination_id: str, args: argparse.Namespace, written: SampleStats,
            ideal: bool, processes: dict[str, list[int]]) -> dict:
    mailchimp.admin("POST", "stats/reset")  # counters only: first_request_at is this run's
    cpu_before = {name: sum(cpu_seconds(pid) for pid in pids) for name, pids in processes.items()}
    ticks_before = machine_ticks()
    started_at = time.time()
    started = time.perf_counter()
    run_id = host.call("POST", f"destinations/{destination_id}/exports").json()["id"]
    run: dict = {"status": "queued"}
    while True:  # polled seldom: each GET takes the host's CPU from the run it measures (7 % of it at 10 a second)
        time.sleep(POLL_SECONDS)
        if time.perf_counter() - started > 4 * 3600:
            raise RuntimeError(f"the export did not end within 4 hours: {run['status']}")
        try:
            run = host.call("GET", f"exports/{run_id}").json()
        except (OSError, requests.RequestException):  # a busy host's slow answer: asked again, unless it has died
            if host.process.poll() is not None:
                raise
            continue
        if run["status"] in ("succeeded", "completed_with_errors", "failed", "cancelled"):
            break
    wall = datetime.fromisoformat(run["finishedAt"]).timestamp() - started_at  # the host's clock is this machine's
    ticks_after = machine_ticks()
    cpu = {name: sum(cpu_seconds(pid) for pid in pids) - cpu_before[name] for name, pids in processes.items()}
    busy = (ticks_after[0] - ticks_before[0]) / max(1, ticks_after[1] - ticks_before[1])
    stats = mailchimp.stats()
    requests_made = stats["requests_total"]
    floor = stats["service_seconds"] / stats["connection_cap"]
    first_call, first_write = (stats[key] - started_at if stats[key] is not None else float("nan")
                               for key in ("first_request_at", "first_write_at"))
    print(f"\n{label}: {run['status']}, counts {run['counts']}")
    print(f"  hosts: {args.hosts}, profile: {args.profile}, Mailchimp requests: {requests_made}, "
          f"429s: {stats['by_status'].get('429', 0)}, max concurrent: {stats['max_concurrent']}")
    print("  Mailchimp requests by kind: " + ", ".join(f"{route} {count}" for route, count in
                                                     sorted(stats["by_route"].items(), key=lambda kv: -kv[1])))
    print(f"  wall time: {wall:.1f} s ({args.rows / wall:,.0f} rows/s); rows known from the last plan (skipped "
          f"unread): {run.get('knownRows', 0):,}")
    print(f"  time to first Mailchimp call: {first_call:.2f} s, to first write: "
          + (f"{first_write:.2f} s" if first_write == first_write else "none (nothing written)"))
    cores = os.cpu_count() or 1
    print(f"  CPU used: {', '.join(f'{name} {seconds:.1f} s' for name, seconds in cpu.items())}; the machine's "
          f"{cores} cores were {100 * busy:.0f} % busy; CPU floor (their sum / {cores} cores): "
          f"{sum(cpu.values()) / cores:.1f} s")
    print(f"  floor (service_seconds / cap): {floor:.1f} s")
    print(f"  ratio wall / floor: {wall / floor:.3f}  (target <= 1.25)")
    result = {"seconds": wall, "calls": requests_made, "first_call_seconds": first_call,
              "first_write_seconds": first_write, "floor": floor, "cpu": cpu, "busy": busy}
    if ideal:
        best = ideal_floor(written.members, stats)
        per_500 = requests_made / (written.members / BATCH)
        print(f"  ideal floor (ceil({written.members:,} / {BATCH}) = {math.ceil(written.members / BATCH)} batch calls "
              f"over {stats['connection_cap']} connections): {best:.1f} s; ratio wall / ideal floor: {wall / best:.3f} (goal <= 1.10)")
        print(f"  Mailchimp calls per {BATCH} members: {per_500:.2f}  (ideal 1)")
        result.update(ideal_floor=best, calls_per_500=per_500)
    return result


def run_sdk(mailchimp, rows: int, work: Path) -> dict:
    """bench/sdk_plain.py in its own process on the same rows, against a fresh demo audience of the same server."""
    data = work / "sdk-data"
    write_segment(data, rows)  # the same seed: the same rows the connector exported
    mailchimp.reset()  # a fresh demo audience and zeroed counters; the latency profile stays the one it started with
    out = work / "sdk.json"
    print(f"\nSDK plain script (bench/sdk_plain.py) on the same {rows:,} rows, fresh audience:", flush=True)
    subprocess.run([sys.executable, str(Path(__file__).with_name("sdk_plain.py")), "--mailchimp-url", mailchimp.url,
                    "--data", str(data), "--json-out", str(out)], check=True)
    result = json.loads(out.read_text())
    stats = mailchimp.stats()
    result["first_call_seconds"] = stats["first_request_at"] - result["started_at"]
    result["first_write_seconds"] = stats["first_write_at"] - result["started_at"]
    result["server_calls"] = stats["requests_total"]
    return result


def compare(connector: dict, sdk: dict, args: argparse.Namespace, written: SampleStats) -> None:
    members = written.members
    sdk_per_500 = sdk["server_calls"] / (members / BATCH)
    print(f"\nSide by side: {args.rows:,} rows ({members:,} members), profile {args.profile}, one run, this machine")
    print(f"  {'':32}{'connector':>14}{'SDK script':>14}")
    c, k = connector, sdk
    for name, ours, theirs in (
            ("wall time (s)", f"{connector['seconds']:.1f}", f"{sdk['seconds']:.1f}"),
            ("Mailchimp calls", f"{connector['calls']}", f"{sdk['server_calls']}"),
            (f"calls per {BATCH} members", f"{connector['calls_per_500']:.2f}", f"{sdk_per_500:.2f}"),
            ("time to first Mailchimp call (s)", f"{c['first_call_seconds']:.2f}", f"{k['first_call_seconds']:.2f}"),
            ("time to first write (s)", f"{c['first_write_seconds']:.2f}", f"{k['first_write_seconds']:.2f}"),
            ("wall / ideal floor", f"{connector['seconds'] / connector['ideal_floor']:.2f}",
             f"{sdk['seconds'] / connector['ideal_floor']:.2f}"),
            ("peak memory (MB)", f"{connector['peak_memory_mb']:.0f}", f"{sdk['peak_memory_mb']:.0f}")):
        print(f"  {name:32}{ours:>14}{theirs:>14}")
    print(f"  speed-up (SDK time / connector time): {sdk['seconds'] / connector['seconds']:.1f}x")
    if "refresh" in connector:
        refresh = connector["refresh"]
        print(f"  connector's refresh, {args.refresh_changed:g} % changed: {refresh['seconds']:.1f} s, {refresh['calls']} Mailchimp calls "
              f"({100 * refresh['seconds'] / connector['seconds']:.1f} % of its first run; the SDK script sends "
              "every row again)")


if __name__ == "__main__":
    main()
