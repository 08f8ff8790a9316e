"""App settings, read once at start-up from the environment (app settings in Azure, local.settings.json locally).

Every problem is collected and reported together, naming the setting and what to put there, so a bad deployment
fails at start with one readable message instead of at the first export.
"""
from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import dataclass, field
from typing import Mapping
from urllib.parse import urlsplit

from shared.auth import auth_enabled

STORAGE_CONNECTION = "AzureWebJobsStorage"  # connection name used by the triggers and the SDK clients

# Names of the storage resources the app uses; infra/ provisions exactly these.
CONTAINER_WORK = "export-work"  # chunks, error reports and audience mirrors of runs
CONTAINER_SLOTS = "mailchimp-slots"  # lease blobs: Mailchimp's connection cap shared by all instances
QUEUE_PLANS = "export-plans"
QUEUE_CHUNKS = "export-chunks"
QUEUE_SEGMENT_EVENTS = "segment-events"
CONTAINER_ERASURES = "erasures"  # in the segments account: the platform drops files of addresses to erase here
QUEUE_ERASURES = "erasures"  # one message per erasure request
QUEUE_ERASURE_EVENTS = "erasure-events"  # BlobCreated events of the erasures container
TABLE_ERASURES = "erasures"  # requests and their outcomes (subscriber hashes only)
TABLE_ERASED = "erasedaddresses"  # subscriber hash -> when it was erased, kept to keep honouring the erasure
TABLE_DESTINATIONS = "destinations"
TABLE_RUNS = "exportruns"

STATUSES_FOR_NEW = ("subscribed", "pending", "transactional")


class ConfigError(Exception):
    """The app cannot start with these settings; the message lists every problem."""


@dataclass(frozen=True)
class StorageSettings:
    connection_string: str | None  # local (Azurite) or key-based
    blob_uri: str | None  # identity-based (AzureWebJobsStorage__blobServiceUri ...)
    queue_uri: str | None
    table_uri: str | None
    client_id: str | None  # user-assigned managed identity, when used


@dataclass(frozen=True)
class OAuthSettings:
    """The app's registration at Mailchimp (Account > Extras > Registered apps); None in Settings when not set up."""

    client_id: str
    client_secret: str = field(repr=False)  # in Azure a Key Vault reference, so it never sits in plain app settings
    redirect_uri: str  # must equal the registered one: https://<app>.azurewebsites.net/api/mailchimp/oauth/callback
    authorize_url: str
    token_url: str
    metadata_url: str


@dataclass(frozen=True)
class Settings:
    """Made only by `load_settings`, which gives every field its default: one place for each."""

    storage: StorageSettings
    segments_container: str
    key_vault_url: str | None
    local_secrets_dir: str
    mailchimp_api_base_url: str | None
    mailchimp_max_connections: int
    max_profiles_per_export: int
    chunk_size: int
    mailchimp_retry_seconds: int
    oauth: OAuthSettings | None
    untag_guard_percent: int
    # What one segment file may hold (shared/snapshots.py ReadLimits): a longer row or more fields make that row
    # invalid; a larger or deeper model.json makes its export's snapshots unusable, naming the file.
    segment_max_line_bytes: int
    segment_max_fields: int
    model_json_max_bytes: int
    segment_max_json_depth: int  # nesting of a model.json or a JSONL row
    http_max_body_bytes: int  # larger JSON request bodies are refused with 400
    http_max_json_depth: int  # JSON request bodies nested deeper are refused with 400
    # How long what a run leaves behind is kept (shared/retention.py): files naming people (per-row reports, previews,
    # chunk files kept for a retry) and the staff names on run records, then the run records themselves.
    retention_personal_days: int
    retention_run_days: int
    # Hours after an audience was last read in full before a run reads it in full again; in between, runs read only
    # what changed through the destination's audience mirror (shared/audience_mirror.py). A week, so that the platform's
    # daily refreshes (each a little more than a day after the last) may read only changes six days in seven (a run
    # after one that changed a tag's members reads them again: README, "What a refresh reads"). 0: no mirror, in full
    # (or only the contacts a small run needs: shared/member_lookup.py).
    audience_mirror_max_age_hours: int
    # Set by App Service when its authentication is on (and by the devhost, which emulates it); off, every HTTP
    # route but the OAuth callback answers 401 (shared/auth.py).
    auth_enabled: bool
    # Where segment files are read from (SEGMENTS_BLOB_URI or SEGMENTS_CONNECTION_STRING): in Azure their own account,
    # the one Customer Insights writes into (blob soft delete off there, on in the app's). None: the AzureWebJobsStorage
    # blob endpoint, as locally and in deployments made before the second account.
    segments_storage: StorageSettings | None
    # Where telemetry goes (shared/telemetry.py): "azure" (APPLICATIONINSIGHTS_CONNECTION_STRING is set), "console"
    # (OTEL_EXPORTER=console: spans, metrics and logs to stdout) or "off". OTEL_EXPORTER=none turns it off in Azure.
    telemetry: str
    applicationinsights_connection_string: str | None = field(repr=False)


