"""How long a call takes: a fixed cost per call plus a cost per member written or read.

The `realistic` numbers are in the range Mailchimp shows (a 500-member batch subscribe takes well under a
second to a few seconds); they make benchmarks honest about round trips and the 10-connection cap.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

PROFILES = {
    "none": (0.0, 0.0, 0.0),
    "realistic": (120.0, 1.0, 0.05),  # base ms per call, ms per member written, ms per member read
}


@dataclass(frozen=True)
class Latency:
    profile: str
    base_ms: float
    per_member_written_ms: float
    per_member_read_ms: float

    @classmethod
    def named(cls, profile: str) -> "Latency":
        if profile not in PROFILES:
            raise ValueError(f"unknown latency profile {profile!r}: use one of {', '.join(PROFILES)}")
        return cls(profile, *PROFILES[profile])

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> "Latency":
        """`{"profile": name}`, optionally overriding any of the three numbers (milliseconds, >= 0)."""
        latency = cls.named(str(doc.get("profile", "none")))
        overrides = {}
        for key in ("base_ms", "per_member_written_ms", "per_member_read_ms"):
            if key in doc:
                value = doc[key]
                if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                    raise ValueError(f"{key} must be a number of milliseconds >= 0")
                overrides[key] = float(value)
        return cls(**{**asdict(latency), **overrides})

    def seconds(self, written: int, read: int) -> float:
        return (self.base_ms + written * self.per_member_written_ms + read * self.per_member_read_ms) / 1000.0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)
