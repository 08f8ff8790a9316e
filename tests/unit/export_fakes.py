"""In-memory fakes of ExportService's ports, for tests that stop it between two steps or run two workers at once.

They keep the rules the real adapters keep (tables: a chunk counts once; work blobs: `exclusive` is one holder per
name; the audience: Mailchimp's upsert rules through the real `upsert`). The end-to-end tests run the real ones.
"""

import contextlib, copy, threading
from pathlib import Path
from shared.adapters.storage import REWRITE_ATTEMPTS
from shared.config import load_settings
from shared.destinations import Destination, FieldMapping, Claim
from shared.exports import ExportService
from shared.mailchimp.client import EnsuredTags
from shared.mailchimp.models import Audience, MergeField
from shared.mailchimp.upsert import upsert, BatchAnswer, no_tags
from shared.members import ExistingMember
from shared.runs import add_counts
from shared.sample_segments import FolderSource


class Versioned(dict):
    """Blob name -> bytes, with a version per name that every write or delete moves, as an ETag does (also for a test
    writing `work.blobs[name] = ...` directly)."""

    def __init__(self):
        super().__init__()
        self.versions = {}

    def _moved(self, name):
        self.versions[name] = self.versions.get(name, 0) + 1

    def __setitem__(self, name, data):
        super().__setitem__(name, data)
        self._moved(name)

    def __delitem__(self, name):
        super().__delitem__(name)
        self._moved(name)

    def pop(self, name, *default):
        if name in self:
            self._moved(name)
        return super().pop(name, *default)

    def setdefault(self, name, data=None):
        if name not in self:
            self[name] = data
        return self[name]


class Work:
    def __init__(self):
        self.blobs, self.locks = Versioned(), {}

    def list_names(self, prefix=""):
        return [n for n in sorted(self.blobs) if n.startswith(prefix)]

    def read_bytes(self, n):
        return self.blobs[n]

    def open_binary(self, n):
        import io

        return io.BytesIO(self.blobs[n])

    def write_bytes(self, n, d):
        self.blobs[n] = d

    def exists(self, n):
        return n in self.blobs

    def rewrite(self, n, change, attempts=REWRITE_ATTEMPTS):
        """As the adapter does: written only if nobody wrote or deleted the blob while `change` ran (its version, as
        an ETag, moved), else read again; RuntimeError after `attempts` reads."""
        for _ in range(attempts):
            if n not in self.blobs:
                return False
            version = self.blobs.versions.get(n)
            changed = change(self.blobs[n])
            if changed is None:
                return False
            if self.blobs.versions.get(n) == version:
                self.blobs[n] = changed
                return True
        raise RuntimeError(f"{n} changed under each of {attempts} rewrites; try again later")

    def delete_prefix(self, p):
        for n in [n for n in self.blobs if n.startswith(p)]:
            del self.blobs[n]

    @contextlib.contextmanager
    def exclusive(self, n, wait_seconds=None, remove=False):
        lock = self.locks.setdefault(n, threading.Lock())
        if not lock.acquire(timeout=-1 if wait_seconds is None else wait_seconds):
            raise TimeoutError(f"{n} is held by another worker")
        self.blobs.setdefault(n, b"")  # as the adapter does: a lease needs a blob, and a missing one is made empty
        try:
            yield
        finally:
            if remove:  # deleted under the lease, as the adapter does
                self.blobs.pop(n, None)
            lock.release()


class Q:
    def __init__(self):
        self.msgs = []
        self.delayed = []  # sent with a delay: delivered by drain once nothing else is waiting

    def send(self, m, delay_seconds=0):
        (self.delayed if delay_seconds else self.msgs).append(m)


