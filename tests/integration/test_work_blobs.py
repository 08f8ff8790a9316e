"""Work blobs on real Azurite: one holder at a time across workers, and nothing left behind when a run is cleaned up."""
from __future__ import annotations

import threading
import time
import uuid

import pytest
from azure.core.exceptions import HttpResponseError

from shared.adapters.storage import BlobFolder, StorageAccount
from shared.config import load_settings


def folder(azurite) -> BlobFolder:
    """A new container, through the client the app builds (its download ranges included)."""
    service = StorageAccount(load_settings({"AzureWebJobsStorage": azurite.connection_string}).storage).blob_service()
    work = BlobFolder(service.get_container_client("work" + uuid.uuid4().hex[:8]))
    work.ensure()
    return work


def held_for_a_second(work: BlobFolder, name: str, order: list[str], **options) -> threading.Thread:
    """A first holder of `name`, in a thread that holds it for a second once it has it (and then notes "first done")."""
    inside = threading.Event()

    def first() -> None:
        with work.exclusive(name, **options):
            inside.set()
            time.sleep(1.0)
            order.append("first done")

    thread = threading.Thread(target=first)
    thread.start()
    assert inside.wait(10)
    return thread


def test_a_second_holder_waits_for_the_first_and_a_missing_blob_is_created(azurite):
    work = folder(azurite)
    order: list[str] = []
    thread = held_for_a_second(work, "runs/r1/plan.lock", order)  # the blob does not exist yet
    with work.exclusive("runs/r1/plan.lock"):
        order.append("second in")
    thread.join()
    assert order == ["first done", "second in"]


def test_a_lock_only_blob_is_deleted_when_let_go_and_a_waiter_makes_it_again(azurite):
    """exclusive(remove=True), for blobs that are only locks (plan, clean-up and erasure locks): none is left after its
    holder lets go, also when a waiter took it over meanwhile, and one whose folder was deleted under it stays gone."""
    work = folder(azurite)
    order: list[str] = []
    thread = held_for_a_second(work, "runs/r5/plan.lock", order, remove=True)
    assert list(work.list_names("runs/r5/")) == ["runs/r5/plan.lock"]
    with work.exclusive("runs/r5/plan.lock", remove=True):  # waits, then takes a blob made again
        order.append("second in")
        assert list(work.list_names("runs/r5/")) == ["runs/r5/plan.lock"]
    thread.join()
    assert order == ["first done", "second in"] and list(work.list_names("runs/r5/")) == []
    with work.exclusive("runs/r6/cleanup.lock", remove=True):
        work.delete_prefix("runs/r6/")  # a clean-up deleting the run's folder, its own lock's blob included
    assert list(work.list_names("runs/r6/")) == []

def test_a_holder_that_will_not_wait_is_told_the_lease_is_taken_and_can_take_it_once_free(azurite):
    work = folder(azurite)
    with work.exclusive("runs/r3/cleanup.lock"):
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            with work.exclusive("runs/r3/cleanup.lock", wait_seconds=0):
                pass
        assert time.monotonic() - started < 5
    with work.exclusive("runs/r3/cleanup.lock", wait_seconds=0):
        pass


def test_cleaning_up_a_run_deletes_a_chunk_file_still_leased_by_its_worker(azurite):
    work = folder(azurite)
    for n in range(3):
        work.write_bytes(f"runs/r2/chunks/{n:06d}.jsonl", b'{"email": "a@contoso.com"}\n')
    with work.exclusive("runs/r2/chunks/000001.jsonl"):  # its worker has counted it, but not let go yet
        work.delete_prefix("runs/r2/chunks/")
        assert list(work.list_names("runs/r2/")) == []


