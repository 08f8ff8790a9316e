"""The OAuth state's signing key: cached (a forged state costs no secret-store read), re-read every few minutes,
rotated by writing a new version (never by deleting the secret), the previous version accepted until the states
signed with it have expired, and no lock held while the secret store is asked."""
from __future__ import annotations

import base64
import json
import secrets
import threading
import time
from dataclasses import dataclass

import pytest

import shared.oauth as oauth
from shared.adapters.secrets import LocalFileSecrets
from shared.oauth import STATE_KEY_SECRET, OAuthFailed, StateSigner


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


class Unused:
    """Spent-state markers in memory (forged states never get this far)."""

    def __init__(self) -> None:
        self.seen: set[str] = set()

    def first_use(self, nonce: str) -> bool:
        fresh = nonce not in self.seen
        self.seen.add(nonce)
        return fresh


@dataclass(frozen=True)
class Version:
    value: str
    created: float


class CountingSecrets:
    """A secret store with versions, like Key Vault: `set` adds a version, reads see the newest. Counts every read."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.history: dict[str, list[Version]] = {}
        self.reads = 0
        self.gate: threading.Event | None = None  # when set up, reads wait for it (a slow Key Vault)
        self.reading = threading.Event()

    def _read(self) -> None:
        self.reads += 1
        self.reading.set()
        if self.gate is not None:
            assert self.gate.wait(10), "the test never let the read finish"

    def get(self, name: str) -> str | None:
        self._read()
        versions = self.history.get(name)
        return versions[-1].value if versions else None

    def versions(self, name: str, limit: int = 2) -> list[Version]:
        self._read()
        return list(reversed(self.history.get(name, [])))[:limit]

    def set(self, name: str, value: str) -> None:
        self.history.setdefault(name, []).append(Version(value, self.clock()))

    def delete(self, name: str) -> None:
        self.history.pop(name, None)


def forged(signer: StateSigner) -> str:
    """A well-formed state for a real destination, signed with a key the attacker made up."""
    payload = base64.urlsafe_b64encode(json.dumps({"d": "dest1", "n": secrets.token_urlsafe(16), "e": 1_900_000_000,
                                                   "m": False}).encode()).rstrip(b"=").decode()
    signature = base64.urlsafe_b64encode(secrets.token_bytes(32)).rstrip(b"=").decode()
    return f"{payload}.{signature}"


def rotate(store) -> None:
    """What docs/destinations.md tells an operator to do: write a new version, delete nothing."""
    store.set(STATE_KEY_SECRET, secrets.token_hex(32))


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(clock) -> CountingSecrets:
    return CountingSecrets(clock)


def test_a_thousand_forged_states_cost_at_most_two_secret_reads(store, clock):
    StateSigner(store, Unused(), clock=clock).issue("dest1", False)  # the key exists, made by some instance
    signer = StateSigner(store, Unused(), clock=clock)  # a fresh instance: nothing cached yet
    store.reads = 0
    for _ in range(1000):
        with pytest.raises(OAuthFailed, match="missing, altered"):
            signer.redeem(forged(signer))
    assert store.reads <= 2


def test_a_state_signed_with_the_previous_key_verifies_after_rotation_one_two_rotations_back_does_not(store, clock):
    before = StateSigner(store, Unused(), clock=clock)
    older = before.issue("dest1", False)
    rotate(store)
    clock.now += 60
    old = StateSigner(store, Unused(), clock=clock).issue("dest2", False)
    rotate(store)
    clock.now += 60
    after = StateSigner(store, Unused(), clock=clock)  # an instance that reads the key after both rotations
    assert after.redeem(old).destination_id == "dest2"  # previous version: accepted
    with pytest.raises(OAuthFailed, match="missing, altered"):
        after.redeem(older)  # two rotations back: refused
    assert after.redeem(after.issue("dest3", False)).destination_id == "dest3"


def test_an_instance_that_cached_the_old_key_picks_up_a_rotation_within_the_refresh_interval(store, clock, monkeypatch):
    monkeypatch.setattr(oauth, "KEY_REFRESH_SECONDS", 0, raising=False)
    monkeypatch.setattr(oauth, "KEY_RECHECK_SECONDS", 0, raising=False)
    stale = StateSigner(store, Unused(), clock=clock)
    issued_before = stale.issue("dest1", False)
    rotate(store)
    fresh = StateSigner(store, Unused(), clock=clock)
    assert stale.redeem(fresh.issue("dest2", False)).destination_id == "dest2"  # signed with the new key
    assert fresh.redeem(issued_before).destination_id == "dest1"  # signed with the old one


def test_the_previous_key_is_refused_once_its_states_can_no_longer_be_live(store, clock):
    signer = StateSigner(store, Unused(), clock=clock)
    signer.issue("dest1", False)
    rotate(store)
    # long after the rotation, a state carrying a fresh expiry but signed with the replaced key is a forgery
    clock.now += 3600
    payload = base64.urlsafe_b64encode(json.dumps({"d": "dest1", "n": "n1", "e": int(clock.now) + 600, "m": False})
                                       .encode()).rstrip(b"=").decode()
    replaced = bytes.fromhex(store.history[STATE_KEY_SECRET][0].value)
    import hashlib
    import hmac
    signature = base64.urlsafe_b64encode(hmac.new(replaced, payload.encode(), hashlib.sha256).digest()).rstrip(b"=").decode()
    with pytest.raises(OAuthFailed, match="missing, altered"):
        StateSigner(store, Unused(), clock=clock).redeem(f"{payload}.{signature}")


def test_no_lock_is_held_while_the_secret_store_is_read(store, clock, monkeypatch):
    monkeypatch.setattr(oauth, "KEY_RECHECK_SECONDS", 0, raising=False)  # every miss may look again
    signer = StateSigner(store, Unused(), clock=clock)
    signer.issue("dest1", False)
    store.reading.clear()
    store.gate = threading.Event()  # the next read hangs, like a throttled Key Vault
    slow = threading.Thread(target=lambda: pytest.raises(OAuthFailed, signer.redeem, forged(signer)), daemon=True)
    slow.start()
    assert store.reading.wait(5), "the miss did not look at the secret store at all"
    started = time.monotonic()
    other = threading.Thread(target=lambda: pytest.raises(OAuthFailed, signer.redeem, forged(signer)), daemon=True)
    other.start()
    other.join(3)
    fine = threading.Thread(target=signer.issue, args=("dest2", False), daemon=True)
    fine.start()
    fine.join(3)
    blocked = other.is_alive() or fine.is_alive()
    store.gate.set()
    slow.join(5)
    assert not blocked, "a request waited for another request's secret-store read"
    assert time.monotonic() - started < 6


def test_the_local_store_keeps_the_previous_version_so_a_rotation_there_works_too(tmp_path):
    store = LocalFileSecrets(str(tmp_path / "secrets"))
    state = StateSigner(store, Unused()).issue("dest1", False)
    rotate(store)
    assert StateSigner(store, Unused()).redeem(state).destination_id == "dest1"
    rotate(store)
    with pytest.raises(OAuthFailed, match="missing, altered"):
        StateSigner(store, Unused()).redeem(state)
    for path in (tmp_path / "secrets").rglob("*"):
        assert path.stat().st_mode & 0o077 == 0, path  # every version owner-only
    store.delete(STATE_KEY_SECRET)
    left = [p for p in (tmp_path / "secrets").rglob("*") if p.is_file()]
    assert store.get(STATE_KEY_SECRET) is None
    assert [(p.parent.name, p.name, p.stat().st_size) for p in left] == [("deleted", STATE_KEY_SECRET, 0)]  # the name only
