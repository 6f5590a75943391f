"""Restart back-off: doubling from 0.1 s, capped at 5 s, reset after a stable run."""

from mi_server.runtime.backoff import Backoff


def test_quick_deaths_double_the_delay_up_to_the_cap():
    b = Backoff()
    delays = [b.next_delay(uptime=0.0) for _ in range(10)]
    assert delays[:7] == [0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 5.0]
    assert set(delays[6:]) == {5.0}


def test_a_child_that_stayed_up_restarts_after_the_initial_delay_again():
    b = Backoff(stable_after=10.0)
    for _ in range(5):
        b.next_delay(uptime=0.5)
    assert b.next_delay(uptime=10.0) == 0.1
    assert b.next_delay(uptime=0.1) == 0.2
