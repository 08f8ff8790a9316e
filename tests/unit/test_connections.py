"""Which stored credential a destination uses: the version its record names, so a change that lost a race (and left
its version behind as the newest) never decides which Mailchimp account the connector writes to."""
from __future__ import annotations

import json

import pytest

from shared.adapters.secrets import LocalFileSecrets
from shared.connections import MailchimpConnections, NotConnected, api_key_secret
from shared.destinations import new_destination, with_credential

KEY_A = "a" * 32 + "-us6"
KEY_B = "b" * 32 + "-us7"


def connections(store: LocalFileSecrets) -> MailchimpConnections:
    return MailchimpConnections(store, base_url=None, max_connections=1)


def destination():
    return new_destination({"displayName": "D", "consent": {"accepted": True}, "audienceId": "a1",
                            "mapping": {"email": "Email"}, "segments": ["S"]}, "admin").destination


def root(c: MailchimpConnections, d) -> str:
    with c.client(d) as client:
        return client._http._root


def test_a_newer_version_left_by_a_losing_change_is_not_used(tmp_path):
    store = LocalFileSecrets(str(tmp_path))
    winner = with_credential(destination(), "api_key", "id-a")
    connections(store).store(winner, api_key_secret(KEY_A))
    loser = with_credential(winner, "api_key", "id-b")
    connections(store).store(loser, api_key_secret(KEY_B))  # stored, but its record write lost
    assert root(connections(store), winner) == "https://us6.api.mailchimp.com/3.0"
    assert root(connections(store), loser) == "https://us7.api.mailchimp.com/3.0"


def test_a_cached_client_of_another_credential_is_not_reused(tmp_path):
    store = LocalFileSecrets(str(tmp_path))
    c = connections(store)
    first = with_credential(destination(), "api_key", "id-a")
    c.store(first, api_key_secret(KEY_A))
    assert root(c, first).startswith("https://us6.")
    second = with_credential(first, "api_key", "id-b")
    store.set(first.secret_name, json.dumps({**api_key_secret(KEY_B), "id": "id-b"}))  # written by another instance
    assert root(c, second).startswith("https://us7.")


def test_a_version_without_an_id_is_an_operators_rotation_and_is_used(tmp_path):
    store = LocalFileSecrets(str(tmp_path))
    d = with_credential(destination(), "api_key", "id-a")
    connections(store).store(d, api_key_secret(KEY_A))
    store.set(d.secret_name, json.dumps(api_key_secret(KEY_B)))  # a new version set in Key Vault by hand
    assert root(connections(store), d).startswith("https://us7.")


def test_the_named_version_gone_says_connect_again(tmp_path):
    store = LocalFileSecrets(str(tmp_path))
    d = with_credential(destination(), "api_key", "id-a")
    for other in ("id-b", "id-c"):  # the local store keeps two versions: id-a is gone
        store.set(d.secret_name, json.dumps({**api_key_secret(KEY_B), "id": other}))
    with pytest.raises(NotConnected, match="connect it again"):
        connections(store).client(d)


def test_a_disconnected_record_ignores_a_version_left_behind(tmp_path):
    store = LocalFileSecrets(str(tmp_path))
    d = destination()
    assert d.credential_kind == "none"
    store.set(d.secret_name, json.dumps({**api_key_secret(KEY_A), "id": "lost"}))
    with pytest.raises(NotConnected, match="not connected"):
        connections(store).client(d)
