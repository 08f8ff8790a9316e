"""Log records made inside a run_context carry runId, destinationId, chunk and trigger as fields; outside, none."""
from __future__ import annotations

import json
import logging
from types import SimpleNamespace

import pytest

from shared import telemetry
from shared.config import ConfigError, load_settings

STORAGE = {"AzureWebJobsStorage": "UseDevelopmentStorage=true"}


class Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def captured():
    handler = Capture()
    root = logging.getLogger()
    root.addHandler(handler)
    telemetry.install_log_fields()  # what setup() does for the root logger's handlers
    yield handler.records
    root.removeHandler(handler)


def fields(record: logging.LogRecord) -> dict:
    return {key: getattr(record, key) for key in telemetry.FIELDS if hasattr(record, key)}


def test_records_inside_the_context_carry_the_fields_and_records_outside_do_not(captured):
    log = logging.getLogger("shared.exports.chunks")  # a child logger: the filter sits on the root's handlers
    log.warning("before")
    with telemetry.run_context(run_id="20260301T090000-abcd1234", chunk=3):
        telemetry.describe_run(SimpleNamespace(id="20260301T090000-abcd1234", destination_id="d-1", trigger="schedule"))
        log.warning("inside")
        with telemetry.run_context(chunk=4):
            log.warning("nested")
    log.warning("after")
    telemetry.describe_run(SimpleNamespace(id="r", destination_id="d", trigger="http"))  # outside: no effect
    log.warning("after describe")
    assert [fields(r) for r in captured] == [
        {},
        {"runId": "20260301T090000-abcd1234", "destinationId": "d-1", "chunk": 3, "trigger": "schedule"},
        {"runId": "20260301T090000-abcd1234", "destinationId": "d-1", "chunk": 4, "trigger": "schedule"},
        {},
        {},
    ]


def test_a_poisoned_message_is_one_warning_naming_its_queue_as_a_field(captured):
    """What the poison-message alert reads (infra/app/alerts.bicep: Properties.poisonQueue)."""
    telemetry.poisoned("export-chunks-poison", "run r-1, chunk 7")
    [record] = captured
    assert record.levelno == logging.WARNING and record.poisonQueue == "export-chunks-poison"
    assert "export-chunks-poison" in record.getMessage() and "run r-1, chunk 7" in record.getMessage()


def test_fields_given_with_extra_are_kept(captured):
    with telemetry.run_context(run_id="r-1", trigger="http"):
        logging.getLogger("function_app").warning("explicit", extra={"runId": "r-2"})
    assert fields(captured[0]) == {"runId": "r-2", "trigger": "http"}


@pytest.mark.parametrize("env, mode", [
    ({}, "off"),
    ({"OTEL_EXPORTER": "console"}, "console"),
    ({"APPLICATIONINSIGHTS_CONNECTION_STRING": "InstrumentationKey=00000000-0000-0000-0000-000000000000"}, "azure"),
    ({"APPLICATIONINSIGHTS_CONNECTION_STRING": "InstrumentationKey=x", "OTEL_EXPORTER": "none"}, "off"),
    ({"APPLICATIONINSIGHTS_CONNECTION_STRING": "InstrumentationKey=x", "OTEL_EXPORTER": "Console"}, "console"),
])
def test_one_setting_chooses_where_telemetry_goes(env, mode):
    assert load_settings({**STORAGE, **env}).telemetry == mode


def test_an_unknown_exporter_is_refused_naming_the_setting():
    with pytest.raises(ConfigError, match="OTEL_EXPORTER must be one of console, azure, none"):
        load_settings({**STORAGE, "OTEL_EXPORTER": "otlp"})
    with pytest.raises(ConfigError, match="OTEL_EXPORTER=azure needs APPLICATIONINSIGHTS_CONNECTION_STRING"):
        load_settings({**STORAGE, "OTEL_EXPORTER": "azure"})


def test_a_poisoned_messages_warning_names_only_what_the_app_would_have_written():
    """The handler's warning copies a run id and a chunk number from the body only when shaped as the app writes them:
    a message put on the queue by someone else could hold an address."""
    import azure.functions as func

    from blueprints.workers import _about

    def message(body: object) -> func.QueueMessage:
        return func.QueueMessage(id="m-1", body=json.dumps(body).encode())

    assert _about(message({"runId": "20261202T093115-0444dd2a", "chunk": 7}), "runId", "chunk") == \
        "runId 20261202T093115-0444dd2a, chunk 7"
    for body in ({"runId": "jane@contoso.com", "chunk": 1}, {"runId": "20261202T093115-0444dd2a", "chunk": "1\nx"},
                 {"runId": "20261202T093115-0444dd2a"}, ["a"], "text"):
        assert _about(message(body), "runId", "chunk") == "message m-1, whose body is not what the app writes", body
    assert "m-1" in _about(func.QueueMessage(id="m-1", body=b"not json"), "runId")


def test_a_poison_handler_warns_before_the_app_is_built_so_a_storage_outage_does_not_silence_it(captured, monkeypatch):
    """bootstrap.poisoned: the warning first (telemetry set up from the settings), then the app, whose build reaches
    storage, which may be why the message was poisoned."""
    from shared import bootstrap

    def storage_down(settings):
        raise ConnectionError("storage unreachable")

    monkeypatch.setattr(bootstrap, "_app", None)
    monkeypatch.setattr(bootstrap, "_settings", None)
    monkeypatch.setattr(bootstrap, "load_settings", lambda: load_settings(STORAGE))
    monkeypatch.setattr(bootstrap.telemetry, "setup", lambda *args: None)
    monkeypatch.setattr(bootstrap, "build", storage_down)
    with pytest.raises(ConnectionError):
        bootstrap.poisoned("export-plans-poison", "runId 20260301T090000-abcd1234")
    (warning,) = [r for r in captured if getattr(r, "poisonQueue", None)]
    assert warning.poisonQueue == "export-plans-poison" and "runId 20260301T090000-abcd1234" in warning.getMessage()
