"""Managing destinations: create, change, connect to Mailchimp (API key or OAuth) and delete, with Mailchimp's checks.

Nothing is stored until Mailchimp has confirmed it: the credential works, the audience exists, and every mapped
merge tag exists (or was created because the request asked for it). A credential goes to the secret store, never
into the destination record or an answer.
"""
from __future__ import annotations

from typing import Any, Mapping, Protocol

from shared.cdm_types import column_types
from shared.config import OAuthSettings
from shared.connections import MailchimpConnections, NotConnected, api_key_secret, oauth_secret
from shared.destinations import (Change, Destination, InvalidDestination, new_destination, updated_destination,
                                 with_credential)
from shared.mailchimp.client import MailchimpClient
from shared.mailchimp.credentials import fetch_oauth_metadata
from shared.mailchimp.errors import MailchimpAuthError, MailchimpError, MailchimpNotFound
from shared.oauth import OAuthFailed, StateSigner, authorize_url, exchange_code
from shared.runs import Run
from shared.snapshots import BlobSource

DELETED = "the destination was deleted"


class DestinationStore(Protocol):
    def save(self, destination: Destination) -> None: ...
    def get(self, destination_id: str) -> Destination | None: ...
    def list(self) -> list[Destination]: ...
    def delete(self, destination_id: str) -> None: ...


class Exports(Protocol):
    def cancel(self, destination_id: str, reason: str) -> str | None: ...
    def runs_of(self, destination_id: str) -> list[Run]: ...


class RunFiles(Protocol):
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

    def list(self) -> list[Destination]:
        return self._store.list()

    def create(self, body: Any, accepted_by: str) -> Destination:
        """Without an API key the destination is stored unconnected, to be connected with OAuth afterwards."""
        return self._save(new_destination(body, accepted_by))

    def update(self, destination_id: str, patch: Any, changed_by: str) -> Destination | None:
        current = self._store.get(destination_id)
        if current is None:
            return None
        destination = self._save(updated_destination(current, patch, changed_by))
        if current.consent_accepted and not destination.consent_accepted:  # nothing more leaves, from now on
            self._exports.cancel(destination_id, f"consent withdrawn by {destination.consent_by} at {destination.consent_at}")
        return destination

    def _save(self, change: Change) -> Destination:
        destination = change.destination
        if change.api_key is not None:
            try:
                secret = api_key_secret(change.api_key)
                with self._connections.client_for_secret(secret) as client:
                    self._check(client, destination, "mailchimp.apiKey", change.create_missing_merge_fields)
            except ValueError as error:  # a malformed key, said without the key
                raise _problem("mailchimp.apiKey", str(error)) from None
            self._connections.store(destination, secret)
            destination = with_credential(destination, "api_key")
        elif change.recheck and destination.credential_kind != "none":
            self._connections.forget(destination)  # check with the stored credential, not a copy cached before a rotation
            try:
                self._check(self._connections.client(destination), destination, "mailchimp", change.create_missing_merge_fields)
            except NotConnected as error:
                raise _problem("mailchimp", str(error)) from None
        self._store.save(destination)
        return destination

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

    def connect_url(self, destination_id: str, create_missing_merge_fields: bool) -> str | None:
        """Mailchimp's authorize URL with a fresh state; None when the destination does not exist."""
        if self._oauth is None:
            raise OAuthFailed(501, "OAuth is not set up in this app: set MAILCHIMP_OAUTH_CLIENT_ID, MAILCHIMP_OAUTH_CLIENT_SECRET "
                                   "and MAILCHIMP_OAUTH_REDIRECT_URI, or connect with an API key (PATCH mailchimp.apiKey)")
        if self._store.get(destination_id) is None:
            return None
        return authorize_url(self._oauth, self._states.issue(destination_id, create_missing_merge_fields))

    def finish_oauth(self, params: Mapping[str, str]) -> Destination:
        """Mailchimp's redirect back: state spent first, then the code exchanged, checked and stored, or nothing stored."""
        if self._oauth is None:
            raise OAuthFailed(501, "OAuth is not set up in this app: nothing was stored")
        state = self._states.redeem(params.get("state"))
        if params.get("error"):
            raise OAuthFailed(403, f"Mailchimp access was not granted ({params['error'][:50]}): nothing was stored; connect "
                                   "again and allow access, or use an API key")
        destination = self._store.get(state.destination_id)
        if destination is None:
            raise OAuthFailed(404, f"destination {state.destination_id} was deleted while connecting: nothing was stored")
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
        self._connections.store(destination, secret)
        destination = with_credential(destination, "oauth")
        self._store.save(destination)
        return destination

    # --- delete ---------------------------------------------------------------------------------------------

    def delete(self, destination_id: str) -> None:
        """Idempotent: the running export is cancelled, the credential and the per-row files (emails) removed, and
        the record deleted last, so a failure half-way leaves a destination whose DELETE can simply be sent again.
        Run records stay for audit: they hold counts, not personal data."""
        destination = self._store.get(destination_id)
        if destination is None:
            return
        cancelled = self._exports.cancel(destination_id, DELETED)
        self._connections.remove(destination)
        for run in self._exports.runs_of(destination_id):
            if run.finished_at and run.id != cancelled:  # a cancelled run's workers still read its chunk files
                self._run_files.delete_prefix(f"runs/{run.id}/")
        self._store.delete(destination_id)
