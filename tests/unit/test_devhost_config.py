"""devhost's reading of local.settings.json, %SETTING% expressions, connection names and host.json."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from devhost.errors import ConfigError
from devhost.hostconfig import QueueOptions, load_host_config, parse_timespan
from devhost.settings import apply_settings, load_local_settings, resolve_expression, storage_connection


def write_json(path: Path, document: object) -> Path:
    path.write_text(json.dumps(document))
    return path


def test_settings_values_are_read_and_existing_environment_wins(tmp_path: Path) -> None:
    path = write_json(tmp_path / "local.settings.json", {"IsEncrypted": False, "Values": {"A": "file", "B": "file"}})
    environ = {"B": "shell"}
    apply_settings(load_local_settings(path), environ)
    assert environ == {"A": "file", "B": "shell"}


@pytest.mark.parametrize("document, problem", [
    ({"IsEncrypted": True, "Values": {}}, "is encrypted"),
    ({"Values": {"PORT": 5}}, "Values.PORT must be a string"),
    ({"Values": ["A"]}, "Values must be an object"),
    (["A"], "must hold an object"),
])
def test_bad_settings_files_are_refused_with_the_fix(tmp_path: Path, document: object, problem: str) -> None:
    with pytest.raises(ConfigError, match=problem):
        load_local_settings(write_json(tmp_path / "local.settings.json", document))


def test_missing_settings_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_local_settings(tmp_path / "nowhere.json")


def test_expressions_read_app_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QUEUE_NAME", "segments")
    assert resolve_expression("%QUEUE_NAME%-events", "function f") == "segments-events"
    with pytest.raises(ConfigError, match=r"function f: app setting MISSING_ONE \(used as %MISSING_ONE%\) is not set"):
        resolve_expression("%MISSING_ONE%", "function f")


def test_connection_names_fall_back_to_the_azurewebjobs_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AzureWebJobsStorage", "storage-default")
    monkeypatch.setenv("AzureWebJobsSegments", "storage-segments")
    assert storage_connection(None, "f") == "storage-default"
    assert storage_connection("Segments", "f") == "storage-segments"
    with pytest.raises(ConfigError, match="storage connection 'Elsewhere' is not set"):
        storage_connection("Elsewhere", "f")


def test_host_json_defaults_follow_azure(tmp_path: Path) -> None:
    write_json(tmp_path / "host.json", {"version": "2.0", "extensions": {"queues": {"batchSize": 10}}})
    config = load_host_config(tmp_path)
    assert config.route_prefix == "api"
    assert config.queues == QueueOptions(batch_size=10, new_batch_threshold=5)


def test_host_json_values_are_read(tmp_path: Path) -> None:
    queues = {"batchSize": 4, "newBatchThreshold": 0, "maxPollingInterval": "00:00:02", "visibilityTimeout": "00:00:30",
              "maxDequeueCount": 2, "messageEncoding": "None"}
    write_json(tmp_path / "host.json", {"version": "2.0", "extensions": {"http": {"routePrefix": "/v1/"}, "queues": queues}})
    config = load_host_config(tmp_path)
    assert config.route_prefix == "v1"
    assert config.queues == QueueOptions(4, 0, 2.0, 30.0, 2, "none")


@pytest.mark.parametrize("queues, problem", [
    ({"batchSize": 33}, "batchSize must be a whole number between 1 and 32"),
    ({"maxDequeueCount": 0}, "maxDequeueCount must be a whole number at least 1"),
    ({"messageEncoding": "utf8"}, 'messageEncoding must be "base64" or "none"'),
    ({"maxPollingInterval": "2s"}, "maxPollingInterval must be a time span"),
    ({"maxPollingInterval": "00:00:00.050"}, "must be at least"),
])
def test_bad_queue_options_are_refused(tmp_path: Path, queues: dict, problem: str) -> None:
    write_json(tmp_path / "host.json", {"version": "2.0", "extensions": {"queues": queues}})
    with pytest.raises(ConfigError, match=problem):
        load_host_config(tmp_path)


def test_missing_or_old_host_json_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no host.json"):
        load_host_config(tmp_path)
    write_json(tmp_path / "host.json", {"version": "1.0"})
    with pytest.raises(ConfigError, match='"version": "2.0"'):
        load_host_config(tmp_path)


@pytest.mark.parametrize("text, seconds", [("00:00:02", 2.0), ("00:01:00", 60.0), ("00:00:00.250", 0.25),
                                           ("1.02:00:00", 93600.0)])
def test_timespans(text: str, seconds: float) -> None:
    assert parse_timespan(text, "x") == seconds
