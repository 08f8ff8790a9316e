"""A Mailchimp account (user): what owns audiences, and what the connection cap is counted against."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(eq=False)
class Account:
    id: str
    name: str
    login_id: str
    created: float
    in_flight: int = 0  # /3.0 requests being served right now (changed under World.lock)

    @property
    def username(self) -> str:
        return self.name.lower().replace(" ", "-")

    @property
    def email(self) -> str:
        return f"{self.username}@demo.invalid"
