"""Retention through the local stack: the daily `retention_sweep`, started by hand through the host's admin API
(`POST /admin/functions/retention_sweep`, as in Azure), forgets the people of a run past RETENTION_PERSONAL_DAYS and
deletes the record of one past RETENTION_RUN_DAYS; a recent run is left as it was.

Time cannot be made to pass: a run's id begins with its creation time and the sweep finds old runs by their id
(shared/retention.py), so an old run cannot be made by editing a recent one's dates. The old runs here are copies of a
real export made through the API, moved back in time: every row of its partition in the runs table and every file of
its folder, written under an id beginning with the older time, with its created/started/finished times moved back by
as much. What the sweep finds is therefore exactly what the app wrote for a run, only older.
"""
from __future__ import annotations

import secrets
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import requests
from azure.storage.blob import BlobServiceClient

from blueprints.retention import SCHEDULE
from devhost.ncrontab import CronSchedule
from shared.adapters.storage import BlobFolder
from shared.adapters.tables import RunTable
from shared.config import CONTAINER_WORK, TABLE_RUNS
from shared.exports.files import run_folder
from shared.runs import run_id_time
from tests.e2e.conftest import create_destination, host_log, log_lines, start_export, wait_for, wait_for_clean_up, wait_for_run
from tests.services import table_service

PERSONAL_DAYS, RUN_DAYS = 3, 10
ROWS = ["ann@contoso.com,Ann", "bob@fabrikam.com,Bob", "not-an-address,Bad", "also@@wrong,Worse"]
TIMES = ("createdAt", "startedAt", "finishedAt")
# The test takes about 20 s; its host's own daily sweep (SCHEDULE, 02:30 UTC) must not fire before the sweep started by
# hand has run, or it would sweep the old copies first (or share them out with it): a test starting closer to the daily
# sweep than this waits until it has passed (the timeout leaves room for the wait), and its host's next is tomorrow's.
CLEAR_OF_THE_DAILY_SWEEP = timedelta(minutes=4)


def snapshot(segments) -> None:
    segments.upload_blob("People/2026/11/28/1700/part-0.csv", ("Email,FirstName\r\n" + "\r\n".join(ROWS) + "\r\n").encode())
    segments.upload_blob("People/2026/11/28/1700/_SUCCESS", b"")


class Store:
    """The runs table and the work container, through the app's own adapters."""

    def __init__(self, connection_string: str) -> None:
        self.runs = RunTable(table_service(connection_string), TABLE_RUNS)
        self.work = BlobFolder(BlobServiceClient.from_connection_string(connection_string).get_container_client(CONTAINER_WORK))

    def rows(self, run_id: str) -> dict[str, dict]:
        return {e["RowKey"]: dict(e) for e in self.runs.table.query_entities("PartitionKey eq @r", parameters={"r": run_id})}

    def files(self, run_id: str) -> dict[str, bytes]:
        return {name: self.work.read_bytes(name) for name in self.work.list_names(run_folder(run_id))}

    def aged_copy(self, run_id: str, days: float) -> str:
        """A copy of the finished run `run_id` as if it had been made `days` earlier (see the module's docstring)."""
        created = datetime.fromisoformat(self.runs.get(run_id).created_at) - timedelta(days=days)
        old_id = f"{run_id_time(created)}-{secrets.token_hex(4)}"
        for row in self.rows(run_id).values():
            copy = {key: value.replace(run_id, old_id) if isinstance(value, str) else value for key, value in row.items()}
            for key in TIMES:
                if copy.get(key):
                    copy[key] = (datetime.fromisoformat(copy[key]) - timedelta(days=days)).isoformat(timespec="milliseconds")
            self.runs.table.create_entity({**copy, "PartitionKey": old_id})
        for name, data in self.files(run_id).items():
            self.work.write_bytes(name.replace(run_id, old_id, 1), data)
        return old_id


def errors(host, run_id: str) -> requests.Response:
    return host.call("GET", f"exports/{run_id}/errors")


