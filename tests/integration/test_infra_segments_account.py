"""The app's side of infra/'s two storage accounts: segment files are read from the account SEGMENTS_CONNECTION_STRING
or SEGMENTS_BLOB_URI names (in Azure the segments account, where Customer Insights writes and blob soft delete stays
off), and everything else (work blobs, queues, tables) from AzureWebJobsStorage's (blob soft delete on). Unset, the
segments are read through AzureWebJobsStorage, as before the second account.

Two Azurite processes stand in for the two accounts; each holds a `segments` container with a different segment, so
the segment the app finds says which account it read.
"""
from __future__ import annotations

from pathlib import Path

import pytest
from azure.storage.blob import BlobServiceClient

from shared import bootstrap
from shared.adapters.storage import READ_BLOCK
from shared.config import CONTAINER_WORK, load_settings
from shared.snapshots import newest_snapshots
from tests.services import Azurite, start_azurite


@pytest.fixture(scope="module")
def accounts():
    """(the app's account, the segments account), each with a one-segment snapshot in `segments`."""
    app_account, segments_account = start_azurite(), start_azurite()
    try:
        for azurite, segment in ((app_account, "OnTheAppAccount"), (segments_account, "OnTheSegmentsAccount")):
            container = BlobServiceClient.from_connection_string(azurite.connection_string).get_container_client(
                "segments")
            container.create_container()
            folder = f"{segment}/2026/01/02/0300/"
            container.upload_blob(folder + "part-0.csv", b"Email\na@example.com\n")
            container.upload_blob(folder + "_SUCCESS", b"")
        yield app_account, segments_account
    finally:
        app_account.stop()
        segments_account.stop()


def _build(app_account: Azurite, tmp_path: Path, **env: str) -> bootstrap.App:
    return bootstrap.build(load_settings({"AzureWebJobsStorage": app_account.connection_string,
                                          "LOCAL_SECRETS_DIR": str(tmp_path / "secrets"), **env}))


def _work_blobs(azurite: Azurite) -> bool:
    return BlobServiceClient.from_connection_string(azurite.connection_string).get_container_client(
        CONTAINER_WORK).exists()


def test_segments_are_read_from_the_account_segments_connection_string_names(accounts, tmp_path: Path) -> None:
    app_account, segments_account = accounts
    app = _build(app_account, tmp_path, SEGMENTS_CONNECTION_STRING=segments_account.connection_string)
    assert set(newest_snapshots(app.exports.segments)) == {"onthesegmentsaccount"}  # keys are lower-cased
    # the app's own blobs stay on AzureWebJobsStorage: nothing of the app's is written to the segments account
    assert _work_blobs(app_account) and not _work_blobs(segments_account)
    client = app.exports.segments._container  # downloads in the same steps as the app's own account's
    assert (client._config.max_single_get_size, client._config.max_chunk_get_size) == (READ_BLOCK, READ_BLOCK)


def test_without_a_segments_account_segments_are_read_through_azure_web_jobs_storage(accounts, tmp_path: Path) -> None:
    app_account, _ = accounts
    app = _build(app_account, tmp_path)
    assert set(newest_snapshots(app.exports.segments)) == {"ontheappaccount"}


def test_segments_blob_uri_is_read_with_the_apps_managed_identity(accounts, tmp_path: Path) -> None:
    """Nothing is fetched until a segment is read, so the client can be checked without Azure: it points at the
    segments account's endpoint and signs in with the user-assigned identity AzureWebJobsStorage__clientId names."""
    from azure.identity import ManagedIdentityCredential

    app_account, _ = accounts
    uri = "https://stsegexample.blob.core.windows.net/"
    client_id = "00000000-0000-0000-0000-000000000001"
    app = _build(app_account, tmp_path, SEGMENTS_BLOB_URI=uri, AzureWebJobsStorage__clientId=client_id)
    client = app.exports.segments._container
    assert client.url == uri + "segments"
    assert isinstance(client.credential, ManagedIdentityCredential)
    assert (client._config.max_single_get_size, client._config.max_chunk_get_size) == (READ_BLOCK, READ_BLOCK)
