"""Realistic sample segments for the demo, tests and benchmarks, in both layouts shared.snapshots reads.

Realistic on purpose, so the reader and planner meet what production meets: accented names, common
consumer domains and Microsoft's fictitious company domains, companies with commas and quotes,
two-line street addresses, CRLF line ends, headerless CDM partitions, a few invalid emails and
duplicate profiles. Synthetic all the same: never send it to an audience that mails campaigns.

    python -m shared.sample_segments OUTDIR --rows 100000 [--layout cdm|plain] [--format csv|jsonl]

Writers are `write(name, data)` callables, so the same generator fills a folder or a blob container.
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import os
import random
import unicodedata
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import BinaryIO, Callable, Iterator
from urllib.parse import quote

from shared.members import ExistingMember
from shared.snapshots import MODEL_FILE, SUCCESS_MARKER

Writer = Callable[[str, bytes], None]

COLUMNS = (
    "CustomerId", "FirstName", "LastName", "Email", "Company", "Street", "City",
    "State", "PostalCode", "Country", "LifetimeValue", "LastPurchaseDate", "BirthDate",
)  # fmt: skip
_CDM_TYPES = {"LifetimeValue": "decimal", "LastPurchaseDate": "dateTimeOffset", "BirthDate": "dateTime"}
DEFAULT_SEGMENTS = ("HighValueCustomers", "NewsletterSubscribers", "LapsedBuyers")
DEFAULT_LOCATION_BASE = "https://contosoinsights.blob.core.windows.net/customerinsights/"
SEGMENT_OVERLAP = 0.1  # share of a segment's people who are also in the next segment

_FIRST = (
    "Olivia", "Liam", "Emma", "Noah", "Amelia", "Oliver", "Sophia", "Elijah", "Charlotte", "James", "Mia",
    "Lucas", "Zoë", "José", "Chloé", "Mateo", "Aoife", "Søren", "Björn", "Léa", "Nikolai", "Priya", "Arjun",
    "Mei", "Hiroshi", "Fatima", "Omar", "Grace", "Ethan", "Isabella", "Maximilian", "Ana", "Wei", "Siobhán",
    "Dmitri", "Ingrid", "François", "Lukas", "Yara", "Kai", "Anne-Marie", "Jürgen", "Renée", "Mohammed",
)  # fmt: skip
_LAST = (
    "Smith", "Johnson", "Williams", "Brown", "Garcia", "Miller", "Davis", "Martínez", "Müller", "O'Brien",
    "Nguyen", "Kowalski", "Rossi", "Dubois", "Jensen", "Andersson", "Novak", "Fernández", "Schmidt", "Kim",
    "Patel", "Tanaka", "Silva", "Murphy", "van der Berg", "López", "Wójcik", "Cohen", "MacDonald", "Okafor",
    "Haddad", "Sørensen", "Bianchi", "Petrov", "Yılmaz", "Chen", "Costa", "Dupont", "Nowak", "Svensson",
)  # fmt: skip
_DOMAINS = (
    "gmail.com", "gmail.com", "gmail.com", "gmail.com", "outlook.com", "outlook.com", "hotmail.com",
    "yahoo.com", "yahoo.com", "icloud.com", "aol.com", "proton.me", "gmx.de", "web.de", "orange.fr",
    "btinternet.com", "comcast.net", "contoso.com", "fabrikam.com", "adventure-works.com",
    "northwindtraders.com", "tailspintoys.com", "wingtiptoys.com", "litwareinc.com", "woodgrovebank.com",
)  # fmt: skip
_COMPANIES = (
    "", "", "", "Contoso Ltd", "Fabrikam, Inc.", "Northwind Traders", "Adventure Works Cycles",
    "Smith, Jones & Partners", 'The "Green" Grocer', "Wide World Importers", "Litware, Inc.", "Tailspin Toys",
)  # fmt: skip
_PLACES = (
    ("Seattle", "WA", "98101", "US"), ("Austin", "TX", "73301", "US"), ("London", "", "SW1A 1AA", "GB"),
    ("Dublin", "", "D02 X285", "IE"), ("München", "BY", "80331", "DE"), ("Paris", "", "75001", "FR"),
    ("Toronto", "ON", "M5H 2N2", "CA"), ("Sydney", "NSW", "2000", "AU"), ("São Paulo", "SP", "01310-100", "BR"),
    ("Zürich", "ZH", "8001", "CH"), ("Kraków", "", "31-001", "PL"), ("Osaka", "", "530-0001", "JP"),
)  # fmt: skip
_STREETS = ("Main Street", "Baker Street", "Rue de Rivoli", "Königstraße", "Elm Avenue", "High Street", "Calle Mayor")
_STATUSES = ("subscribed",) * 17 + ("unsubscribed", "unsubscribed", "cleaned")


@dataclass(frozen=True)
class SampleStats:
    """What was written for one segment, so tests can check that every row is accounted for."""

    rows: int
    invalid: int  # rows whose email no valid address check accepts
    duplicates: int  # rows repeating an email seen earlier in the same segment
    shared: int  # valid first rows of people already written (validly) for an earlier segment

    @property
    def members(self) -> int:
        """Members this segment adds when planned after the segments written before it."""
        return self.rows - self.invalid - self.duplicates - self.shared


_TRANSLITERATE = str.maketrans({"ø": "o", "Ø": "O", "æ": "ae", "ß": "ss", "ı": "i", "ł": "l", "đ": "d"})
_MASK64 = 2**64 - 1


def _ascii(text: str) -> str:
    folded = unicodedata.normalize("NFKD", text.translate(_TRANSLITERATE)).encode("ascii", "ignore").decode("ascii")
    return "".join(ch for ch in folded.lower() if ch.isalnum())


def _picks(pid: int, seed: int) -> list:
    """One person's choices, a pure function of (pid, seed) so segments can share people."""
    state = (pid * 0x9E3779B97F4A7C15 + seed * 0xC2B2AE3D27D4EB4F) & _MASK64
    state = ((state ^ (state >> 31)) * 0xBF58476D1CE4E5B9) & _MASK64  # spread pid's bits over the state
    picks = []
    for options in (_FIRST, _LAST, _DOMAINS, range(5), _COMPANIES, _PLACES, _STREETS, range(200), range(17)):
        state, index = divmod(state, len(options))
        picks.append(options[index])
    return [state, *picks]


