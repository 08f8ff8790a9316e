"""The OAuth pieces against real parts: the local file secret store, Azurite for spent states, the local Mailchimp."""
import base64
import json
import uuid
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from azure.storage.blob import BlobServiceClient

from shared.adapters.oauth_states import BlobUsedStates
from shared.adapters.secrets import LocalFileSecrets
from shared.config import ConfigError, OAuthSettings, load_settings
from shared.oauth import STATE_KEY_SECRET, OAuthFailed, StateSigner, authorize_url, exchange_code, rotate_state_key


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def used(azurite):
    container = BlobServiceClient.from_connection_string(azurite.connection_string).get_container_client(f"t{uuid.uuid4().hex}")
    container.create_container()
    return BlobUsedStates(container)


@pytest.fixture
def secrets(tmp_path):
    return LocalFileSecrets(str(tmp_path / "secrets"))


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def signer(secrets, used, clock):
    return StateSigner(secrets, used, clock=clock)


def test_a_state_round_trips_once_and_its_key_is_kept_in_the_secret_store(signer, secrets):
    state = signer.issue("dest1", True)
    redeemed = signer.redeem(state)
    assert (redeemed.destination_id, redeemed.create_missing_merge_fields) == ("dest1", True)
    assert len(bytes.fromhex(secrets.get(STATE_KEY_SECRET))) == 32
    with pytest.raises(OAuthFailed, match="already used") as caught:
        signer.redeem(state)
    assert caught.value.status == 400


def test_another_instance_verifies_what_this_one_issued(signer, secrets, used, clock):
    other = StateSigner(secrets, used, clock=clock)
    assert other.redeem(signer.issue("dest1", False)).destination_id == "dest1"


def test_an_altered_state_is_refused(signer):
    payload, _, signature = signer.issue("dest1", False).partition(".")
    doc = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    other = base64.urlsafe_b64encode(json.dumps({**doc, "d": "dest2"}).encode()).rstrip(b"=").decode()
    for bad in (f"{other}.{signature}", "", None, "garbage", f"{payload}.AAAA"):  # another destination, same signature
        with pytest.raises(OAuthFailed, match="missing, altered"):
            signer.redeem(bad)


@pytest.mark.parametrize("forged", ["[" * 100_000, "W" * 5000 + ".", "é.AAAA", "." * 10,
                                    base64.urlsafe_b64encode(b"[" * 100_000).decode() + ".AAAA"],
                         ids=["brackets", "long", "non-ascii", "dots", "deep-json-payload"])
def test_a_forged_state_is_refused_with_400_without_being_parsed(signer, forged):
    with pytest.raises(OAuthFailed) as refused:
        signer.redeem(forged)
    assert refused.value.status == 400


def test_a_state_issued_with_a_key_rotated_twice_since_is_refused(signer, secrets, used):
    state = signer.issue("dest1", False)
    rotate_state_key(secrets)  # rotation writes a new version; the one before stays valid while its states live
    rotate_state_key(secrets)
    fresh = StateSigner(secrets, used)
    with pytest.raises(OAuthFailed, match="missing, altered"):
        fresh.redeem(state)


def test_an_expired_state_is_refused(signer, clock):
    state = signer.issue("dest1", False)
    clock.now += 601
    with pytest.raises(OAuthFailed, match="expired"):
        signer.redeem(state)


def demo_oauth(mailchimp, **overrides) -> OAuthSettings:
    values = dict(client_id="demo-client", client_secret="demo-client-secret", redirect_uri="http://127.0.0.1:9/callback",
                  authorize_url=f"{mailchimp.url}/oauth2/authorize", token_url=f"{mailchimp.url}/oauth2/token",
                  metadata_url=f"{mailchimp.url}/oauth2/metadata")
    return OAuthSettings(**{**values, **overrides})


def authorization_code(settings: OAuthSettings) -> str:
    answer = requests.get(authorize_url(settings, "s1"), allow_redirects=False, timeout=10)
    assert answer.status_code == 302
    query = parse_qs(urlsplit(answer.headers["Location"]).query)
    assert query["state"] == ["s1"]
    return query["code"][0]


def test_a_code_is_exchanged_once(mailchimp):
    settings = demo_oauth(mailchimp)
    code = authorization_code(settings)
    token = exchange_code(settings, code)
    assert token and requests.get(f"{mailchimp.api_root}/", headers={"Authorization": f"Bearer {token}"}, timeout=10).ok
    with pytest.raises(OAuthFailed, match="did not exchange") as caught:
        exchange_code(settings, code)
    assert caught.value.status == 400 and code not in caught.value.message


def test_a_wrong_client_secret_names_the_settings_but_not_the_secret(mailchimp):
    settings = demo_oauth(mailchimp, client_secret="wrong-secret-value")
    with pytest.raises(OAuthFailed, match="MAILCHIMP_OAUTH_CLIENT_SECRET") as caught:
        exchange_code(settings, authorization_code(demo_oauth(mailchimp)))
    assert "wrong-secret-value" not in caught.value.message


def test_an_unreachable_token_endpoint_is_a_clear_failure(mailchimp):
    with pytest.raises(OAuthFailed, match="could not be reached") as caught:
        exchange_code(demo_oauth(mailchimp, token_url="http://127.0.0.1:9/token"), "code")
    assert caught.value.status == 502


def test_oauth_settings_default_to_mailchimp_and_half_a_registration_is_refused():
    base = {"AzureWebJobsStorage": "UseDevelopmentStorage=true"}
    assert load_settings(base).oauth is None
    oauth = load_settings({**base, "MAILCHIMP_OAUTH_CLIENT_ID": "id", "MAILCHIMP_OAUTH_CLIENT_SECRET": "s3cr3t",
                           "MAILCHIMP_OAUTH_REDIRECT_URI": "https://app.example/api/mailchimp/oauth/callback"}).oauth
    assert oauth.token_url == "https://login.mailchimp.com/oauth2/token" and "s3cr3t" not in repr(oauth)
    with pytest.raises(ConfigError) as caught:
        load_settings({**base, "MAILCHIMP_OAUTH_CLIENT_ID": "id", "MAILCHIMP_OAUTH_TOKEN_URL": "login.mailchimp.com"})
    for name in ("MAILCHIMP_OAUTH_CLIENT_SECRET", "MAILCHIMP_OAUTH_REDIRECT_URI", "MAILCHIMP_OAUTH_TOKEN_URL"):
        assert name in str(caught.value)
