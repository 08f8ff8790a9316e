"""Mailchimp takes at most 500 members per batch-subscribe and per tag add/remove call."""
from __future__ import annotations

from typing import Sequence, TypeVar

MAX_BATCH = 500
T = TypeVar("T")


def chunks(items: Sequence[T], size: int = MAX_BATCH) -> list[Sequence[T]]:
    return [items[i:i + size] for i in range(0, len(items), size)]
