"""How long to keep asking a busy Mailchimp before telling the caller it is unavailable."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from tenacity import RetryCallState, Retrying, retry_if_exception_type, stop_after_attempt, stop_before_delay
from tenacity import wait_random_exponential

from .errors import MailchimpUnavailable


@dataclass(frozen=True)
class RetryPolicy:
    """Mailchimp sends no Retry-After, so backoff is exponential with full jitter, bounded in attempts and time."""

    attempts: int = 6
    max_seconds: float = 120.0  # no retry is started that would end after this (Mailchimp's own server timeout)
    base_backoff: float = 0.5
    max_backoff: float = 20.0

    def __post_init__(self) -> None:
        if self.attempts < 1 or self.max_seconds <= 0 or self.base_backoff <= 0 or self.max_backoff < self.base_backoff:
            raise ValueError("RetryPolicy needs attempts >= 1, max_seconds > 0 and 0 < base_backoff <= max_backoff")

    def retrying(self, before_sleep: Callable[[RetryCallState], None]) -> Retrying:
        """A fresh controller per request: tenacity keeps per-call state on it."""
        return Retrying(
            stop=stop_after_attempt(self.attempts) | stop_before_delay(self.max_seconds),
            wait=wait_random_exponential(multiplier=self.base_backoff, max=self.max_backoff),
            retry=retry_if_exception_type(MailchimpUnavailable),
            before_sleep=before_sleep,
            reraise=True,
        )
