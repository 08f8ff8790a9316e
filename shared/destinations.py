"""Export destinations: what an admin configures, checked field by field before anything is stored."""
from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from typing import Any, Mapping

from shared.auth import Principal
from shared.config import STATUSES_FOR_NEW
from shared.emails import email_problem, normalize_email

_MERGE_TAG = re.compile(r"^[A-Z0-9_]{1,10}$")  # Mailchimp merge tags: upper-case, at most 10 characters
_AUDIENCE_ID = re.compile(r"^[0-9a-zA-Z]{1,32}$")
MAX_SEGMENTS = 50
MAX_NAME_CHARS = 255  # a mapped column name, or a segment name
MAX_MAPPING_CHARS = 20_000  # the mapping as JSON text (UTF-16 units): it is stored as one Table storage property (64 KiB)
MAX_EXPORT_USERS = 100
_OBJECT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")  # an Entra object ID is a GUID; kept loose for tests


@dataclass(frozen=True)
class Claim:
    """What became of a request to make a run the destination's one active run."""

    outcome: str  # claimed | busy (another run holds it) | deferred (a follow-up is noted) | up_to_date
    holder: str | None = None
    # claimed: what the covered segments had recorded as exported before ("" for none), put back by `release` if the
    # run's record cannot be created (else the snapshots would read as exported by a run that never existed)
    previous: dict[str, str] = field(default_factory=dict)


class InvalidDestination(Exception):
    """Carries every problem found, each naming its field, so one answer tells the admin all there is to fix."""

    def __init__(self, problems: list[dict[str, str]]) -> None:
        super().__init__("; ".join(f"{p['field']}: {p['message']}" for p in problems))
        self.problems = problems


@dataclass(frozen=True)
class FieldMapping:
    email: str
    merge_fields: dict[str, str] = field(default_factory=dict)  # merge tag -> source column

    def columns(self) -> list[str]:
        return [self.email, *self.merge_fields.values()]


@dataclass(frozen=True)
class ExportUser:
    """Someone (or a machine) an admin lets operate a destination's exports: by Entra object ID, by sign-in address
    (letter case ignored), or both; `name` is for people reading the list."""

    id: str | None = None
    email: str | None = None  # as normalize_email gives it: trimmed, lower-case
    name: str | None = None

    def is_(self, who: Principal) -> bool:
        """By object ID when the entry has one: sign-in addresses can change hands, so Microsoft advises against
        authorizing on them. An address alone matches the caller's sign-in address."""
        if self.id:
            return self.id.lower() == who.id.lower()
        return bool(self.email and who.email and self.email == normalize_email(who.email))

    def public(self) -> dict[str, str | None]:
        return {"id": self.id, "email": self.email, "name": self.name}


