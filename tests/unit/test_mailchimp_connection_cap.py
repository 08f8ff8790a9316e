"""The per-account cap holds across threads and clients, each client keeping its own limit."""
import threading
import time

import pytest

from shared.mailchimp import RetryPolicy
from shared.mailchimp.connection_cap import ConnectionCap, cap_for


def run_through(cap: ConnectionCap, limits: list[int]) -> int:
    """Threads hold a slot briefly; returns the most slots ever held at once."""
    lock, state = threading.Lock(), {"now": 0, "peak": 0}

    def work(limit: int) -> None:
        with cap.slot(limit):
            with lock:
                state["now"] += 1
                state["peak"] = max(state["peak"], state["now"])
            time.sleep(0.01)
            with lock:
                state["now"] -= 1

    threads = [threading.Thread(target=work, args=(limit,)) for limit in limits]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return state["peak"]


def test_thirty_threads_never_exceed_the_limit():
    assert run_through(ConnectionCap(), [3] * 30) == 3


def test_smaller_limit_of_another_client_is_respected_without_lowering_the_bigger_one():
    cap = ConnectionCap()
    assert run_through(cap, [1] * 10) == 1
    assert run_through(cap, [5] * 20) == 5


def test_one_cap_per_account():
    assert cap_for("us6:a") is cap_for("us6:a")
    assert cap_for("us6:a") is not cap_for("us6:b")


@pytest.mark.parametrize("bad", [dict(attempts=0), dict(max_seconds=0), dict(base_backoff=2, max_backoff=1)])
def test_retry_policy_refuses_nonsense(bad):
    with pytest.raises(ValueError, match="RetryPolicy"):
        RetryPolicy(**bad)
