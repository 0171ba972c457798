"""Ctrl-C and SIGTERM stop a run cleanly, DataLoader workers or not.

The default SIGINT handling raises ``KeyboardInterrupt`` wherever the main process happens to be.
When that is inside an at-fork callback (the DataLoader forks its workers at the start of every
epoch, right after a save), Python prints "Exception ignored" and the run goes on to the end
with exit 0. Here the handler records the signal before raising, and the training loops call
:func:`check_stop` between batches, so a swallowed interrupt still stops the run at the next
batch. Worker processes (forked with the handler) ignore the signal: the main process stops
and shuts them down. The last complete ``last.tar`` stays on disk for ``--resume``.
"""

import os
import signal
from contextlib import contextmanager

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
_state = {"owner": None, "signal": None}


class Interrupted(KeyboardInterrupt):
    """Raised in the main process by SIGINT/SIGTERM (a ``KeyboardInterrupt``, so nothing catches it by accident)."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def exit_status(self) -> int:
        return 128 + self.signum  # the shell's convention: 130 for SIGINT, 143 for SIGTERM


def _handler(signum, frame):
    if os.getpid() != _state["owner"]:
        return  # a forked DataLoader worker: the main process decides and shuts it down
    first = _state["signal"] is None
    _state["signal"] = signum
    if first:
        raise Interrupted(signum)
    signal.signal(signum, signal.SIG_DFL)  # a second Ctrl-C while stopping: stop at once
    os.kill(os.getpid(), signum)


def check_stop() -> None:
    """Raise :class:`Interrupted` if a stop signal arrived (even if its first exception was swallowed)."""
    if _state["signal"] is not None and os.getpid() == _state["owner"]:
        raise Interrupted(_state["signal"])


@contextmanager
def stop_on_signals():
    """Install the handlers for the body (main thread only) and restore the previous ones after."""
    previous = {signum: signal.getsignal(signum) for signum in STOP_SIGNALS}
    _state.update(owner=os.getpid(), signal=None)
    for signum in STOP_SIGNALS:
        signal.signal(signum, _handler)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        _state.update(owner=None, signal=None)
