"""Mailchimp's timestamps: whole seconds in ISO 8601 with an explicit UTC offset."""
from __future__ import annotations

from datetime import datetime, timezone
from functools import lru_cache


def iso(ts: float) -> str:
    """Members written in one call share one timestamp, so formatting is cached by the second."""
    return _iso_seconds(int(ts))


@lru_cache(maxsize=4096)
def _iso_seconds(seconds: int) -> str:
    return datetime.fromtimestamp(seconds, timezone.utc).isoformat()


def parse_iso(value: str) -> float:
    """ISO 8601 instant or date; naive values are UTC, as Mailchimp reads them. Raises ValueError.

    An unencoded "+00:00" in a query string arrives as " 00:00"; that is read back as the offset it was.
    """
    text = value.strip()
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        head, space, offset = text.rpartition(" ")
        if not space:
            raise
        moment = datetime.fromisoformat(f"{head}+{offset}")
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.timestamp()
