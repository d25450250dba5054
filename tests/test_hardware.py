"""Device and thread choice."""

import os

import pytest
import torch

from nmt import hardware
from nmt.errors import NmtError


def test_thread_choice_leaves_busy_cores_alone(monkeypatch):
    monkeypatch.setattr(hardware, "_usable_cores", lambda: 2)
    assert hardware.choose_threads(0, busy=0.05) == 2
    assert hardware.choose_threads(0, busy=1.0) == 1
    assert hardware.choose_threads(0, busy=2.0) == 1  # never fewer than one
    assert hardware.choose_threads(3, busy=2.0) == 3  # the user's choice wins


def test_busy_cores_is_a_fraction_of_the_machine():
    busy = hardware.busy_cores(0.05)
    assert 0.0 <= busy <= (os.cpu_count() or 1) + 1e-6


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without CUDA")
def test_asking_for_cuda_without_it_is_a_clear_error():
    with pytest.raises(NmtError, match="CUDA is not available"):
        hardware.pick_device("cuda")
    assert hardware.pick_device(None).type == "cpu"
    assert hardware.pick_device("cpu").type == "cpu"
