"""Creating and reading destinations, with the Mailchimp checks an admin expects at save time."""
from __future__ import annotations

from typing import Any, Protocol

from shared.connections import MailchimpConnections
from shared.destinations import Destination, InvalidDestination, new_destination, with_credential
from shared.mailchimp.client import MailchimpClient
from shared.mailchimp.errors import MailchimpAuthError, MailchimpError, MailchimpNotFound


class DestinationStore(Protocol):
    def save(self, destination: Destination) -> None: ...
    def get(self, destination_id: str) -> Destination | None: ...
    def list(self) -> list[Destination]: ...


class DestinationService:
    def __init__(self, store: DestinationStore, connections: MailchimpConnections) -> None:
        self._store = store
        self._connections = connections

    def create(self, body: Any, accepted_by: str) -> Destination:
        destination = new_destination(body, accepted_by)
        api_key = ((body.get("mailchimp") or {}).get("apiKey") if isinstance(body.get("mailchimp"), dict) else None)
        if not isinstance(api_key, str) or not api_key.strip():
            raise InvalidDestination([{"field": "mailchimp.apiKey", "message": "give a Mailchimp API key (Account > Extras > API keys)"}])
        try:
            client = self._connections.client_for_api_key(api_key.strip())
        except ValueError as error:
            raise InvalidDestination([{"field": "mailchimp.apiKey", "message": str(error)}]) from None
        try:
            self._check_audience(client, destination)
        finally:
            client.close()
        self._connections.store_api_key(destination, api_key.strip())
        destination = with_credential(destination, "api_key")
        self._store.save(destination)
        return destination

    @staticmethod
    def _check_audience(client: MailchimpClient, destination: Destination) -> None:
        try:
            client.ping()
        except MailchimpAuthError:
            raise InvalidDestination([{"field": "mailchimp.apiKey", "message": "Mailchimp refused this API key: copy a current key from Account > Extras > API keys"}]) from None
        except MailchimpError as error:
            raise InvalidDestination([{"field": "mailchimp", "message": f"Mailchimp could not be reached to check the key ({error.title}); try again"}]) from None
        try:
            client.get_audience(destination.audience_id)
            tags = {f.tag for f in client.list_merge_fields(destination.audience_id)}
        except MailchimpNotFound:
            raise InvalidDestination([{"field": "audienceId", "message": f"Mailchimp has no audience {destination.audience_id!r} in this account: copy the ID from Audience > Settings"}]) from None
        missing = sorted(set(destination.mapping.merge_fields) - tags)
        if missing:
            raise InvalidDestination([{"field": f"mapping.mergeFields.{tag}", "message": f"the audience has no merge field {tag}; its merge fields are {sorted(tags)}"} for tag in missing])

    def get(self, destination_id: str) -> Destination | None:
        return self._store.get(destination_id)

    def list(self) -> list[Destination]:
        return self._store.list()