def test_a_lease_taken_again_between_its_break_and_the_delete_is_broken_again(azurite, monkeypatch):
    """A worker waiting for a lock takes the lease the moment the folder's deletion breaks it: the blob still goes."""
    from azure.storage.blob import BlobLeaseClient

    import shared.adapters.storage as storage

    work = folder(azurite)
    taken_again: list[str] = []

    class Waiter(BlobLeaseClient):  # the first break is followed at once by a waiter's lease
        def __init__(self, blob, *args, **kwargs):
            super().__init__(blob, *args, **kwargs)
            self.blob = blob

        def break_lease(self, **options):
            answer = super().break_lease(**options)
            if not taken_again:
                waiter = BlobLeaseClient(self.blob)
                waiter.acquire(lease_duration=15)
                taken_again.append(waiter.id)
            return answer

    monkeypatch.setattr(storage, "BlobLeaseClient", Waiter)
    with work.exclusive("runs/r4/plan.lock"):
        work.delete_prefix("runs/r4/")
    assert taken_again and list(work.list_names("runs/r4/")) == []



def test_a_huge_model_json_is_refused_after_fetching_little_more_than_the_limit(azurite):
    """The storage client's first GET is 32 MiB by default; the app's client asks for 4 MiB at a time, so refusing a
    40 MiB model.json (limit 1 MiB here) transfers one such block, not the first 32 MiB."""
    import functools

    import pytest

    from shared.adapters.storage import READ_BLOCK, StorageAccount
    from shared.config import StorageSettings
    from shared.snapshots import ReadLimits, SnapshotProblem, read_model_json

    account = StorageAccount(StorageSettings(azurite.connection_string, None, None, None, None))
    container = account.blob_service().get_container_client("seg" + uuid.uuid4().hex[:8])
    segments = BlobFolder(container)
    segments.ensure()
    segments.write_bytes("big/model.json", b"{" + b" " * (40 << 20) + b"}")
    received: list[int] = []
    hook = lambda answer: received.append(int(answer.http_response.headers.get("Content-Length", 0)))  # noqa: E731
    container.download_blob = functools.partial(container.download_blob, raw_response_hook=hook)
    with pytest.raises(SnapshotProblem, match="MODEL_JSON_MAX_BYTES"):
        read_model_json(segments, "big/model.json", ReadLimits(model_bytes=1 << 20))
    assert 0 < sum(received) <= READ_BLOCK <= 4 << 20, f"{sum(received):,} bytes fetched in {len(received)} requests"


def test_deleting_a_folder_deletes_snapshots_too_and_raises_for_what_storage_would_not_delete(azurite):
    work = folder(azurite)
    for n in range(3):
        work.write_bytes(f"mirrors/d1/a1/v1/part-{n:02d}.jsonl.gz", b"contacts")
    work._container.get_blob_client("mirrors/d1/a1/v1/part-01.jsonl.gz").create_snapshot()  # e.g. taken by an admin
    work.delete_prefix("mirrors/d1/")
    assert list(work._container.list_blobs(name_starts_with="mirrors/", include=["snapshots"])) == []

    class Refusing:  # storage answering one blob of the batch with an error other than "gone" or "leased"
        def __getattr__(self, name):
            return getattr(work._container, name)

        def delete_blobs(self, *names, **options):
            answers = work._container.delete_blobs(*names, **options)
            answers[0].status_code = 403
            return answers

    for n in range(2):
        work.write_bytes(f"runs/r3/errors/{n}.jsonl", b"{}\n")
    refusing = BlobFolder(Refusing())
    with pytest.raises(HttpResponseError) as raised:
        refusing.delete_prefix("runs/r3/")
    assert "1 blob(s)" in str(raised.value) and "403" in str(raised.value)