TELEMETRY_EXPORTERS = ("console", "azure", "none")


def _telemetry(env: Mapping[str, str], problems: list[str]) -> tuple[str, str | None]:
    """OTEL_EXPORTER names the exporter; unset, Azure Monitor when APPLICATIONINSIGHTS_CONNECTION_STRING is set (the
    infra sets it), else nothing. Its value is never repeated: a connection string is not a secret with Entra ID
    ingestion, but it would be with local auth."""
    connection = env.get("APPLICATIONINSIGHTS_CONNECTION_STRING", "").strip() or None
    chosen = env.get("OTEL_EXPORTER", "").strip().lower()
    if chosen and chosen not in TELEMETRY_EXPORTERS:
        problems.append(f"OTEL_EXPORTER must be one of {', '.join(TELEMETRY_EXPORTERS)} or unset (Azure Monitor when "
                        f"APPLICATIONINSIGHTS_CONNECTION_STRING is set), got {chosen!r}")
        return "off", connection
    if chosen == "azure" and connection is None:
        problems.append("OTEL_EXPORTER=azure needs APPLICATIONINSIGHTS_CONNECTION_STRING (the Application Insights "
                        "resource's connection string)")
        return "off", connection
    if chosen == "none":
        return "off", connection
    return chosen or ("azure" if connection else "off"), connection


def _int(env: Mapping[str, str], name: str, default: int, low: int, high: int, problems: list[str]) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw.replace("_", "").replace(",", ""))
    except ValueError:
        problems.append(f"{name} must be a whole number between {low} and {high}, got {raw!r}")
        return default
    if not low <= value <= high:
        problems.append(f"{name} must be between {low} and {high}, got {value}")
    return value


def _storage(env: Mapping[str, str], problems: list[str]) -> StorageSettings:
    connection = env.get(STORAGE_CONNECTION, "").strip() or None
    prefix = f"{STORAGE_CONNECTION}__"
    account = env.get(prefix + "accountName", "").strip()
    uris = {
        kind: env.get(f"{prefix}{kind}ServiceUri", "").strip()
        or (f"https://{account}.{kind}.core.windows.net" if account else "")
        for kind in ("blob", "queue", "table")
    }
    if connection is None and not all(uris.values()):
        problems.append(
            f"{STORAGE_CONNECTION} is not set: give a connection string (locally: UseDevelopmentStorage=true or "
            f"Azurite's), or {prefix}accountName (or {prefix}blobServiceUri, __queueServiceUri and __tableServiceUri) "
            "for a managed-identity connection"
        )
    return StorageSettings(
        connection_string=connection,
        blob_uri=uris["blob"] or None,
        queue_uri=uris["queue"] or None,
        table_uri=uris["table"] or None,
        client_id=env.get(prefix + "clientId", "").strip() or None,
    )


SEGMENTS_BLOB_URI = "SEGMENTS_BLOB_URI"
SEGMENTS_CONNECTION_STRING = "SEGMENTS_CONNECTION_STRING"


