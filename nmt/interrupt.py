"""Stopping a long run between two steps: Ctrl-C's SIGINT or a scheduler's SIGTERM is noted, not
raised, so the loop can finish the step under way and save it before it exits. And SIGTERM raised
as Ctrl-C is, so every command cleans up after it as after Ctrl-C."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from dataclasses import dataclass


@dataclass
class StopRequest:
    signum: int | None = None  # the signal that asked, once one has


@contextlib.contextmanager
def stop_requests(*signums: int) -> Iterator[StopRequest]:
    """Notes the first of ``signums`` that comes while the block runs, instead of a
    KeyboardInterrupt or an exit wherever the step happened to be (half an optimizer update, say).
    Every handler from before comes back at once, so a second Ctrl-C acts as usual (stops at once),
    but SIGTERM's: a repeated SIGTERM is the same request, as it comes twice when a process group
    is signalled under make (``timeout make …``, a scheduler's kill of the job), GNU make passing
    its own on to its children, and a scheduler that means it follows with SIGKILL. Outside the
    main thread nothing changes, nor for a signal ignored (SIGINT in a background job) or handled
    outside Python."""
    request = StopRequest()
    before = {}
    if threading.current_thread() is threading.main_thread():
        before = {s: h for s in signums if (h := signal.getsignal(s)) not in (None, signal.SIG_IGN)}

    def restore() -> None:
        for signum, handler in before.items():
            signal.signal(signum, handler)

    def note(signum, frame) -> None:
        request.signum = request.signum or signum
        for other, handler in before.items():
            if other != signal.SIGTERM:
                signal.signal(other, handler)

    for signum in before:
        signal.signal(signum, note)
    try:
        yield request
    finally:
        restore()


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised as Ctrl-C's KeyboardInterrupt: whatever handles Ctrl-C handles it too."""


@contextlib.contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """While the block runs, SIGTERM (``timeout``, a scheduler, ``kill``) raises ``Terminated``
    where it comes, instead of ending the process there: that left an atomic write's temporary
    file behind and said nothing. Only in the main thread and where SIGTERM would end the process
    (not ignored, not handled by someone else); the default comes back after the block."""
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGTERM) != signal.SIG_DFL:
        yield
        return

    def terminated(signum, frame) -> None:
        raise Terminated

    signal.signal(signal.SIGTERM, terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
