"""Segment blobs storage will not serve, on real Azurite: each is a problem of its own segment, naming the file.

A partition (or model.json) in the Archive tier, one deleted after the listing or while it is being read: the
segments adapter (shared.adapters.storage.SegmentFolder) says so as a SnapshotProblem with the storage error code and
what to do, so the catalog lists the segment with that problem, an export of it is refused naming the file, the
timer leaves it out, and every other segment is listed and exported as usual.
"""
from __future__ import annotations

import dataclasses
import uuid

import pytest
from azure.storage.blob import ContainerClient

from shared.adapters.storage import READ_BLOCK, SegmentFolder, StorageAccount
from shared.config import StorageSettings, load_settings
from shared.destinations import Claim, new_destination
from shared.exports import ExportService, Refused
from shared.segment_catalog import SegmentCatalog
from shared.segment_rows import read_rows
from shared.snapshots import SnapshotProblem, newest_snapshots, read_model_json

STAMP = "2026/11/28/1700/"
HEADER = b"Email,FirstName,LastName\r\n"


@pytest.fixture
def container(azurite) -> ContainerClient:
    account = StorageAccount(StorageSettings(azurite.connection_string, None, None, None, None))
    client = account.blob_service().get_container_client("seg" + uuid.uuid4().hex[:8])
    client.create_container()
    return client


def plain(container: ContainerClient, segment: str, rows: bytes = b"a@contoso.com,A,B\r\n") -> str:
    partition = f"{segment}/{STAMP}part-00001.csv"
    container.upload_blob(partition, HEADER + rows)
    container.upload_blob(f"{segment}/{STAMP}_SUCCESS", b"")
    return partition


def archive(container: ContainerClient, name: str) -> None:
    container.get_blob_client(name).set_standard_blob_tier("Archive")


def test_an_archived_blob_is_a_problem_naming_it_with_the_error_code_and_what_to_do(container):
    partition = plain(container, "Cold")
    container.upload_blob("CI/Segs/model.json", b'{"entities": []}')
    archive(container, partition)
    archive(container, "CI/Segs/model.json")
    segments = SegmentFolder(container)

    for read in (segments.read_bytes, segments.open_binary):
        with pytest.raises(SnapshotProblem) as problem:
            read(partition)
        assert problem.value.file == partition and "could not be read (BlobArchived)" in str(problem.value)
        assert "rehydrate it to the Hot or Cool tier" in str(problem.value)
    with pytest.raises(SnapshotProblem, match=r"CI/Segs/model.json: could not be read \(BlobArchived\)"):
        read_model_json(segments, "CI/Segs/model.json")
    with pytest.raises(SnapshotProblem, match="could not be read \\(BlobNotFound\\); it was deleted after the listing"):
        segments.open_binary(f"Cold/{STAMP}gone.csv")


def test_a_partition_deleted_while_it_is_being_read_is_a_problem_naming_it(container):
    partition = f"Big/{STAMP}part-00001.csv"
    container.upload_blob(partition, HEADER + b"a@contoso.com,A,B\r\n" * (3 * READ_BLOCK // 20))  # several blocks
    segments = SegmentFolder(container)

    with segments.open_binary(partition) as stream:
        stream.read(100)
        container.delete_blob(partition)
        with pytest.raises(SnapshotProblem) as problem:
            stream.read()
    assert problem.value.file == partition and "could not be read (" in str(problem.value)


class Destinations:
    def __init__(self, destination) -> None:
        self.destination = destination

    def get(self, destination_id):
        return self.destination

    def list(self):
        return [self.destination]

    def exported(self, destination_id):
        return {}

    def claim(self, *args, **kwargs):
        return Claim("claimed")


class Runs:
    def create(self, run) -> None:
        pass


class Queue:
    def send(self, message, delay_seconds=0) -> None:
        pass


class Mailchimp:
    def call(self, destination, action):
        return None


def test_an_archived_partition_among_good_segments_is_listed_refused_and_left_out_by_name(container):
    cold = plain(container, "Cold")
    plain(container, "Warm", b"w1@contoso.com,W,One\r\nw2@contoso.com,W,Two\r\n")
    plain(container, "Hot")
    archive(container, cold)
    segments = SegmentFolder(container)

    catalog = {entry.name: entry for entry in SegmentCatalog(segments).segments()}
    assert (catalog["Warm"].usable, catalog["Warm"].profiles, catalog["Hot"].usable) == (True, 2, True)
    assert not catalog["Cold"].usable and cold in catalog["Cold"].problem and "BlobArchived" in catalog["Cold"].problem
    assert [row.values["Email"] for row in read_rows(segments, newest_snapshots(segments)["warm"])] == [
        "w1@contoso.com", "w2@contoso.com"]

    made = new_destination({"displayName": "D", "consent": {"accepted": True}, "audienceId": "a1b2c3d4e5",
                            "mapping": {"email": "Email", "mergeFields": {}}, "segments": ["Warm", "Cold", "Hot"]},
                           "admin").destination
    destination = dataclasses.replace(made, id="d")
    exports = ExportService(settings=load_settings({"AzureWebJobsStorage": "UseDevelopmentStorage=true"}),
                            destinations=Destinations(destination), runs=Runs(), segments=segments, work=None,
                            plan_queue=Queue(), chunk_queue=Queue(), connections=Mailchimp())
    with pytest.raises(Refused) as refused:
        exports.start("d", "http", ["Cold"])
    assert refused.value.status == 422 and cold in refused.value.message and "BlobArchived" in refused.value.message
    [run] = exports.on_schedule()
    assert [part.segment for part in run.segments] == ["Warm", "Hot"]
    assert "segment 'Cold'" in run.details["notice"] and cold in run.details["notice"]
