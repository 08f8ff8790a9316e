"""Erasure at a person's request: delete them permanently from every audience of every destination, and from every
file the connector keeps, keeping only what is needed to honour the request (no address, ever).

A request (POST /api/erasures, or a file dropped into the `erasures` container) is checked and turned into subscriber
hashes at once: Mailchimp names a member by the MD5 of the trimmed, lower-cased address (shared/emails.py
`subscriber_hash`, "The MD5 hash of the lowercase version of the list member's email address",
https://mailchimp.com/developer/marketing/docs/methods-parameters/), so the hash is all Mailchimp's delete-permanent
needs, all the work files can be matched by, and all the record and the ledger of erased addresses keep.

Processing (a queue message per request) is idempotent: an outcome already recorded is not asked again, Mailchimp's
404 ("no such contact") counts as done, and an answer Mailchimp could not give (after the client's retries) is raised
so the queue delivers the message again.
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import re
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, ContextManager, Iterable, Iterator, Mapping, Protocol

from shared.audience_mirror import MIRRORS_PREFIX, note_mirrors_deleted
from shared.destinations import Destination
from shared.emails import email_problem, normalize_email, subscriber_hash
from shared.mailchimp.client import MailchimpClient
from shared.mailchimp.errors import MailchimpAuthError, MailchimpRequestError
from shared.exports.files import RUNS_PREFIX
from shared.runs import Run, now_iso

log = logging.getLogger(__name__)

MAX_ADDRESSES_PER_REQUEST = 1000  # POST /api/erasures
MAX_ADDRESSES_PER_FILE = 10_000  # a file in the erasures container
MAX_PROBLEMS_SHOWN = 20  # a refused request names at most this many lines or positions
CHUNK_FILES = "/chunks/"  # a run's chunk files and saved answers: left as they are (see _scrub)
REASON_CHARS = 300

LOCKS_PREFIX = "erasure-locks/"  # in the work container: an empty blob per request, leased while its work is queued
# A request still `queued`, its work never queued, this long after it was made is stranded (queue_stranded): past
# host.json's functionTimeout (10 minutes), so the request that made it is no longer running.
STRANDED_AFTER = timedelta(minutes=15)
REJECTED_MARK = ".rejected"  # a drop file's unusable lines are kept in <name>.rejected<ext>, never read as a request

# Outcomes per (audience, subscriber hash). `unreachable`: an audience a deleted destination wrote to; its credentials
# went with it, so nobody here can ask Mailchimp: an admin erases the person there by hand.
DELETED, ALREADY_GONE, REFUSED, UNREACHABLE, PENDING = "deleted", "alreadyGone", "refused", "unreachable", "pending"
# Statuses of a request
QUEUED, RUNNING, DONE, WITH_ERRORS, FAILED, REJECTED = ("queued", "running", "done", "completed_with_errors", "failed",
                                                        "rejected")


class InvalidErasure(Exception):
    """The request or file cannot be used; each problem names the position or line, never the address."""

    def __init__(self, problems: list[dict[str, str]]) -> None:
        super().__init__(_listed(problems))
        self.problems = problems[:MAX_PROBLEMS_SHOWN]


def _listed(problems: list[dict[str, str]]) -> str:
    """The first MAX_PROBLEMS_SHOWN problems, "field: message; ...", and how many more there are."""
    shown = problems[:MAX_PROBLEMS_SHOWN]
    more = f" (and {len(problems) - len(shown)} more)" if len(problems) > len(shown) else ""
    return "; ".join(f"{p['field']}: {p['message']}" for p in shown) + more


def _address_problem(value: Any) -> str | None:
    """Why `value` cannot be an address to erase, without repeating it."""
    if not isinstance(value, str):
        return "must be an email address (a string)"
    problem = email_problem(normalize_email(value))
    return f"is not an email address ({problem}); send the address as the platform knows it" if problem else None


def hashes_of(emails: Iterable[str]) -> list[str]:
    """Subscriber hashes of the addresses, each once, in the order given."""
    return list(dict.fromkeys(subscriber_hash(email) for email in emails))


def parse_request(body: Any) -> list[str]:
    """The addresses of a `{"emails": [...]}` body (at most MAX_ADDRESSES_PER_REQUEST); InvalidErasure names the
    positions that are not addresses."""
    emails = body.get("emails") if isinstance(body, dict) else None
    if not isinstance(emails, list) or not emails:
        raise InvalidErasure([{"field": "emails", "message": 'send {"emails": ["<address>", ...]}: at least one address'}])
    if len(emails) > MAX_ADDRESSES_PER_REQUEST:
        raise InvalidErasure([{"field": "emails", "message": f"at most {MAX_ADDRESSES_PER_REQUEST:,} addresses per request "
                                                             f"({len(emails):,} were sent): split them into several"}])
    extra = sorted(str(key)[:40] for key in body if key != "emails")
    problems = [{"field": key, "message": 'is not a field of an erasure request; send only "emails"'} for key in extra]
    problems += [{"field": f"emails[{i}]", "message": problem}
                 for i, value in enumerate(emails) if (problem := _address_problem(value))]
    if problems:
        raise InvalidErasure(problems)
    return emails


def not_a_request(name: str) -> bool:
    """Files an exporting platform writes beside its data (`_SUCCESS` markers, CDM `model.json` and `*.cdm.json`
    manifests, hidden files), and the lines of a request the app could not use (`<name>.rejected<ext>`, see
    on_dropped): left alone, never read as a request."""
    base = name.rsplit("/", 1)[-1].lower()
    stem = base.rsplit(".", 1)[0] if "." in base else base
    return (base.startswith(("_", ".")) or base == "model.json" or base.endswith(".cdm.json")
            or stem.endswith(REJECTED_MARK) or base.endswith(REJECTED_MARK))


def rejected_name(name: str) -> str:
    """Where a drop file's unusable lines are kept: `a/b.csv` -> `a/b.rejected.csv` (not_a_request skips it)."""
    folder, _, base = name.rpartition("/")
    stem, dot, ext = base.rpartition(".")
    kept = f"{stem}{REJECTED_MARK}.{ext}" if dot and stem else f"{base}{REJECTED_MARK}"
    return f"{folder}/{kept}" if folder else kept


