import pytest

from shared.config import ConfigError, load_settings, on_this_machine

AZURITE = "UseDevelopmentStorage=true"


def test_defaults_with_only_a_storage_connection():
    settings = load_settings({"AzureWebJobsStorage": AZURITE})
    assert settings.segments_container == "segments"
    assert settings.mailchimp_max_connections == 10
    assert settings.max_profiles_per_export == 1_000_000
    assert settings.key_vault_url is None and settings.mailchimp_api_base_url is None


def test_identity_based_storage_derives_service_uris_from_the_account_name():
    settings = load_settings({"AzureWebJobsStorage__accountName": "acct", "AzureWebJobsStorage__clientId": "cid"})
    assert settings.storage.connection_string is None
    assert settings.storage.queue_uri == "https://acct.queue.core.windows.net"
    assert settings.storage.client_id == "cid"


def test_every_problem_is_reported_at_once_with_the_setting_name():
    with pytest.raises(ConfigError) as caught:
        load_settings({"MAILCHIMP_MAX_CONNECTIONS": "eleven", "KEY_VAULT_URL": "vault", "SEGMENTS_CONTAINER": "Bad_Name",
                       "MAILCHIMP_API_BASE_URL": "us6.api.mailchimp.com"})
    message = str(caught.value)
    for name in ("AzureWebJobsStorage", "MAILCHIMP_MAX_CONNECTIONS", "KEY_VAULT_URL", "SEGMENTS_CONTAINER", "MAILCHIMP_API_BASE_URL"):
        assert name in message


def test_connection_cap_above_mailchimps_limit_is_refused():
    with pytest.raises(ConfigError, match="MAILCHIMP_MAX_CONNECTIONS must be between 1 and 10"):
        load_settings({"AzureWebJobsStorage": AZURITE, "MAILCHIMP_MAX_CONNECTIONS": "25"})


def test_base_url_override_loses_its_trailing_slash():
    settings = load_settings({"AzureWebJobsStorage": AZURITE, "MAILCHIMP_API_BASE_URL": "http://127.0.0.1:8765/3.0/"})
    assert settings.mailchimp_api_base_url == "http://127.0.0.1:8765/3.0"


def test_retention_periods_default_to_30_days_for_people_and_a_year_for_run_counts():
    settings = load_settings({"AzureWebJobsStorage": AZURITE})
    assert (settings.retention_personal_days, settings.retention_run_days) == (30, 365)
    settings = load_settings({"AzureWebJobsStorage": AZURITE, "RETENTION_PERSONAL_DAYS": "7", "RETENTION_RUN_DAYS": "7"})
    assert (settings.retention_personal_days, settings.retention_run_days) == (7, 7)


@pytest.mark.parametrize("env, problem", [
    ({"RETENTION_PERSONAL_DAYS": "0"}, "RETENTION_PERSONAL_DAYS must be between 1 and 3650, got 0"),
    ({"RETENTION_PERSONAL_DAYS": "2.5"}, "RETENTION_PERSONAL_DAYS must be a whole number between 1 and 3650"),
    ({"RETENTION_RUN_DAYS": "29"}, "RETENTION_RUN_DAYS must be at least RETENTION_PERSONAL_DAYS (30), got 29"),
    ({"RETENTION_PERSONAL_DAYS": "90", "RETENTION_RUN_DAYS": "60"},
     "RETENTION_RUN_DAYS must be at least RETENTION_PERSONAL_DAYS (90), got 60"),
])
def test_retention_periods_are_whole_days_and_run_records_outlive_the_files_naming_people(env, problem):
    with pytest.raises(ConfigError) as caught:
        load_settings({"AzureWebJobsStorage": AZURITE, **env})
    assert problem in str(caught.value)


def test_the_audience_mirror_is_read_in_full_weekly_by_default_so_daily_refreshes_read_changes_and_can_be_turned_off():
    """A daily refresh comes a little more than 24 h after the last: a day's maximum age would read every one in full."""
    assert load_settings({"AzureWebJobsStorage": AZURITE}).audience_mirror_max_age_hours == 168
    assert load_settings({"AzureWebJobsStorage": AZURITE, "AUDIENCE_MIRROR_MAX_AGE_HOURS": "0"}).audience_mirror_max_age_hours == 0
    for bad, problem in (("721", "must be between 0 and 720, got 721"), ("1.5", "must be a whole number between 0 and 720")):
        with pytest.raises(ConfigError, match=f"AUDIENCE_MIRROR_MAX_AGE_HOURS {problem}"):
            load_settings({"AzureWebJobsStorage": AZURITE, "AUDIENCE_MIRROR_MAX_AGE_HOURS": bad})


def test_the_readme_settings_table_lists_every_setting_the_app_reads():
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    source = (root / "shared" / "config.py").read_text(encoding="utf-8")
    read = set(re.findall(r'env(?:\.get)?[\[(]\s*"([A-Z][A-Za-z0-9_]+)"', source)) | set(re.findall(r'_\w+\(env, "([A-Z][A-Z0-9_]+)"', source))
    table = "\n".join(line for line in (root / "README.md").read_text(encoding="utf-8").splitlines() if line.startswith("| `"))
    assert len(read) >= 15, sorted(read)  # the patterns still find what config.py reads
    assert not [name for name in sorted(read) if f"`{name}`" not in table]


# --- where segment files are read from (SEGMENTS_BLOB_URI / SEGMENTS_CONNECTION_STRING) ------------------------------

IDENTITY_STORAGE = {"AzureWebJobsStorage__accountName": "stapp", "AzureWebJobsStorage__clientId": "cid"}
SEGMENTS_URI = "https://stsegexample.blob.core.windows.net/"
AZURITE_SEGMENTS = ("DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=c2VjcmV0LWtleQ==;"
                    "BlobEndpoint=http://127.0.0.1:10010/devstoreaccount1;")