def _email(pid: int, first: str, last: str, domain: str, style: int) -> str:
    f, l = _ascii(first), _ascii(last)
    return f"{(f'{f}.{l}', f'{f}{l}', f'{f[0]}.{l}', f'{f}_{l}', f'{l}.{f}')[style]}{pid}@{domain}"


def _person(pid: int, seed: int) -> list[str]:
    """One person's row, in COLUMNS order."""
    state, first, last, domain, style, company, (city, region, postal, country), street, house, flat = _picks(pid, seed)
    address = f"{house + 1} {street}"
    mixed = (state * 0xD6E8FEB86659FD93 + pid) & _MASK64
    purchased = datetime(2024, 11, 1, tzinfo=timezone.utc) + timedelta(seconds=mixed % (730 * 86400))
    born = datetime(1950, 1, 1) + timedelta(days=(mixed >> 32) % 20000)
    return [
        str(uuid.UUID(int=(mixed << 64) | ((mixed * 0x94D049BB133111EB + pid) & _MASK64), version=4)),
        first,
        last,
        _email(pid, first, last, domain, style),
        company,
        f"Flat {house % 9 + 1}\n{address}" if flat == 0 else address,
        city,
        region,
        postal,
        country,
        f"{(mixed >> 8) % 5_000_000 / 100:.2f}",
        purchased.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "" if mixed % 7 == 0 else born.strftime("%Y-%m-%d"),
    ]


def person_email(pid: int, seed: int = 1) -> str:
    """The (valid, lower-case) email of sample person pid: how tests and benchmarks build an overlapping audience."""
    _, first, last, domain, style, *_ = _picks(pid, seed)
    return _email(pid, first, last, domain, style)


def sample_audience(count: int, seed: int = 1) -> Iterator[ExistingMember]:
    """An audience as read before a run: the first `count` sample people, mostly subscribed."""
    for pid in range(count):
        _, first, last, domain, style, *_ = _picks(pid, seed)
        yield ExistingMember(_email(pid, first, last, domain, style), _STATUSES[pid % len(_STATUSES)], {"FNAME": first, "LNAME": last})


