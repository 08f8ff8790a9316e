"""Queue triggers as the Functions storage-queue extension runs them.

Batches of batchSize messages run concurrently; the next batch is fetched once no more than newBatchThreshold
are still running (so up to batchSize + newBatchThreshold run at once, as Azure documents). Each message is
leased (made invisible) for --message-lease-seconds and the lease is renewed at half-time while its handler
runs, so a host that dies mid-handler leaves the message to reappear when the lease ends. A failure makes
the message visible again after visibilityTimeout; at maxDequeueCount it moves to `<queue>-poison`.

Polling an empty queue is where an idle host spends its CPU (in Azure the Functions host polls, not the Python
worker): through the SDK a Get Messages request costs about 1.5-2.4 ms of CPU. So a poll first asks whether any
message is visible with one plain Peek Messages request (VisibleCheck, about 0.25 ms) and calls the SDK's receive
only when the answer is not "none": the same receive, with the same parameters, as before.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import http.client
import logging
import re
import threading
import time
from dataclasses import dataclass, field
from email.utils import formatdate
from urllib.parse import urlsplit
from xml.etree import ElementTree

from azure.core.exceptions import AzureError, ResourceExistsError
from azure.functions.queue import QueueMessage as TriggerMessage
from azure.storage.queue import QueueClient, QueueMessage
from requests.utils import get_environ_proxies

from devhost.app_index import FunctionSpec
from devhost.background import Background
from devhost.errors import ConfigError
from devhost.hostconfig import QueueOptions
from devhost.invoker import Invoker
from devhost.settings import resolve_expression, storage_connection
from shared.adapters.storage import requests_transport

log = logging.getLogger("devhost.queues")
POISON_SUFFIX = "-poison"
MIN_POLL_DELAY = 0.1  # seconds; the first back-off step after an empty poll
IDLE_CHECK = 0.5  # seconds between stop checks while a batch runs
RECEIVE_TIMEOUT = 10  # seconds an SDK receive may wait for its answer (not the transport's 60): Azurite answers in
# milliseconds, and a receive stuck on a connection gone half-open would stop this queue's polling meanwhile
# Storage rules (3-63 lowercase letters, digits, single hyphens), minus room for the poison suffix.
_QUEUE_NAME = re.compile(rf"^(?=.{{3,{63 - len(POISON_SUFFIX)}}}$)[a-z0-9]+(-[a-z0-9]+)*$")


def queue_client(connection: str, name: str) -> QueueClient:
    """A client that sends and receives text as-is: devhost applies messageEncoding itself, like the host does. Its
    transport reads proxy settings from the environment once, not at every poll (requests_transport)."""
    return QueueClient.from_connection_string(connection, name, transport=requests_transport())


def ensure_queue(client: QueueClient) -> None:
    """Create the queue if it is missing: locally nobody provisions queues in advance."""
    try:
        client.create_queue()
    except ResourceExistsError:
        pass


class VisibleCheck:
    """Is a message visible on the queue? One Peek Messages request (`GET .../messages?peekonly=true&numofmessages=1`),
    signed with the client's shared key and sent over one kept-alive http.client connection, without the SDK's
    pipeline: about a tenth of the CPU of the SDK's receive. A peek changes nothing on the queue (no dequeue count,
    no visibility); a message that arrives just after it is received by the next poll, as one arriving just after an
    empty receive would be. Used by one poll thread only.

    Only for what it can do exactly like the SDK's transport: plain-HTTP endpoints (Azurite) with an account key and
    no proxy from the environment; for anything else `for_client` returns None and every poll is the SDK's receive."""

    TIMEOUT = 2.0  # seconds: Azurite answers a peek in milliseconds; a peek that hangs (say a kept-alive connection
    # gone half-open on a loaded machine) must not stall this host's polling, so after this the SDK's receive decides

    def __init__(self, client: QueueClient) -> None:
        url = urlsplit(client.url)
        self._host, self._port = url.hostname or "", url.port
        self._account = client.credential.account_name
        self._key = base64.b64decode(client.credential.account_key)
        self._version = client.api_version
        self._path = url.path + "/messages?peekonly=true&numofmessages=1"
        self._resource = f"/{self._account}{url.path}/messages\nnumofmessages:1\npeekonly:true"
        self._connection: http.client.HTTPConnection | None = None

    @classmethod
    def for_client(cls, client: QueueClient) -> VisibleCheck | None:
        credential = client.credential
        if (urlsplit(client.url).scheme != "http" or urlsplit(client.url).query or get_environ_proxies(client.url)
                or not getattr(credential, "account_key", None) or not getattr(credential, "account_name", None)):
            return None
        return cls(client)

    def __call__(self) -> bool | None:
        """True or False; None when it could not tell (no connection, an error status, an unexpected answer), so
        that the caller's SDK receive decides, and reports the problem as it always has."""
        reused = self._connection is not None
        for _ in range(2 if reused else 1):  # a kept-alive connection the server has closed meanwhile: once more
            try:
                status, body = self._get()
            except (OSError, http.client.HTTPException):
                self.close()
                continue
            if status != 200:
                return None
            try:
                answer = ElementTree.fromstring(body)
            except ElementTree.ParseError:
                return None
            return len(answer) > 0 if answer.tag == "QueueMessagesList" else None
        return None

    def _get(self) -> tuple[int, bytes]:
        if self._connection is None:
            self._connection = http.client.HTTPConnection(self._host, self._port, timeout=self.TIMEOUT)
        date = formatdate(usegmt=True)
        # Shared Key: verb, eleven empty standard headers, the x-ms- headers sorted, the canonicalized resource.
        signed = f"GET\n\n\n\n\n\n\n\n\n\n\n\nx-ms-date:{date}\nx-ms-version:{self._version}\n{self._resource}"
        signature = base64.b64encode(hmac.new(self._key, signed.encode("utf-8"), hashlib.sha256).digest()).decode()
        self._connection.request("GET", self._path, headers={
            "x-ms-date": date, "x-ms-version": self._version, "Authorization": f"SharedKey {self._account}:{signature}"})
        response = self._connection.getresponse()
        return response.status, response.read()

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None