def test_segments_are_read_through_azure_web_jobs_storage_when_no_account_of_their_own_is_set():
    """Unset, nothing changes: local development and deployments made before the segments account keep working."""
    assert load_settings({"AzureWebJobsStorage": AZURITE}).segments_storage is None
    assert load_settings(IDENTITY_STORAGE).segments_storage is None
    assert load_settings({**IDENTITY_STORAGE, "SEGMENTS_BLOB_URI": "  "}).segments_storage is None


def test_segments_blob_uri_is_read_with_the_apps_identity():
    segments = load_settings({**IDENTITY_STORAGE, "SEGMENTS_BLOB_URI": SEGMENTS_URI}).segments_storage
    assert segments is not None
    assert (segments.blob_uri, segments.client_id, segments.connection_string) == (SEGMENTS_URI, "cid", None)
    assert segments.queue_uri is None and segments.table_uri is None  # a blob endpoint, nothing else


def test_segments_connection_string_for_local_or_key_based_use():
    settings = load_settings({"AzureWebJobsStorage": AZURITE, "SEGMENTS_CONNECTION_STRING": AZURITE_SEGMENTS})
    assert settings.segments_storage is not None
    assert settings.segments_storage.connection_string == AZURITE_SEGMENTS and settings.segments_storage.blob_uri is None
    assert settings.storage.connection_string == AZURITE  # AzureWebJobsStorage is untouched
    assert load_settings({"AzureWebJobsStorage": AZURITE, "SEGMENTS_CONNECTION_STRING": AZURITE}).segments_storage


@pytest.mark.parametrize("uri, says", [
    ("http://stseg.blob.core.windows.net/", "must be the https:// blob endpoint"),
    ("http://127.0.0.1:10000/devstoreaccount1", "SEGMENTS_CONNECTION_STRING"),  # an emulator: the connection string
    ("stseg.blob.core.windows.net", "must be the https:// blob endpoint"),
    ("https://stseg.blob.core.windows.net/segments", "without a path"),
    ("https://stseg.blob.core.windows.net/?sv=2024&sig=SECRETSIG", "must not carry a query string"),
])
def test_a_segments_blob_uri_that_is_not_a_bare_https_endpoint_is_refused(uri, says):
    with pytest.raises(ConfigError, match="SEGMENTS_BLOB_URI") as caught:
        load_settings({**IDENTITY_STORAGE, "SEGMENTS_BLOB_URI": uri})
    assert says in str(caught.value)
    assert "SECRETSIG" not in str(caught.value), "a SAS token is not repeated"


@pytest.mark.parametrize("connection, says", [
    ("not a connection string", "is not a storage connection string"),
    ("AccountKey=SECRETKEY==", "names no blob endpoint"),
    ("AccountName=stseg;AccountKey=SECRETKEY==;BlobEndpoint=http://stseg.blob.core.windows.net/", "must be https://"),
])
def test_a_bad_segments_connection_string_is_refused_without_repeating_it(connection, says):
    with pytest.raises(ConfigError, match="SEGMENTS_CONNECTION_STRING") as caught:
        load_settings({"AzureWebJobsStorage": AZURITE, "SEGMENTS_CONNECTION_STRING": connection})
    assert says in str(caught.value)
    assert "SECRETKEY" not in str(caught.value) and "not a connection string" not in str(caught.value)


def test_segments_blob_uri_and_connection_string_together_are_refused():
    with pytest.raises(ConfigError, match="SEGMENTS_BLOB_URI and SEGMENTS_CONNECTION_STRING are both set") as caught:
        load_settings({**IDENTITY_STORAGE, "SEGMENTS_BLOB_URI": SEGMENTS_URI, "SEGMENTS_CONNECTION_STRING": AZURITE})
    assert AZURITE not in str(caught.value)


def test_segments_problems_are_reported_with_the_others():
    with pytest.raises(ConfigError) as caught:
        load_settings({"SEGMENTS_BLOB_URI": "ftp://x", "MAILCHIMP_MAX_CONNECTIONS": "99"})
    message = str(caught.value)
    for name in ("AzureWebJobsStorage", "SEGMENTS_BLOB_URI", "MAILCHIMP_MAX_CONNECTIONS"):
        assert name in message


@pytest.mark.parametrize("connection, local", [
    ("UseDevelopmentStorage=true", True),
    ("DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=a2V5;BlobEndpoint=http://127.0.0.1:10000/devstoreaccount1;"
     "QueueEndpoint=http://127.0.0.1:10001/devstoreaccount1;TableEndpoint=http://localhost:10002/devstoreaccount1;", True),
    ("DefaultEndpointsProtocol=https;AccountName=stprod;AccountKey=a2V5;EndpointSuffix=core.windows.net", False),
    ("AccountName=stprod;AccountKey=a2V5;BlobEndpoint=http://127.0.0.1:10000/stprod", False),  # tables go to Azure
    ("UseDevelopmentStorage=true;AccountName=stprod;AccountKey=a2V5", False),  # the SDK reads only the whole string so
    ("BlobEndpoint=http://127.0.0.1:10000/a;TableEndpoint=https://stprod.table.core.windows.net/;SharedAccessSignature=sv=1", False),
])
def test_the_app_makes_its_tables_only_where_table_calls_go_to_this_machine(connection, local) -> None:
    """bootstrap's `create`, decided from the table client's own endpoint (no network): Azurite, never an Azure
    account, key-based or not, where a deleted table must stay missing (shared/adapters/tables.py)."""
    from azure.data.tables import TableServiceClient

    assert on_this_machine(TableServiceClient.from_connection_string(connection).url) is local
