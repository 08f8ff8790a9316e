"""Managing destinations: create, change, connect to Mailchimp (API key or OAuth) and delete, with Mailchimp's checks.

Nothing is stored until Mailchimp has confirmed it: the credential works, the audience exists, and every mapped
merge tag exists (or was created because the request asked for it). A credential goes to the secret store, never
into the destination record or an answer.

Every change is written conditionally on the version it was computed from (see DestinationTable): a PATCH or an
OAuth finish that read the destination before a consent withdrawal, a DELETE or another change landed loses with
409 and saves nothing (a credential it had stored already is put back as it was), so nothing is silently undone.
A DELETE that finds the destination changed under it (a credential may have been stored meanwhile) removes the
credential again and retries, so it never leaves a credential behind. A client may send If-Match with the ETag of
its read (GET answers it); a different current version is refused with 412.
"""
from __future__ import annotations

import logging
import uuid
from dataclasses import replace
from typing import Any, Mapping, Protocol

from shared.adapters.tables import StaleDestination
from shared.audience_mirror import destination_prefix, note_mirrors_deleted
from shared.cdm_types import column_types
from shared.config import OAuthSettings
from shared.connections import MailchimpConnections, NotConnected, api_key_secret, oauth_secret
from shared.destinations import Change, Destination, InvalidDestination, new_destination, updated_destination, with_credential
from shared.exports.files import run_folder
from shared.mailchimp.client import MailchimpClient
from shared.mailchimp.credentials import fetch_oauth_metadata
from shared.mailchimp.errors import MailchimpAuthError, MailchimpError, MailchimpNotFound
from shared.oauth import OAuthFailed, StateSigner, authorize_url, exchange_code
from shared.runs import Run
from shared.snapshots import BlobSource

DELETED = "the destination was deleted"
log = logging.getLogger(__name__)


class DestinationStore(Protocol):
    def save(self, destination: Destination, expected: str | None = None) -> str: ...
    def get(self, destination_id: str) -> Destination | None: ...
    def read(self, destination_id: str) -> tuple[Destination, str] | None: ...
    def list(self) -> list[Destination]: ...
    def delete(self, destination_id: str, expected: str | None = None) -> None: ...


