import pytest

from shared.config import ConfigError, load_settings

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


def test_the_readme_settings_table_lists_every_setting_the_app_reads():
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    source = (root / "shared" / "config.py").read_text(encoding="utf-8")
    read = set(re.findall(r'env(?:\.get)?[\[(]\s*"([A-Z][A-Za-z0-9_]+)"', source)) | set(re.findall(r'_\w+\(env, "([A-Z][A-Z0-9_]+)"', source))
    table = "\n".join(line for line in (root / "README.md").read_text(encoding="utf-8").splitlines() if line.startswith("| `"))
    assert len(read) >= 15, sorted(read)  # the patterns still find what config.py reads
    assert not [name for name in sorted(read) if f"`{name}`" not in table]