def _segments_storage(env: Mapping[str, str], storage: StorageSettings,
                      problems: list[str]) -> StorageSettings | None:
    """The account segment files are read from, when it is not AzureWebJobsStorage's: SEGMENTS_BLOB_URI (its blob
    endpoint, read with the app's identity, AzureWebJobsStorage__clientId) or SEGMENTS_CONNECTION_STRING (locally, or
    key-based). Neither: None, and segments are read through the AzureWebJobsStorage blob endpoint. Messages never
    repeat a connection string or a query string: either may hold a key."""
    uri = env.get("SEGMENTS_BLOB_URI", "").strip()
    connection = env.get("SEGMENTS_CONNECTION_STRING", "").strip()
    if uri and connection:
        problems.append(f"{SEGMENTS_BLOB_URI} and {SEGMENTS_CONNECTION_STRING} are both set: give one, the blob "
                        f"endpoint of the segments account for the app's managed identity (Azure), or a connection "
                        "string (local development, key-based access)")
        return None
    if uri:
        parts = urlsplit(uri)
        example = "e.g. https://stsegexample.blob.core.windows.net/"
        if parts.scheme != "https" or not parts.hostname:
            shown = f"{parts.scheme}://{parts.hostname}" if parts.scheme and parts.hostname else "not a URL"
            problems.append(f"{SEGMENTS_BLOB_URI} must be the https:// blob endpoint of the account segment files land "
                            f"in ({example}); got {shown}. The app signs in there with its managed identity, which "
                            f"needs https; for an emulator or a key use {SEGMENTS_CONNECTION_STRING}")
        elif parts.query or parts.fragment:
            problems.append(f"{SEGMENTS_BLOB_URI} must not carry a query string (a SAS token): the app reads segments "
                            f"with its managed identity. Give the bare endpoint ({example}), or use "
                            f"{SEGMENTS_CONNECTION_STRING} for key-based access")
        elif parts.path not in ("", "/"):
            problems.append(f"{SEGMENTS_BLOB_URI} must be the account's blob endpoint without a path ({example}), got "
                            f"{uri!r}: the container is SEGMENTS_CONTAINER")
        return StorageSettings(connection_string=None, blob_uri=uri, queue_uri=None, table_uri=None,
                               client_id=storage.client_id)
    if connection:
        pairs = [part.partition("=") for part in (piece.strip() for piece in connection.split(";")) if part]
        fields = {key.strip().lower(): value.strip() for key, _, value in pairs}
        endpoint = fields.get("blobendpoint", "")
        if not pairs or any(not sep or not key.strip() for key, sep, _ in pairs):
            problems.append(f"{SEGMENTS_CONNECTION_STRING} is not a storage connection string (Name=value pairs "
                            "separated by ';', e.g. Azurite's or UseDevelopmentStorage=true); its value is not repeated "
                            "here, as it may hold a key")
        elif not (endpoint or fields.get("accountname") or fields.get("usedevelopmentstorage", "").lower() == "true"):
            problems.append(f"{SEGMENTS_CONNECTION_STRING} names no blob endpoint: give BlobEndpoint=... or "
                            "AccountName=... (with AccountKey or SharedAccessSignature), or UseDevelopmentStorage=true")
        elif endpoint and not secure_or_local(endpoint):
            problems.append(f"{SEGMENTS_CONNECTION_STRING}'s BlobEndpoint must be https://; plain http is accepted only "
                            "for loopback hosts (127.0.0.0/8, ::1, localhost), which is how local development is "
                            "recognised")
        return StorageSettings(connection_string=connection, blob_uri=None, queue_uri=None, table_uri=None,
                               client_id=storage.client_id)
    return None


MAX_RETENTION_DAYS = 3650
MAX_MIRROR_AGE_HOURS = 720  # 30 days: an audience is read in full at least that often


def _retention_run_days(env: Mapping[str, str], personal: int, problems: list[str]) -> int:
    """RETENTION_RUN_DAYS, never shorter than RETENTION_PERSONAL_DAYS: run records are swept by the app alone (tables
    have no lifecycle rules), and one deleted before its files' period ends would leave its files to the rules."""
    days = _int(env, "RETENTION_RUN_DAYS", 365, 1, MAX_RETENTION_DAYS, problems)
    if days < personal:
        problems.append(f"RETENTION_RUN_DAYS must be at least RETENTION_PERSONAL_DAYS ({personal}), got {days}: run "
                        "records are kept at least as long as the files that name people")
    return days


MAILCHIMP_LOGIN = "https://login.mailchimp.com/oauth2"


def _url(env: Mapping[str, str], name: str, default: str | None, problems: list[str]) -> str:
    value = env.get(name, "").strip() or default or ""
    if not re.match(r"^https?://[^/]", value):
        problems.append(f"{name} must be an absolute http(s) URL, got {value!r}")
    elif not secure_or_local(value):
        problems.append(_NOT_HTTPS.format(name=name, value=value))
    return value


_NOT_HTTPS = ("{name} must be an https:// URL, got {value!r}: plain http is accepted only for loopback hosts "
              "(127.0.0.0/8, ::1, localhost), which is how local development is recognised")


def secure_or_local(url: str) -> bool:
    """https, or http to this machine only (the local Mailchimp, Azurite): credentials never cross a network in clear.

    Local development is recognised by the host alone, not by a setting that could be left on in Azure."""
    parts = urlsplit(url)
    if parts.scheme == "https":
        return True
    return parts.scheme == "http" and on_this_machine(url)


