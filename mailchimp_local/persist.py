"""Keep the local Mailchimp's accounts, credentials and audiences across restarts (opt-in: `--state-file`).

The local stack (`make up`) keeps Azurite's data under .local/, and its runs name audiences and members here; without
this file a restart would forget them while the runs pointing at them remain. What is kept: accounts, API keys and
OAuth tokens (and which were revoked, by their absence), audiences with their merge fields, members (status, merge
values, tags, times), tags and permanently deleted addresses. What is not: latency, faults, the connection cap,
statistics and unused OAuth codes, which start fresh as after a reset.

The file is written behind the requests (`Keeper`): the server tells the keeper of every request that may change
something, and a thread writes the whole World once no change came for 0.2 s, and on shutdown (SIGTERM, Ctrl-C), so
a `kill -9` or a crash a second after a write loses nothing. Under a steady stream of writes (a bulk load) it writes
2 s after the first unsaved change, or ten times as long after it as the last write took if that is longer (a big
World: writing it then takes at most about a tenth of the server's time). Requests only note the time: nothing is
serialised on their path. The file is JSON, written owner-only (it holds credentials and addresses) to a temporary
name, flushed to disk and renamed over the old one, so a crash never leaves half a file.
"""
from __future__ import annotations

import itertools
import json
import operator
import os
import sys
import threading
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from .accounts import Account
from .audience import Audience, Member, Segment
from .merge_fields import MergeField
from .world import Settings, World

FORMAT = 1
RETRY_SECONDS = 5.0  # after a failed write
_MEMBER_FIELDS = ("id", "email", "status", "archived", "unsubscribed_by", "merge", "tags", "created", "opted",
                  "changed", "unsubscribed_at")
_member_row = operator.attrgetter(*_MEMBER_FIELDS)  # a tuple, written as a JSON list: the fastest way to copy them


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
                "members": list(map(_member_row, audience.members.values())),
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
        audience.loaded()
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
    """Atomically: a temporary owner-only file, flushed to disk, renamed over the old one (and the rename synced)."""
    text = json.dumps(snapshot(world), separators=(",", ":"), check_circular=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.chmod(temporary, 0o600)  # also when an older file of that name was readable by others
    os.replace(temporary, path)
    try:
        folder = os.open(path.parent, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(folder)
    except OSError:
        pass  # some file systems cannot sync a folder; the rename is still atomic
    finally:
        os.close(folder)


def load(settings: Settings, path: Path) -> World | None:
    """The saved World, or None when there is no file yet."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    return restore(settings, json.loads(text))


class Keeper:
    """Writes the server's current World soon after it changes (write-behind), and once more on `stop`.

    `changed()` is all a request pays: it notes the time. The keeper's thread writes once `quiet` seconds passed
    without a change, or, while changes keep coming, `busy` seconds after the first unsaved one (stretched to
    `busy_factor` times the last write's duration, so writing a big World never takes more than a small share of the
    server's time). A change made while a write is under way is written by the next one.
    """

    def __init__(self, server: Any, path: Path, quiet: float = 0.2, busy: float = 2.0, busy_factor: float = 10.0) -> None:
        self._server = server
        self._path = path
        self._quiet = quiet
        self._busy = busy
        self._busy_factor = busy_factor
        self._took = 0.0  # seconds the last write took
        self._first = self._last = 0.0  # monotonic times of the first and the last unsaved change
        self._dirty = threading.Event()
        self._stopping = threading.Event()
        self._lock = threading.Lock()  # one write at a time
        self._thread = threading.Thread(target=self._run, name="state-keeper", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def changed(self) -> None:
        """Called after (and before) every request that may change the World: O(1), no lock on the way."""
        now = time.monotonic()
        self._last = now
        if not self._dirty.is_set():
            self._first = now
            self._dirty.set()

    def _run(self) -> None:
        while True:
            self._dirty.wait()
            while not self._stopping.is_set():
                now = time.monotonic()
                due = min(self._last + self._quiet, self._first + max(self._busy, self._busy_factor * self._took))
                if now >= due:
                    break
                self._stopping.wait(due - now)
            if self._stopping.is_set():
                return  # stop() writes the last time
            self.save()

    def save(self) -> None:
        with self._lock:
            # cleared before the World is read: a change the write misses marks the keeper dirty again after it
            self._dirty.clear()
            started = time.monotonic()
            try:
                save(self._server.world, self._path)
            except OSError as error:
                self._first = self._last = time.monotonic() + RETRY_SECONDS  # a full disk may be cleared meanwhile
                self._dirty.set()
                print(f"local Mailchimp: could not save its state to {self._path}: {error}", file=sys.stderr,
                      flush=True)
            self._took = time.monotonic() - started

    def stop(self) -> None:
        """Wake the thread, let a write under way finish, and write once more whatever happened."""
        self._stopping.set()
        self._dirty.set()
        self._thread.join(timeout=120)
        self.save()
