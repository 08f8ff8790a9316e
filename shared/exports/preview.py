"""A preview (dry run): what an export would do, before it does it.

`POST /destinations/{id}/exports {"dryRun": true}` starts a run that plans exactly as a real one (the same audience
read, the same validation, the same guards: mass-untag, MAX_PROFILES_PER_EXPORT, segments left out) and then, instead
of writing chunks, predicts what each chunk's worker would do with every member, by the rules the worker follows
(shared/mailchimp/upsert.py): new members are created, cleaned and archived ones are refused and left alone, the others
are updated when a merge field would change and unchanged otherwise; delivered members get the segment tags they lack;
members who left a segment lose its tag unless the guard holds it back. Nothing is sent to Mailchimp: no member
written, no tag created, no tag ownership recorded; the destination is not claimed, so its exported-snapshot
bookkeeping is untouched and the next trigger still runs.

The run ends `previewed` with the same counts a real run would have (created, updated, unchanged, refused, tagged,
untagged, untagHeld, invalid, duplicates, per segment), `details.preview` with per segment the members that would get
a tag and how often each merge field would change, and a sample of up to SAMPLE_SIZE changes naming members by
subscriber hash only. The per-row report (`GET /exports/{id}/errors`) lists every change with the address, source
"preview". What Mailchimp alone can decide (an address it refuses as fake, a contact permanently deleted in Mailchimp,
which no listing shows, a status changed between the read and the
write) cannot be foreseen: the real run may refuse more.
"""
from __future__ import annotations

import tempfile
import threading
from collections.abc import Container
from dataclasses import dataclass, field

from shared.emails import subscriber_hash
from shared.exports.chunks import missing_tags
from shared.exports.error_report import ReportWriter, error_line
from shared.mailchimp.merge_values import changed_fields, values_to_send
from shared.mailchimp.upsert import ARCHIVED, CLEANED
from shared.members import Member, decode_members, encode_members
from shared.runs import zero_counts

SAMPLE_SIZE = 50  # concrete changes kept on the run record (by subscriber hash)
DELIVERED = ("created", "updated", "unchanged")


@dataclass
class Prediction:
    """What the chunk worker would do with one member; `outcome` None for a member who is only untagged."""

    outcome: str | None
    reason: str | None = None
    fields: list[str] = field(default_factory=list)  # merge tags written (created) or changed (updated)
    add_tags: list[str] = field(default_factory=list)
    remove_tags: list[str] = field(default_factory=list)

    @property
    def changes(self) -> bool:
        return self.outcome in ("created", "updated", "refused") or bool(self.add_tags or self.remove_tags)

    def describe(self) -> str:
        parts = []
        if self.outcome == "created":
            parts.append("would be created")
        elif self.outcome == "updated":
            parts.append(f"would be updated: {', '.join(self.fields)}")
        elif self.outcome == "refused":
            parts.append(f"would be refused: {self.reason}")
        parts += [f"would get tag {tag!r}" for tag in self.add_tags]
        parts += [f"would lose tag {tag!r}" for tag in self.remove_tags]
        return "; ".join(parts)


def existing_tags(tags: dict[str, int], wanted: list[str]) -> dict[str, int]:
    """Name -> id of the wanted tags the audience has already (names compare ignoring case, as Mailchimp's do);
    the others a real run would create."""
    by_folded = {name.casefold(): tag_id for name, tag_id in tags.items()}
    return {name: by_folded[name.casefold()] for name in wanted if name.casefold() in by_folded}


def predict(member: Member, held: Container[str]) -> Prediction:
    """The worker's rules (chunks.py, upsert.py), applied to what the audience read showed."""
    untag = [tag for tag in member.untag if tag not in held]
    if member.departed:
        return Prediction(None, remove_tags=untag)
    existing = member.existing
    if existing is None:
        return Prediction("created", fields=sorted(values_to_send(member.merge_fields)), add_tags=list(member.tags),
                          remove_tags=untag)
    if existing.status == "cleaned":
        return Prediction("refused", CLEANED, remove_tags=untag)
    if existing.status == "archived":
        return Prediction("refused", ARCHIVED, remove_tags=untag)
    changed = changed_fields(member.merge_fields, existing.merge_fields)
    return Prediction("updated" if changed else "unchanged", fields=changed, add_tags=missing_tags(member),
                      remove_tags=untag)


class PreviewTally:
    """Keeps the planned chunks (on local disk, as planning's spill files) until the plan is complete, since the
    mass-untag guard decides only then which untags it holds back; then predicts every member and adds up."""

    def __init__(self, segment_of_tag: dict[str, str], report: ReportWriter) -> None:
        self._segment_of_tag = segment_of_tag
        self._report = report
        self._lock = threading.Lock()
        self._kept = tempfile.TemporaryFile(prefix="preview-")
        self.counts: dict[str, dict[str, int]] = {}
        self.changes: dict[str, dict] = {}  # segment -> {"tag": n, "untag": n, "mergeFields": {merge tag: n}}
        self.sample: list[dict] = []

    def keep(self, run_id: str, number: int, members: list[Member]) -> None:
        """Stands in for writing chunk `number` (called from several threads)."""
        with self._lock:
            self._kept.write(encode_members(members))

    def tally(self, held: Container[str]) -> None:
        """Predict every kept member, writing one report line per member that would change."""
        self._kept.seek(0)
        for line in self._kept:
            for member in decode_members(line):
                self._add(member, predict(member, held))
        self._kept.close()
        self._report.flush()

    def _add(self, member: Member, prediction: Prediction) -> None:
        segment = member.source.segment
        if prediction.outcome is not None:
            change = self._change(segment)
            counts = self.counts.setdefault(segment, zero_counts())
            counts[prediction.outcome] += 1
            if prediction.outcome in DELIVERED:
                counts["tagged"] += 1
                change["tag"] += bool(prediction.add_tags)
            if prediction.outcome == "updated":
                for tag in prediction.fields:
                    change["mergeFields"][tag] = change["mergeFields"].get(tag, 0) + 1
        for tag in prediction.remove_tags:
            left = self._segment_of_tag[tag]
            self.counts.setdefault(left, zero_counts())["untagged"] += 1
            self._change(left)["untag"] += 1
        if not prediction.changes:
            return
        action = prediction.outcome or "untag"
        if prediction.outcome is None:  # an audience member who left: named by the segment whose tag it loses
            segment = self._segment_of_tag[prediction.remove_tags[0]]
        self._report.add(error_line(segment, member.source.partition, member.source.row, member.email,
                                prediction.describe(), "preview", action=action))
        if len(self.sample) < SAMPLE_SIZE:
            self.sample.append({"memberHash": subscriber_hash(member.email), "segment": segment, "action": action,
                                "mergeFields": prediction.fields, "addTags": prediction.add_tags,
                                "removeTags": prediction.remove_tags})

    def _change(self, segment: str) -> dict:
        return self.changes.setdefault(segment, {"tag": 0, "untag": 0, "mergeFields": {}})
