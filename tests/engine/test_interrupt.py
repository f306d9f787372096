"""tfdet.engine.interrupt.stop_requests: the first SIGINT / SIGTERM is recorded (training saves and stops
after the step), the second acts as it would without the scope, and the previous handlers come back."""

import os
import signal

import pytest

from tfdet.engine import interrupt


@pytest.fixture
def outer_handlers():
    """Records the signals that reach the handlers installed before the scope."""
    seen = []
    previous = {s: signal.signal(s, lambda signum, frame: seen.append(signum)) for s in interrupt.SIGNALS}
    yield seen
    for s, handler in previous.items():
        signal.signal(s, handler)


@pytest.mark.parametrize("signum", interrupt.SIGNALS)
def test_first_signal_is_recorded_second_passes_through(outer_handlers, signum):
    lines = []
    with interrupt.stop_requests(log=lambda *a, **k: lines.append(a[0])) as requests:
        assert requests.signum is None
        os.kill(os.getpid(), signum)
        assert requests.signum == signum and requests.name == signal.Signals(signum).name
        assert outer_handlers == []  # the first one is ours
        assert len(lines) == 1 and "saving a checkpoint after the current step" in lines[0]
        os.kill(os.getpid(), signum)
        assert outer_handlers == [signum]  # the second one acts as without the scope
        assert requests.signum == signum
    os.kill(os.getpid(), signum)
    assert outer_handlers == [signum, signum]  # and after the scope too


def test_disabled_installs_nothing(outer_handlers):
    with interrupt.stop_requests(enabled=False) as requests:
        os.kill(os.getpid(), signal.SIGTERM)
    assert requests.signum is None and outer_handlers == [signal.SIGTERM]


def test_interrupted_exit_status_is_the_shells():
    assert interrupt.TrainingInterrupted("stopped", signal.SIGTERM).exit_status == 143
    assert interrupt.TrainingInterrupted("stopped", signal.SIGINT).exit_status == 130
