"""Work started early on a thread of its own, its result taken when it is needed: the round trips a run makes before
it can plan (or answer) overlap instead of following one another."""
from __future__ import annotations

import contextvars
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

_T = TypeVar("_T")


def ahead(work: Callable[[], _T]) -> Callable[[], _T]:
    """`work` started now on a thread of its own, in the caller's context (its log fields): the returned callable
    gives its result the first time (raising what it raised), and does the work again when asked once more."""
    pool = ThreadPoolExecutor(max_workers=1)
    started = [pool.submit(contextvars.copy_context().run, work)]
    pool.shutdown(wait=False)  # its thread ends with the work
    return lambda: started.pop().result() if started else work()
