"""Destination writes are conditional: a change computed from a read that is stale by the time it is written loses
(409, nothing saved, what to do), so a consent withdrawal or a DELETE that landed in between is never undone.

Real Table Storage (Azurite), the real DestinationService, the local Mailchimp where a credential is checked. The race
is made deterministic: the store runs the competing change right after the racing call has read the destination.
"""
from __future__ import annotations

import uuid
from pathlib import Path
from typing import Callable
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from azure.storage.blob import BlobServiceClient

from shared.adapters.oauth_states import BlobUsedStates
from shared.adapters.secrets import LocalFileSecrets
from shared.adapters.tables import DestinationTable
from shared.config import OAuthSettings
from shared.connections import MailchimpConnections
from shared.destination_service import DestinationService
from shared.oauth import StateSigner
from tests.services import table_service

DEMO_KEY = "0123456789abcdef0123456789abcdef-us6"
DEMO_AUDIENCE = "a1b2c3d4e5"
REDIRECT = "http://127.0.0.1:9/api/mailchimp/oauth/callback"


class Exports:
    def __init__(self) -> None:
        self.cancelled: list[tuple[str, str]] = []

    def cancel(self, destination_id: str, reason: str) -> str | None:
        self.cancelled.append((destination_id, reason))
        return None

    def runs_of(self, destination_id: str) -> list:
        return []


class Files:
    """The work container as a destination's deletion sees it: nothing kept (these tests are about the record)."""

    def write_bytes(self, name: str, data: bytes) -> None:
        pass

    def delete_prefix(self, prefix: str) -> None:
        pass


class RacingTable(DestinationTable):
    """A DestinationTable that runs `meanwhile` once, right after the next read of a destination's record."""

    meanwhile: Callable[[], None] | None = None

    def _get_entity(self, destination_id: str):
        entity = super()._get_entity(destination_id)
        if self.meanwhile is not None:
            run, self.meanwhile = self.meanwhile, None
            run()
        return entity


@pytest.fixture
def world(azurite, mailchimp, tmp_path: Path):
    tables = table_service(azurite.connection_string)
    name = "dest" + uuid.uuid4().hex[:8]
    container = BlobServiceClient.from_connection_string(azurite.connection_string).get_container_client(f"w{uuid.uuid4().hex}")
    container.create_container()
    secrets = LocalFileSecrets(str(tmp_path / "secrets"))
    oauth = OAuthSettings(client_id="demo-client", client_secret="demo-client-secret", redirect_uri=REDIRECT,
                          authorize_url=f"{mailchimp.url}/oauth2/authorize", token_url=f"{mailchimp.url}/oauth2/token",
                          metadata_url=f"{mailchimp.url}/oauth2/metadata")

    def service(table_type=DestinationTable):
        table = table_type(tables, name)
        connections = MailchimpConnections(secrets, base_url=mailchimp.api_root, max_connections=2)
        return DestinationService(table, connections, exports=Exports(), run_files=Files(), segments=None, oauth=oauth,
                                  states=StateSigner(secrets, BlobUsedStates(container))), table

    racing, racing_table = service(RacingTable)
    other, other_table = service()
    return racing, racing_table, other, other_table, secrets, tmp_path / "secrets"


def body(**overrides) -> dict:
    return {"displayName": "Newsletter", "consent": {"accepted": True}, "audienceId": DEMO_AUDIENCE,
            "mapping": {"email": "Email", "mergeFields": {}}, "segments": ["HighValueCustomers"], **overrides}


def conflict_status(error: BaseException) -> int | None:
    return getattr(error, "status", None)


def test_a_patch_computed_from_a_stale_read_loses_to_a_consent_withdrawal_that_landed_in_between(world):
    racing, racing_table, other, other_table, _, _ = world
    d = other.create(body(), "admin")
    racing_table.meanwhile = lambda: other.update(d.id, {"consent": {"accepted": False}}, "privacy officer")
    with pytest.raises(Exception) as caught:
        racing.update(d.id, {"displayName": "Renamed"}, "marketing")  # read before the withdrawal, written after it
    assert conflict_status(caught.value) == 409, caught.value
    assert "nothing was saved" in str(caught.value)
    stored = other_table.get(d.id)
    assert stored.consent_accepted is False and stored.consent_by == "privacy officer"
    assert stored.display_name == "Newsletter"
    # sent again, it is computed from the current record and cannot undo the withdrawal
    again = racing.update(d.id, {"displayName": "Renamed"}, "marketing")
    assert again.display_name == "Renamed" and again.consent_accepted is False