@dataclass(frozen=True)
class Destination:
    id: str
    display_name: str
    audience_id: str
    mapping: FieldMapping
    segments: tuple[str, ...]
    consent_accepted: bool
    consent_by: str | None
    consent_at: str | None
    status_for_new: str | None  # None: pending when the audience uses double opt-in, else subscribed
    tag_prefix: str
    credential_kind: str  # api_key | oauth | none
    created_at: str
    updated_at: str
    schedule_enabled: bool = True
    export_on_arrival: bool = True
    credential_id: str | None = None  # names the secret holding the credential this record uses (see secret_name)
    export_users: tuple[ExportUser, ...] = ()  # operators who may start, cancel and read its exports
    created_by: str | None = None  # the verified caller (Principal.label) who created it
    updated_by: str | None = None  # and who last changed its settings
    # An address a person had erased (shared/erasures.py) is exported again only when this says so; by default its
    # rows are refused, "erased on <date> at the person's request".
    re_add_erased: bool = False

    @property
    def secret_name(self) -> str:
        """Each credential stored gets a secret of its own, named by the record: Key Vault keeps a deleted name
        unusable for up to 90 days (soft delete, purge protection), so no name is ever written again once deleted,
        and a change that loses a race removes only its own secret. Records saved before credential ids existed
        keep the old name."""
        return f"mailchimp-{self.id}-{self.credential_id}" if self.credential_id else f"mailchimp-{self.id}"

    @property
    def is_draft(self) -> bool:
        """Saved before its mapping and segments were chosen (the admin page saves a destination at "Connect", so
        OAuth has an id to come back to): never exported until both are set."""
        return not self.mapping.email or not self.segments

    def operable_by(self, who: Principal) -> bool:
        """Whether `who` may start and cancel its exports and read its runs: every admin; an operator named among its
        export users. Anyone else must not even learn that it exists (the API answers 404)."""
        if who.is_admin:
            return True
        return who.is_operator and any(user.is_(who) for user in self.export_users)

    def tag_for(self, segment: str) -> str:
        return f"{self.tag_prefix}{segment}"

    def public(self) -> dict[str, Any]:
        """The destination as the API shows it: never the credential itself, only whether there is one."""
        verb = "accepted" if self.consent_accepted else "withdrawn"  # who last changed the consent, and when
        return {
            "id": self.id,
            "displayName": self.display_name,
            "audienceId": self.audience_id,
            "consent": {"accepted": self.consent_accepted, f"{verb}By": self.consent_by, f"{verb}At": self.consent_at},
            "mapping": ({"email": self.mapping.email, "mergeFields": dict(self.mapping.merge_fields)}
                        if self.mapping.email else None),
            "segments": list(self.segments),
            "draft": self.is_draft,
            "statusForNew": self.status_for_new,
            "tagPrefix": self.tag_prefix,
            "mailchimp": {"connected": self.credential_kind != "none", "method": self.credential_kind},
            "schedule": {"enabled": self.schedule_enabled},
            "exportOnArrival": self.export_on_arrival,
            "reAddErased": self.re_add_erased,
            "exportUsers": [user.public() for user in self.export_users],
            "createdAt": self.created_at,
            "createdBy": self.created_by,
            "updatedAt": self.updated_at,
            "updatedBy": self.updated_by,
        }


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _text(body: Mapping[str, Any], name: str, problems: list[dict[str, str]], *, max_len: int = 200) -> str:
    value = body.get(name)
    if not isinstance(value, str) or not value.strip():
        problems.append({"field": name, "message": "is required and must be a non-empty string"})
        return ""
    if len(value) > max_len:
        problems.append({"field": name, "message": f"must be at most {max_len} characters"})
    return value.strip()


def _mapping(body: Mapping[str, Any], problems: list[dict[str, str]], draft: bool = False) -> FieldMapping:
    raw = body.get("mapping")
    if raw is None and draft:  # not chosen yet: a draft
        return FieldMapping(email="")
    if not isinstance(raw, Mapping):
        problems.append({"field": "mapping", "message": 'is required: {"email": "<column>", "mergeFields": {"FNAME": "<column>"}}'})
        return FieldMapping(email="")
    email = raw.get("email")
    if not isinstance(email, str) or not email.strip():
        problems.append({"field": "mapping.email", "message": "is required: name the column that holds the email address"})
        email = ""
    elif len(email.strip()) > MAX_NAME_CHARS:
        problems.append({"field": "mapping.email", "message": _too_long("a column name", email.strip())})
        email = ""
    merge = raw.get("mergeFields", {}) or {}
    fields: dict[str, str] = {}
    if not isinstance(merge, Mapping):
        problems.append({"field": "mapping.mergeFields", "message": "must be an object of merge tag -> column"})
    else:
        for tag, column in merge.items():
            if not isinstance(tag, str) or not _MERGE_TAG.match(tag):
                problems.append({"field": f"mapping.mergeFields.{_shown(tag)}", "message": "merge tags are 1-10 upper-case letters, digits or underscores (e.g. FNAME)"})
            elif not isinstance(column, str) or not column.strip():
                problems.append({"field": f"mapping.mergeFields.{tag}", "message": "must name a source column"})
            elif len(column.strip()) > MAX_NAME_CHARS:
                problems.append({"field": f"mapping.mergeFields.{tag}", "message": _too_long("a column name", column.strip())})
            else:
                fields[tag] = column.strip()
    size = utf16_units(json.dumps({"email": email.strip(), "mergeFields": fields}, ensure_ascii=False))
    if size > MAX_MAPPING_CHARS:
        problems.append({"field": "mapping.mergeFields", "message": f"the mapping takes {size:,} characters as JSON, at most "
                                                                   f"{MAX_MAPPING_CHARS:,} are stored: map fewer merge "
                                                                   "fields or use shorter column names"})
    return FieldMapping(email=email.strip(), merge_fields=fields)