class Runs:
    def __init__(self):
        self.runs, self.chunk_rows, self.shards = {}, {}, {}

    def create(self, run):
        self.runs[run.id] = copy.deepcopy(run)

    def _total(self, run_id):
        tot = {}
        for (rid, key), per in self.shards.items():
            if rid == run_id:
                for seg, c in per.items():
                    tot[seg] = add_counts(tot.get(seg, {}), c)
        return tot

    def get(self, run_id, counts=True):
        r = copy.deepcopy(self.runs.get(run_id))
        if r is None:
            return None
        r.chunks_done = sum(1 for (rid, n), c in self.chunk_rows.items() if rid == run_id and c["state"] == "done")
        if counts:
            for seg, c in self._total(run_id).items():
                p = r.segment(seg)
                p.counts = add_counts(p.counts, c)
        return r

    def update(self, run_id, change):
        r = self.get(run_id)
        base = copy.deepcopy(self.runs[run_id])
        r2 = copy.deepcopy(base)
        r2.chunks_done = r.chunks_done
        res = change(r2)
        if res is not False:
            self.runs[run_id] = r2
        return self.get(run_id)

    def list_for_destination(self, d):
        runs = [self.get(i) for i, r in self.runs.items() if r.destination_id == d]
        return sorted(runs, key=lambda r: r.created_at, reverse=True)

    def add_chunk(self, run_id, number, members, streamed=False):
        row = self.chunk_rows.setdefault(
            (run_id, number), {"RowKey": f"chunk-{number:06d}", "state": "pending", "members": members,
                               "streamed": streamed}
        )
        row["streamed"] = row["streamed"] or streamed

    def get_chunk(self, run_id, number):
        return copy.deepcopy(self.chunk_rows.get((run_id, number)))

    def chunks(self, run_id):
        for rid, n in sorted(self.chunk_rows):
            if rid == run_id:
                yield dict(self.chunk_rows[(rid, n)])

    def note_chunk_error(self, *a):
        pass

    def finish_chunk(self, run_id, number, per_segment, errors_blob):
        row = self.chunk_rows[(run_id, number)]
        if row["state"] == "done":
            return False
        row["state"] = "done"
        cur = self.shards.setdefault((run_id, f"chunk{number}"), {})
        for s, c in per_segment.items():
            cur[s] = add_counts(cur.get(s, {}), c)
        return True

    def record_planned_outcomes(self, run_id, per_segment):
        self.shards[(run_id, "plan")] = copy.deepcopy(per_segment)

    def settle_if_done(self, run_id):
        done = []

        def s(r):
            if r.finished_at is not None or r.total_chunks is None or r.chunks_done < r.total_chunks:
                return False
            # counts are needed to settle: use full view
            full = self.get(run_id)
            base = copy.deepcopy(r.segments)
            r.segments = full.segments
            r.settle()
            done.append(1)
            r.segments = base  # counts from chunks live in shards
            return True

        r = self.update(run_id, s)
        return r, bool(done)


class Dests:
    def __init__(self, d):
        self.d, self.owned, self.active = d, set(), None

    def get(self, i):
        return self.d if self.d and self.d.id == i else None

    def list(self):
        return [self.d]

    def exported(self, i):
        return {}

    def claim(self, i, run_id, covers, is_finished, trigger="http", only_if_newer=False):
        self.active = run_id
        return Claim("claimed", run_id)

    def release(self, i, run_id, restore=None):
        self.active = None
        return None

    def own_tags(self, i, a, tags):
        self.owned |= set(tags)

    def owned_tags(self, i, a):
        return set(self.owned)

    def active_run(self, i):
        return self.active


