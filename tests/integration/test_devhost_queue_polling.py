"""How devhost polls a queue (devhost/queue_listener.py): the cheap "any message visible?" peek (VisibleCheck) against
Azurite, and the poll loop around it, in process: empty polls cost a peek and no SDK receive, back off from 0.1 s
doubling up to maxPollingInterval, and a poll that finds messages is followed by another at once."""
from __future__ import annotations

import base64
import itertools
import socket
import threading
import time
from collections.abc import Iterator

import pytest
from azure.storage.queue import QueueClient

from devhost.app_index import FunctionSpec
from devhost.hostconfig import QueueOptions
from devhost.invoker import Invoker
from devhost.queue_listener import (
    POISON_SUFFIX,
    QueueListener,
    VisibleCheck,
    ensure_queue,
    queue_client,
)
from tests.devhost_app.harness import unique, wait_for
from tests.services import Azurite


@pytest.fixture
def queue(azurite: Azurite) -> QueueClient:
    client = queue_client(azurite.connection_string, unique("poll"))
    ensure_queue(client)
    return client


def test_peek_tells_whether_a_message_is_visible_and_changes_nothing(queue: QueueClient) -> None:
    check = VisibleCheck.for_client(queue)
    assert check is not None
    assert check() is False
    queue.send_message("aGVsbG8=")
    assert check() is True
    assert check() is True  # peeking twice: still there, still visible
    [message] = queue.receive_messages(max_messages=5, visibility_timeout=30)
    assert message.dequeue_count == 1  # the peeks did not count as deliveries
    assert check() is False  # leased (invisible) messages are not visible
    queue.send_message("bGF0ZXI=", visibility_timeout=30)
    assert check() is False  # nor are ones sent with a delay
    check.close()


def test_peek_reconnects_when_the_kept_alive_connection_was_closed(queue: QueueClient) -> None:
    check = VisibleCheck.for_client(queue)
    assert check() is False
    check._connection.sock.shutdown(socket.SHUT_RDWR)  # as a server ending an idle keep-alive connection
    queue.send_message("aGVsbG8=")
    assert check() is True
    check.close()


def test_peek_cannot_tell_with_a_wrong_key(azurite: Azurite, queue: QueueClient) -> None:
    wrong = ";".join(part if not part.startswith("AccountKey=") else "AccountKey=" + base64.b64encode(b"x" * 64).decode()
                     for part in azurite.connection_string.split(";"))
    check = VisibleCheck.for_client(queue_client(wrong, queue.queue_name))
    assert check() is None  # 403: the SDK's receive then fails and is reported as any polling failure


def test_peek_cannot_tell_when_storage_is_down() -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    connection = (f"DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={base64.b64encode(b'k').decode()};"
                  f"QueueEndpoint=http://127.0.0.1:{port}/devstoreaccount1;")
    assert VisibleCheck.for_client(queue_client(connection, "nobody-home"))() is None


def test_no_peek_where_it_could_not_do_what_the_sdk_does(azurite: Azurite, monkeypatch: pytest.MonkeyPatch) -> None:
    https = azurite.connection_string.replace("http://", "https://")
    sas = ";".join(part for part in azurite.connection_string.split(";") if part and not part.startswith("AccountKey=")) \
        + ";SharedAccessSignature=sv=2020-08-04&ss=q&sig=abc"
    assert VisibleCheck.for_client(queue_client(https, "q-https")) is None
    assert VisibleCheck.for_client(queue_client(sas, "q-sas")) is None
    monkeypatch.setenv("HTTP_PROXY", "http://proxy.invalid:3128")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    assert VisibleCheck.for_client(queue_client(azurite.connection_string, "q-proxy")) is None
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    assert VisibleCheck.for_client(queue_client(azurite.connection_string, "q-proxy")) is not None


class Recorder:
    """A QueueListener for QUEUE in this process, its handler recording bodies, its peeks and SDK receives counted."""

    def __init__(self, queue: QueueClient, azurite: Azurite, options: QueueOptions) -> None:
        self.handled: list[bytes] = []
        self.peeks: list[tuple[float, bool | None]] = []
        self.receives: list[tuple[float, int]] = []
        self.stopping = threading.Event()
        spec = FunctionSpec("poll", {"type": "queueTrigger", "name": "msg", "queueName": queue.queue_name},
                            lambda msg: self.handled.append(msg.get_body()), wants_context=False)
        poison = queue_client(azurite.connection_string, queue.queue_name + POISON_SUFFIX)
        self.listener = QueueListener(spec, queue.queue_name, queue, poison, options, 30, Invoker(".", 4), self.stopping)
        check, receive = self.listener._visible, queue.receive_messages

        class Peek:
            def __call__(_) -> bool | None:
                at = time.monotonic()  # when the poll began, not when storage answered the peek
                answer = check() if check is not None and not self.blind else None
                self.peeks.append((at, answer))
                return answer

            def close(_) -> None:
                if check is not None:
                    check.close()

        def counted_receive(**kwargs: object) -> list:
            messages = list(receive(**kwargs))
            self.receives.append((time.monotonic(), len(messages)))
            return messages

        self.blind = False
        self.listener._visible = Peek()
        queue.receive_messages = counted_receive  # type: ignore[method-assign]

    def cannot_tell(self) -> None:
        """Make every peek answer None, as when it fails."""
        self.blind = True


