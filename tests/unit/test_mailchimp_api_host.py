"""Where the app sends Mailchimp credentials: always https://<dc>.api.mailchimp.com/3.0, with the data centre checked,
never a host named by Mailchimp's OAuth metadata answer or by a stored secret; MAILCHIMP_API_BASE_URL is the one
explicit override. Settings naming remote URLs must be https, except for loopback hosts (local development)."""
from __future__ import annotations

import json
from dataclasses import replace

import pytest

from shared.adapters.secrets import LocalFileSecrets
from shared.config import ConfigError, load_settings
from shared.connections import MailchimpConnections, oauth_secret
from shared.destinations import new_destination
from shared.mailchimp import Credentials

EVIL = "https://collector.example"


@pytest.mark.parametrize("endpoint", [EVIL, "http://us19.api.mailchimp.com.collector.example", "", None])
def test_an_oauth_token_goes_to_its_data_centres_api_whatever_the_metadata_endpoint_says(endpoint):
    metadata = {"dc": "us19", "api_endpoint": endpoint, "login": {"login_id": 42}}
    creds = Credentials.from_oauth_token("abc123token", metadata)
    assert creds.api_root == "https://us19.api.mailchimp.com/3.0"


@pytest.mark.parametrize("dc", ["us19.collector.example/x", "collector.example#", "US19", "u1", "us1234", "us19 ", "us19\n",
                                "../us19", "", None, 19])
def test_a_data_centre_that_is_not_one_is_refused_with_reconnect(dc):
    with pytest.raises(ValueError, match="reconnect") as caught:
        Credentials.from_oauth_token("abc123token", {"dc": dc, "api_endpoint": "https://us19.api.mailchimp.com"})
    assert "abc123token" not in str(caught.value)


def test_the_base_url_setting_stays_the_explicit_override():
    creds = Credentials.from_oauth_token("t", {"dc": "us6", "api_endpoint": EVIL}, base_url="http://127.0.0.1:8765/3.0")
    assert creds.api_root == "http://127.0.0.1:8765/3.0"


def destination():
    created = new_destination({"displayName": "D", "consent": {"accepted": True}, "audienceId": "a1",
                               "mapping": {"email": "Email"}, "segments": ["S"]}, "admin").destination
    return replace(created, credential_kind="oauth")  # connected by an older version: its record names no credential id


def test_a_stored_oauth_secret_cannot_redirect_the_token(tmp_path):
    store = LocalFileSecrets(str(tmp_path))
    d = destination()
    # a secret written by an older version (or tampered with): its apiEndpoint names another host
    store.set(d.secret_name, json.dumps({"kind": "oauth", "accessToken": "t0ken", "dc": "us6", "apiEndpoint": EVIL}))
    connections = MailchimpConnections(store, base_url=None, max_connections=1)
    with connections.client(d) as client:
        assert client._http._root == "https://us6.api.mailchimp.com/3.0"
    assert connections.client_for_secret(oauth_secret("t0ken", {"dc": "us6", "api_endpoint": EVIL}))._http._root \
        == "https://us6.api.mailchimp.com/3.0"


def test_a_stored_secret_without_a_valid_data_centre_is_refused(tmp_path):
    store = LocalFileSecrets(str(tmp_path))
    d = destination()
    store.set(d.secret_name, json.dumps({"kind": "oauth", "accessToken": "t0ken", "dc": "collector.example/",
                                         "apiEndpoint": EVIL}))
    with pytest.raises(ValueError, match="reconnect"):
        MailchimpConnections(store, base_url=None, max_connections=1).client(d)


BASE = {"AzureWebJobsStorage": "UseDevelopmentStorage=true"}
OAUTH = {"MAILCHIMP_OAUTH_CLIENT_ID": "id", "MAILCHIMP_OAUTH_CLIENT_SECRET": "s",
         "MAILCHIMP_OAUTH_REDIRECT_URI": "https://app.example/api/mailchimp/oauth/callback"}


@pytest.mark.parametrize("name", ["MAILCHIMP_API_BASE_URL", "MAILCHIMP_OAUTH_AUTHORIZE_URL", "MAILCHIMP_OAUTH_TOKEN_URL",
                                  "MAILCHIMP_OAUTH_METADATA_URL", "KEY_VAULT_URL"])
def test_remote_urls_must_be_https(name):
    with pytest.raises(ConfigError) as caught:
        load_settings({**BASE, **OAUTH, name: "http://mailchimp.example/3.0"})
    assert name in str(caught.value) and "https" in str(caught.value)


@pytest.mark.parametrize("host", ["127.0.0.1:8765", "localhost:8765", "[::1]:8765", "127.0.0.2"])
def test_loopback_hosts_may_use_http_for_local_development(host):
    settings = load_settings({**BASE, **OAUTH, "MAILCHIMP_API_BASE_URL": f"http://{host}/3.0",
                              "MAILCHIMP_OAUTH_TOKEN_URL": f"http://{host}/oauth2/token"})
    assert settings.mailchimp_api_base_url == f"http://{host}/3.0"
    assert settings.oauth.token_url == f"http://{host}/oauth2/token"


@pytest.mark.parametrize("url", ["http://localhost.collector.example/3.0", "http://127.0.0.1.collector.example/3.0",
                                 "http://127.0.0.1@collector.example/3.0", "http://0x7f000001.example/3.0"])
def test_a_host_that_only_looks_local_is_remote(url):
    with pytest.raises(ConfigError, match="MAILCHIMP_API_BASE_URL"):
        load_settings({**BASE, "MAILCHIMP_API_BASE_URL": url})
