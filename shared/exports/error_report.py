"""A run's per-row report: every invalid, refused and failed row, written while the run goes and read a page at a time."""
from __future__ import annotations

import json
from collections.abc import Iterator

from shared.emails import subscriber_hash
from shared.exports.files import errors_prefix
from shared.exports.ports import ExportParts, Refused, WorkStore
from shared.planning import RowProblem

ERRORS_BLOCK_BYTES = 1 << 20


ERRORS_PAGE_BYTES = 4 << 20  # a page of GET /exports/{id}/errors ends before this many bytes (or ?limit= lines)


ERROR_REASON_CHARS = 500  # a reason in the errors report is cut to this many characters


ERROR_EMAIL_CHARS = 320  # an address as given, too (the longest valid one is 254): anything longer is no address


ERROR_NAME_CHARS = 300  # and a column name or merge tag (mapped names are at most 255)


SHORTENED = " (shortened)"


def _capped(text: str | None, chars: int) -> str | None:
    """`text`, or when longer than `chars` its start marked " (shortened)", `chars` characters in all."""
    if text is None or len(text) <= chars:
        return text
    return text[:chars - len(SHORTENED)] + SHORTENED


def error_line(segment: str, partition: str, row: int, email: str | None, reason: str, source: str,
                **more: str | None) -> bytes:
    """One line of a run's errors report; `source` is validation, field, mailchimp, failure or tag.

    Bounded whatever a segment file holds: the reason, the email as given and the other names are cut (ERROR_*_CHARS,
    marked "(shortened)"), so a partition cannot make its report many times its own size (one over-long value
    repeated on each of its rows)."""
    doc = {"segment": segment, "partition": partition, "row": row, "email": _capped(email, ERROR_EMAIL_CHARS),
           "reason": _capped(reason, ERROR_REASON_CHARS), "source": source,
           **{key: _capped(value, ERROR_NAME_CHARS) for key, value in more.items() if value is not None}}
    return json.dumps(doc, ensure_ascii=False).encode("utf-8") + b"\n"


REPORT_KINDS = ("plan", "preview")  # report blobs written while planning, in report order


def erased_line(segment: str, partition: str, row: int, email: str, reason: str) -> bytes:
    """The report line of a row refused because the person had their address erased: by subscriber hash, no address."""
    return error_line(segment, partition, row, None, reason, "erasure", memberHash=subscriber_hash(email))


class ReportWriter:
    """Streams lines of a run's per-row report into numbered blobs of about 1 MiB named `<kind>-NNNN.jsonl`,
    rewritten identically on a replay. Planning writes `plan-` (invalid rows), a preview `preview-` (every change)."""

    def __init__(self, work: WorkStore, run_id: str, kind: str) -> None:
        self._work = work
        self._run_id = run_id
        self._kind = kind
        self._buffer: list[bytes] = []
        self._size = 0
        self._part = 0

    def add(self, line: bytes) -> None:
        self._buffer.append(line)
        self._size += len(line)
        if self._size >= ERRORS_BLOCK_BYTES:
            self.flush()

    def flush(self) -> None:
        if self._buffer:
            self._work.write_bytes(f"{errors_prefix(self._run_id)}{self._kind}-{self._part:04d}.jsonl", b"".join(self._buffer))
            self._part += 1
            self._buffer, self._size = [], 0


class ProblemWriter(ReportWriter):
    """Invalid rows of planning, as they are met."""

    def __init__(self, work: WorkStore, run_id: str) -> None:
        super().__init__(work, run_id, "plan")

    def __call__(self, problem: RowProblem) -> None:
        if problem.kind == "erased":  # named by subscriber hash only: the connector keeps no copy of the address
            self.add(erased_line(problem.segment, problem.partition, problem.row, problem.email or "", problem.reason))
            return
        source = "field" if problem.kind == "field" else "validation"
        self.add(error_line(problem.segment, problem.partition, problem.row, problem.email, problem.reason, source,
                            column=problem.column, mergeTag=problem.merge_tag))


class ErrorReport(ExportParts):
    def error_lines(self, run_id: str) -> Iterator[bytes]:
        """Every invalid, refused and failed row of a run as JSON Lines, one errors blob (about ERRORS_BLOCK_BYTES at
        most) at a time; `error_page` reads the same report a page at a time."""
        yield from (self.work.read_bytes(name) for name in self._error_blobs(run_id))

    def _error_blobs(self, run_id: str) -> Iterator[str]:
        """The run's report blobs in order: planning's invalid rows first, then a preview's changes or the chunks'
        refused and failed rows, chunk by chunk."""
        for kind in REPORT_KINDS:
            yield from sorted(self.work.list_names(errors_prefix(run_id) + kind + "-"))
        for chunk in self.runs.chunks(run_id):
            if chunk.get("errorsBlob"):
                yield chunk["errorsBlob"]

    def error_page(self, run_id: str, limit: int, continuation: str | None = None,
                   max_bytes: int = ERRORS_PAGE_BYTES) -> tuple[list[bytes], str | None]:
        """At most `limit` lines of the errors report, from where `continuation` (opaque, from the previous page) points,
        and the continuation of the next page (None: this was the last). The page also ends before a line that would
        take it past `max_bytes` (whichever comes first); it holds at least one line, so paging always goes on (a line
        is small, see `error_line`). Memory: the page and one errors blob.

        The token is base64url of "<line>:<blob name>"; one of another run, altered or made up answers Refused(400). Lines of chunks counted after a page was read but ordered before it
        (a run still in progress) are not gone back for: read the report once the run has finished.
        """
        import base64
        import binascii
        import re

        if limit < 1:
            raise ValueError(f"a page holds at least one line, not {limit}")
        names = self._error_blobs(run_id)
        name, skip = next(names, None), 0
        if continuation:
            bad = Refused(400, "the continuation is not one this report gave out: start again without it")
            try:
                if len(continuation) > 2000:
                    raise ValueError("too long")
                text = base64.urlsafe_b64decode(continuation + "=" * (-len(continuation) % 4)).decode("utf-8")
            except (binascii.Error, ValueError):
                raise bad from None
            found = re.fullmatch(r"([0-9]{1,9}):(.+)", text, re.DOTALL)
            if found is None:
                raise bad
            skip, wanted = int(found[1]), found[2]
            while name is not None and name != wanted:
                name = next(names, None)
            if name is None:
                raise bad

        def token(at: str, line: int) -> str:
            return base64.urlsafe_b64encode(f"{line}:{at}".encode()).decode("ascii").rstrip("=")

        page: list[bytes] = []
        size = 0
        while name is not None:
            lines = self.work.read_bytes(name).splitlines(keepends=True)
            while skip < len(lines):
                line = lines[skip]
                if len(page) >= limit or (page and size + len(line) > max_bytes):  # the page is full within this blob
                    return page, token(name, skip)
                page.append(line)
                size += len(line)
                skip += 1
            name, skip = next(names, None), 0
            if len(page) >= limit:
                return page, (token(name, 0) if name is not None else None)
        return page, None