@dataclass
class _Lease:
    message_id: str
    pop_receipt: str
    renew_at: float
    lock: threading.Lock = field(default_factory=threading.Lock)
    settled: bool = False


@dataclass(eq=False)
class QueueListener(Background):
    """One queue-triggered function: its poll loop, its running messages and their leases."""

    spec: FunctionSpec
    queue_name: str
    client: QueueClient
    poison: QueueClient
    options: QueueOptions
    lease_seconds: int
    invoker: Invoker
    stopping: threading.Event

    def __post_init__(self) -> None:
        self._leases: dict[str, _Lease] = {}
        self._changed = threading.Condition()
        self._visible = VisibleCheck.for_client(self.client)
        super().__init__(f"queue-{self.spec.name}")

    @classmethod
    def build(cls, spec: FunctionSpec, options: QueueOptions, lease_seconds: int, invoker: Invoker,
              stopping: threading.Event) -> QueueListener:
        """Resolve queueName (`%SETTING%` allowed) and the connection setting of a queueTrigger binding."""
        where = f"function {spec.name}"
        queue_name = resolve_expression(spec.trigger["queueName"], where)
        if not _QUEUE_NAME.match(queue_name):
            raise ConfigError(
                f"{where}: queue name {queue_name!r} is invalid: use 3-{63 - len(POISON_SUFFIX)} lowercase letters, "
                "digits and single hyphens (the poison queue adds '-poison')"
            )
        connection = storage_connection(spec.trigger.get("connection"), where)
        return cls(spec, queue_name, queue_client(connection, queue_name),
                   queue_client(connection, queue_name + POISON_SUFFIX), options, lease_seconds, invoker, stopping)

    def _run(self) -> None:
        """Fetch and dispatch until stopped and the running handlers have ended; their leases are renewed meanwhile
        by `_keep_leases`."""
        done = threading.Event()
        threading.Thread(target=self._keep_leases, args=(done,), name=f"queue-{self.spec.name}-leases",
                         daemon=True).start()
        try:
            self._poll()
        finally:
            with self._changed:
                done.set()
                self._changed.notify_all()

    def _poll(self) -> None:
        delay = 0.0
        created = False
        while True:
            running = self._running()
            if self.stopping.is_set() and not running:
                if self._visible is not None:
                    self._visible.close()
                return
            if self.stopping.is_set() or running > self.options.new_batch_threshold:
                with self._changed:
                    self._changed.wait(IDLE_CHECK)
                continue
            try:
                if not created:
                    ensure_queue(self.client)
                    created = True
                messages = [] if self._visible is not None and self._visible() is False else list(
                    self.client.receive_messages(messages_per_page=self.options.batch_size,
                                                 max_messages=self.options.batch_size,
                                                 visibility_timeout=self.lease_seconds, read_timeout=RECEIVE_TIMEOUT))
            except AzureError as error:
                log.warning("queue %s: polling failed (%s); retrying", self.queue_name, type(error).__name__)
                messages = []
            for message in messages:
                self._start(message)
            delay = 0.0 if messages else min(max(delay * 2, MIN_POLL_DELAY), self.options.max_polling_interval)
            self.stopping.wait(delay)

    def _keep_leases(self, done: threading.Event) -> None:
        """Renew leases at half-time on a thread of their own, as the Functions host does on a timer: renewed between
        polls, a lease lapsed whenever a poll waited on storage longer than half of it (a loaded machine), and the
        message was received again, each time one more dequeue toward the poison queue."""
        while True:
            try:
                self._renew_due_leases()
            except Exception:  # noqa: BLE001  (a renewal thread that died would let every later lease lapse unseen)
                log.exception("queue %s: renewing leases failed; trying again", self.queue_name)
            with self._changed:
                if done.is_set():
                    return
                due = self._until_renewal()  # no lease: sleep until `_start` adds one or the listener stops
                self._changed.wait(None if due == float("inf") else max(due, 0.05))

    def _running(self) -> int:
        with self._changed:
            return len(self._leases)

    def _until_renewal(self) -> float:
        with self._changed:
            due = min((lease.renew_at for lease in self._leases.values()), default=float("inf"))
        return max(0.0, due - time.monotonic())

    def _start(self, message: QueueMessage) -> None:
        lease = _Lease(message.id, message.pop_receipt, time.monotonic() + self.lease_seconds / 2)
        with self._changed:
            self._leases[message.id] = lease
            self._changed.notify_all()
        threading.Thread(target=self._process, args=(message, lease), name=f"{self.spec.name}-{message.id}",
                         daemon=True).start()

    def _process(self, message: QueueMessage, lease: _Lease) -> None:
        try:
            body = self._decode(message.content or "")
            if message.dequeue_count > self.options.max_dequeue_count:
                self._settle(message, lease, "poison", f"was dequeued {message.dequeue_count} times already")
            elif body is None:
                self._settle(message, lease, "poison", "is not base64 (host.json messageEncoding is base64: send with "
                             "TextBase64EncodePolicy, or set messageEncoding to none on both ends)")
            elif self._invoke(message, body):
                self._settle(message, lease, "delete")
            elif message.dequeue_count >= self.options.max_dequeue_count:
                self._settle(message, lease, "poison", f"reached maxDequeueCount {self.options.max_dequeue_count}")
            else:
                self._settle(message, lease, "retry")
        finally:
            with self._changed:
                del self._leases[message.id]
                self._changed.notify_all()

    def _decode(self, content: str) -> bytes | None:
        if self.options.message_encoding == "none":
            return content.encode("utf-8")
        try:
            return base64.b64decode(content, validate=True)
        except binascii.Error:
            return None

    def _invoke(self, message: QueueMessage, body: bytes) -> bool:
        trigger_value = TriggerMessage(
            id=message.id, body=body, dequeue_count=message.dequeue_count, insertion_time=message.inserted_on,
            expiration_time=message.expires_on, time_next_visible=message.next_visible_on,
            pop_receipt=message.pop_receipt)
        try:
            with self.invoker.invocation(self.spec, "queue", message_id=message.id,
                                         dequeue_count=message.dequeue_count):
                self.invoker.run(self.spec, trigger_value)
        except Exception:  # noqa: BLE001  (logged by the invoker; the message's fate is decided by the caller)
            return False
        return True

    def _settle(self, message: QueueMessage, lease: _Lease, action: str, reason: str = "") -> None:
        """Delete, retry later or poison a message, under its lease lock so a renewal cannot interleave."""
        with lease.lock:
            lease.settled = True
            try:
                if action == "poison":
                    log.warning("queue %s: message %s %s: moving it to %s%s", self.queue_name, message.id, reason,
                                self.queue_name, POISON_SUFFIX)
                    ensure_queue(self.poison)
                    self.poison.send_message(message.content)
                if action == "retry":
                    self.client.update_message(message.id, lease.pop_receipt,
                                               visibility_timeout=int(self.options.visibility_timeout))
                else:
                    self.client.delete_message(message.id, lease.pop_receipt)
            except AzureError as error:
                log.warning("queue %s: message %s: %s failed (%s); it will be delivered again when its lease ends",
                            self.queue_name, message.id, action, type(error).__name__)

    def _renew_due_leases(self) -> None:
        now = time.monotonic()
        with self._changed:
            due = [lease for lease in self._leases.values() if lease.renew_at <= now]
        for lease in due:
            with lease.lock:
                if lease.settled:
                    continue
                try:
                    renewed = self.client.update_message(lease.message_id, lease.pop_receipt,
                                                         visibility_timeout=self.lease_seconds)
                    lease.pop_receipt = renewed.pop_receipt
                except AzureError as error:
                    log.warning("queue %s: message %s: lease renewal failed (%s); it may be delivered twice",
                                self.queue_name, lease.message_id, type(error).__name__)
                finally:  # whatever went wrong, the next try is at the next half-time, not at once
                    lease.renew_at = time.monotonic() + self.lease_seconds / 2