class FakeClient:
    """Audience: email -> [status, merge, tags]."""

    def __init__(self, aud):
        self.aud, self.tags, self.writes = aud, {}, 0

    def get_audience(self, list_id):  # as Mailchimp's stats count them: subscribed ones, and contacts of any status
        return Audience(id=list_id, name="A", double_optin=False, total_contacts=len(self.aud),
                        member_count=sum(1 for status, *_ in self.aud.values() if status == "subscribed"))

    def list_merge_fields(self, list_id):
        return [MergeField(tag="FNAME", name="F", type="text", required=False, merge_id=1)]

    def ensure_tags(self, list_id, names, before_creating=None):
        missing = [n for n in names if n.casefold() not in {k.casefold() for k in self.tags}]
        if missing and before_creating is not None:
            before_creating(missing)
        e = EnsuredTags()
        for n in names:
            if n.casefold() not in {k.casefold() for k in self.tags}:
                self.tags[n] = len(self.tags) + 1
                e.created.add(n)
            e[n] = next(v for k, v in self.tags.items() if k.casefold() == n.casefold())
        return e

    def iter_audience(self, list_id, fields=None):
        for e, (s, m, t) in list(self.aud.items()):
            yield ExistingMember(e, s, dict(m), tuple(t))

    def batch_subscribe(self, list_id, members, *, update_existing):
        a = BatchAnswer()
        for d in members:
            e = d["email_address"]
            self.writes += 1
            if e in self.aud and not update_existing:
                a.errors[e] = {"email_address": e, "error_code": "ERROR_CONTACT_EXISTS", "error": "x"}
                continue
            (a.updated if e in self.aud else a.created).add(e)
            old = self.aud.get(e, [None, {}, []])
            tags = list(old[2])  # members[].tags: added by name ignoring case, never replaced (no sync_tags)
            for name in d.get("tags", []):
                if name.casefold() not in {t.casefold() for t in tags}:
                    tags.append(next((k for k in self.tags if k.casefold() == name.casefold()), name))
            self.aud[e] = [d["status"], {**old[1], **d.get("merge_fields", {})}, tags]
            a.tags[e] = {t.casefold() for t in tags}
        return a

    def get_member(self, list_id, e):
        if e not in self.aud:
            return None
        s, m, t = self.aud[e]
        return ExistingMember(e, s, dict(m), tuple(t))

    def iter_members(self, list_id, *, fields, status=None, since_last_changed=None, unsubscribed_since=None):
        return iter([])

    def iter_tag_members(self, list_id, tag_id):  # every status, as the client asks (a small run may look up)
        name = self._name(tag_id).casefold()
        return iter([e for e, (s, m, t) in list(self.aud.items()) if name in {x.casefold() for x in t}])

    def upsert_members(self, list_id, members, *, status_for_new, existing_as_of, tags_of=no_tags):
        return upsert(self, list_id, members, status_for_new, existing_as_of, tags_of)

    def _name(self, tag_id):
        return next(k for k, v in self.tags.items() if v == tag_id)

    def tag_members(self, list_id, tag_id, emails):
        for e in emails:
            if e in self.aud and self._name(tag_id) not in self.aud[e][2]:
                self.aud[e][2].append(self._name(tag_id))
        return {}

    def untag_members(self, list_id, tag_id, emails):
        for e in emails:
            if e in self.aud and self._name(tag_id) in self.aud[e][2]:
                self.aud[e][2].remove(self._name(tag_id))
        return {}


class Conns:
    def __init__(self, c):
        self.c = c

    def call(self, d, action):
        return action(self.c)

    def client(self, d):
        return self.c


def write_snapshot(root, segment, stamp, emails, header="Email,FirstName"):
    folder = Path(root, segment, stamp)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "part-0.csv").write_text(header + "\r\n" + "".join(f"{e},N\r\n" for e in emails))
    (folder / "_SUCCESS").write_text("")


def make(root, segments, audience=None, chunk_size=2, guard=20, dest_kw=None, **more_settings):
    settings = load_settings(
        {
            "AzureWebJobsStorage": "UseDevelopmentStorage=true",
            "EXPORT_CHUNK_SIZE": str(chunk_size),
            "UNTAG_GUARD_PERCENT": str(guard),
            **more_settings,
        }
    )
    d = Destination(
        id="d1",
        display_name="D",
        audience_id="L",
        mapping=FieldMapping("Email", {"FNAME": "FirstName"}),
        segments=tuple(segments),
        consent_accepted=True,
        consent_by="x",
        consent_at="t",
        status_for_new=None,
        tag_prefix="",
        credential_kind="api_key",
        created_at="t",
        updated_at="t",
        **(dest_kw or {}),
    )
    client = FakeClient(audience if audience is not None else {})
    svc = ExportService(settings, Dests(d), Runs(), FolderSource(root), Work(), Q(), Q(), Conns(client))
    return svc, client


def drain(svc):
    while svc.plan_queue.msgs or svc.chunk_queue.msgs or svc.plan_queue.delayed:
        if not (svc.plan_queue.msgs or svc.chunk_queue.msgs):
            svc.plan_queue.msgs, svc.plan_queue.delayed = svc.plan_queue.delayed, []
        if svc.plan_queue.msgs:
            svc.plan(svc.plan_queue.msgs.pop(0)["runId"])
        else:
            m = svc.chunk_queue.msgs.pop(0)
            try:
                svc.process_chunk(m["runId"], m["chunk"], "a1")
            except Exception as e:
                print("chunk", m["chunk"], "raised", type(e).__name__, e)