@dataclass(frozen=True)
class DropFile:
    """What a dropped file holds: the addresses to erase, the lines that are not (by number, never a value), and
    those lines as they were written (for CSV after the header row), to keep for whoever fixes them."""

    emails: list[str]
    problems: list[dict[str, str]]
    bad_lines: bytes

    def message(self, kept_in: str) -> str | None:
        if not self.problems:
            return None
        return (f"{len(self.problems)} line(s) of the file were not used: {_listed(self.problems)}. They are kept in "
                f"{kept_in}: fix them and drop them again as a new file")


def parse_drop_file(name: str, data: bytes) -> DropFile:
    """The addresses of a file the platform dropped: JSON Lines (`{"email": "..."}` a line; .jsonl, .ndjson, .json)
    or CSV with an `email` column (any letter case; .csv). One bad line does not cost the others: the lines that are
    not addresses come back as DropFile.problems (by line number) and bad_lines. InvalidErasure when nothing in the
    file can be used (not UTF-8, another kind of file, no email column, no address at all, too many addresses)."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise InvalidErasure([{"field": name, "message": f"must be UTF-8 text (byte {error.start} is not)"}]) from None
    lower = name.lower()
    if lower.endswith((".jsonl", ".ndjson", ".json")):
        found = list(_json_lines(text))
        header = ""
    elif lower.endswith(".csv"):
        found = list(_csv_rows(text))
        header = _physical_lines(text)[0] if text else ""
    else:
        raise InvalidErasure([{"field": name, "message": "name the file .jsonl (one {\"email\": ...} a line) or .csv "
                                                         "(a header with an email column)"}])
    problems = [{"field": f"line {line}", "message": problem} for line, _, problem, _ in found if problem]
    emails = [value for _, value, problem, _ in found if not problem]
    if not emails:  # e.g. no email column: the file stays as it is
        raise InvalidErasure(problems or [{"field": name, "message": "holds no address: nothing to erase"}])
    if len(emails) > MAX_ADDRESSES_PER_FILE:
        raise InvalidErasure([{"field": name, "message": f"holds {len(emails):,} addresses, at most "
                                                         f"{MAX_ADDRESSES_PER_FILE:,} are taken per file: split it "
                                                         "into several files"}])
    bad = "".join(raw if raw.endswith(("\n", "\r")) else raw + "\n" for _, _, problem, raw in found if problem)
    if bad and header:
        bad = (header if header.endswith(("\n", "\r")) else header + "\n") + bad
    return DropFile(emails, problems, bad.encode("utf-8"))


def _physical_lines(text: str) -> list[str]:
    """The lines as the csv module counts them (\\r\\n, \\n or \\r), each with its line break."""
    return re.findall(r"[^\r\n]*(?:\r\n|\r|\n)|[^\r\n]+$", text)


def _json_lines(text: str) -> Iterator[tuple[int, str, str | None, str]]:
    for number, line in enumerate(text.splitlines(keepends=True), start=1):
        if not line.strip():
            continue
        try:
            doc = json.loads(line.splitlines()[0])
        except ValueError:
            yield number, "", 'is not JSON: write one {"email": "<address>"} object a line', line
            continue
        value = doc.get("email") if isinstance(doc, dict) else None
        yield number, value, _address_problem(value) if value is not None else 'has no "email" field', line


def _csv_rows(text: str) -> Iterator[tuple[int, str, str | None, str]]:
    lines = _physical_lines(text)
    reader = csv.reader(io.StringIO(text, newline=""))
    header = next(reader, None)
    columns = [column.strip().lower() for column in header or []]
    if "email" not in columns:
        yield 1, "", "the header row has no email column: name the column of addresses \"email\"", ""
        return
    at = columns.index("email")
    before = reader.line_num
    for row in reader:
        raw = "".join(lines[before:reader.line_num])  # a quoted value may span lines: all of them
        before = reader.line_num
        if not any(cell.strip() for cell in row):
            continue
        value = row[at] if at < len(row) else None
        yield (reader.line_num, value,
               _address_problem(value) if value is not None else "has no value in the email column", raw)


def drop_file_id(name: str, data: bytes) -> str:
    """The id of the request a dropped file makes: the same file delivered twice is one request."""
    return hashlib.sha256(name.encode("utf-8") + b"\0" + data).hexdigest()[:16]


@dataclass(frozen=True)
class Target:
    """An audience to erase from, and the destinations reaching it (one Mailchimp account and audience is asked once)."""

    audience_id: str
    destination_ids: tuple[str, ...]

    @property
    def key(self) -> str:
        """Stored with each outcome: the first destination and the audience."""
        return f"{self.destination_ids[0]}/{self.audience_id}"

    def public(self) -> dict[str, Any]:
        return {"audienceId": self.audience_id, "destinationIds": list(self.destination_ids)}


@dataclass(frozen=True)
class Outcome:
    outcome: str  # DELETED | ALREADY_GONE | REFUSED | UNREACHABLE
    reason: str | None = None  # Mailchimp's, for a refusal (no address: redacted by the client)
    at: str | None = None


@dataclass
class Erasure:
    """A request and what became of it; holds subscriber hashes, never an address."""

    id: str
    created_at: str
    requested_by: str  # the caller's Entra object id (Principal.id) for the API, "storage:<blob name>" for a file
    source: str  # http | storage
    hashes: tuple[str, ...]
    status: str = QUEUED
    updated_at: str | None = None
    message: str | None = None
    targets: tuple[Target, ...] = ()
    outcomes: dict[str, dict[str, Outcome]] = field(default_factory=dict)  # hash -> Target.key -> outcome
    files_scrubbed: int = 0  # work files rewritten without the erased addresses
    addresses: int = 0  # how many hashes (listings read the record without them)
    work_queued: bool = False  # its hashes noted in the ledger and its work queued (request())

    @property
    def finished(self) -> bool:
        return self.status in (DONE, WITH_ERRORS, FAILED, REJECTED)

    def outcome(self, member_hash: str, target: Target) -> Outcome | None:
        return self.outcomes.get(member_hash, {}).get(target.key)

    def public(self, details: bool = True) -> dict[str, Any]:
        """As the API shows it: per audience the counts, and with `details` per hash its outcome in each."""
        audiences = []
        for target in self.targets:
            counts = dict.fromkeys((DELETED, ALREADY_GONE, REFUSED, UNREACHABLE, PENDING), 0)
            for member_hash in self.hashes:
                found = self.outcome(member_hash, target)
                counts[found.outcome if found else PENDING] += 1
            audiences.append({**target.public(), **counts})
        shown: dict[str, Any] = {
            "id": self.id, "status": self.status, "createdAt": self.created_at, "updatedAt": self.updated_at,
            "requestedBy": self.requested_by, "source": self.source, "addresses": self.addresses or len(self.hashes),
            "message": self.message, "filesScrubbed": self.files_scrubbed,
        }
        if details:  # a listing reads records without their hashes: no counts to show there
            shown["audiences"] = audiences
            shown["subscribers"] = [
                {"hash": member_hash, "outcomes": [
                    {**target.public(), "outcome": found.outcome if found else PENDING,
                     **({"reason": found.reason} if found and found.reason else {}),
                     **({"at": found.at} if found and found.at else {})}
                    for target in self.targets for found in [self.outcome(member_hash, target)]]}
                for member_hash in self.hashes]
        return shown


# --- boundaries ------------------------------------------------------------------------------------------------------

class ErasureRecords(Protocol):
    """Erasure requests (Table storage in the app)."""

    def create(self, erasure: Erasure) -> bool: ...  # False when a request with this id exists already
    def get(self, erasure_id: str) -> Erasure | None: ...
    def list(self, top: int) -> list[Erasure]: ...  # newest first, without per-hash outcomes
    def add_targets(self, erasure_id: str, targets: Iterable[Target]) -> None: ...
    def record(self, erasure_id: str, member_hash: str, target: Target, outcome: Outcome) -> None: ...
    def set_status(self, erasure_id: str, status: str, message: str | None = None,
                   files_scrubbed: int | None = None) -> None: ...
    def note_queued(self, erasure_id: str) -> None: ...  # sets work_queued
    def list_unqueued(self) -> list[Erasure]: ...  # status queued, work not queued; records only, without hashes


class ErasedLedger(Protocol):
    """Subscriber hashes a person had erased, and when: kept as long as the erasure must be honoured."""

    def note(self, hashes: Iterable[str], erased_at: str) -> None: ...
    def all(self) -> Mapping[str, str]: ...


class Queue(Protocol):
    def send(self, message: dict[str, Any], delay_seconds: int = 0) -> None: ...


class WorkFiles(Protocol):
    def list_names(self, prefix: str = "") -> Iterator[str]: ...
    # `change` of the blob's bytes written back unless it was written or deleted meanwhile (then read again, or
    # False if gone); None from `change` leaves it. Whether it wrote.
    def rewrite(self, name: str, change: Callable[[bytes], bytes | None]) -> bool: ...
    def write_bytes(self, name: str, data: bytes) -> None: ...  # the mirrors-deleted mark (note_mirrors_deleted)
    def delete_prefix(self, prefix: str) -> None: ...
    # A lease on `name` across instances; TimeoutError once another kept it past `wait_seconds` (the adapter's default).
    def exclusive(self, name: str, wait_seconds: float = ..., remove: bool = False) -> ContextManager[None]: ...


class DropFolder(Protocol):
    """The erasures container the platform drops files of addresses into."""

    def exists(self, name: str) -> bool: ...
    def read_bytes(self, name: str) -> bytes: ...
    def write_bytes(self, name: str, data: bytes) -> None: ...
    def delete(self, name: str) -> None: ...


class Destinations(Protocol):
    def list(self) -> list[Destination]: ...


class Runs(Protocol):
    """Export run records (shared/adapters/tables.py RunTable): `details.audienceId` names the audience a run wrote to."""

    def list_all(self) -> list[Run]: ...


class Connections(Protocol):
    """shared/connections.py MailchimpConnections: the destination's client, its retries and connection-cap gate."""

    def call(self, destination: Destination, action: Callable[[MailchimpClient], Any]) -> Any: ...