def _too_long(what: str, text: str) -> str:
    return f"must be at most {MAX_NAME_CHARS} characters ({what}); this one has {len(text):,}"


def _shown(key: Any) -> str:
    """A key of the body as a field name in an answer: cut, so an answer never repeats a megabyte-long key."""
    text = str(key)
    return text if len(text) <= 40 else text[:40] + "..."


def utf16_units(text: str) -> int:
    """How long Table storage finds a text: it counts UTF-16 code units (a character beyond U+FFFF is two)."""
    if text.isascii():
        return len(text)
    return len(text) + sum(1 for char in text if ord(char) > 0xFFFF)


def _segments(body: Mapping[str, Any], problems: list[dict[str, str]], draft: bool = False) -> tuple[str, ...]:
    raw = body.get("segments")
    if raw is None and draft:  # not chosen yet: a draft
        return ()
    if not isinstance(raw, list) or not raw:
        problems.append({"field": "segments", "message": "name at least one segment to export"})
        return ()
    if len(raw) > MAX_SEGMENTS:  # counted before any name is looked at: the body may hold 100,000 of them
        problems.append({"field": "segments", "message": f"at most {MAX_SEGMENTS} segments per destination "
                                                         f"({len(raw):,} were sent)"})
        return ()
    names: list[str] = []
    seen: set[str] = set()  # the names kept so far, lower-case: a name given twice (in any case) is kept once
    for i, name in enumerate(raw):
        if not isinstance(name, str) or not name.strip() or "/" in name:
            problems.append({"field": f"segments[{i}]", "message": "must be a segment name (no slashes)"})
        elif len(name.strip()) > MAX_NAME_CHARS:
            problems.append({"field": f"segments[{i}]", "message": _too_long("a segment name", name.strip())})
        elif name.strip().lower() not in seen:
            seen.add(name.strip().lower())
            names.append(name.strip())
    return tuple(names)


def _export_users(body: Mapping[str, Any], problems: list[dict[str, str]]) -> tuple[ExportUser, ...]:
    raw = body.get("exportUsers")
    if raw is None:
        return ()
    if not isinstance(raw, list):
        problems.append({"field": "exportUsers", "message": 'must be a list of {"id": "<Entra object ID>", "email": '
                                                            '"<sign-in address>", "name": "<shown name>"}'})
        return ()
    if len(raw) > MAX_EXPORT_USERS:
        problems.append({"field": "exportUsers", "message": f"at most {MAX_EXPORT_USERS} export users per destination "
                                                            "(give a group of people one machine identity, or split)"})
        return ()
    users: list[ExportUser] = []
    for i, entry in enumerate(raw):
        where = f"exportUsers[{i}]"
        if not isinstance(entry, Mapping) or not entry or set(entry) - {"id", "email", "name"}:
            problems.append({"field": where, "message": 'must be an object with "id", "email" and/or "name"'})
            continue
        oid, email, name = (entry.get(key) for key in ("id", "email", "name"))
        if oid is not None and (not isinstance(oid, str) or not _OBJECT_ID.match(oid.strip())):
            problems.append({"field": f"{where}.id", "message": "must be the user's Microsoft Entra object ID "
                                                                "(a GUID, Entra admin center > Users > Object ID)"})
            continue
        if email is not None:
            problem = email_problem(normalize_email(email)) if isinstance(email, str) else "email must be text"
            if problem:
                problems.append({"field": f"{where}.email", "message": problem})
                continue
        if name is not None and (not isinstance(name, str) or len(name) > 200):
            problems.append({"field": f"{where}.name", "message": "must be text of at most 200 characters"})
            continue
        if not oid and not email:
            problems.append({"field": where, "message": 'name the user by "id" (object ID), "email" (sign-in address) '
                                                        "or both"})
            continue
        user = ExportUser(id=oid.strip() if oid else None, email=normalize_email(email) if email else None,
                          name=name.strip() if name and name.strip() else None)
        if not any((user.id and user.id.lower() == (u.id or "").lower()) or (user.email and user.email == u.email)
                   for u in users):  # the same person twice is listed once
            users.append(user)
    return tuple(users)