class _Population:
    """Rows for a sequence of segments that share a population, counting what each segment holds."""

    def __init__(self, seed: int, invalid_rate: float, duplicate_rate: float) -> None:
        self._seed = seed
        self._invalid_rate = invalid_rate
        self._duplicate_rate = duplicate_rate
        self._next_pid = 0
        self._written: set[int] = set()  # people written with a valid email, in any segment

    def rows(self, segment: str, count: int, stats: dict[str, SampleStats]) -> Iterator[list[str]]:
        rng = random.Random(f"{self._seed}:{segment}")
        pid, recent, invalid, duplicates, shared = self._next_pid, [], 0, 0, 0
        for _ in range(count):
            if recent and rng.random() < self._duplicate_rate:
                row = _person(rng.choice(recent), self._seed)
                row[0] = str(uuid.UUID(int=rng.getrandbits(128)))  # another profile, same person
                row[3] = f" {row[3].title()} " if rng.random() < 0.5 else row[3].upper()
                duplicates += 1
            else:
                row = _person(pid, self._seed)
                if rng.random() < self._invalid_rate:
                    row[3] = _broken(row[3], rng)
                    invalid += 1
                else:
                    shared += pid in self._written
                    self._written.add(pid)
                    if len(recent) < 1000:
                        recent.append(pid)
                    else:
                        recent[rng.randrange(1000)] = pid
                pid += 1
            yield row
        self._next_pid += max(1, count - int(count * SEGMENT_OVERLAP))
        stats[segment] = SampleStats(count, invalid, duplicates, shared)


def _broken(email: str, rng: random.Random) -> str:
    """An email email_problem rejects, the way exports really get them wrong."""
    local, domain = email.split("@")
    return rng.choice((
        f"{local}@{domain.rsplit('.', 1)[0]}",
        f"{local}.{domain}",
        f"{local} @{domain}",
        f"{local}@@{domain}",
        "",
        "n/a",
    ))  # fmt: skip


def _csv_bytes(rows: list[list[str]], header: bool = True) -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    if header:
        writer.writerow(COLUMNS)
    writer.writerows(rows)
    return buffer.getvalue().encode("utf-8")


def _json_doc(row: list[str]) -> dict[str, object]:
    """JSON types where JSON has them: a number for the value, null for an unknown birth date."""
    doc: dict[str, object] = dict(zip(COLUMNS, row))
    doc["LifetimeValue"] = float(row[COLUMNS.index("LifetimeValue")])
    doc["BirthDate"] = doc["BirthDate"] or None
    return doc


def _jsonl_bytes(rows: list[list[str]]) -> bytes:
    return "".join(json.dumps(_json_doc(row), ensure_ascii=False) + "\n" for row in rows).encode("utf-8")


def _partitions(rows: Iterator[list[str]], size: int) -> Iterator[list[list[str]]]:
    batch: list[list[str]] = []
    for row in rows:
        batch.append(row)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def folder_writer(root: str | os.PathLike) -> Writer:
    """A writer that puts blob `name` at root/name."""

    def write(name: str, data: bytes) -> None:
        path = Path(root, name)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)

    return write


