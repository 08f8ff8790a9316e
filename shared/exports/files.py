"""Where a run keeps its files in the work container: chunk files, saved Mailchimp answers, the errors report."""
from __future__ import annotations


RUNS_PREFIX = "runs/"  # every run's files: what names people lies below it (see erasures._scrub)


def run_folder(run_id: str) -> str:
    """Everything a run keeps in the work container; what names people goes with the run's destination, a retention
    period or an erasure."""
    return f"{RUNS_PREFIX}{run_id}/"


def chunks_prefix(run_id: str) -> str:
    return f"{run_folder(run_id)}chunks/"


def plan_lock(run_id: str) -> str:
    return f"{run_folder(run_id)}plan.lock"


def cleanup_lock(run_id: str) -> str:
    """Leased while the run's files are cleaned up after it ended (outside the chunks it deletes; a run whose destination
    was deleted loses it with the rest of its folder)."""
    return f"{run_folder(run_id)}cleanup.lock"


def chunk_blob(run_id: str, number: int) -> str:
    return f"{chunks_prefix(run_id)}{number:06d}.jsonl"


def results_blob(run_id: str, number: int) -> str:
    return f"{chunks_prefix(run_id)}{number:06d}.results.json"


def errors_prefix(run_id: str) -> str:
    return f"{run_folder(run_id)}errors/"


def retry_prefix(run_id: str) -> str:
    """The members a run counted failed, chunk by chunk, kept for `POST /exports/{id}/retry` (see retry.py)."""
    return f"{run_folder(run_id)}retry/"


def retry_blob(run_id: str, number: int) -> str:
    return f"{retry_prefix(run_id)}{number:06d}.jsonl"
