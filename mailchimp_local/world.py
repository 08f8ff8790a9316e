"""Everything the local Mailchimp holds; a reset replaces the whole World with a fresh demo one.

Requests keep the World they started in, so a reset never mixes old in-flight calls into new counters, and
`wake` cuts short the sleeps (latency, slow faults) of calls still running in the old one.
"""
from __future__ import annotations

import itertools
import secrets
import threading
import time
from dataclasses import dataclass

from .accounts import Account
from .audience import Audience
from .demo import (DEMO_ACCOUNT_ID, DEMO_ACCOUNT_NAME, DEMO_API_KEY, DEMO_AUDIENCE_ID, DEMO_AUDIENCE_NAME,
                   DATA_CENTER)
from .faults import FaultPlan
from .latency import Latency
from .stats import Stats


@dataclass(frozen=True)
class Settings:
    """Start values (command line); a reset returns to them."""

    connection_cap: int = 10
    latency_profile: str = "none"
    seed: int = 1


class World:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.lock = threading.Lock()  # in-flight counts and stats
        self.wake = threading.Event()
        self.accounts: dict[str, Account] = {}
        self.credentials: dict[str, Account] = {}  # API keys and OAuth access tokens
        self.audiences: dict[str, Audience] = {}
        self.oauth_codes: dict[str, tuple[str, str, Account]] = {}  # code -> (client_id, redirect_uri, account)
        self.oauth_deny = False
        self.connection_cap = settings.connection_cap
        self.latency = Latency.named(settings.latency_profile)
        self.faults = FaultPlan(settings.seed)
        self.stats = Stats()
        self._segment_ids = itertools.count(1001)
        demo = self.add_account(DEMO_ACCOUNT_NAME, DEMO_API_KEY, DEMO_ACCOUNT_ID)
        self.new_audience(demo, DEMO_AUDIENCE_NAME, double_optin=False, audience_id=DEMO_AUDIENCE_ID)

    def add_account(self, name: str, api_key: str, account_id: str | None = None) -> Account:
        account = Account(account_id or secrets.token_hex(13)[:25], name, str(len(self.accounts) + 1001),
                          time.time())
        self.accounts[account.id] = account
        self.credentials[api_key] = account
        return account

    def new_audience(self, account: Account, name: str, double_optin: bool,
                     audience_id: str | None = None) -> Audience:
        """An audience as Mailchimp creates one: FNAME and LNAME text fields, not required."""
        audience = Audience(audience_id or secrets.token_hex(5), account.id, name, double_optin, time.time(),
                            self._segment_ids.__next__)
        self.audiences[audience.id] = audience
        audience.add_merge_field("First Name", "text", "FNAME")
        audience.add_merge_field("Last Name", "text", "LNAME")
        return audience

    def issue_token(self, account: Account) -> str:
        token = secrets.token_hex(16)
        self.credentials[token] = account
        return token

    # the connection cap

    def admit(self, account: Account) -> bool:
        """Take an in-flight slot, or refuse (429) when the account already has `connection_cap` requests."""
        with self.lock:
            if account.in_flight >= self.connection_cap:
                self.stats.rejected_over_cap += 1
                return False
            account.in_flight += 1
            self.stats.max_concurrent = max(self.stats.max_concurrent, account.in_flight)
            return True

    def release(self, account: Account) -> None:
        with self.lock:
            account.in_flight -= 1

    def record(self, status: int | str, seconds: float, written: int = 0, read: int = 0,
               arrived_at: float | None = None, route: str | None = None) -> None:
        with self.lock:
            self.stats.record(status, seconds, written, read, arrived_at, route)

    def reset_stats(self) -> None:
        """Counters only: the accounts, audiences, latency, faults and cap stay as they are."""
        with self.lock:
            self.stats = Stats()

    def sleep(self, seconds: float) -> None:
        """Interrupted by a reset, so tests never wait for calls of a World that is gone."""
        if seconds > 0:
            self.wake.wait(seconds)


def new_api_key() -> str:
    return f"{secrets.token_hex(16)}-{DATA_CENTER}"
