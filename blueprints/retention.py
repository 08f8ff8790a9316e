"""The daily retention sweep: what runs leave behind goes once its period is over (shared/retention.py)."""
from __future__ import annotations

import logging

import azure.functions as func

from shared import bootstrap

bp = func.Blueprint()
log = logging.getLogger("function_app")

# Every day at 02:30 UTC, a quiet hour. A fixed schedule, not a setting: an app setting named in a binding (%NAME%)
# has no default, so it would be one more required setting for a job whose hour does not matter; switch it off with
# AzureWebJobs.retention_sweep.Disabled=true.
SCHEDULE = "0 30 2 * * *"


@bp.timer_trigger(arg_name="timer", schedule=SCHEDULE, run_on_startup=False, use_monitor=True)
def retention_sweep(timer: func.TimerRequest) -> None:
    swept = bootstrap.app().retention.sweep()
    log.info("retention tick%s: %d run(s) forgotten, %d run record(s) deleted, %d audience mirror(s) deleted",
             " (past due)" if timer.past_due else "", swept.forgotten, swept.deleted, swept.mirrors)
