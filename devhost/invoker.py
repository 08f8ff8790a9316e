"""Calling user functions: the worker's thread limit, the `context` argument, and one log line per invocation."""
from __future__ import annotations

import asyncio
import inspect
import logging
import os
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import azure.functions as func

from devhost.app_index import FunctionSpec

log = logging.getLogger("devhost.invocations")


def worker_thread_count() -> int:
    """Threads the Python worker gives synchronous functions: PYTHON_THREADPOOL_THREAD_COUNT, else Python's default.

    In Azure this caps concurrency across all functions of one worker, whatever batchSize says, so devhost
    applies the same cap.
    """
    configured = os.environ.get("PYTHON_THREADPOOL_THREAD_COUNT", "")
    return int(configured) if configured.isdigit() and int(configured) > 0 else min(32, (os.cpu_count() or 1) + 4)


class InvocationContext(func.Context):
    """The `context` argument; devhost has no distributed tracing or retry policy, so those are None."""

    def __init__(self, function_name: str, function_directory: str) -> None:
        self._invocation_id = str(uuid.uuid4())
        self._function_name = function_name
        self._function_directory = function_directory
        self._thread_local_storage = threading.local()

    @property
    def invocation_id(self) -> str:
        return self._invocation_id

    @property
    def thread_local_storage(self) -> threading.local:
        return self._thread_local_storage

    @property
    def function_name(self) -> str:
        return self._function_name

    @property
    def function_directory(self) -> str:
        return self._function_directory

    @property
    def trace_context(self) -> None:
        return None

    @property
    def retry_context(self) -> None:
        return None


class Invoker:
    """Runs functions for every trigger, so the thread cap, logging and shutdown drain are in one place."""

    def __init__(self, function_directory: str, threads: int) -> None:
        self._function_directory = function_directory
        self._slots = threading.BoundedSemaphore(threads)
        self._changed = threading.Condition()
        self._running = 0

    def run(self, spec: FunctionSpec, value: Any) -> Any:
        """Call the function with its trigger value (and context); async functions run to completion here."""
        arguments: dict[str, Any] = {spec.argument: value}
        if spec.wants_context:
            arguments["context"] = InvocationContext(spec.name, self._function_directory)
        if inspect.iscoroutinefunction(spec.handler):
            return asyncio.run(spec.handler(**arguments))
        with self._slots:
            return spec.handler(**arguments)

    @contextmanager
    def invocation(self, spec: FunctionSpec, trigger: str, **details: object) -> Iterator[dict[str, object]]:
        """Track one invocation; the yielded dict takes details known only at the end (an HTTP status).

        The log line names the function, trigger, outcome and duration, never a message body or URL, since
        those can hold personal data. A failure is logged with its traceback and re-raised to the trigger.
        """
        started = time.monotonic()
        with self._changed:
            self._running += 1
        outcome = "succeeded"
        try:
            yield details
        except Exception as error:
            outcome = f"failed error={type(error).__name__}"
            log.exception("function %s raised", spec.name)
            raise
        finally:
            extra = "".join(f" {key}={value}" for key, value in details.items())
            log.info("function=%s trigger=%s outcome=%s duration_ms=%d%s", spec.name, trigger, outcome,
                     (time.monotonic() - started) * 1000, extra)
            with self._changed:
                self._running -= 1
                self._changed.notify_all()

    def wait_idle(self, timeout: float) -> int:
        """Wait up to TIMEOUT seconds for running invocations to end; return how many are still running."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while self._running and (remaining := deadline - time.monotonic()) > 0:
                self._changed.wait(remaining)
            return self._running
