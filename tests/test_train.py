"""Training-loop helpers: thread choice."""

import os

from nmt import train


def test_thread_choice_leaves_busy_cores_alone(monkeypatch):
    monkeypatch.setattr(train, "_usable_cores", lambda: 2)
    assert train.choose_threads(0, busy=0.05) == 2
    assert train.choose_threads(0, busy=1.0) == 1
    assert train.choose_threads(0, busy=2.0) == 1  # never fewer than one
    assert train.choose_threads(3, busy=2.0) == 3  # the user's choice wins


def test_busy_cores_is_a_fraction_of_the_machine():
    busy = train.busy_cores(0.05)
    assert 0.0 <= busy <= (os.cpu_count() or 1) + 1e-6
