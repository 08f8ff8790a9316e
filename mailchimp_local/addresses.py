"""Which addresses the local Mailchimp refuses as "looks fake or invalid".

Real Mailchimp refuses addresses it believes fake by rules it does not publish. Locally the rule is small and
explicit so tests can trigger it on purpose and never by accident: syntactically invalid addresses (the
project's own check), the local parts below on any domain, and the domains below.
"""
from __future__ import annotations

from shared.emails import email_problem

FAKE_LOCAL_PARTS = frozenset({"test", "fake", "invalid", "noreply"})
FAKE_DOMAINS = frozenset({"mailinator.com", "example.invalid"})


def looks_fake(normalized: str) -> bool:
    if email_problem(normalized) is not None:
        return True
    local, _, domain = normalized.rpartition("@")
    return local in FAKE_LOCAL_PARTS or domain in FAKE_DOMAINS
