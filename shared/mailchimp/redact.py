"""Keep secrets and personal data out of every text the client produces (logs, errors, refusal reasons)."""
from __future__ import annotations

import logging
import re

# Anything shaped like an address: deliberately loose, a missed address leaks, an extra redaction costs nothing.
_EMAIL = re.compile(r"[^\s@<>\"'(),;:\[\]]+@[^\s@<>\"'(),;:\[\]]+")
# 32 hex digits: API keys and OAuth tokens (with or without the "-us6" suffix), subscriber hashes (MD5 of addresses).
_HEX32 = re.compile(r"\b[0-9a-fA-F]{32}(?:-[a-z]{2,4}[0-9]{1,3})?\b")


def redact(text: str, *secrets: str) -> str:
    """Mailchimp echoes addresses in its messages; we pass those messages on, so they are cleaned first."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "<secret>")
    text = _EMAIL.sub("<email>", text)
    return _HEX32.sub("<redacted>", text)


class RedactingFilter(logging.Filter):
    """urllib3 logs every request URL at DEBUG, and member URLs carry subscriber hashes: clean them there too."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg, record.args = redact(record.getMessage()), ()
        return True


def guard_http_logs() -> None:
    """Idempotent; touches only urllib3's request logger, whose lines would otherwise name members."""
    target = logging.getLogger("urllib3.connectionpool")
    if not any(isinstance(f, RedactingFilter) for f in target.filters):
        target.addFilter(RedactingFilter())