class FolderSource:
    """A BlobSource over a local folder: blob names are paths relative to root, with "/"."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)

    def list_names(self, prefix: str = "") -> Iterator[str]:
        start = self.root / prefix.rpartition("/")[0]
        for folder, _, files in os.walk(start):
            for file in files:
                name = Path(folder, file).relative_to(self.root).as_posix()
                if name.startswith(prefix):
                    yield name

    def read_bytes(self, name: str) -> bytes:
        return (self.root / name).read_bytes()

    def open_binary(self, name: str) -> BinaryIO:
        return open(self.root / name, "rb")


def _as_writer(target: str | os.PathLike | Writer) -> Writer:
    return target if callable(target) else folder_writer(target)


def _stamp(taken_at: datetime | None) -> tuple[datetime, str]:
    moment = taken_at or datetime.now(timezone.utc)
    moment = moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment.astimezone(timezone.utc)
    moment = moment.replace(second=0, microsecond=0)
    return moment, moment.strftime("%Y/%m/%d/%H%M/")


def write_sample_export(
    target: str | os.PathLike | Writer,
    segments: dict[str, int] | None = None,
    *,
    seed: int = 1,
    invalid_rate: float = 0.01,
    duplicate_rate: float = 0.01,
    headerless: bool = True,
    taken_at: datetime | None = None,
    root: str | None = None,
    export_name: str = "MailchimpSegments",
    rows_per_partition: int = 5000,
    location_base: str = DEFAULT_LOCATION_BASE,
) -> dict[str, SampleStats]:
    """A Customer Insights export: CSV partitions per segment, then model.json (last, as a complete export ends).

    Calling it again with a later taken_at adds a newer snapshot and leaves the older folders as past snapshots.
    """
    write = _as_writer(target)
    moment, stamp = _stamp(taken_at)
    root = root if root is not None else f"CustomerInsights_{uuid.UUID(int=random.Random(seed).getrandbits(128))}"
    export = f"{root}/{export_name}/" if root else f"{export_name}/"
    population = _Population(seed, invalid_rate, duplicate_rate)
    stats: dict[str, SampleStats] = {}
    settings = {
        "$type": "CsvFormatSettings",
        "columnHeaders": not headerless,
        "delimiter": ",",
        "quoteStyle": "QuoteStyle.Csv",
        "csvStyle": "CsvStyle.QuoteAlways",
        "encoding": "UTF-8",
    }
    entities = []
    for segment, count in (segments or {name: 20000 for name in DEFAULT_SEGMENTS}).items():
        partitions = []
        for number, batch in enumerate(_partitions(population.rows(segment, count, stats), rows_per_partition), start=1):
            name = f"{export}{segment}/{stamp}{segment}_{number}.csv"
            write(name, _csv_bytes(batch, header=not headerless))
            partitions.append({
                "name": f"{segment}_{number}",
                "refreshTime": moment.isoformat(),
                "location": location_base + quote(name),
                "fileFormatSettings": settings,
            })  # fmt: skip
        entities.append({
            "$type": "LocalEntity",
            "name": segment,
            "description": f"Segment {segment}",
            "attributes": [{"name": column, "dataType": _CDM_TYPES.get(column, "string")} for column in COLUMNS],
            "partitions": partitions,
        })  # fmt: skip
    model = {"name": export_name, "version": "1.0", "modifiedTime": moment.isoformat(), "entities": entities}
    write(export + MODEL_FILE, json.dumps(model, indent=2, ensure_ascii=False).encode("utf-8"))
    return stats


def write_plain_export(
    target: str | os.PathLike | Writer,
    segments: dict[str, int],
    *,
    fmt: str = "csv",
    seed: int = 1,
    invalid_rate: float = 0.01,
    duplicate_rate: float = 0.01,
    taken_at: datetime | None = None,
    rows_per_partition: int = 5000,
    complete: bool = True,
) -> dict[str, SampleStats]:
    """Plain-layout snapshots (CSV with header, or JSONL), each folder marked `_SUCCESS` unless complete=False."""
    write = _as_writer(target)
    stamp = _stamp(taken_at)[1]
    encode = _jsonl_bytes if fmt == "jsonl" else _csv_bytes
    population = _Population(seed, invalid_rate, duplicate_rate)
    stats: dict[str, SampleStats] = {}
    for segment, count in segments.items():
        folder = f"{segment}/{stamp}"
        for number, batch in enumerate(_partitions(population.rows(segment, count, stats), rows_per_partition), start=1):
            write(f"{folder}part-{number:05d}.{fmt}", encode(batch))
        if complete:
            write(folder + SUCCESS_MARKER, b"")
    return stats


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Write realistic sample segments to a folder.")
    parser.add_argument("outdir")
    parser.add_argument("--rows", type=int, default=60000, help="rows in all, split evenly across segments")
    parser.add_argument("--segments", default=",".join(DEFAULT_SEGMENTS), help="comma-separated segment names")
    parser.add_argument("--layout", choices=("cdm", "plain"), default="cdm")
    parser.add_argument("--format", choices=("csv", "jsonl"), default="csv", help="plain layout only")
    parser.add_argument("--header", action="store_true", help="CDM partitions with a header row")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--invalid-rate", type=float, default=0.01)
    parser.add_argument("--duplicate-rate", type=float, default=0.01)
    parser.add_argument("--taken-at", type=datetime.fromisoformat, default=None, help="UTC, e.g. 2026-11-28T17:00+00:00")
    args = parser.parse_args(argv)
    names = [name.strip() for name in args.segments.split(",") if name.strip()]
    sizes = {name: args.rows // len(names) + (index < args.rows % len(names)) for index, name in enumerate(names)}
    rates = {"seed": args.seed, "invalid_rate": args.invalid_rate, "duplicate_rate": args.duplicate_rate, "taken_at": args.taken_at}
    if args.layout == "cdm":
        stats = write_sample_export(args.outdir, sizes, headerless=not args.header, **rates)
    else:
        stats = write_plain_export(args.outdir, sizes, fmt=args.format, **rates)
    for name, segment_stats in stats.items():
        print(json.dumps({"segment": name, **segment_stats.__dict__, "members": segment_stats.members}))


if __name__ == "__main__":
    main()
