"""Mailchimp's per-member refusals, worded as Mailchimp words them (clients match on these sentences).

Batch calls report a refusal inside their 200 answer (`errors[]`); single-member calls answer 400 with it.
"""
from __future__ import annotations

from typing import Any

from .problems import ApiError

GENERIC = "ERROR_GENERIC"
CONTACT_EXISTS = "ERROR_CONTACT_EXISTS"


class Refused(Exception):
    def __init__(self, title: str, message: str, field: str = "", field_message: str = "",
                 code: str = GENERIC) -> None:
        super().__init__(title)
        self.title = title
        self.message = message
        self.field = field
        self.field_message = field_message
        self.code = code

    def batch_error(self, email_sent: str) -> dict[str, Any]:
        return {"email_address": email_sent, "error": self.message, "error_code": self.code,
                "field": self.field, "field_message": self.field_message}

    def problem(self) -> ApiError:
        errors = [{"field": self.field, "message": self.field_message}] if self.field_message else None
        return ApiError(400, self.title, self.message, errors)


def fake(email: str) -> Refused:
    return Refused("Invalid Resource", f"{email} looks fake or invalid, please enter a real email address.",
                   "email_address")


def exists(email: str) -> Refused:
    return Refused("Member Exists", f"{email} is already a list member. Use PUT to insert or update list members.",
                   code=CONTACT_EXISTS)


def compliance(email: str) -> Refused:
    return Refused("Member In Compliance State",
                   f"{email} is in a compliance state due to unsubscribe, bounce, or compliance review "
                   "and cannot be subscribed.")


def forgotten(email: str) -> Refused:
    return Refused("Forgotten Email Not Subscribed",
                   f"{email} was permanently deleted and cannot be re-imported. "
                   "The contact must re-subscribe to get back on the list.")


def merge(tag: str, field_message: str) -> Refused:
    return Refused("Invalid Resource", "Your merge fields were invalid.", tag, field_message)


def duplicate(email: str) -> Refused:
    return Refused("Invalid Resource",
                   f"{email} appears more than once in this request; send each address once per call "
                   "(or set skip_duplicate_check=true to keep only the first).", "email_address")
