"""Starting and stopping devhost: clear refusals of bad apps and settings, graceful stop on SIGTERM."""
from __future__ import annotations

import base64
import json
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from devhost.launcher import HostFailed, start_host
from tests.devhost_app.harness import REPO, SampleApp, make_app, wait_for  # noqa: F401  (make_app is a fixture)

MakeApp = Callable[..., SampleApp]
HEADER = "import azure.functions as func\napp = func.FunctionApp()\n"


@pytest.mark.parametrize("source, args, problem", ids=["unset-setting", "bad-queue-name", "blob-trigger", "output-binding",
                                                      "five-field-schedule", "no-key", "import-error"], argvalues=[
    ("""
     @app.queue_trigger(arg_name="msg", queue_name="%UNSET_QUEUE%", connection="AzureWebJobsStorage")
     def handle(msg): pass
     """, [], "function handle: app setting UNSET_QUEUE (used as %UNSET_QUEUE%) is not set: add it to Values"),
    ("""
     @app.queue_trigger(arg_name="msg", queue_name="Bad_Name", connection="AzureWebJobsStorage")
     def handle(msg): pass
     """, [], "function handle: queue name 'Bad_Name' is invalid"),
    ("""
     @app.blob_trigger(arg_name="blob", path="c/{name}", connection="AzureWebJobsStorage")
     def handle(blob): pass
     """, [], "function handle: devhost runs httpTrigger, queueTrigger, timerTrigger, not blobTrigger"),
    ("""
     @app.route(route="x")
     @app.queue_output(arg_name="out", queue_name="q", connection="AzureWebJobsStorage")
     def handle(req, out): pass
     """, ["--function-key", "k"], "function handle: bindings queue are not supported by devhost"),
    ("""
     @app.timer_trigger(arg_name="timer", schedule="0 */5 * * *")
     def handle(timer): pass
     """, [], "function handle: schedule '0 */5 * * *' has 5 fields"),
    ("""
     @app.route(route="x")
     def handle(req): pass
     """, [], "functions handle need a key: pass --function-key"),
    ("import no_such_module\n", [], "importing broken_app raised ModuleNotFoundError"),
])
def test_bad_apps_are_refused_with_a_clear_message(tmp_path: Path, source: str, args: list[str], problem: str) -> None:
    (tmp_path / "host.json").write_text(json.dumps({"version": "2.0"}))
    (tmp_path / "broken_app.py").write_text(HEADER + textwrap.dedent(source))
    with pytest.raises(HostFailed, match="exited with 2") as failure:
        start_host(["--app", "broken_app", "--root", str(tmp_path), "--port", "0", *args], cwd=REPO,
                   log_dir=tmp_path / "logs", env={"AzureWebJobsStorage": "UseDevelopmentStorage=true"})
    assert problem in str(failure.value)


def test_missing_settings_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "host.json").write_text(json.dumps({"version": "2.0"}))
    (tmp_path / "empty_app.py").write_text(HEADER)
    with pytest.raises(HostFailed, match="settings file .*nowhere.json does not exist"):
        start_host(["--app", "empty_app", "--root", str(tmp_path), "--settings", str(tmp_path / "nowhere.json")], cwd=REPO,
                   log_dir=tmp_path / "logs")


def test_sigterm_lets_a_running_handler_finish(make_app: MakeApp) -> None:
    app = make_app()
    host = app.start()
    app.queue().send_message(base64.b64encode(b'{"sleep": 1.5}').decode())
    wait_for(lambda: app.records("work"), "the handler to start")
    assert host.stop() == 0
    assert app.queue().get_queue_properties().approximate_message_count == 0
    assert "function=work trigger=queue outcome=succeeded" in host.log()


def test_stop_abandons_a_handler_that_outlasts_the_grace_period(make_app: MakeApp) -> None:
    app = make_app()
    host = app.start("--shutdown-seconds", "0.5")
    app.queue().send_message(base64.b64encode(b'{"sleep": 60}').decode())
    wait_for(lambda: app.records("work"), "the handler to start")
    assert host.stop(timeout=15) == 0
    assert "stopping with 1 invocation(s) still running" in host.log()
    assert app.queue().get_queue_properties().approximate_message_count == 1  # it reappears after its lease
