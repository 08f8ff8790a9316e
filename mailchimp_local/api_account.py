"""/3.0/ and /3.0/ping: the calls that prove credentials work."""
from __future__ import annotations

from typing import Any

from .call import Call
from .shapes import account_json


def root(call: Call) -> dict[str, Any]:
    owned = [a for a in call.world.audiences.values() if a.account_id == call.account.id]
    return account_json(call.account, sum(a.counts["subscribed"] for a in owned))


def ping(call: Call) -> dict[str, Any]:
    return {"health_status": "Everything's Chimpy!"}


ROUTES = [("GET", "/", root), ("GET", "/ping", ping)]