def _status(body: Mapping[str, Any], problems: list[dict[str, str]]) -> str | None:
    value = body.get("statusForNew")
    if value is None:
        return None
    if value not in STATUSES_FOR_NEW:
        problems.append({"field": "statusForNew", "message": f"must be one of {', '.join(STATUSES_FOR_NEW)} (or left out to follow the audience's double opt-in)"})
        return None
    return value


def _flag(body: Mapping[str, Any], path: tuple[str, ...], default: bool, problems: list[dict[str, str]]) -> bool:
    value: Any = body
    for key in path:
        if not isinstance(value, Mapping) or key not in value:
            return default
        value = value[key]
    if not isinstance(value, bool):
        problems.append({"field": ".".join(path), "message": "must be true or false"})
        return default
    return value


_SETTINGS = ("displayName", "audienceId", "consent", "mapping", "segments", "statusForNew", "tagPrefix", "schedule",
             "exportOnArrival", "exportUsers", "reAddErased")
_REQUEST_ONLY = ("mailchimp", "createMissingMergeFields")  # acted on when saving, never stored


@dataclass(frozen=True)
class Change:
    """A validated create or PATCH: the destination to store and what must happen at Mailchimp before it is stored."""

    destination: Destination
    api_key: str | None  # a new API key, to be checked with a ping and then kept in the secret store
    create_missing_merge_fields: bool
    recheck: bool  # the audience or the mapping changed, so Mailchimp must be asked again


def _validated(body: Any, *, creating: bool, draft: bool = False) -> tuple[dict[str, Any], str | None, bool]:
    """Every field checked at once: (settings, API key, create missing merge fields). With `draft`, `mapping` and
    `segments` may be left out (a draft, see Destination.is_draft); sent, they are checked as always."""
    if not isinstance(body, Mapping):
        raise InvalidDestination([{"field": "(body)", "message": "send a JSON object"}])
    problems: list[dict[str, str]] = [
        {"field": str(name), "message": f"is not a destination field; the fields are {', '.join(_SETTINGS + _REQUEST_ONLY)}"}
        for name in body if name not in _SETTINGS + _REQUEST_ONLY
    ]
    name = _text(body, "displayName", problems)
    audience = _text(body, "audienceId", problems, max_len=32)
    if audience and not _AUDIENCE_ID.match(audience):
        problems.append({"field": "audienceId", "message": "is the audience ID from Mailchimp (Audience > Settings > Audience name and defaults), letters and digits only"})
    accepted = _flag(body, ("consent", "accepted"), False, problems)
    if creating and not accepted:
        problems.append({"field": "consent.accepted", "message": "must be true: accept the data-privacy consent to send profiles to Mailchimp"})
    settings = {
        "display_name": name,
        "audience_id": audience,
        "consent_accepted": accepted,
        "mapping": _mapping(body, problems, draft),
        "segments": _segments(body, problems, draft),
        "status_for_new": _status(body, problems),
        "tag_prefix": _prefix(body, problems),
        "schedule_enabled": _flag(body, ("schedule", "enabled"), True, problems),
        "export_on_arrival": _flag(body, ("exportOnArrival",), True, problems),
        "export_users": _export_users(body, problems),
        "re_add_erased": _flag(body, ("reAddErased",), False, problems),
    }
    api_key = _api_key(body, problems)
    create_missing = _flag(body, ("createMissingMergeFields",), False, problems)
    if problems:
        raise InvalidDestination(problems)
    return settings, api_key, create_missing