def test_a_rewrite_reads_again_what_was_written_meanwhile_and_brings_back_nothing_deleted_meanwhile(azurite):
    """What the erasure scrub relies on: a run writing its file again while the scrub rewrites it loses nothing, and a
    run's folder cleaned up meanwhile stays gone (no file with other people's data made again)."""
    work = folder(azurite)
    work.write_bytes("runs/r/errors/a.jsonl", b"first\n")
    seen: list[bytes] = []

    def upper_after_a_write(data: bytes) -> bytes:
        seen.append(data)
        if len(seen) == 1:
            work.write_bytes("runs/r/errors/a.jsonl", b"second\n")  # the run writes it while the change is made
        return data.upper()

    assert work.rewrite("runs/r/errors/a.jsonl", upper_after_a_write)
    assert seen == [b"first\n", b"second\n"] and work.read_bytes("runs/r/errors/a.jsonl") == b"SECOND\n"

    work.write_bytes("runs/gone/errors/b.jsonl", b"third\n")

    def upper_after_a_delete(data: bytes) -> bytes:
        work.delete_prefix("runs/gone/")
        return data.upper()

    assert not work.rewrite("runs/gone/errors/b.jsonl", upper_after_a_delete)
    assert not work.exists("runs/gone/errors/b.jsonl")
    assert not work.rewrite("runs/never/c.jsonl", bytes.upper)  # never there: not made
    assert not work.exists("runs/never/c.jsonl")
    assert not work.rewrite("runs/r/errors/a.jsonl", lambda data: None)  # nothing to change: left as it is
    assert work.read_bytes("runs/r/errors/a.jsonl") == b"SECOND\n"

    def always_written_meanwhile(data: bytes) -> bytes:
        work.write_bytes("runs/r/errors/a.jsonl", data + b"!")
        return data
    with pytest.raises(RuntimeError, match="changed under each of"):
        work.rewrite("runs/r/errors/a.jsonl", always_written_meanwhile)


def test_a_rewrite_reads_again_a_file_of_several_ranges_written_between_them(azurite, monkeypatch):
    """A file larger than one download range is read range by range, each If-Match the first one's ETag: written in
    between, the read fails (412) and the rewrite reads it again instead of failing the erasure."""
    from azure.storage.blob import BlobClient

    from shared.adapters.storage import READ_BLOCK

    work = folder(azurite)
    size = 2 * READ_BLOCK + 10
    work.write_bytes("runs/r/retry/big.jsonl", b"a" * size)
    download = BlobClient.download_blob
    written: list[int] = []

    def written_after_the_first_range(self, *args, **kwargs):
        started = download(self, *args, **kwargs)
        if not written:
            written.append(1)
            work.write_bytes("runs/r/retry/big.jsonl", b"b" * size)
        return started

    monkeypatch.setattr(BlobClient, "download_blob", written_after_the_first_range)
    seen: list[bytes] = []
    assert work.rewrite("runs/r/retry/big.jsonl", lambda data: seen.append(data[:1]) or data.upper())
    assert seen == [b"b"] and work.read_bytes("runs/r/retry/big.jsonl") == b"B" * size


def test_a_download_reads_the_body_from_the_connection_in_big_blocks(azurite, monkeypatch):
    """A blob's body is read BODY_BLOCK at a time, not in azure-core's 4 KiB (ten Python calls each, and most of a
    refresh's time reading its segment files): the reads from the connection are counted, and the bytes come whole."""
    import os

    import urllib3

    from shared.adapters.storage import BODY_BLOCK, READ_BLOCK

    work = folder(azurite)
    data = os.urandom(READ_BLOCK + 3 * BODY_BLOCK + 1)  # two download requests, the second of more than one block
    work.write_bytes("big.bin", data)
    reads = []
    read = urllib3.response.HTTPResponse.read

    def counted(self, *args, **kwargs):
        reads.append(1)
        return read(self, *args, **kwargs)

    monkeypatch.setattr(urllib3.response.HTTPResponse, "read", counted)
    with work.open_binary("big.bin") as stream:
        assert stream.read() == data
    # 4 KiB blocks: more than a thousand; at least one a block, or the body went some other way than counted here
    assert len(data) // BODY_BLOCK <= len(reads) <= len(data) // BODY_BLOCK + 6, len(reads)
