import json

from shared.events import created_blobs


def event(subject: str, kind: str = "Microsoft.Storage.BlobCreated") -> dict:
    return {"id": "1", "eventType": kind, "subject": subject, "data": {"url": "https://acct.blob.core.windows.net/x"}}


def test_blob_created_in_the_segments_container_names_the_blob():
    body = json.dumps(event("/blobServices/default/containers/segments/blobs/CI/Export/Seg/2026/11/28/1700/Seg_1.csv"))
    assert created_blobs(body, "segments") == ["CI/Export/Seg/2026/11/28/1700/Seg_1.csv"]


def test_other_containers_other_event_types_and_garbage_are_ignored():
    batch = [event("/blobServices/default/containers/other/blobs/a.csv"),
             event("/blobServices/default/containers/segments/blobs/b.csv", "Microsoft.Storage.BlobDeleted"),
             "not an event"]
    assert created_blobs(json.dumps(batch), "segments") == []
    assert created_blobs(b"{not json", "segments") == []