def on_this_machine(url: str) -> bool:
    """Whether a URL's host is a loopback address or localhost: how local development (Azurite, the local Mailchimp)
    is recognised, by the host alone."""
    host = (urlsplit(url).hostname or "").rstrip(".")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _oauth(env: Mapping[str, str], problems: list[str]) -> OAuthSettings | None:
    """OAuth is optional (API keys work without it), but half a registration is a mistake worth stopping for."""
    client_id = env.get("MAILCHIMP_OAUTH_CLIENT_ID", "").strip()
    if not client_id:
        return None
    secret = env.get("MAILCHIMP_OAUTH_CLIENT_SECRET", "").strip()
    if not secret:
        problems.append("MAILCHIMP_OAUTH_CLIENT_SECRET is not set although MAILCHIMP_OAUTH_CLIENT_ID is: give the client "
                        "secret of the registered Mailchimp app (in Azure a Key Vault reference)")
    return OAuthSettings(
        client_id=client_id,
        client_secret=secret,
        redirect_uri=_url(env, "MAILCHIMP_OAUTH_REDIRECT_URI", None, problems),
        authorize_url=_url(env, "MAILCHIMP_OAUTH_AUTHORIZE_URL", f"{MAILCHIMP_LOGIN}/authorize", problems),
        token_url=_url(env, "MAILCHIMP_OAUTH_TOKEN_URL", f"{MAILCHIMP_LOGIN}/token", problems),
        metadata_url=_url(env, "MAILCHIMP_OAUTH_METADATA_URL", f"{MAILCHIMP_LOGIN}/metadata", problems),
    )


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    env = os.environ if env is None else env
    problems: list[str] = []
    storage = _storage(env, problems)
    container = env.get("SEGMENTS_CONTAINER", "").strip() or "segments"
    if not re.fullmatch(r"[a-z0-9](?:[a-z0-9]|-(?=[a-z0-9])){2,62}", container):
        problems.append(f"SEGMENTS_CONTAINER must be a valid blob container name (3-63 lower-case letters, digits, hyphens), got {container!r}")
    vault = env.get("KEY_VAULT_URL", "").strip() or None
    if vault and not vault.startswith("https://"):
        problems.append(f"KEY_VAULT_URL must be the vault's https:// URL (e.g. https://myvault.vault.azure.net/), got {vault!r}")
    base_url = env.get("MAILCHIMP_API_BASE_URL", "").strip().rstrip("/") or None
    if base_url and not re.match(r"^https?://", base_url):
        problems.append(f"MAILCHIMP_API_BASE_URL must be an http(s) URL including the version path (e.g. https://us6.api.mailchimp.com/3.0), got {base_url!r}")
    elif base_url and not secure_or_local(base_url):
        problems.append(_NOT_HTTPS.format(name="MAILCHIMP_API_BASE_URL", value=base_url))
    personal_days = _int(env, "RETENTION_PERSONAL_DAYS", 30, 1, MAX_RETENTION_DAYS, problems)
    telemetry, insights = _telemetry(env, problems)
    settings = Settings(
        storage=storage,
        segments_container=container,
        key_vault_url=vault,
        local_secrets_dir=env.get("LOCAL_SECRETS_DIR", "").strip() or os.path.join(".local", "secrets"),
        mailchimp_api_base_url=base_url,
        mailchimp_max_connections=_int(env, "MAILCHIMP_MAX_CONNECTIONS", 10, 1, 10, problems),
        max_profiles_per_export=_int(env, "MAX_PROFILES_PER_EXPORT", 1_000_000, 1, 50_000_000, problems),
        chunk_size=_int(env, "EXPORT_CHUNK_SIZE", 500, 1, 500, problems),
        mailchimp_retry_seconds=_int(env, "MAILCHIMP_RETRY_SECONDS", 120, 1, 600, problems),
        oauth=_oauth(env, problems),
        untag_guard_percent=_int(env, "UNTAG_GUARD_PERCENT", 20, 0, 100, problems),
        segment_max_line_bytes=_int(env, "SEGMENT_MAX_LINE_BYTES", 1 << 20, 1024, 64 << 20, problems),
        segment_max_fields=_int(env, "SEGMENT_MAX_FIELDS", 1000, 10, 100_000, problems),
        model_json_max_bytes=_int(env, "MODEL_JSON_MAX_BYTES", 16 << 20, 1024, 256 << 20, problems),
        segment_max_json_depth=_int(env, "SEGMENT_MAX_JSON_DEPTH", 64, 8, 256, problems),
        http_max_body_bytes=_int(env, "HTTP_MAX_BODY_BYTES", 1 << 20, 1024, 100 * 1024 * 1024, problems),
        http_max_json_depth=_int(env, "HTTP_MAX_JSON_DEPTH", 32, 4, 512, problems),
        retention_personal_days=personal_days,
        retention_run_days=_retention_run_days(env, personal_days, problems),
        audience_mirror_max_age_hours=_int(env, "AUDIENCE_MIRROR_MAX_AGE_HOURS", 168, 0, MAX_MIRROR_AGE_HOURS, problems),
        auth_enabled=auth_enabled(env.get("WEBSITE_AUTH_ENABLED")),
        segments_storage=_segments_storage(env, storage, problems),
        telemetry=telemetry,
        applicationinsights_connection_string=insights,
    )
    if problems:
        raise ConfigError("The app settings need attention:\n- " + "\n- ".join(problems))
    return settings
