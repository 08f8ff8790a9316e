"""The composition root: the one place that wires real adapters to the domain. Tests pass their own settings."""
from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import timedelta
from typing import Callable, ContextManager

from shared import telemetry
from shared.adapters.oauth_states import BlobUsedStates
from shared.adapters.secrets import KeyVaultSecrets, LocalFileSecrets, SecretStore
from shared.adapters.slots import LeaseSlots
from shared.adapters.storage import BlobFolder, QueueSender, SegmentFolder, StorageAccount
from shared.adapters.erasure_tables import ErasedLedgerTable, ErasureTable
from shared.adapters.tables import DestinationTable, RunTable
from shared.audience_mirror import AudienceMirror
from shared.config import (CONTAINER_ERASURES, CONTAINER_SLOTS, CONTAINER_WORK, QUEUE_CHUNKS, QUEUE_ERASURES, QUEUE_PLANS,
                           TABLE_DESTINATIONS, TABLE_ERASED, TABLE_ERASURES, TABLE_RUNS, Settings, load_settings,
                           on_this_machine)
from shared.connections import MailchimpConnections
from shared.destination_service import DestinationService
from shared.erasures import ErasureService
from shared.exports import ExportService
from shared.mailchimp.retry import RetryPolicy
from shared.oauth import StateSigner
from shared.retention import Retention
from shared.retention_sweep import RetentionSweep


@dataclass
class App:
    settings: Settings
    destinations: DestinationService
    exports: ExportService
    retention: RetentionSweep
    erasures: ErasureService


def build(settings: Settings | None = None, secrets: SecretStore | None = None) -> App:
    settings = settings or load_settings()
    account = StorageAccount(settings.storage)
    blobs = account.blob_service()
    # Segment files come from their own account when SEGMENTS_BLOB_URI or SEGMENTS_CONNECTION_STRING says so (in Azure:
    # the account Customer Insights writes into, without blob soft delete), else from AzureWebJobsStorage's.
    segment_blobs = (StorageAccount(settings.segments_storage).blob_service() if settings.segments_storage
                     else blobs)
    queues = account.queue_service()
    tables = account.table_service()
    if secrets is None:
        secrets = (KeyVaultSecrets(settings.key_vault_url, settings.storage.client_id) if settings.key_vault_url
                   else LocalFileSecrets(settings.local_secrets_dir))
    slots_container = blobs.get_container_client(CONTAINER_SLOTS)
    gates: dict[str, LeaseSlots] = {}
    gates_lock = threading.Lock()

    def gate_for(account_id: str, cap: int) -> Callable[[], ContextManager[None]]:
        with gates_lock:
            if account_id not in gates:  # one per account: its leases, warm slots and renewal thread are shared
                gates[account_id] = LeaseSlots(slots_container, account_id, cap)
            return gates[account_id]

    connections = MailchimpConnections(secrets, base_url=settings.mailchimp_api_base_url,
                                       max_connections=settings.mailchimp_max_connections, gate_factory=gate_for,
                                       retry=RetryPolicy(max_seconds=settings.mailchimp_retry_seconds))
    work = BlobFolder(blobs.get_container_client(CONTAINER_WORK))
    work.ensure()
    plan_queue = QueueSender(queues, QUEUE_PLANS)
    chunk_queue = QueueSender(queues, QUEUE_CHUNKS)
    for queue in (plan_queue, chunk_queue):
        queue.ensure()
    # Tables are made on first use only where table calls go to this machine (Azurite, by the client's own endpoint):
    # anywhere else the templates make them, and a deleted one must stay missing (see shared/adapters/tables.py).
    create = on_this_machine(tables.url)
    destination_table = DestinationTable(tables, TABLE_DESTINATIONS, create)
    runs = RunTable(tables, TABLE_RUNS, create)
    erased = ErasedLedgerTable(tables, TABLE_ERASED, create)  # exports keep out whom erasures wrote here
    exports = ExportService(
        settings=settings,
        destinations=destination_table,
        runs=runs,
        segments=SegmentFolder(segment_blobs.get_container_client(settings.segments_container)),
        work=work,
        plan_queue=plan_queue,
        chunk_queue=chunk_queue,
        connections=connections,
        erased=erased,
        mirror=(AudienceMirror(work, max_age=timedelta(hours=settings.audience_mirror_max_age_hours))
                if settings.audience_mirror_max_age_hours else None),
    )
    states = StateSigner(secrets, BlobUsedStates(blobs.get_container_client(CONTAINER_WORK)))
    destinations = DestinationService(destination_table, connections, exports=exports, run_files=work,
                                      segments=exports.segments, oauth=settings.oauth, states=states)
    retention = RetentionSweep(runs, work, Retention.from_settings(settings))
    erasure_queue = QueueSender(queues, QUEUE_ERASURES)
    erasure_queue.ensure()
    # The drop folder sits next to the segments: the platform writes its deletion exports into the same account.
    erasures = ErasureService(records=ErasureTable(tables, TABLE_ERASURES, create), ledger=erased,
                              queue=erasure_queue, work=work, destinations=destination_table, connections=connections,
                              drops=BlobFolder(segment_blobs.get_container_client(CONTAINER_ERASURES)),
                              runs=runs)  # every audience a run wrote to, deleted destinations' too
    return App(settings=settings, destinations=destinations, exports=exports, retention=retention, erasures=erasures)


_app: App | None = None
_settings: Settings | None = None
_app_lock = threading.Lock()
_settings_lock = threading.Lock()  # taken inside _app_lock by app(), alone by poisoned(): never the other way round


def _configured() -> Settings:
    """The settings, with telemetry set up from them, once per process: Azure Monitor or the console
    (shared/telemetry.py), before anything is logged that an alert or the workbook reads."""
    global _settings
    with _settings_lock:
        if _settings is None:
            settings = load_settings()
            telemetry.setup(settings.telemetry, settings.applicationinsights_connection_string)
            _settings = settings
        return _settings


def app() -> App:
    """The process-wide app, built on first use so that importing function_app does no network work."""
    global _app
    with _app_lock:
        if _app is None:
            _app = build(_configured())
        return _app


def poisoned(queue: str, what: str, then: str = telemetry.GIVEN_UP) -> App:
    """For a poison queue's handler: its warning (what the poison-message alert reads) once telemetry is set up, as
    the message may be the first of a cold instance, and before the app is built, which reaches storage, whose outage
    may be why the message was poisoned; then the app. `what` names the message, never a person's data."""
    _configured()  # not under _app_lock: another thread's build, slow in a storage outage, must not hold the warning
    telemetry.poisoned(queue, what, then)
    return app()
