"""SIGTERM (pod eviction, preemption, ``kubectl delete``, ``docker stop``): stop cleanly, in time.

Lightning notices SIGTERM itself and stops every process of the run after the current batch. This
module adds what a batch job needs around that: a deadline (``device_setup.stop_grace_period``)
after which the process exits anyway, so the pod never reaches Kubernetes' SIGKILL with a write in
flight; a stop before training has started; and an exit status, 143 (128 + SIGTERM), that says
"interrupted, run me again" to a ``restartPolicy`` rather than success.

Nothing but the epoch in progress is lost: ``last.ckpt`` is rewritten at every validation, and a
run stopped before its first validation saves one on the way out.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from types import FrameType
from typing import Any

log = logging.getLogger("odeon")

#: 128 + SIGTERM, as a shell reports a process killed by it: Kubeflow treats 128-255 as retryable.
EXIT_TERMINATED = 143


class Terminated(BaseException):
    """The job was asked to stop (SIGTERM) and did; the message says where it can resume from.

    A BaseException, as KeyboardInterrupt is: raised by the signal handler wherever start-up happens to be, it
    must not be swallowed by an ``except Exception`` there (logging's own, when the signal lands while a line is
    being written: start-up went on and the job stopped only at the forced exit, 20 s later)."""


class GracefulStop:
    """Arms the forced exit at SIGTERM, and stops at once when nothing is being trained yet."""

    def __init__(self, grace_period: float) -> None:
        self.grace_period = grace_period
        self.received_at: float | None = None
        # Once True, a loop stops after its current batch (Lightning's, for training; PredictionStop, for predict)
        # and this handler only times it: raised in the middle of a batch, Terminated cut the hand-over of a
        # DataLoader worker's tensor, and the worker printed a ConnectionResetError traceback.
        self.loop_running = False
        self._previous: Any = None

    def install(self) -> GracefulStop:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._handle)
            log.debug("SIGTERM: handler installed (grace period %g s)", self.grace_period)
        return self

    def restore(self) -> None:
        """Put back the handler found at :meth:`install` (a deadline already armed still runs)."""
        if self._previous is not None and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self._previous)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.received_at is not None:
            return
        self.received_at = time.monotonic()
        log.warning("SIGTERM: stopping after the current batch (forced exit in %g s)", self.grace_period)
        timer = threading.Timer(self.grace_period, self._force_exit)
        timer.daemon = True
        timer.start()
        if not self.loop_running:
            raise Terminated("stopped by SIGTERM before training started; nothing was trained")

    def _force_exit(self) -> None:
        log.error(
            "odeon: did not stop within %g s of SIGTERM (device_setup.stop_grace_period): exiting now; "
            "the last checkpoint written is kept",
            self.grace_period,
        )
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        os._exit(EXIT_TERMINATED)


@contextlib.contextmanager
def handler_kept() -> Iterator[None]:
    """The SIGTERM handler found on entry is the one on exit: a command run inside a longer process (a notebook, a
    test, ``cli.main`` called twice) leaves it as it found it. A forced exit already armed still runs."""
    in_main_thread = threading.current_thread() is threading.main_thread()
    handler = signal.getsignal(signal.SIGTERM) if in_main_thread else None
    try:
        yield
    finally:
        if handler is not None:
            signal.signal(signal.SIGTERM, handler)


def is_sigterm_stop(error: BaseException) -> bool:
    """Whether Lightning stopped the loops because of SIGTERM."""
    from pytorch_lightning.utilities.exceptions import SIGTERMException

    return isinstance(error, SIGTERMException)