def _prefix(body: Mapping[str, Any], problems: list[dict[str, str]]) -> str:
    prefix = body.get("tagPrefix", "")
    if not isinstance(prefix, str) or len(prefix) > 50:
        problems.append({"field": "tagPrefix", "message": "must be a string of at most 50 characters"})
        return ""
    return prefix


def _api_key(body: Mapping[str, Any], problems: list[dict[str, str]]) -> str | None:
    raw = body.get("mailchimp")
    if raw is None:
        return None
    key = raw.get("apiKey") if isinstance(raw, Mapping) else None
    if not isinstance(key, str) or not key.strip() or set(raw) != {"apiKey"}:
        problems.append({"field": "mailchimp.apiKey", "message": 'send {"apiKey": "<key>"} with a key from Mailchimp (Profile > Extras > API keys), or leave "mailchimp" out and connect with OAuth'})
        return None
    return key.strip()


def new_destination(body: Any, accepted_by: str) -> Change:
    """Validate a create request. The credential is handled by the caller (it goes to the secret store, not here)."""
    settings, api_key, create_missing = _validated(body, creating=True, draft=True)
    now = _now()
    destination = Destination(id=uuid.uuid4().hex[:12], consent_by=accepted_by, consent_at=now, credential_kind="none",
                              created_at=now, updated_at=now, created_by=accepted_by, updated_by=accepted_by, **settings)
    return Change(destination, api_key, create_missing, recheck=True)


def editable(destination: Destination) -> dict[str, Any]:
    """The destination in the request's own shape, the document a PATCH is merged into."""
    shown = destination.public()
    doc = {key: shown[key] for key in _SETTINGS}
    doc["consent"] = {"accepted": destination.consent_accepted}
    if not destination.segments:  # a draft's missing segments stay missing, not an empty list (which is refused)
        doc.pop("segments")
    doc["exportUsers"] = [{k: v for k, v in user.items() if v is not None} for user in shown["exportUsers"]]
    return {key: value for key, value in doc.items() if value is not None}


def merge_patch(target: Any, patch: Any) -> Any:
    """JSON Merge Patch (RFC 7386): objects merge key by key, null removes a key, anything else replaces."""
    if not isinstance(patch, Mapping):
        return patch
    merged = dict(target) if isinstance(target, Mapping) else {}
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = merge_patch(merged.get(key), value)
    return merged


def updated_destination(current: Destination, patch: Any, changed_by: str) -> Change:
    """Validate a PATCH the way a create is validated, on the merged document; consent may be withdrawn here. A
    draft may stay one; a destination with mapping and segments keeps needing both."""
    if not isinstance(patch, Mapping):
        raise InvalidDestination([{"field": "(body)", "message": "send a JSON object with the fields to change"}])
    settings, api_key, create_missing = _validated(merge_patch(editable(current), patch), creating=False,
                                                   draft=current.is_draft)
    now = _now()
    consent_changed = settings["consent_accepted"] != current.consent_accepted
    destination = replace(current, **settings, updated_at=now, updated_by=changed_by,
                          consent_by=changed_by if consent_changed else current.consent_by,
                          consent_at=now if consent_changed else current.consent_at)
    recheck = (destination.audience_id, destination.mapping) != (current.audience_id, current.mapping)
    return Change(destination, api_key, create_missing, recheck=recheck or create_missing)


def with_credential(destination: Destination, kind: str, credential_id: str) -> Destination:
    return replace(destination, credential_kind=kind, credential_id=credential_id, updated_at=_now())
