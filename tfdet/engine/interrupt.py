"""Stopping training on SIGINT (Ctrl-C) or SIGTERM (what cluster schedulers send before preempting a job)
with a checkpoint of the last completed step.

`stop_requests()` replaces the handlers while training runs: the first signal is only recorded (the step
in flight finishes; `callbacks.SaveOnStopRequest` then saves and raises TrainingInterrupted), a second
one acts as usual (Ctrl-C raises KeyboardInterrupt, SIGTERM ends the process) for a run that must stop
now. The previous handlers come back on exit. A Python signal handler runs in the main thread between
two Python statements, so a process blocked inside one TensorFlow call (a hung input pipeline) reacts
only to the second signal or to SIGKILL.
"""

import contextlib
import signal
import threading

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class TrainingInterrupted(Exception):
    """Training stopped on a signal after saving a checkpoint. `exit_status` is the shell's 128 + signal."""

    def __init__(self, message, signum):
        super().__init__(message)
        self.signum = signum
        self.exit_status = 128 + int(signum)


class StopRequests:
    """The signal received (`signum`, None until one arrives)."""

    def __init__(self):
        self.signum = None

    @property
    def name(self):
        return signal.Signals(self.signum).name if self.signum else None


@contextlib.contextmanager
def stop_requests(enabled=True, log=print):
    """Yields a StopRequests that the first SIGINT / SIGTERM sets (see the module docstring). Disabled (or
    outside the main thread, where Python cannot install handlers) it yields one that never gets set."""
    requests = StopRequests()
    if not enabled or threading.current_thread() is not threading.main_thread():
        yield requests
        return
    previous = {s: signal.getsignal(s) for s in SIGNALS}

    def handle(signum, frame):
        del frame
        if requests.signum is None:
            requests.signum = signum
            log(f"tfdet.train: {signal.Signals(signum).name} received: saving a checkpoint after the current "
                "step, then stopping (send it again to stop at once without saving).", flush=True)
        for s in SIGNALS:  # the next signal acts as it would without us
            signal.signal(s, previous[s] if previous[s] is not None else signal.SIG_DFL)

    for s in SIGNALS:
        signal.signal(s, handle)
    try:
        yield requests
    finally:
        for s in SIGNALS:
            signal.signal(s, previous[s] if previous[s] is not None else signal.SIG_DFL)