class DestinationConflict(Exception):
    """A write lost to another change of the same destination; nothing was saved. `status`: 409, or 412 when the
    client's If-Match no longer matches."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def etag(version: str) -> str:
    return f'"{version}"'


def _matches(if_match: str, version: str) -> bool:
    """RFC 9110 If-Match: a list of entity tags, or *; weak tags compare by their opaque part here."""
    for tag in (part.strip() for part in if_match.split(",")):
        if tag == "*" or tag.removeprefix("W/").strip('"') == version:
            return True
    return False


def _stale(destination_id: str, stale: StaleDestination) -> DestinationConflict:
    if stale.deleted:
        return DestinationConflict(409, f"destination {destination_id} was deleted while this change was being made: "
                                        "nothing was saved")
    return DestinationConflict(409, f"destination {destination_id} was changed by someone else while this change was "
                                    "being made (for example its consent was withdrawn): nothing was saved; GET it to "
                                    "see what it is now, and send the change again if it still applies")


class Exports(Protocol):
    def cancel(self, destination_id: str, reason: str) -> str | None: ...
    def runs_of(self, destination_id: str) -> list[Run]: ...


class RunFiles(Protocol):
    def write_bytes(self, name: str, data: bytes) -> None: ...
    def delete_prefix(self, prefix: str) -> None: ...


def _problem(field: str, message: str) -> InvalidDestination:
    return InvalidDestination([{"field": field, "message": message}])


class DestinationService:
    def __init__(self, store: DestinationStore, connections: MailchimpConnections, *, exports: Exports,
                 run_files: RunFiles, segments: BlobSource, oauth: OAuthSettings | None, states: StateSigner) -> None:
        self._store = store
        self._connections = connections
        self._exports = exports
        self._run_files = run_files
        self._segments = segments
        self._oauth = oauth
        self._states = states

    def get(self, destination_id: str) -> Destination | None:
        return self._store.get(destination_id)

    def get_versioned(self, destination_id: str) -> tuple[Destination, str] | None:
        """The destination and its version (the ETag a client sends back in If-Match)."""
        return self._store.read(destination_id)

    def list(self) -> list[Destination]:
        return self._store.list()

    def create(self, body: Any, accepted_by: str) -> Destination:
        """Without an API key the destination is stored unconnected, to be connected with OAuth afterwards."""
        return self._save(new_destination(body, accepted_by), None)

    def update(self, destination_id: str, patch: Any, changed_by: str, if_match: str | None = None) -> Destination | None:
        """The PATCH merged into the current record and written only if that record is still current
        (DestinationConflict otherwise); None when the destination does not exist."""
        found = self._store.read(destination_id)
        if found is None:
            return None
        current, version = found
        self._check_if_match(destination_id, if_match, version)
        destination = self._save(updated_destination(current, patch, changed_by), version)
        if current.consent_accepted and not destination.consent_accepted:  # nothing more leaves, from now on
            self._exports.cancel(destination_id, f"consent withdrawn by {destination.consent_by} at {destination.consent_at}")
        return destination

    @staticmethod
    def _check_if_match(destination_id: str, if_match: str | None, version: str) -> None:
        if if_match is not None and not _matches(if_match, version):
            raise DestinationConflict(412, f"destination {destination_id} has changed since the version in If-Match "
                                           f"(it is now {etag(version)}): nothing was saved; GET it and send the "
                                           "change again with its ETag")

    def _save(self, change: Change, expected: str | None) -> Destination:
        destination = change.destination
        if change.api_key is not None:
            try:
                secret = api_key_secret(change.api_key)
                with self._connections.client_for_secret(secret) as client:
                    self._check(client, destination, "mailchimp.apiKey", change.create_missing_merge_fields)
            except ValueError as error:  # a malformed key, said without the key
                raise _problem("mailchimp.apiKey", str(error)) from None
            destination = with_credential(destination, "api_key", uuid.uuid4().hex)
            try:
                self._write_with_credential(destination, expected, secret)
            except StaleDestination as stale:
                raise _stale(destination.id, stale) from None
            return destination
        if change.recheck and destination.credential_kind != "none":
            self._connections.forget(destination)  # check with the stored credential, not a copy cached before a rotation
            try:
                self._check(self._connections.client(destination), destination, "mailchimp", change.create_missing_merge_fields)
            except NotConnected as error:
                raise _problem("mailchimp", str(error)) from None
        try:
            self._store.save(destination, expected)
        except StaleDestination as stale:
            raise _stale(destination.id, stale) from None
        return destination

    def _write_with_credential(self, destination: Destination, expected: str | None, secret: dict[str, Any]) -> None:
        """The credential first, in a secret of its own (`Destination.secret_name`), then the record, conditionally.
        The winner removes the secret of the credential it replaced; a loser removes its own, so whatever the order
        of racing changes and DELETEs, the record names a secret that exists and no credential is left unnamed."""
        replaced = None
        if expected is not None:  # a cheap early look: most races are lost here, before the secret store is touched
            found = self._store.read(destination.id)
            if found is None or found[1] != expected:
                raise StaleDestination(destination.id, found is None, None if found is None else found[1])
            replaced = found[0]
        self._connections.store(destination, secret)
        try:
            self._store.save(destination, expected)
        except (StaleDestination, InvalidDestination):  # InvalidDestination: too large for Table storage
            self._connections.remove(destination)
            raise
        if replaced is not None and replaced.credential_kind != "none" and replaced.secret_name != destination.secret_name:
            try:
                self._connections.remove(replaced)
            except Exception as error:  # noqa: BLE001 - the new credential is in use; the old one is only left over
                log.warning("destination %s: the replaced credential's secret could not be removed (%s); remove %s by "
                            "hand", destination.id, type(error).__name__, replaced.secret_name)

    def _check(self, client: MailchimpClient, destination: Destination, credential_field: str, create_missing: bool) -> None:
        """The checks an admin expects on save and connect; missing merge fields are created only when asked."""
        try:
            client.ping()
        except MailchimpAuthError:
            raise _problem(credential_field, "Mailchimp refused this credential: copy a current API key from Profile > Extras > "
                                             "API keys, or connect again with OAuth") from None
        except MailchimpError as error:
            raise _problem("mailchimp", f"Mailchimp could not be reached to check the credential ({error.status or error.title}); try again") from None
        audience = destination.audience_id
        try:
            client.get_audience(audience)
            tags = {f.tag for f in client.list_merge_fields(audience)}
        except MailchimpNotFound:
            raise _problem("audienceId", f"Mailchimp has no audience {audience!r} in this account: copy the ID from Audience > Settings") from None
        missing = {tag: column for tag, column in destination.mapping.merge_fields.items() if tag not in tags}
        if missing and not create_missing:
            raise InvalidDestination([{"field": f"mapping.mergeFields.{tag}", "message": (
                f"the audience has no merge field {tag} (it has {', '.join(sorted(tags)) or 'none'}): map an existing one, "
                'or send "createMissingMergeFields": true to create it')} for tag in missing])
        types = column_types(self._segments, destination.segments) if missing else {}
        for tag, column in missing.items():
            try:
                client.create_merge_field(audience, tag, column, types.get(column.casefold(), "text"))
            except MailchimpError as error:
                raise _problem(f"mapping.mergeFields.{tag}", f"Mailchimp did not create the merge field: {error}") from None

    # --- OAuth ----------------------------------------------------------------------------------------------

    def connect_url(self, destination_id: str, create_missing_merge_fields: bool, requested_by: str = "") -> str | None:
        """Mailchimp's authorize URL with a fresh state naming who asked (`requested_by`, an object ID: the finish
        records it as the change's author); None when the destination does not exist."""
        if self._oauth is None:
            raise OAuthFailed(501, "OAuth is not set up in this app: set MAILCHIMP_OAUTH_CLIENT_ID, MAILCHIMP_OAUTH_CLIENT_SECRET "
                                   "and MAILCHIMP_OAUTH_REDIRECT_URI, or connect with an API key (PATCH mailchimp.apiKey)")
        if self._store.get(destination_id) is None:
            return None
        return authorize_url(self._oauth, self._states.issue(destination_id, create_missing_merge_fields, requested_by))

    def finish_oauth(self, params: Mapping[str, str]) -> Destination:
        """Mailchimp's redirect back: state spent first, then the code exchanged, checked and stored, or nothing stored."""
        if self._oauth is None:
            raise OAuthFailed(501, "OAuth is not set up in this app: nothing was stored")
        state = self._states.redeem(params.get("state"))
        if params.get("error"):
            raise OAuthFailed(403, f"Mailchimp access was not granted ({params['error'][:50]}): nothing was stored; connect "
                                   "again and allow access, or use an API key")
        found = self._store.read(state.destination_id)
        if found is None:
            raise OAuthFailed(404, f"destination {state.destination_id} was deleted while connecting: nothing was stored")
        destination, version = found
        code = params.get("code")
        if not code:
            raise OAuthFailed(400, "Mailchimp's answer has no authorization code: nothing was stored; connect again")
        token = exchange_code(self._oauth, code)
        try:
            secret = oauth_secret(token, fetch_oauth_metadata(token, self._oauth.metadata_url))
            with self._connections.client_for_secret(secret) as client:
                self._check(client, destination, "mailchimp", state.create_missing_merge_fields)
        except (MailchimpError, ValueError) as error:
            raise OAuthFailed(502, f"Mailchimp's account details could not be read with the new token ({error}): nothing was stored") from None
        destination = replace(with_credential(destination, "oauth", uuid.uuid4().hex),
                              updated_by=state.requested_by or destination.updated_by)
        try:
            self._write_with_credential(destination, version, secret)
        except StaleDestination as stale:
            if stale.deleted:
                raise OAuthFailed(409, f"destination {destination.id} was deleted while connecting: nothing was stored") from None
            raise OAuthFailed(409, f"destination {destination.id} was changed while connecting (for example its consent "
                                   "was withdrawn or its mapping changed): nothing was stored; start again from POST "
                                   f"/api/destinations/{destination.id}/mailchimp/connect") from None
        return destination

    # --- delete ---------------------------------------------------------------------------------------------

    def delete(self, destination_id: str, if_match: str | None = None) -> None:
        """Idempotent: the running export is cancelled, the credential, the per-row files and the audience mirrors
        (emails) removed, and the record deleted last, so a failure half-way leaves a destination whose DELETE can
        simply be sent again. Run records stay for audit: they hold counts, not personal data.

        The record is deleted only if nothing changed it since it was read; if a PATCH or an OAuth finish landed
        meanwhile (and may have stored a credential after it was removed), all of it is done again."""
        for _ in range(5):
            found = self._store.read(destination_id)
            if found is None:
                return
            destination, version = found
            self._check_if_match(destination_id, if_match, version)
            cancelled = self._exports.cancel(destination_id, DELETED)
            self._connections.remove(destination)
            for run in self._exports.runs_of(destination_id):
                if run.finished_at and run.id != cancelled:  # a cancelled run's workers still read its chunk files
                    self._run_files.delete_prefix(run_folder(run.id))
            # Once its credential is gone, before its mirrors go: a run that took the marks earlier keeps no mirror.
            note_mirrors_deleted(self._run_files, destination_id)
            self._run_files.delete_prefix(destination_prefix(destination_id))
            try:
                self._store.delete(destination_id, version)
                return
            except StaleDestination:
                continue
        raise DestinationConflict(409, f"destination {destination_id} kept changing while it was being deleted: its "
                                       "credential is removed, the record is not; send DELETE again")
