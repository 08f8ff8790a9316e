"""Email identity: one rule for what makes two rows the same Mailchimp member."""
from __future__ import annotations

import hashlib
import re

# Deliberately close to what Mailchimp accepts: one @, a dotted domain, no spaces or control characters.
# Mailchimp has the last word (it refuses "looks fake or invalid" addresses per member); this check only
# keeps obviously broken values from costing an API call.
_EMAIL = re.compile(r"^[^@\s\x00-\x1f\x7f\"<>(),;:\\\[\]]+@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}$")
MAX_EMAIL_LENGTH = 254


def normalize_email(raw: str) -> str:
    """Identity of an address: trimmed and lower-cased, as Mailchimp hashes it."""
    return raw.strip().lower()


def email_problem(normalized: str) -> str | None:
    """Why an address cannot be sent, or None when it looks sendable."""
    if not normalized:
        return "email is empty"
    if len(normalized) > MAX_EMAIL_LENGTH:
        return f"email is longer than {MAX_EMAIL_LENGTH} characters"
    if not _EMAIL.match(normalized):
        return "email is not a valid address (expected name@domain.tld)"
    return None


def subscriber_hash(email: str) -> str:
    """Mailchimp's member id: MD5 of the trimmed, lower-cased address."""
    return hashlib.md5(normalize_email(email).encode("utf-8")).hexdigest()
