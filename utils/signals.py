"""Ctrl-C and SIGTERM stop a run cleanly, DataLoader workers or not.

The default SIGINT handling raises ``KeyboardInterrupt`` wherever the main process happens to be.
When that is inside an at-fork callback (the DataLoader forks its workers at the start of every
epoch, right after a save), Python prints "Exception ignored" and the run goes on to the end
with exit 0. Here the handler records the signal before raising, and the training loops call
:func:`check_stop` between batches, so a swallowed interrupt still stops the run at the next
batch. Inside the DataLoader's calls (:func:`utils.engine.progress`) a stop is deferred until the
call returns (:func:`deferred_stop`): an interrupt there could leave a queue lock taken, and the
DataLoader's shutdown then hung on it. Worker processes (forked with the handler) ignore SIGINT:
the main process stops and shuts them down. PyTorch's workers die on a SIGTERM sent to the whole
job (``timeout``, ``kill -- -PGID``, cluster schedulers); a stopping main process does not count
their deaths as errors. A
second signal within a second of the first is the same stop delivered twice (``timeout`` signals
the main process, then the group); a later one stops the process at once. The last complete
``last.tar`` stays on disk for ``--resume``.

A stopped run ends its remaining worker processes itself (:func:`end_children`): a worker forked
with these handlers ignores SIGTERM until PyTorch installs its own, so one still starting when the
stop came outlived ``terminate()``, and multiprocessing's exit hook then waited for it forever.
"""

import multiprocessing
import os
import signal
import threading
import time
from contextlib import contextmanager

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
REPEAT_WINDOW_S = 1.0  # a second signal sooner than this is the same stop delivered twice, not a second Ctrl-C
_state = {"owner": None, "signal": None, "first_at": 0.0, "defer": 0, "sigchld": None}


class Interrupted(KeyboardInterrupt):
    """Raised in the main process by SIGINT/SIGTERM (a ``KeyboardInterrupt``, so nothing catches it by accident)."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def exit_status(self) -> int:
        return 128 + self.signum  # the shell's convention: 130 for SIGINT, 143 for SIGTERM


def _ignore(signum, frame):
    pass


def _handler(signum, frame):
    if os.getpid() != _state["owner"]:
        return  # a forked DataLoader worker: the main process decides and shuts it down
    first = _state["signal"] is None
    if not first and time.monotonic() - _state["first_at"] < REPEAT_WINDOW_S:
        # `timeout` signals the main process and then its whole group, as does `kill PID` followed by
        # `kill -- -PGID`: one stop delivered twice. Counting it as a second Ctrl-C killed the run
        # while it was stopping, without its "stopped by" line.
        return
    _state["signal"] = signum
    if first:
        _state["first_at"] = time.monotonic()
        # `timeout`, `kill -- -PGID` and cluster schedulers send SIGTERM to the whole job: PyTorch's
        # workers die on it, and the DataLoader's SIGCHLD handler then raised "DataLoader worker ...
        # is killed by signal: Terminated" over the clean stop. A stopping run shuts its workers
        # down anyway, so their deaths are no longer errors (restored by stop_on_signals). A Python
        # no-op rather than SIG_DFL, which made a pending SIGCHLD print "ignored due to race condition".
        _state["sigchld"] = signal.signal(signal.SIGCHLD, _ignore)
    if first and _state["defer"]:
        return  # a file is being written: deferred_stop raises once it is complete
    if first:
        raise Interrupted(signum)
    signal.signal(signum, signal.SIG_DFL)  # a second Ctrl-C (a second later or more) while stopping: stop at once
    os.kill(os.getpid(), signum)


def check_stop() -> None:
    """Raise :class:`Interrupted` if a stop signal arrived (even if its first exception was swallowed)."""
    if _state["signal"] is not None and os.getpid() == _state["owner"]:
        raise Interrupted(_state["signal"])


@contextmanager
def deferred_stop():
    """A first stop signal arriving in the body is recorded and raised only once the body has finished.

    For writes that an exception must not cut in half: ``torch.save`` interrupted inside its zip
    writer raises a second, unrelated error on the way out, which turned a clean Ctrl-C into a
    traceback and exit 1. A second signal still stops the process at once.
    """
    if threading.current_thread() is not threading.main_thread():  # signals reach the main thread only
        yield
        return
    _state["defer"] += 1
    try:
        yield
    finally:
        _state["defer"] -= 1
    if not _state["defer"]:
        check_stop()


def end_children(grace_s: float = 2.0) -> None:
    """Terminate the daemonic multiprocessing children still alive (DataLoader workers), then kill
    those alive ``grace_s`` later.

    For a stopping run. The DataLoader sends its workers an end-of-work message and terminates the
    ones it knows of; an interrupt inside its iterator's ``__init__`` skips the message (a worker
    started there loops forever) and leaves a worker forked there unknown to it. At exit,
    multiprocessing terminates its daemonic children and joins them with no timeout, and a worker
    ignores that SIGTERM while it is still starting (it runs :func:`_handler` until PyTorch's worker
    loop installs its own): the run hung after its "stopped by" line. SIGKILL cannot be ignored.
    """
    children = [child for child in multiprocessing.active_children() if child.daemon]
    for child in children:
        child.terminate()
    deadline = time.monotonic() + grace_s
    for child in children:
        child.join(max(0.0, deadline - time.monotonic()))
    for child in children:
        if child.is_alive():
            child.kill()
            child.join()


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
        if _state["sigchld"] is not None:
            signal.signal(signal.SIGCHLD, _state["sigchld"])
        _state.update(owner=None, signal=None, sigchld=None)