def test_a_new_api_key_computed_from_a_stale_read_loses_and_leaves_the_stored_credential_as_it_was(world):
    racing, racing_table, other, other_table, secrets, secrets_dir = world
    d = other.create(body(), "admin")  # not connected yet: no credential stored
    racing_table.meanwhile = lambda: other.update(d.id, {"consent": {"accepted": False}}, "privacy officer")
    with pytest.raises(Exception) as caught:
        racing.update(d.id, {"mailchimp": {"apiKey": DEMO_KEY}}, "marketing")
    assert conflict_status(caught.value) == 409, caught.value
    stored = other_table.get(d.id)
    assert stored.consent_accepted is False and stored.credential_kind == "none"
    assert secrets.get(d.secret_name) is None  # the key that lost was not left in the secret store


def test_a_patch_racing_a_delete_does_not_bring_the_destination_or_its_credential_back(world):
    racing, racing_table, other, other_table, secrets, secrets_dir = world
    d = other.create(body(), "admin")
    racing_table.meanwhile = lambda: other.delete(d.id)
    with pytest.raises(Exception) as caught:
        racing.update(d.id, {"mailchimp": {"apiKey": DEMO_KEY}}, "marketing")
    assert conflict_status(caught.value) == 409, caught.value
    assert other_table.get(d.id) is None
    assert secrets.get(d.secret_name) is None and not list(secrets_dir.glob(f"{d.secret_name}*"))


def oauth_callback(service: DestinationService, destination_id: str) -> dict[str, str]:
    """Connect, let the local Mailchimp approve, and return the parameters its redirect carries back."""
    answer = requests.get(service.connect_url(destination_id, False), allow_redirects=False, timeout=10)
    assert answer.status_code == 302
    return {k: v[0] for k, v in parse_qs(urlsplit(answer.headers["Location"]).query).items()}


def test_an_oauth_finish_racing_a_delete_stores_nothing_and_says_so(world):
    racing, racing_table, other, other_table, secrets, secrets_dir = world
    d = other.create(body(), "admin")
    params = oauth_callback(racing, d.id)
    racing_table.meanwhile = lambda: other.delete(d.id)  # deleted while the code is being exchanged
    with pytest.raises(Exception) as caught:
        racing.finish_oauth(params)
    assert conflict_status(caught.value) in (404, 409), caught.value
    assert "nothing was stored" in str(caught.value)
    assert other_table.get(d.id) is None
    assert secrets.get(d.secret_name) is None and not list(secrets_dir.glob(f"{d.secret_name}*"))


def test_an_oauth_finish_racing_a_consent_withdrawal_loses(world):
    racing, racing_table, other, other_table, secrets, _ = world
    d = other.create(body(), "admin")
    params = oauth_callback(racing, d.id)
    racing_table.meanwhile = lambda: other.update(d.id, {"consent": {"accepted": False}}, "privacy officer")
    with pytest.raises(Exception) as caught:
        racing.finish_oauth(params)
    assert conflict_status(caught.value) == 409, caught.value
    assert "connect" in str(caught.value)
    stored = other_table.get(d.id)
    assert stored.consent_accepted is False and stored.credential_kind == "none"
    assert secrets.get(d.secret_name) is None


def test_a_delete_racing_an_oauth_finish_leaves_no_credential_behind(world):
    racing, racing_table, other, other_table, secrets, secrets_dir = world
    d = other.create(body(), "admin")
    params = oauth_callback(other, d.id)
    racing_table.meanwhile = lambda: other.finish_oauth(params)  # connected right after the delete read the record
    racing.delete(d.id)
    assert other_table.get(d.id) is None
    assert secrets.get(d.secret_name) is None and not list(secrets_dir.glob(f"{d.secret_name}*"))


def test_if_match_with_an_old_version_is_refused_with_412(world):
    _, _, other, other_table, _, _ = world
    d = other.create(body(), "admin")
    _, version = other.get_versioned(d.id)
    other.update(d.id, {"consent": {"accepted": False}}, "privacy officer")
    with pytest.raises(Exception) as caught:
        other.update(d.id, {"consent": {"accepted": True}}, "marketing", if_match=f'"{version}"')
    assert conflict_status(caught.value) == 412 and "If-Match" in str(caught.value)
    assert other_table.get(d.id).consent_accepted is False
    with pytest.raises(Exception) as caught:
        other.delete(d.id, if_match=f'"{version}"')
    assert conflict_status(caught.value) == 412 and other_table.get(d.id) is not None
    _, current = other.get_versioned(d.id)
    assert other.update(d.id, {"displayName": "N2"}, "marketing", if_match=f'"{current}"').display_name == "N2"


