"""Queue triggers through a real devhost process and Azurite: encoding, batches, retries, poison, leases, crashes."""
from __future__ import annotations

import base64
import json
from collections.abc import Callable

from azure.storage.queue import QueueClient

from tests.devhost_app.harness import SampleApp, make_app, wait_for  # noqa: F401  (make_app is a fixture)

MakeApp = Callable[..., SampleApp]


def send(queue: QueueClient, orders: dict, *, encoded: bool = True) -> str:
    text = json.dumps(orders)
    queue.send_message(base64.b64encode(text.encode()).decode() if encoded else text)
    return text


def drained(queue: QueueClient) -> bool:
    """No message left, visible or leased."""
    return queue.get_queue_properties().approximate_message_count == 0


def test_base64_message_is_decoded_and_deleted_after_success(make_app: MakeApp) -> None:
    app = make_app()
    app.start()
    text = send(app.queue(), {"hello": "wörld"})
    [seen] = wait_for(lambda: app.records("work"), "the message to be handled")
    assert (seen["body"], seen["dequeue_count"]) == (text, 1)
    wait_for(lambda: drained(app.queue()), "the handled message to be deleted")


def test_message_encoding_none_hands_over_raw_text(make_app: MakeApp) -> None:
    app = make_app(queues={"messageEncoding": "none"})
    app.start()
    text = send(app.queue(), {"plain": True}, encoded=False)
    [seen] = wait_for(lambda: app.records("work"), "the message to be handled")
    assert seen["body"] == text


def test_message_that_is_not_base64_goes_straight_to_poison(make_app: MakeApp) -> None:
    app = make_app()
    host = app.start()
    app.queue().send_message("plain text, not base64!")
    poison = app.queue(app.env["WORK_QUEUE"] + "-poison")
    [moved] = wait_for(lambda: poison.peek_messages(max_messages=5), "the message to reach the poison queue")
    assert moved.content == "plain text, not base64!"
    assert app.records("work") == []
    wait_for(lambda: drained(app.queue()), "the original to be deleted")  # moved: sent to poison, then deleted
    assert "is not base64" in host.log()


def test_batch_size_caps_concurrency_when_new_batch_threshold_is_zero(make_app: MakeApp) -> None:
    app = make_app(queues={"batchSize": 4, "newBatchThreshold": 0})
    queue = app.queue()
    for _ in range(8):
        send(queue, {"sleep": 0.6})
    app.start()
    records = wait_for(lambda: len(app.records("work")) == 8 and app.records("work"), "all eight messages")
    assert max(r["active"] for r in records) == 4


def test_next_batch_is_fetched_when_running_count_drops_to_threshold(make_app: MakeApp) -> None:
    # batchSize 2, threshold 1: after the quick first message ends, two more start next to the slow second one,
    # so three run at once (Azure documents batchSize + newBatchThreshold as the ceiling).
    app = make_app(queues={"batchSize": 2, "newBatchThreshold": 1})
    queue = app.queue()
    for seconds in (0.2, 1.5, 1.0, 1.0):
        send(queue, {"sleep": seconds})
    app.start()
    records = wait_for(lambda: len(app.records("work")) == 4 and app.records("work"), "all four messages")
    assert max(r["active"] for r in records) == 3


def test_failures_retry_after_visibility_timeout_then_go_to_poison(make_app: MakeApp) -> None:
    app = make_app(queues={"maxDequeueCount": 3, "visibilityTimeout": "00:00:01"})
    always = send(app.queue(), {"fail_attempts": 99, "name": "always"})
    once = send(app.queue(), {"fail_attempts": 1, "name": "once"})
    host = app.start()
    poison = app.queue(app.env["WORK_QUEUE"] + "-poison")
    [moved] = wait_for(lambda: poison.peek_messages(max_messages=5), "the failing message to reach the poison queue")
    assert base64.b64decode(moved.content).decode() == always
    attempts = {body: [r for r in app.records("work") if r["body"] == body] for body in (always, once)}
    assert [r["dequeue_count"] for r in attempts[always]] == [1, 2, 3]
    assert [r["dequeue_count"] for r in attempts[once]] == [1, 2]
    gaps = [later["at"] - earlier["at"] for earlier, later in zip(attempts[always], attempts[always][1:])]
    assert min(gaps) >= 0.9, f"retries came sooner than visibilityTimeout: {gaps}"
    wait_for(lambda: drained(app.queue()), "the queue to be empty")
    assert "reached maxDequeueCount 3" in host.log()


def test_lease_is_renewed_while_a_long_handler_runs(make_app: MakeApp) -> None:
    app = make_app()
    app.start("--message-lease-seconds", "1")
    send(app.queue(), {"sleep": 3})
    wait_for(lambda: app.records("work"), "the handler to start")
    wait_for(lambda: drained(app.queue()), "the message to be deleted", timeout=15)
    assert [r["dequeue_count"] for r in app.records("work")] == [1]  # never handed out a second time


def test_message_of_a_killed_host_is_handled_after_restart(make_app: MakeApp) -> None:
    app = make_app()
    first = app.start("--message-lease-seconds", "2")
    send(app.queue(), {"sleep_first_attempt": 60})
    wait_for(lambda: app.records("work"), "the first attempt to start")
    first.kill()
    app.start("--message-lease-seconds", "2")
    records = wait_for(lambda: len(app.records("work")) == 2 and app.records("work"), "the retried attempt")
    assert [r["dequeue_count"] for r in records] == [1, 2]
    wait_for(lambda: drained(app.queue()), "the message to be deleted")