def wait_until_clear_of_the_daily_sweep() -> None:
    now = datetime.now(UTC)
    due = CronSchedule.parse(SCHEDULE).next_after(now)
    if due - now < CLEAR_OF_THE_DAILY_SWEEP:
        time.sleep((due - now).total_seconds() + 1)


@pytest.mark.timeout(300 + CLEAR_OF_THE_DAILY_SWEEP.total_seconds())
def test_the_sweep_forgets_and_deletes_old_runs_and_leaves_a_recent_one(start_host, segments, storage, tmp_path: Path):
    key = tmp_path / "function.key"
    key.write_text(secrets.token_urlsafe(24))
    key.chmod(0o600)
    wait_until_clear_of_the_daily_sweep()
    host = start_host(extra_args=("--function-key-file", str(key)), RETENTION_PERSONAL_DAYS=str(PERSONAL_DAYS),
                      RETENTION_RUN_DAYS=str(RUN_DAYS), **{"AzureWebJobs.retention_sweep.Disabled": "false"})
    snapshot(segments)
    destination = create_destination(host, segments=["People"], mapping={"email": "Email", "mergeFields": {"FNAME": "FirstName"}},
                                      exportOnArrival=False)
    recent = wait_for_run(host, start_export(host, destination["id"]))
    assert recent["status"] == "completed_with_errors" and recent["counts"]["invalid"] == 2, recent
    assert recent["startedBy"], recent
    report = errors(host, recent["id"])
    assert report.status_code == 200 and b"not-an-address" in report.content, report.text

    wait_for_clean_up(storage, recent["id"])  # its chunk files deleted: the copies below are of a run at rest
    store = Store(storage.connection_string)
    forget = store.aged_copy(recent["id"], PERSONAL_DAYS + 1)  # past the personal period, inside the run period
    delete = store.aged_copy(recent["id"], RUN_DAYS + 1)
    before = {run_id: host.call("GET", f"exports/{run_id}").json() for run_id in (forget, delete)}
    assert all(run["counts"] == recent["counts"] and run["startedBy"] == recent["startedBy"] for run in before.values())
    assert errors(host, forget).content == report.content  # a whole report, served as the real run's is
    assert store.files(forget) and store.files(delete)
    recent_rows, recent_files = store.rows(recent["id"]), store.files(recent["id"])

    admin = f"{host.origin}/admin/functions/retention_sweep"
    assert requests.post(admin, json={"input": ""}, timeout=10).status_code == 401  # the admin API wants the key
    assert requests.post(admin, json={"input": ""}, headers={"x-functions-key": key.read_text()}, timeout=10).status_code == 202
    wait_for(lambda: any("function=retention_sweep trigger=timer outcome=" in line for line in log_lines(host_log(tmp_path))),
             "the sweep's run", timeout=20)
    assert any("function=retention_sweep trigger=timer outcome=succeeded" in line for line in log_lines(host_log(tmp_path)))
    assert any("retention tick: 1 run(s) forgotten, 1 run record(s) deleted" in line for line in log_lines(host_log(tmp_path)))

    forgotten = host.call("GET", f"exports/{forget}").json()
    assert store.files(forget) == {}
    assert forgotten["startedBy"] is None and forgotten["counts"] == recent["counts"], forgotten
    assert {key: forgotten[key] for key in ("status", "finishedAt")} == {key: before[forget][key] for key in ("status", "finishedAt")}
    gone = errors(host, forget)
    assert gone.status_code == 410 and "RETENTION_PERSONAL_DAYS" in gone.json()["error"], gone.text

    assert host.call("GET", f"exports/{delete}").status_code == 404
    assert store.rows(delete) == {} and store.files(delete) == {}

    assert (store.rows(recent["id"]), store.files(recent["id"])) == (recent_rows, recent_files)
    assert host.call("GET", f"exports/{recent['id']}").json() == recent
    assert errors(host, recent["id"]).content == report.content
