"""Runs a test body in a child Python process: a crash (SIGSEGV) or a hang fails that one test instead of
killing or stalling the whole suite.

    def case_something():          # module-level, no arguments: asserts the documented result
        ...

    def test_something():
        run_isolated(__name__, "case_something")
"""

import os
import signal
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def run_isolated(module, function, timeout=240):
    """Imports `module` in a fresh interpreter (from the repository root) and calls its `function`; fails
    the calling test when the child crashes, runs past `timeout` seconds, or exits non-zero."""
    code = f"import importlib; importlib.import_module({module!r}).{function}()"
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    try:
        proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{module}.{function} hung: no result after {timeout} s")
    output = (proc.stdout + proc.stderr)[-6000:]
    if proc.returncode < 0:
        pytest.fail(f"{module}.{function} crashed with {signal.Signals(-proc.returncode).name}:\n{output}")
    assert proc.returncode == 0, f"{module}.{function} failed (exit {proc.returncode}):\n{output}"
