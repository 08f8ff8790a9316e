"""Work blobs on real Azurite: one holder at a time across workers, and nothing left behind when a run is cleaned up."""
from __future__ import annotations

import threading
import time
import uuid

from azure.storage.blob import BlobServiceClient

from shared.adapters.storage import BlobFolder


def folder(azurite) -> BlobFolder:
    work = BlobFolder(BlobServiceClient.from_connection_string(azurite.connection_string)
                      .get_container_client("work" + uuid.uuid4().hex[:8]))
    work.ensure()
    return work


def test_a_second_holder_waits_for_the_first_and_a_missing_blob_is_created(azurite):
    work = folder(azurite)
    order: list[str] = []
    inside = threading.Event()

    def first() -> None:
        with work.exclusive("runs/r1/plan.lock"):  # the blob does not exist yet
            inside.set()
            time.sleep(1.0)
            order.append("first done")

    thread = threading.Thread(target=first)
    thread.start()
    assert inside.wait(10)
    with work.exclusive("runs/r1/plan.lock"):
        order.append("second in")
    thread.join()
    assert order == ["first done", "second in"]


def test_cleaning_up_a_run_deletes_a_chunk_file_still_leased_by_its_worker(azurite):
    work = folder(azurite)
    for n in range(3):
        work.write_bytes(f"runs/r2/chunks/{n:06d}.jsonl", b'{"email": "a@contoso.com"}\n')
    with work.exclusive("runs/r2/chunks/000001.jsonl"):  # its worker has counted it, but not let go yet
        work.delete_prefix("runs/r2/chunks/")
        assert list(work.list_names("runs/r2/")) == []
