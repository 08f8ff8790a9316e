"""The host: load settings and the app, start every trigger, stop cleanly on SIGTERM/SIGINT."""
from __future__ import annotations

import logging
import os
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from devhost.admin import ManualRuns
from devhost.app_index import FunctionSpec, load_functions
from devhost.background import Background
from devhost.blob_events import BlobEventSource
from devhost.easyauth import EasyAuth, load_tokens
from devhost.hostconfig import HostConfig, load_host_config
from devhost.http_server import FunctionsHttpServer, HttpFunction
from devhost.invoker import Invoker, worker_thread_count
from devhost.queue_listener import QueueListener
from devhost.settings import apply_settings, load_local_settings, storage_connection
from devhost.state import STATE_FILE, StateFile
from devhost.timers import TimerRunner

log = logging.getLogger("devhost")
READY = "Functions host ready on {url}"
READY_SECONDS = 20.0  # how long the host waits for its trigger sources (within the launcher's 30 s for the ready line)
AUTH_SETTING = "WEBSITE_AUTH_ENABLED"  # set by App Service when its authentication is on


@dataclass(frozen=True)
class HostOptions:
    app: str
    root: Path
    settings: Path | None = None
    port: int = 7071
    function_key: str | None = None
    lease_seconds: int = 600
    blob_events: tuple[tuple[str, str], ...] = ()
    shutdown_seconds: float = 10.0
    state_file: Path | None = None
    auth: bool = True  # App Service Authentication in front of the app (devhost/easyauth.py)
    auth_tokens: Path | None = None  # bearer tokens it accepts


@dataclass
class Host:
    server: FunctionsHttpServer
    invoker: Invoker
    stopping: threading.Event
    workers: list[Background] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def start(self) -> None:
        """HTTP answers only once the trigger sources are ready: callers that wait for an answer, not for the ready
        line, may then upload at once too (connections made meanwhile wait in the listening socket's backlog)."""
        for worker in self.workers:
            worker.start()
        deadline = time.monotonic() + READY_SECONDS
        for worker in self.workers:
            if not worker.wait_ready(max(0.0, deadline - time.monotonic())):
                log.warning("%s was not ready within %.0f s; the host starts anyway (see its warnings above)",
                            worker.name, READY_SECONDS)
        threading.Thread(target=self.server.serve_forever, args=(0.2,), name="http", daemon=True).start()

    def stop(self, grace_seconds: float) -> None:
        """Stop taking work, give running functions GRACE_SECONDS, then abandon them (their messages reappear)."""
        deadline = time.monotonic() + grace_seconds
        self.stopping.set()
        self.server.shutdown()
        self.server.server_close()
        for worker in self.workers:  # a timer runs its function on its own thread: joining waits for it
            worker.join(max(0.0, deadline - time.monotonic()))
        abandoned = self.invoker.wait_idle(max(0.0, deadline - time.monotonic()))
        if abandoned:
            log.warning("stopping with %d invocation(s) still running: their queue messages reappear when their "
                        "leases end", abandoned)


def build_host(options: HostOptions) -> Host:
    """Read settings, host.json and the app; raise ConfigError for anything the developer must fix."""
    settings = options.settings or options.root / "local.settings.json"
    if options.settings or settings.exists():
        apply_settings(load_local_settings(settings))
    auth = _authentication(options)
    config = load_host_config(options.root)
    functions = [f for f in load_functions(options.app, options.root) if not _disabled(f)]
    stopping = threading.Event()
    invoker = Invoker(str(options.root), worker_thread_count())
    state = StateFile(options.state_file or options.root / STATE_FILE)
    http = [HttpFunction.build(f, config.route_prefix) for f in _of_type(functions, "httpTrigger")]
    timers = [TimerRunner.build(f, state, invoker, stopping) for f in _of_type(functions, "timerTrigger")]
    queues = _of_type(functions, "queueTrigger")
    admin = ManualRuns(invoker, options.function_key, timers, queues)  # POST /admin/functions/{name}
    host = Host(FunctionsHttpServer(options.port, http, options.function_key, invoker, auth, admin), invoker, stopping)
    host.workers += [QueueListener.build(f, config.queues, options.lease_seconds, invoker, stopping) for f in queues]
    host.workers += timers
    if options.blob_events:
        connection = storage_connection(None, "--blob-events")
        _warn_about_encoding(config)
        host.workers += [BlobEventSource(connection, container, queue, state, stopping)
                         for container, queue in options.blob_events]
    for function in http:
        log.info("http %s", function.describe())
    return host


def _authentication(options: HostOptions) -> EasyAuth | None:
    """The platform's part: with authentication on, App Service sets WEBSITE_AUTH_ENABLED=True for the app; off, the
    app finds it unset, whatever a settings file says (only the platform sets it)."""
    if not options.auth:
        if os.environ.pop(AUTH_SETTING, None) is not None:
            log.warning("--no-auth: %s removed from the app's settings (only the platform sets it)", AUTH_SETTING)
        log.info("App Service Authentication is off: the app sees every header as the client sent it")
        return None
    tokens = load_tokens(options.auth_tokens) if options.auth_tokens else {}
    os.environ[AUTH_SETTING] = "True"
    log.info("App Service Authentication is on (sign in at /.auth/login/aad; %d bearer token(s))", len(tokens))
    return EasyAuth(tokens)


def _disabled(function: FunctionSpec) -> bool:
    """Azure's switch for turning one function off by app setting: AzureWebJobs.<name>.Disabled = true."""
    if os.environ.get(f"AzureWebJobs.{function.name}.Disabled", "").lower() in ("true", "1"):
        log.info("function %s is disabled by AzureWebJobs.%s.Disabled", function.name, function.name)
        return True
    return False


def _of_type(functions: list[FunctionSpec], trigger_type: str) -> list[FunctionSpec]:
    return [function for function in functions if function.trigger_type == trigger_type]


def _warn_about_encoding(config: HostConfig) -> None:
    if config.queues.message_encoding == "none":
        log.warning("--blob-events sends base64 like Event Grid, but host.json messageEncoding is none: queue "
                    "handlers will see base64 text, as they would in Azure")


def run(options: HostOptions) -> None:
    """Run until SIGTERM or SIGINT; the ready line goes to stdout so scripts can wait for it."""
    stop_requested = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop_requested.set())
    host = build_host(options)
    host.start()
    print(READY.format(url=host.url), flush=True)
    while not stop_requested.wait(1.0):
        pass
    log.info("stopping")
    host.stop(options.shutdown_seconds)
