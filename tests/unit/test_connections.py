"""Which stored credential a destination uses: the secret its record names. Every credential stored gets a secret
of its own, so a change that lost a race never decides which Mailchimp account the connector writes to, and no
secret name is ever written again after a delete (Key Vault keeps deleted names taken for up to 90 days)."""
from __future__ import annotations

import json

import pytest

from shared.adapters.secrets import LocalFileSecrets, SecretNameDeleted
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


def test_each_credential_has_a_secret_of_its_own_named_by_the_record(tmp_path):
    store = LocalFileSecrets(str(tmp_path))
    first = with_credential(destination(), "api_key", "id-a")
    second = with_credential(first, "api_key", "id-b")
    assert first.secret_name != second.secret_name and first.id in first.secret_name
    connections(store).store(first, api_key_secret(KEY_A))
    connections(store).store(second, api_key_secret(KEY_B))  # e.g. a change whose record write lost
    assert root(connections(store), first) == "https://us6.api.mailchimp.com/3.0"
    assert root(connections(store), second) == "https://us7.api.mailchimp.com/3.0"


def test_a_new_version_set_by_hand_in_the_named_secret_is_used(tmp_path):
    store = LocalFileSecrets(str(tmp_path))
    d = with_credential(destination(), "api_key", "id-a")
    connections(store).store(d, api_key_secret(KEY_A))
    store.set(d.secret_name, json.dumps(api_key_secret(KEY_B)))  # an operator's rotation in Key Vault
    assert root(connections(store), d).startswith("https://us7.")


def test_a_disconnected_record_ignores_a_secret_left_behind(tmp_path):
    store = LocalFileSecrets(str(tmp_path))
    d = destination()
    assert d.credential_kind == "none"
    store.set(d.secret_name, json.dumps(api_key_secret(KEY_A)))
    with pytest.raises(NotConnected, match="not connected"):
        connections(store).client(d)


def test_the_local_store_keeps_deleted_names_taken_as_key_vault_does(tmp_path):
    store = LocalFileSecrets(str(tmp_path))
    store.set("mailchimp-x-1", "{}")
    store.delete("mailchimp-x-1")
    assert store.get("mailchimp-x-1") is None
    with pytest.raises(SecretNameDeleted, match="cannot be used again"):
        store.set("mailchimp-x-1", "{}")
    store.delete("never-written")
    store.set("never-written", "{}")  # deleting a name that never existed takes nothing