# --- the work files ----------------------------------------------------------------------------------------------------

def _names_erased(doc: Any, erased: set[str]) -> bool:
    email = doc.get("email") if isinstance(doc, dict) else None
    return isinstance(email, str) and subscriber_hash(email) in erased


def scrubbed(name: str, data: bytes, erased: set[str]) -> bytes | None:
    """The file without the entries whose "email" is an erased address, or None when it names none of them. JSON Lines
    (.jsonl: chunk files, per-row reports, previews) lose those lines; a JSON array (.json: Mailchimp's saved answers)
    loses those objects. Lines that are not JSON are kept as they are."""
    if name.endswith(".jsonl"):
        lines = data.splitlines(keepends=True)
        kept = [line for line in lines if not _line_names_erased(line, erased)]
        return None if len(kept) == len(lines) else b"".join(kept)
    if name.endswith(".json"):
        try:
            doc = json.loads(data)
        except ValueError:
            return None
        if not isinstance(doc, list):
            return None
        kept_docs = [item for item in doc if not _names_erased(item, erased)]
        return None if len(kept_docs) == len(doc) else json.dumps(kept_docs, ensure_ascii=False).encode("utf-8")
    return None


def _line_names_erased(line: bytes, erased: set[str]) -> bool:
    if b"@" not in line:
        return False
    try:
        return _names_erased(json.loads(line), erased)
    except ValueError:
        return False


