"""Seeded fault injection: the failures a Mailchimp client must survive, on demand and reproducibly.

Every request that matches the plan (method, path pattern) draws one number from a generator seeded with `seed`;
the rates, taken in the order of KINDS, decide which fault (if any) it gets. The same seed and the same sequence of
matching requests give the same faults. `limit` stops injecting after that many faults ("fail the next 3").

The `apply_then_*` kinds do the work first and then lose the answer ("Mailchimp applied the batch but the answer
never arrived"): a client must not assume that a call which failed this way changed nothing.
"""
from __future__ import annotations

import random
import re
import threading
from typing import Any

KINDS = ("429", "500", "502", "slow", "403", "apply_then_timeout", "apply_then_drop", "apply_then_502")
APPLIED_FIRST = ("apply_then_timeout", "apply_then_drop", "apply_then_502")  # the call is served, then its answer lost


class FaultPlan:
    def __init__(self, seed: int, rates: dict[str, float] | None = None, slow_seconds: float = 30.0,
                 path: str | None = None, method: str | None = None, limit: int | None = None) -> None:
        self.seed = seed
        self.rates = {kind: float((rates or {}).get(kind, 0.0)) for kind in KINDS}
        self.slow_seconds = slow_seconds
        self.path = path
        self.method = method.upper() if method else None
        self.limit = limit
        self.injected = dict.fromkeys(KINDS, 0)
        self._pattern = re.compile(path) if path else None
        self._random = random.Random(seed)
        self._lock = threading.Lock()

    @classmethod
    def from_json(cls, doc: dict[str, Any], default_seed: int) -> "FaultPlan":
        """Raises ValueError naming the field that is wrong."""
        rates = doc.get("rates") or {}
        if not isinstance(rates, dict) or set(rates) - set(KINDS):
            raise ValueError(f"rates must be an object with keys among {', '.join(KINDS)}")
        for kind, rate in rates.items():
            if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 <= rate <= 1:
                raise ValueError(f"rates.{kind} must be a number from 0 to 1")
        if sum(rates.values()) > 1:
            raise ValueError("the rates add up to more than 1")
        seed = doc.get("seed", default_seed)
        slow_seconds = doc.get("slow_seconds", 30.0)
        limit = doc.get("limit")
        if not isinstance(seed, int) or isinstance(seed, bool):
            raise ValueError("seed must be an integer")
        if isinstance(slow_seconds, bool) or not isinstance(slow_seconds, (int, float)) or slow_seconds < 0:
            raise ValueError("slow_seconds must be a number of seconds >= 0")
        if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 0):
            raise ValueError("limit must be a whole number >= 0 (or absent for no limit)")
        path, method = doc.get("path"), doc.get("method")
        if path is not None:
            try:
                re.compile(str(path))
            except re.error as exc:
                raise ValueError(f"path is not a valid regular expression: {exc}") from None
        return cls(seed, rates, float(slow_seconds), str(path) if path else None,
                   str(method) if method else None, limit)

    def draw(self, method: str, path: str) -> str | None:
        """The fault this request gets, or None."""
        if (self.method and method != self.method) or (self._pattern and not self._pattern.search(path)):
            return None
        with self._lock:
            if self.limit is not None and sum(self.injected.values()) >= self.limit:
                return None
            roll = self._random.random()
            threshold = 0.0
            for kind in KINDS:
                threshold += self.rates[kind]
                if roll < threshold:
                    self.injected[kind] += 1
                    return kind
        return None

    def to_json(self) -> dict[str, Any]:
        return {"seed": self.seed, "rates": self.rates, "slow_seconds": self.slow_seconds, "path": self.path,
                "method": self.method, "limit": self.limit, "injected": dict(self.injected)}
