"""Credentials: where the account lives, what the cap is keyed on, and that the secret never shows."""
import pytest

from shared.mailchimp import Credentials

KEY = "0123456789abcdef0123456789abcdef-us6"


def test_api_key_gives_data_centre_root_and_hides_the_key():
    creds = Credentials.from_api_key(f"  {KEY}\n")
    assert creds.api_root == "https://us6.api.mailchimp.com/3.0"
    assert creds.kind == "api_key"
    assert creds.secret == KEY
    for text in (repr(creds), str(creds), creds.account):
        assert "0123456789abcdef" not in text


def test_same_key_same_account_other_key_other_account():
    other = "fedcba9876543210fedcba9876543210-us6"
    assert Credentials.from_api_key(KEY).account == Credentials.from_api_key(KEY).account
    assert Credentials.from_api_key(KEY).account != Credentials.from_api_key(other).account


def test_base_url_overrides_the_data_centre():
    creds = Credentials.from_api_key(KEY, base_url="http://127.0.0.1:8080/3.0/")
    assert creds.api_root == "http://127.0.0.1:8080/3.0"


@pytest.mark.parametrize("key, problem", [
    ("", "empty"),
    ("0123456789abcdef0123456789abcdef", "malformed"),
    ("0123456789abcdef0123456789abcdeX-us6", "malformed"),
    ("0123456789abcdef0123456789abcdef-", "malformed"),
])
def test_malformed_key_names_the_problem_without_the_key(key, problem):
    with pytest.raises(ValueError) as caught:
        Credentials.from_api_key(key)
    assert problem in str(caught.value)
    assert "API keys" in str(caught.value)  # says where to get a good one
    if key:
        assert key not in str(caught.value)


def test_base_url_must_be_http():
    with pytest.raises(ValueError, match="MAILCHIMP_API_BASE_URL"):
        Credentials.from_api_key(KEY, base_url="ftp://example.com")


def test_oauth_token_uses_metadata_endpoint_and_login_as_account():
    metadata = {"dc": "us19", "api_endpoint": "https://us19.api.mailchimp.com", "login": {"login_id": 42}}
    creds = Credentials.from_oauth_token("abc123token", metadata)
    assert creds.api_root == "https://us19.api.mailchimp.com/3.0"
    assert creds.kind == "oauth"
    assert creds.account == "us19:user-42"
    assert "abc123token" not in repr(creds)


def test_oauth_tokens_of_one_user_share_the_cap():
    metadata = {"dc": "us19", "api_endpoint": "https://us19.api.mailchimp.com", "user_id": 7}
    assert Credentials.from_oauth_token("t1", metadata).account == Credentials.from_oauth_token("t2", metadata).account


def test_oauth_metadata_without_endpoint_asks_to_reconnect():
    with pytest.raises(ValueError, match="reconnect"):
        Credentials.from_oauth_token("token", {"error": "invalid_token"})


def test_oauth_base_url_stands_in_for_a_missing_endpoint():
    creds = Credentials.from_oauth_token("s3cr3t", {"dc": None, "api_endpoint": None}, base_url="http://127.0.0.1:9/3.0")
    assert creds.api_root == "http://127.0.0.1:9/3.0"
    assert creds.account.startswith(":token-") and "s3cr3t" not in creds.account