# --- the service ---------------------------------------------------------------------------------------------------------

class ErasureService:
    def __init__(self, *, records: ErasureRecords, ledger: ErasedLedger, queue: Queue, work: WorkFiles,
                 destinations: Destinations, connections: Connections, drops: DropFolder, runs: Runs,
                 workers: int = 4) -> None:
        self._records = records
        self._ledger = ledger
        self._queue = queue
        self._work = work
        self._destinations = destinations
        self._connections = connections
        self._drops = drops
        self._runs = runs
        self._workers = workers  # deletions in flight; the client's connection cap still bounds Mailchimp's share

    def request(self, emails: Iterable[str], requested_by: str, source: str = "http",
                erasure_id: str | None = None, message: str | None = None) -> tuple[Erasure, bool]:
        """Record the request (hashes only), note each hash in the ledger, queue the work. (erasure, created): with
        a given id that exists already (a dropped file delivered twice), nothing new happens and created is False.
        `message`: what of a dropped file was not used; it stays on the record and makes it `completed_with_errors`."""
        now = now_iso()
        erasure = Erasure(id=erasure_id or uuid.uuid4().hex[:12], created_at=now, updated_at=now,
                          requested_by=requested_by, source=source, hashes=tuple(hashes_of(emails)), message=message)
        if erasure_id is None:  # an id of its own: nobody else records this request
            return self._record_and_queue(erasure)
        # A dropped file's event delivered twice at once: the second waits here, then finds the work queued.
        with self._work.exclusive(f"{LOCKS_PREFIX}{erasure.id}.lock", remove=True):
            return self._record_and_queue(erasure)

    def _record_and_queue(self, erasure: Erasure) -> tuple[Erasure, bool]:
        if not self._records.create(erasure):
            existing = self._records.get(erasure.id)
            if existing is not None and existing.status == QUEUED and not existing.work_queued:
                # The delivery that recorded it was cut short before its hashes were noted or its work queued: both
                # now (the ledger's rows are upserted; a second message, if the first went out, finds it finished or
                # running and skips what it recorded).
                self._queue_work(existing.id, existing.hashes, existing.created_at)
            return existing or erasure, False
        self._queue_work(erasure.id, erasure.hashes, erasure.created_at)
        return erasure, True

    def _queue_work(self, erasure_id: str, hashes: Iterable[str], erased_at: str) -> None:
        self._ledger.note(hashes, erased_at)
        self._queue.send({"erasureId": erasure_id})
        self._records.note_queued(erasure_id)

    def queue_stranded(self, now: datetime | None = None) -> list[str]:
        """Queue the work of requests recorded but never queued, older than STRANDED_AFTER; their ids. A request over
        HTTP whose process died between its record and its message has no redelivery (a dropped file's event has one,
        and this catches it too if that redelivery never comes): without this it would stay `queued`, and the person
        would never be erased. Older than any live request can be (functionTimeout), so none is queued twice by a
        request still running; the lock keeps it from racing a dropped file's redelivery."""
        cutoff = (now or datetime.now(timezone.utc)) - STRANDED_AFTER
        queued = []
        for stranded in self._records.list_unqueued():
            try:
                if datetime.fromisoformat(stranded.created_at) > cutoff:
                    continue
                # not waiting: a dropped file's redelivery holding it is queuing it; else the next sweep tries again
                with self._work.exclusive(f"{LOCKS_PREFIX}{stranded.id}.lock", wait_seconds=0, remove=True):
                    current = self._records.get(stranded.id)
                    if current is not None and current.status == QUEUED and not current.work_queued:
                        self._queue_work(current.id, current.hashes, current.created_at)
                        queued.append(current.id)
            except Exception as error:  # noqa: BLE001 - one request that cannot be queued now must not hold up the rest
                log.error("erasure request %s is stranded and could not be queued (%s); the next sweep tries again",
                          stranded.id, type(error).__name__)
        return queued

    def reject(self, requested_by: str, source: str, erasure_id: str, problem: InvalidErasure) -> Erasure:
        """Record a dropped file that could not be used (status rejected, the problems by line), so it is seen."""
        now = now_iso()
        erasure = Erasure(id=erasure_id, created_at=now, updated_at=now, requested_by=requested_by, source=source,
                          hashes=(), status=REJECTED, message=str(problem))
        if not self._records.create(erasure):
            return self._records.get(erasure_id) or erasure
        return erasure

    def on_dropped(self, name: str) -> Erasure | None:
        """A file the platform dropped: recorded as a request by "storage:<name>", then deleted (it holds addresses).
        Lines that are not addresses never block the others: they are written to `<name>.rejected<ext>` (for CSV
        under the header row; not_a_request skips that file) before the file is deleted, and named by line number in
        the request's message (it ends `completed_with_errors`). A file with nothing usable is kept where it is,
        untouched, and recorded as `rejected` with its problems by line (the log names the file and the lines, never
        a value): fix it and write it again, which is a new event. None when the file is gone (handled by an earlier
        delivery). Each step can be done again: a redelivery rewrites the same rejected lines and finds the request."""
        if not self._drops.exists(name):
            return None
        if not_a_request(name):
            log.info("erasure drop folder: %s is not a request (a marker, metadata or rejected-lines file) and is left "
                     "alone", name)
            return None
        data = self._drops.read_bytes(name)
        erasure_id = drop_file_id(name, data)
        try:
            found = parse_drop_file(name, data)
        except InvalidErasure as problem:
            log.error("erasure file %s was not used and is kept: %s", name, problem)
            return self.reject(f"storage:{name}", "storage", erasure_id, problem)
        kept_in = rejected_name(name)
        if found.problems:
            self._drops.write_bytes(kept_in, found.bad_lines)  # first: nothing typed is lost if the rest fails
            log.error("erasure file %s: %d line(s) not used, kept in %s: %s", name, len(found.problems), kept_in,
                      "; ".join(p["field"] for p in found.problems[:MAX_PROBLEMS_SHOWN]))
        erasure, _ = self.request(found.emails, f"storage:{name}", "storage", erasure_id=erasure_id,
                                  message=found.message(kept_in))
        self._drops.delete(name)
        return erasure

    def get(self, erasure_id: str) -> Erasure | None:
        return self._records.get(erasure_id)

    def list(self, top: int) -> list[Erasure]:
        return self._records.list(top)

    def process(self, erasure_id: str) -> Erasure | None:
        """Delete every hash from every audience, then scrub the work files. Mailchimp unavailable after retries is
        raised (the queue tries again, skipping what is recorded)."""
        erasure = self._records.get(erasure_id)
        if erasure is None or erasure.finished:
            return erasure
        # Until it finishes, a request's message is only what of its drop file was not used (request()): kept.
        unused = erasure.message
        self._records.set_status(erasure_id, RUNNING, unused)
        targets = self._targets()
        self._records.add_targets(erasure_id, [target for target, _, _ in targets])
        for target, destination, unusable in targets:
            self._erase_from(erasure, target, destination, unusable)
        files = self._scrub(set(erasure.hashes))
        # Audience mirrors (shared/audience_mirror.py) hold every contact of an audience: all of them go, including
        # those of audiences no run wrote to (a preview's), and each destination's next run reads its audience in full.
        # Once Mailchimp has forgotten them, before the mirrors go: a run that took the marks earlier keeps no mirror.
        note_mirrors_deleted(self._work)
        self._work.delete_prefix(MIRRORS_PREFIX)
        erasure = self._records.get(erasure_id) or erasure
        outcomes = [found.outcome for h in erasure.hashes for t in erasure.targets
                    if (found := erasure.outcome(h, t)) is not None]
        refused, unreachable = outcomes.count(REFUSED), outcomes.count(UNREACHABLE)
        notes = [unused,
                 f"Mailchimp refused {refused} deletion(s): see each audience's reason; request the erasure again "
                 "once it is fixed" if refused else None,
                 f"{unreachable} deletion(s) could not be asked: a deleted destination wrote to the audience; see each "
                 "audience's reason and erase the person in Mailchimp by hand" if unreachable else None]
        status = WITH_ERRORS if unused or refused or unreachable else DONE
        message = "; ".join(note for note in notes if note) or None
        self._records.set_status(erasure_id, status, message, files_scrubbed=files)
        log.info("erasure %s %s: %d address(es), %d audience(s), %d work file(s) rewritten, audience mirrors deleted",
                 erasure_id, status, len(erasure.hashes), len(erasure.targets), files)
        return self._records.get(erasure_id)

    def gave_up(self, erasure_id: str) -> None:
        """The queue stopped redelivering (poison): what is pending stays pending, said so on the record."""
        erasure = self._records.get(erasure_id)
        if erasure is not None and not erasure.finished:
            self._records.set_status(erasure_id, FAILED, "Mailchimp could not be reached for every deletion after "
                                                         "several attempts; what is pending was not done: request the "
                                                         "erasure again later")

    def _targets(self) -> list[tuple[Target, Destination | None, str | None]]:
        """Every audience the connector may have written a person into: each destination's current audience, and each
        (destination, audience) a run record names in `details.audienceId` (an audience a destination pointed at
        before a PATCH, and those of deleted destinations). One target per Mailchimp account and audience, asked
        with the credentials of the first destination reaching it; the third part says why it cannot be asked (its
        deletions are refused, or for a deleted destination `unreachable`, with that reason), else None.

        Cost: every run record is read once per erasure (a scan of the runs table). Erasures are rare and the
        records are small, and a person must not be left in an audience because a smaller read missed it."""
        live = {d.id: d for d in sorted(self._destinations.list(), key=lambda d: d.created_at)}
        pairs = [(d.id, d.audience_id) for d in live.values() if d.credential_kind != "none" and d.audience_id]
        for run in sorted(self._runs.list_all(), key=lambda r: r.created_at):
            audience = run.details.get("audienceId")
            if audience and not run.details.get("dryRun"):  # a preview wrote nothing
                pairs.append((run.destination_id, audience))
        found: dict[tuple[str, str], tuple[Target, Destination | None, str | None]] = {}
        accounts: dict[str, tuple[str, str | None]] = {}
        for destination_id, audience in dict.fromkeys(pairs):
            destination = live.get(destination_id)
            if destination is None:
                account, why = f"deleted:{destination_id}", None  # filled in below, once every audience is known
            elif destination.credential_kind == "none":
                account, why = f"destination:{destination_id}", (
                    f"destination {destination_id} wrote to audience {audience} but has no Mailchimp credentials now: "
                    "connect it again, then request the erasure again")
            else:
                if destination_id not in accounts:
                    accounts[destination_id] = self._account(destination)
                account, why = accounts[destination_id]
            key = (account, audience) if destination is not None else ("deleted", audience)
            if key in found:
                target, first, first_why = found[key]
                if destination_id not in target.destination_ids:
                    found[key] = (replace(target, destination_ids=(*target.destination_ids, destination_id)), first,
                                  first_why)
            else:
                found[key] = (Target(audience, (destination_id,)), destination, why)
        for key, (target, first, _) in list(found.items()):
            if key[0] == "deleted":
                names = ", ".join(target.destination_ids)
                found[key] = (target, None, (
                    f"the destination that wrote to audience {target.audience_id} ({names}) was deleted with its "
                    f"credentials: erase the person in Mailchimp by hand (audience {target.audience_id}, search by "
                    "address)"))
        return list(found.values())

    def _account(self, destination: Destination) -> tuple[str, str | None]:
        """The Mailchimp account a destination's credentials reach, or a stand-in and why they cannot be used."""
        try:
            return self._connections.call(destination, lambda client: client.account), None
        except Exception as error:  # noqa: BLE001 - e.g. NotConnected: the secret is gone; said on each outcome
            return f"destination:{destination.id}", (
                f"destination {destination.id} could not reach Mailchimp ({type(error).__name__}): reconnect it, "
                "then request the erasure again")

    def _erase_from(self, erasure: Erasure, target: Target, destination: Destination | None,
                    unusable: str | None) -> None:
        pending = [h for h in erasure.hashes if erasure.outcome(h, target) is None]

        def erase(member_hash: str) -> None:
            if destination is None:  # deleted with its credentials
                outcome = Outcome(UNREACHABLE, unusable, now_iso())
            elif unusable:
                outcome = Outcome(REFUSED, unusable, now_iso())
            else:
                try:
                    deleted = self._connections.call(destination, lambda client: client.delete_member_permanently(
                        target.audience_id, member_hash))
                    outcome = Outcome(DELETED if deleted else ALREADY_GONE, at=now_iso())
                except (MailchimpRequestError, MailchimpAuthError) as error:  # MailchimpUnavailable: tried again
                    outcome = Outcome(REFUSED, (error.detail or error.title or str(error))[:REASON_CHARS], now_iso())
            self._records.record(erasure.id, member_hash, target, outcome)

        with ThreadPoolExecutor(max_workers=self._workers) as pool:
            for _ in pool.map(erase, pending):
                pass

    def _scrub(self, erased: set[str]) -> int:
        """Rewrite every work file under runs/ that names an erased address without it; how many were rewritten.

        Chunk files and Mailchimp's saved answers are left as they are: a run's chunk is counted from them, and one
        short of a member would leave the run's numbers out of balance. The chunk worker refuses a person erased since
        planning (shared/exports/chunks.py) and the files are deleted once the run is counted, within minutes."""
        rewritten = 0
        for name in list(self._work.list_names(RUNS_PREFIX)):
            if not name.endswith((".jsonl", ".json")) or CHUNK_FILES in name:
                continue
            # a file its run wrote again meanwhile is scrubbed as written; one deleted meanwhile (the run's folder
            # cleaned up) stays deleted
            if self._work.rewrite(name, lambda data, name=name: scrubbed(name, data, erased)):
                rewritten += 1
        return rewritten
