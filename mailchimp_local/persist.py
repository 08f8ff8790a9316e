"""Keep the local Mailchimp's accounts, credentials and audiences across restarts (opt-in: `--state-file`).

The local stack (`make up`) keeps Azurite's data under .local/, and its runs name audiences and members here; without
this file a restart would forget them while the runs pointing at them remain. What is kept: accounts, API keys and
OAuth tokens (and which were revoked, by their absence), audiences with their merge fields, members (status, merge
values, tags, times), tags and permanently deleted addresses. What is not: latency, faults, the connection cap,
statistics and unused OAuth codes, which start fresh as after a reset.

The file is JSON, written owner-only (it holds credentials and addresses) to a temporary name and renamed, so a
crash never leaves half a file: on shutdown, and every `interval` seconds while something changed.
"""
from __future__ import annotations

import itertools
import json
import os
import sys
import threading
from dataclasses import asdict
from pathlib import Path
from typing import Any

from .accounts import Account
from .audience import Audience, Member, Segment
from .merge_fields import MergeField
from .world import Settings, World

FORMAT = 1
_MEMBER_FIELDS = ("id", "email", "status", "archived", "unsubscribed_by", "merge", "tags", "created", "opted",
                  "changed", "unsubscribed_at")


def _copy(items: Any) -> list:
    """A list of a dict's values or items that request threads may be changing (added to) right now."""
    for _ in range(100):
        try:
            return list(items)
        except RuntimeError:  # changed size during iteration: try again
            continue
    return list(items)


def snapshot(world: World) -> dict[str, Any]:
    accounts = _copy(world.accounts.values())
    credentials = _copy(world.credentials.items())
    audiences = []
    for audience in _copy(world.audiences.values()):
        with audience.lock:
            audiences.append({
                "id": audience.id, "account_id": audience.account_id, "name": audience.name,
                "double_optin": audience.double_optin, "created": audience.created,
                "merge_fields": [asdict(f) for f in audience.merge_fields],
                "members": [[getattr(m, name) for name in _MEMBER_FIELDS] for m in audience.members.values()],
                "forgotten": sorted(audience.forgotten),
                "segments": [{"id": s.id, "name": s.name, "created": s.created, "updated": s.updated,
                              "added": dict(s.added)} for s in audience.segments.values()],
                "counts": dict(audience.counts),
            })
    return {"format": FORMAT,
            "accounts": [{"id": a.id, "name": a.name, "login_id": a.login_id, "created": a.created} for a in accounts],
            "credentials": {secret: account.id for secret, account in credentials},
            "audiences": audiences}


def restore(settings: Settings, doc: dict[str, Any]) -> World:
    """A World holding what `snapshot` saved (the demo account and audience are in it like any other)."""
    if doc.get("format") != FORMAT:
        raise ValueError(f"unknown state file format {doc.get('format')!r} (expected {FORMAT})")
    world = World(settings)
    world.accounts = {a["id"]: Account(a["id"], a["name"], a["login_id"], a["created"]) for a in doc["accounts"]}
    world.credentials = {secret: world.accounts[account_id] for secret, account_id in doc["credentials"].items()
                         if account_id in world.accounts}
    world.audiences = {}
    highest = 1000
    for saved in doc["audiences"]:
        audience = Audience(saved["id"], saved["account_id"], saved["name"], saved["double_optin"], saved["created"],
                            lambda: next(world._segment_ids))
        for number, fields in enumerate(saved["merge_fields"]):
            audience.merge_fields.append(MergeField(**fields))
            audience._merge_index[fields["tag"]] = number
        for values in saved["members"]:
            record = dict(zip(_MEMBER_FIELDS, values))
            member = Member(record["id"], record["email"], record["created"])
            for name in _MEMBER_FIELDS[2:]:
                setattr(member, name, record[name])
            member.merge = tuple(record["merge"])
            member.tags = tuple(record["tags"])
            audience.members[member.id] = member
        audience.forgotten = set(saved["forgotten"])
        for fields in saved["segments"]:
            segment = Segment(fields["id"], fields["name"], fields["created"])
            segment.updated = fields["updated"]
            segment.added = dict(fields["added"])
            segment.members = {member_id: audience.members[member_id] for member_id in segment.added
                               if member_id in audience.members}
            audience.segments[segment.id] = segment
            audience.segments_by_name[segment.key] = segment
            highest = max(highest, segment.id)
        audience.counts.update(saved["counts"])
        world.audiences[audience.id] = audience
    world._segment_ids = itertools.count(highest + 1)
    return world


def save(world: World, path: Path) -> None:
    text = json.dumps(snapshot(world), separators=(",", ":"))
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    os.chmod(temporary, 0o600)  # also when an older file of that name was readable by others
    os.replace(temporary, path)


def load(settings: Settings, path: Path) -> World | None:
    """The saved World, or None when there is no file yet."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    return restore(settings, json.loads(text))


def fingerprint(world: World) -> tuple:
    """Changes whenever something worth saving changed (member writes bump an audience's version)."""
    audiences = _copy(world.audiences.values())
    return (id(world), len(world.accounts), len(world.credentials), len(audiences),
            sum(a._version + len(a.segments) + len(a.merge_fields) + len(a.forgotten) for a in audiences))


class Keeper:
    """Saves the server's current World every `interval` seconds while it changes, and once more on `stop`."""

    def __init__(self, server: Any, path: Path, interval: float = 30.0) -> None:
        self._server = server
        self._path = path
        self._interval = interval
        self._saved: tuple | None = None
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="state-keeper", daemon=True)

    def start(self) -> None:
        self._saved = fingerprint(self._server.world)
        self._thread.start()

    def _run(self) -> None:
        while not self._stopping.wait(self._interval):
            self.save_if_changed()

    def save_if_changed(self) -> None:
        with self._lock:
            world = self._server.world
            now = fingerprint(world)
            if now == self._saved:
                return
            try:
                save(world, self._path)
                self._saved = now
            except OSError as error:
                print(f"local Mailchimp: could not save its state to {self._path}: {error}", file=sys.stderr, flush=True)

    def stop(self) -> None:
        self._stopping.set()
        with self._lock:
            self._saved = None  # whatever happened: save once more
        self.save_if_changed()
