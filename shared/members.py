"""What an export sends: members planned from segment rows, and what became of each one."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Iterable, Iterator

from shared import json_codec


@dataclass(frozen=True)
class RowRef:
    """Where a member came from, so every outcome can be traced to an input row."""

    segment: str
    partition: str
    row: int


@dataclass(frozen=True)
class ExistingMember:
    """A member as the audience held it when the export read it (the audience mirror)."""

    email: str
    status: str
    merge_fields: dict[str, Any] = field(default_factory=dict)
    tags: tuple[str, ...] = ()  # tag names it carried, so tags it already has are not sent again


@dataclass
class Member:
    """One audience member an export wants in place: identity, fields and the tags of its segments."""

    email: str  # normalized (trimmed, lower-case)
    merge_fields: dict[str, Any]
    tags: list[str]  # empty for a member who left every segment of the run: it is only untagged, never written
    source: RowRef  # first row that produced this member; later rows were duplicates
    existing: ExistingMember | None = None
    untag: list[str] = field(default_factory=list)  # tags it carries for segments it is no longer in

    @property
    def departed(self) -> bool:
        """In the audience with a segment's tag, in none of the run's segments now: not an input row."""
        return not self.tags


Contact = ExistingMember | str
"""A contact of the audience as planning receives it: read from Mailchimp, or a line of the audience mirror
(`contact_line`), which planning decodes only when a row or a tag it keeps in step needs that contact."""

_encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode  # one encoder for every contact


def contact_line(email: str, status: str, merge_fields: dict[str, Any], tags: Iterable[str]) -> str:
    """A contact as one line, "email<TAB>status<TAB>[merge fields, tags]\n" (JSON): the address and status are read
    without decoding the rest."""
    for text in (email, status):
        if "\t" in text or "\n" in text or "\r" in text:
            raise ValueError("an address or a status holds a tab or a line break")
    return f"{email}\t{status}\t{_encode([merge_fields, list(tags)])}\n"


def member_line(member: ExistingMember) -> str:
    """A contact as the audience mirror stores it (and as the row memo digests it)."""
    return contact_line(member.email, member.status, member.merge_fields, member.tags)


def line_email(line: str) -> str:
    """The address of a `contact_line`, as Mailchimp gave it."""
    return line[:line.index("\t")]


def line_status(line: str) -> str:
    """The status of a `contact_line`, without decoding the rest."""
    return line.split("\t", 2)[1]


def line_values(line: str) -> tuple[str, dict[str, Any], list[str]]:
    """The status, merge fields and tag names of a `contact_line`."""
    _, status, rest = line.split("\t", 2)
    merge_fields, tags = json_codec.loads(rest)
    return status, merge_fields, tags


def tag_needles(names: Iterable[str]) -> list[str]:
    """Tag names as a `contact_line` writes them (JSON strings), to look for in lines without decoding them."""
    return [_encode(name) for name in names]


def line_mentions(line: str, needles: list[str], *, ignore_case: bool = False) -> bool:
    """Whether a `contact_line` may carry a tag of `needles` (`tag_needles`; with `ignore_case`, of casefolded names).
    It may also name it elsewhere (a merge value): a false match only costs decoding the line. Ignoring case is exact
    too, because casefold works code point by code point and commutes with this JSON encoding (it escapes only quotes,
    backslashes and control characters, which fold to themselves and which nothing folds into): a line carrying a tag
    whose casefold is a needle holds that needle once folded. Keep casefold (lower() differs, e.g. for "ß") and the
    encoder's ensure_ascii=False (escaped, "é" would not match "É" folded)."""
    if ignore_case:
        line = line.casefold()
    return any(needle in line for needle in needles)


def line_contact(line: str) -> ExistingMember:
    """The contact of a `contact_line`."""
    status, merge_fields, tags = line_values(line)
    return ExistingMember(line_email(line), status, merge_fields, tuple(tags))


class Outcome(str, Enum):
    CREATED = "created"
    UPDATED = "updated"
    UNCHANGED = "unchanged"
    REFUSED = "refused"  # Mailchimp said no for this member (its reason is kept)
    FAILED = "failed"  # we could not get an answer (retries exhausted, credentials revoked, cancelled)


@dataclass(frozen=True)
class MemberResult:
    email: str
    outcome: Outcome
    reason: str | None = None
    field: str | None = None
    # written with its tags in the same batch-subscribe call, and Mailchimp's answer shows every one of them on it
    tagged: bool = False


def encode_members(members: Iterable[Member]) -> bytes:
    """JSON Lines, one member a line: the body of a chunk blob."""
    lines: list[bytes] = []
    for m in members:
        doc: dict[str, Any] = {
            "email": m.email,
            "mergeFields": m.merge_fields,
            "tags": m.tags,
            "source": [m.source.segment, m.source.partition, m.source.row],
        }
        if m.untag:
            doc["untag"] = m.untag
        if m.existing is not None:
            doc["existing"] = {"status": m.existing.status, "mergeFields": m.existing.merge_fields, "tags": list(m.existing.tags)}
        lines.append(json_codec.dumps(doc))
    return b"\n".join(lines) + b"\n" if lines else b""


def decode_members(data: bytes) -> Iterator[Member]:
    """The members of a chunk blob. Parsed as one JSON array, lines split at "\n" only (a JSON value never holds a raw
    one): quicker than a parse per line, and a name holding U+2028, which str.splitlines would split at, stays whole."""
    docs = json_codec.loads(b"[" + b",".join(line for line in data.split(b"\n") if line) + b"]")
    for doc in docs:
        segment, partition, row = doc["source"]
        existing = doc.get("existing")
        yield Member(
            email=doc["email"],
            merge_fields=doc["mergeFields"],
            tags=doc["tags"],
            source=RowRef(segment, partition, row),
            existing=(ExistingMember(doc["email"], existing["status"], existing["mergeFields"], tuple(existing.get("tags", ())))
                      if existing else None),
            untag=doc.get("untag", []),
        )
