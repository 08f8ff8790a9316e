"""Merge fields: an audience's member attributes, and Mailchimp's rules for the values members carry."""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from datetime import date
from typing import Any, Callable

TYPES = ("text", "number", "address", "phone", "date", "url", "imageurl", "radio", "dropdown", "birthday", "zip")
TEXT_LIMIT_BYTES = 255
ADDRESS_PARTS = ("addr1", "city", "state", "zip")
_INTEGER = re.compile(r"^[+-]?\d+$")
_DATE = re.compile(r"^(\d{4})-(\d{2})-(\d{2})$")
_BIRTHDAY = re.compile(r"^(\d{2})/(\d{2})$")
_ZIP = re.compile(r"^\d{5}(-\d{4})?$")
_PHONE = re.compile(r"^[0-9+().\- ]{6,25}$")
_URL = re.compile(r"^https?://\S+$")
TAG = re.compile(r"^[A-Z0-9_]{1,10}$")


class MergeValueError(ValueError):
    """A value Mailchimp would refuse; the message is Mailchimp's `field_message` (what to send instead)."""


@dataclass
class MergeField:
    merge_id: int
    tag: str
    name: str
    type: str = "text"
    required: bool = False
    default_value: str = ""
    public: bool = True
    display_order: int = 0
    options: dict[str, Any] = field(default_factory=dict)
    help_text: str = ""

    def coerce(self, value: Any) -> Any:
        """The value as stored; "" means empty (None and "" clear a field, as Mailchimp does)."""
        if value is None or value == "":
            return ""
        if isinstance(value, bool):
            raise MergeValueError(f"Booleans are not accepted for a {self.type} field; send {_EXPECTED[self.type]}")
        return _COERCE[self.type](self, value)

    def to_json(self, list_id: str) -> dict[str, Any]:
        return {"merge_id": self.merge_id, "tag": self.tag, "name": self.name, "type": self.type,
                "required": self.required, "default_value": self.default_value, "public": self.public,
                "display_order": self.display_order, "options": self.options, "help_text": self.help_text,
                "list_id": list_id}


def _text(f: MergeField, value: Any) -> str:
    """Mailchimp cuts text at 255 bytes without complaint; the cut never splits a UTF-8 character."""
    if isinstance(value, (int, float)):
        value = str(value)
    if not isinstance(value, str):
        raise MergeValueError("Please enter text")
    if len(value) > TEXT_LIMIT_BYTES // 4:
        encoded = value.encode("utf-8")
        if len(encoded) > TEXT_LIMIT_BYTES:
            value = encoded[:TEXT_LIMIT_BYTES].decode("utf-8", "ignore")
    return value


def _number(f: MergeField, value: Any) -> int | float:
    number = value
    if isinstance(value, str):
        text = value.strip()
        try:
            number = int(text) if _INTEGER.match(text) else float(text)
        except ValueError:
            number = None
    if not isinstance(number, (int, float)) or not math.isfinite(number):
        raise MergeValueError("Please enter a number")
    return number


def _date(f: MergeField, value: Any) -> str:
    match = _DATE.match(value) if isinstance(value, str) else None
    if not match or not _valid_date(int(match[1]), int(match[2]), int(match[3])):
        raise MergeValueError("Please enter a date as YYYY-MM-DD")
    return value


def _birthday(f: MergeField, value: Any) -> str:
    match = _BIRTHDAY.match(value) if isinstance(value, str) else None
    if not match or not _valid_date(2000, int(match[1]), int(match[2])):  # 2000 is a leap year: 02/29 is fine
        raise MergeValueError("Please enter a birthday as MM/DD")
    return value


def _valid_date(year: int, month: int, day: int) -> bool:
    try:
        date(year, month, day)
    except ValueError:
        return False
    return True


def _address(f: MergeField, value: Any) -> dict[str, str]:
    if not isinstance(value, dict) or not all(isinstance(value.get(p), str) and value[p].strip()
                                              for p in ADDRESS_PARTS):
        raise MergeValueError("Please enter a complete address: an object with addr1, city, state and zip")
    extra = {k: value[k] for k in ("addr2", "country") if isinstance(value.get(k), str)}
    return {"addr1": value["addr1"], "addr2": extra.get("addr2", ""), "city": value["city"],
            "state": value["state"], "zip": value["zip"], "country": extra.get("country", "US")}


def _pattern(pattern: re.Pattern[str], message: str) -> Callable[[MergeField, Any], str]:
    def check(f: MergeField, value: Any) -> str:
        if not isinstance(value, str) or not pattern.match(value):
            raise MergeValueError(message)
        return value
    return check


def _choice(f: MergeField, value: Any) -> str:
    choices = f.options.get("choices") or []
    if value not in choices:
        raise MergeValueError(f"Please choose one of: {', '.join(map(str, choices))}")
    return value


_COERCE: dict[str, Callable[[MergeField, Any], Any]] = {
    "text": _text,
    "number": _number,
    "address": _address,
    "phone": _pattern(_PHONE, "Please enter a phone number (digits, spaces, +, -, parentheses)"),
    "date": _date,
    "url": _pattern(_URL, "Please enter a complete url, starting with http:// or https://"),
    "imageurl": _pattern(_URL, "Please enter a complete url, starting with http:// or https://"),
    "radio": _choice,
    "dropdown": _choice,
    "birthday": _birthday,
    "zip": _pattern(_ZIP, "Please enter a US zip code (5 digits, or 5+4)"),
}
_EXPECTED = {"text": "text", "number": "a number", "address": "an address object", "phone": "a phone number",
             "date": "a date as YYYY-MM-DD", "url": "a url", "imageurl": "a url", "radio": "one of the choices",
             "dropdown": "one of the choices", "birthday": "a birthday as MM/DD", "zip": "a zip code"}
