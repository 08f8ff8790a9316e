"""Look up a Mailchimp audience for the admin page's "Connect" button: with an API key being typed in, or with the
credential a destination has stored. What `POST /api/mailchimp/audience` answers.

Nothing is stored. The key is never repeated in an answer: every message here is written out, none carries text
from Mailchimp's answer or the key.
"""
from __future__ import annotations

import re
from typing import Any, Mapping, Protocol

from shared.connections import NotConnected, api_key_secret
from shared.destinations import Destination
from shared.mailchimp.client import MailchimpClient
from shared.mailchimp.errors import MailchimpAuthError, MailchimpError, MailchimpNotFound

AUDIENCE_ID = re.compile(r"^[0-9a-zA-Z]{1,32}$")  # as shared.destinations checks it
FIELDS = ("audienceId", "apiKey", "destinationId")
WHERE_AUDIENCE = "Mailchimp: Audience > All contacts > Settings > Audience name and defaults, 'Audience ID'"
WHERE_KEY = "Mailchimp: Profile > Extras > API keys"


class LookupProblem(Exception):
    """What is wrong, for the answer: `status` (422 for a field, 502 when Mailchimp could not be reached) and, for a
    field, its name in `details` so the page shows the message next to it."""

    def __init__(self, status: int, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.details = [{"field": field, "message": message}] if field else []


class Connections(Protocol):
    def client_for_secret(self, secret: dict[str, Any]) -> MailchimpClient: ...
    def client(self, destination: Destination) -> MailchimpClient: ...
    def forget(self, destination: Destination) -> None: ...


class Destinations(Protocol):
    def get(self, destination_id: str) -> Destination | None: ...


def _text(body: Mapping[str, Any], name: str) -> str | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise LookupProblem(422, f"{name} must be a non-empty string", name)
    return value.strip()


def look_up_audience(body: Mapping[str, Any], connections: Connections, destinations: Destinations) -> dict[str, Any]:
    """The audience's name, double opt-in, member count and merge fields; LookupProblem naming the field otherwise.

    `body`: {"audienceId", "apiKey"} to check a key before anything is saved, or {"audienceId", "destinationId"} to
    use the credential that destination has stored (connected with OAuth or a key)."""
    unknown = [name for name in body if name not in FIELDS]
    if unknown:
        raise LookupProblem(422, f"{unknown[0]} is not a field here; send audienceId with apiKey or destinationId",
                            str(unknown[0]))
    audience_id = _text(body, "audienceId")
    if audience_id is None:
        raise LookupProblem(422, f"the audience ID is required: copy it from {WHERE_AUDIENCE}", "audienceId")
    if not AUDIENCE_ID.fullmatch(audience_id):
        raise LookupProblem(422, f"an audience ID is letters and digits only (like a1b2c3d4e5): copy it from "
                                 f"{WHERE_AUDIENCE}", "audienceId")
    api_key, destination_id = _text(body, "apiKey"), _text(body, "destinationId")
    if (api_key is None) == (destination_id is None):
        raise LookupProblem(422, "send either apiKey (a key to check) or destinationId (use the credential it has "
                                 "stored), not both and not neither", "apiKey")
    if api_key is not None:
        try:
            client = connections.client_for_secret(api_key_secret(api_key))
        except ValueError:
            raise LookupProblem(422, "this is not a Mailchimp API key: it is 32 letters and digits, a dash and the "
                                     f"data centre (like ...-us6); copy the whole key from {WHERE_KEY}",
                                "apiKey") from None
        with client:
            return _read(client, audience_id, "apiKey")
    destination = destinations.get(destination_id)
    if destination is None:
        raise LookupProblem(422, f"there is no destination {destination_id}", "destinationId")
    try:
        client = connections.client(destination)
    except NotConnected:
        raise LookupProblem(422, "this destination is not connected to Mailchimp yet: authenticate with Mailchimp or "
                                 "enter an API key", "destinationId") from None
    try:
        return _read(client, audience_id, "destinationId")
    except LookupProblem as problem:
        if problem.details and problem.details[0]["field"] == "destinationId":
            connections.forget(destination)  # a credential rotated meanwhile is read again next time
        raise


def _read(client: MailchimpClient, audience_id: str, credential_field: str) -> dict[str, Any]:
    refused = ("Mailchimp refused this API key (revoked, or mistyped): create or copy a key in " + WHERE_KEY
               if credential_field == "apiKey" else
               "Mailchimp refused the credential this destination has stored: authenticate with Mailchimp again or "
               "enter a new API key")
    try:
        audience = client.get_audience(audience_id)
        fields = client.list_merge_fields(audience_id)
    except MailchimpAuthError:
        raise LookupProblem(422, refused, credential_field) from None
    except MailchimpNotFound:
        raise LookupProblem(422, f"this Mailchimp account has no audience {audience_id}: check the ID in "
                                 f"{WHERE_AUDIENCE} (and that the key is of the account that owns it)",
                            "audienceId") from None
    except MailchimpError as error:
        raise LookupProblem(502, "Mailchimp could not be reached to look the audience up "
                                 f"({error.status or 'no answer'}); try again in a minute") from None
    return {
        "audience": {"id": audience.id, "name": audience.name, "doubleOptIn": audience.double_optin,
                     "memberCount": audience.member_count},
        "mergeFields": [{"tag": f.tag, "name": f.name, "type": f.type, "required": f.required} for f in fields],
    }