def test_run_bookkeeping_written_meanwhile_is_no_conflict_and_is_kept(world):
    racing, racing_table, other, other_table, _, _ = world
    d = other.create(body(), "admin")
    racing_table.meanwhile = lambda: other_table.claim(d.id, "run-1", {"HighValueCustomers": "snap"}, lambda _: False)
    assert racing.update(d.id, {"displayName": "Renamed"}, "marketing").display_name == "Renamed"
    assert other_table.active_run(d.id) == "run-1"  # the claim that landed in between is not overwritten


class SecretsThatRace(LocalFileSecrets):
    """A secret store that runs `meanwhile` once, right after the next credential is written."""

    meanwhile: Callable[[], None] | None = None

    def set(self, name: str, value: str) -> None:
        super().set(name, value)
        if self.meanwhile is not None and not name.startswith("oauth"):
            run, self.meanwhile = self.meanwhile, None
            run()


def test_two_new_api_keys_racing_leave_the_key_of_the_change_that_won_in_use(world, mailchimp, tmp_path):
    """B stores its key, then A stores its own and saves the record; B's record write loses. The connector must go on
    using A's key (the record says A's audience): not B's, and not the key both replaced."""
    _, _, other, other_table, _, _ = world
    shared = SecretsThatRace(str(tmp_path / "racing-secrets"))
    services = []
    for _ in range(2):
        connections = MailchimpConnections(shared, base_url=mailchimp.api_root, max_connections=2)
        services.append((DestinationService(other_table, connections, exports=Exports(), run_files=Files(), segments=None,
                                            oauth=None, states=None), connections))
    (a, _), (b, _) = services
    accounts = []
    for name in ("A", "B"):
        account = requests.post(f"{mailchimp.url}/__admin/accounts", json={"name": name}, timeout=10).json()
        audience = requests.post(f"{mailchimp.url}/__admin/audiences", json={"api_key": account["api_key"]}, timeout=10).json()
        accounts.append((account["api_key"], audience["id"]))
    (key_a, audience_a), (key_b, audience_b) = accounts
    d = a.create(body(), "admin")
    a.update(d.id, {"mailchimp": {"apiKey": DEMO_KEY}}, "admin")
    shared.meanwhile = lambda: a.update(d.id, {"mailchimp": {"apiKey": key_a}, "audienceId": audience_a}, "marketing")
    with pytest.raises(Exception) as caught:
        b.update(d.id, {"mailchimp": {"apiKey": key_b}, "audienceId": audience_b}, "marketing")
    assert conflict_status(caught.value) == 409, caught.value
    stored = other_table.get(d.id)
    assert stored.audience_id == audience_a
    fresh = MailchimpConnections(shared, base_url=mailchimp.api_root, max_connections=2)
    with fresh.client(stored) as client:
        assert client.get_audience(audience_a).id == audience_a  # A's key: B's or the demo key would not see it


def live_secrets(secrets_dir: Path, destination_id: str) -> list[str]:
    """Secrets of a destination still stored (the local store keeps deleted names apart, as Key Vault does)."""
    return sorted(p.name for p in secrets_dir.glob(f"mailchimp-{destination_id}*") if p.is_file())


def test_a_destination_whose_secret_was_deleted_can_be_connected_again(world, mailchimp):
    """Key Vault keeps a deleted secret's name taken for up to 90 days; a DELETE that stopped after removing the
    credential (or a credential removed by hand) must not leave a destination that cannot be connected again."""
    _, _, other, other_table, secrets, secrets_dir = world
    d = other.create(body(), "admin")
    other.update(d.id, {"mailchimp": {"apiKey": DEMO_KEY}}, "admin")
    connected = other_table.get(d.id)
    secrets.delete(connected.secret_name)
    other.update(d.id, {"mailchimp": {"apiKey": DEMO_KEY}}, "admin")
    again = other_table.get(d.id)
    assert again.secret_name != connected.secret_name
    fresh = MailchimpConnections(secrets, base_url=mailchimp.api_root, max_connections=2)
    with fresh.client(again) as client:
        assert client.get_audience(DEMO_AUDIENCE).id == DEMO_AUDIENCE


def test_a_replaced_credential_leaves_no_secret_behind(world):
    _, _, other, other_table, _, secrets_dir = world
    d = other.create(body(), "admin")
    for _ in range(3):
        other.update(d.id, {"mailchimp": {"apiKey": DEMO_KEY}}, "admin")
    assert live_secrets(secrets_dir, d.id) == [other_table.get(d.id).secret_name]
