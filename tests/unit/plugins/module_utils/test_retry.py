# -*- coding: utf-8 -*-
"""common.retry: the one retry-with-deadline loop. A scripted clock makes the deadline exact (sleeping advances
it); one test runs on the real clock."""
from __future__ import annotations

import time

import pytest

from ansible_collections.fediflow.dr.plugins.module_utils import common


class Clock:
    def __init__(self):
        self.now, self.slept = 0.0, []

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.slept.append(seconds)
        self.now += seconds


def failing(*errors, answer="done"):
    """A call that raises ``errors`` one by one, then answers; ``calls`` counts it."""
    pending = list(errors)

    def call():
        call.calls += 1
        if pending:
            raise pending.pop(0)
        return answer
    call.calls = 0
    return call


def test_retryable_failures_are_retried_with_growing_waits_until_it_works():
    clock = Clock()
    call = failing(OSError("no answer"), OSError("no answer"))
    done = common.retry(call, attempts=5, retryable=OSError, sleep=clock.sleep, clock=clock)
    assert done.ok and done.get() == "done" and done.attempts == 3 and done.stopped is None and done.error is not None
    assert clock.slept == [0.5, 1.0]


def test_the_attempts_run_out_and_the_last_error_is_returned_and_raised_again():
    clock = Clock()
    errors = [OSError("first"), OSError("second"), OSError("third")]
    done = common.retry(failing(*errors), attempts=3, retryable=OSError, sleep=clock.sleep, clock=clock)
    assert not done.ok and done.stopped == "attempts" and done.attempts == 3 and done.error is errors[2]
    with pytest.raises(OSError, match="third"):
        done.get()
    assert len(clock.slept) == 2  # no wait after the last attempt


def test_no_attempt_starts_and_no_wait_ends_past_the_deadline():
    clock = Clock()
    call = failing(*[TimeoutError("slow %d" % i) for i in range(50)])
    done = common.retry(call, deadline=3.5, retryable=TimeoutError, sleep=clock.sleep, clock=clock)
    # calls at 0, 0.5, 1.5; the next wait (2 s) would end at 3.5: not begun
    assert not done.ok and done.stopped == "deadline" and call.calls == 3 and str(done.error) == "slow 2"
    assert clock.slept == [0.5, 1.0] and clock.now <= 3.5


def test_an_error_that_is_not_retryable_is_not_retried():
    clock = Clock()
    call = failing(PermissionError("denied"), answer="never")
    done = common.retry(call, attempts=5, deadline=60, retryable=(TimeoutError, ConnectionError),
                        sleep=clock.sleep, clock=clock)
    assert not done.ok and done.stopped == "final" and call.calls == 1 and clock.slept == []
    assert isinstance(done.error, PermissionError)


def test_a_predicate_decides_and_the_backoff_reads_the_error():
    class Answer(Exception):
        def __init__(self, status, retry_after):
            super().__init__(status)
            self.status, self.retry_after = status, retry_after

    clock = Clock()
    call = failing(Answer(429, 3.0), Answer(503, None), Answer(404, None))
    done = common.retry(call, deadline=100, retryable=lambda exc: exc.status in (429, 503), sleep=clock.sleep, clock=clock,
                        backoff=lambda n, exc: exc.retry_after if exc.retry_after is not None else common.backoff_delay(n))
    assert done.stopped == "final" and done.error.status == 404 and call.calls == 3
    assert clock.slept == [3.0, 1.0]


def test_backoff_delay_doubles_up_to_the_cap():
    assert [common.backoff_delay(n, base=0.5, cap=3.0) for n in range(1, 6)] == [0.5, 1.0, 2.0, 3.0, 3.0]


def test_a_limit_is_required():
    with pytest.raises(ValueError, match="attempts or a deadline"):
        common.retry(failing())


def test_the_real_clock_deadline_is_kept():
    t0 = time.monotonic()
    call = failing(*[ConnectionRefusedError("refused")] * 100)
    done = common.retry(call, deadline=t0 + 0.4, retryable=ConnectionError, backoff=lambda n, exc: 0.05)
    spent = time.monotonic() - t0
    assert done.stopped == "deadline" and call.calls >= 2 and spent < 0.4 + 0.2