@pytest.fixture
def recorder(queue: QueueClient, azurite: Azurite) -> Iterator[Recorder]:
    recorder = Recorder(queue, azurite, QueueOptions(batch_size=4, new_batch_threshold=2, max_polling_interval=0.4))
    yield recorder
    recorder.stopping.set()
    recorder.listener.join(10)


def test_idle_polls_are_peeks_backing_off_to_max_polling_interval(recorder: Recorder, queue: QueueClient) -> None:
    recorder.listener.start()
    wait_for(lambda: len(recorder.peeks) >= 7, "seven polls")
    assert recorder.receives == []  # an empty queue never costs an SDK receive
    times = [at for at, _ in recorder.peeks]
    gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
    assert [round(gap, 1) >= floor for gap, floor in zip(gaps, (0.1, 0.2, 0.4, 0.4, 0.4, 0.4))] == [True] * 6, gaps
    assert sorted(gaps[3:])[len(gaps[3:]) // 2] < 0.7, f"polls further apart than maxPollingInterval: {gaps}"
    queue.send_message(base64.b64encode(b"one").decode())
    wait_for(lambda: recorder.handled, "the message to be handled")
    assert recorder.handled == [b"one"]
    [(received_at, count)] = recorder.receives[:1]
    assert count == 1
    # found one: the next poll follows at once
    wait_for(lambda: [at for at, _ in recorder.peeks if at > received_at], "the poll after the receive")
    later = [at for at, _ in recorder.peeks if at > received_at]
    assert later[0] - received_at < 0.1, later[0] - received_at


def test_a_peek_that_cannot_tell_leaves_the_poll_to_the_sdk(recorder: Recorder, queue: QueueClient) -> None:
    recorder.cannot_tell()
    for body in (b"a", b"b", b"c"):
        queue.send_message(base64.b64encode(body).decode())
    recorder.listener.start()
    wait_for(lambda: len(recorder.handled) == 3, "all three messages")
    assert sorted(recorder.handled) == [b"a", b"b", b"c"]
    wait_for(lambda: len(recorder.receives) >= 3, "more polls")
    assert recorder.receives[0][1] == 3 and all(count == 0 for _, count in recorder.receives[1:])


def test_leases_are_renewed_while_a_poll_waits_on_storage(queue: QueueClient, azurite: Azurite) -> None:
    """A poll that waits on storage longer than a lease (a loaded machine) must not let a running message's lease
    lapse: the message would be received again, its dequeue count one step nearer the poison queue (CI saw a plan
    message poisoned so while its plan was being sent)."""
    deliveries: list[int] = []
    stopping = threading.Event()

    def handler(msg) -> None:  # noqa: ANN001 - the trigger's message
        deliveries.append(msg.dequeue_count)
        time.sleep(10)

    spec = FunctionSpec("slowpoll", {"type": "queueTrigger", "name": "msg", "queueName": queue.queue_name}, handler,
                        wants_context=False)
    poison = queue_client(azurite.connection_string, queue.queue_name + POISON_SUFFIX)
    listener = QueueListener(spec, queue.queue_name, queue, poison,
                             QueueOptions(batch_size=4, new_batch_threshold=2, max_polling_interval=0.2), 4,
                             Invoker(".", 4), stopping)
    stalled: list[float] = []

    class SlowPeek:
        def __call__(self) -> bool | None:
            if deliveries and not stalled:  # the poll after the message started waits 9 s, past its 4 s lease
                stalled.append(time.monotonic())
                time.sleep(9)
            return None  # cannot tell: the SDK's receive decides

        def close(self) -> None:
            pass

    listener._visible = SlowPeek()  # type: ignore[assignment]
    queue.send_message(base64.b64encode(b"long").decode())
    listener.start()
    try:
        wait_for(lambda: stalled, "the stalled poll")
        time.sleep(11)  # the stalled poll has returned and polled again; the handler has ended
        assert deliveries == [1], deliveries
        assert list(queue.peek_messages()) == []  # handled and deleted, never poisoned (the poison queue was never made)
    finally:
        stopping.set()
        listener.join(10)
