"""tfdet.cli.run, the error handler of every bin/ script: one line `<script>: error: ...` on stderr, exit
status 2 for usage errors and 1 for runtime errors (or the exception's own exit_status), no traceback
unless --debug."""

import os
import subprocess
import sys

import pytest
import tensorflow as tf
from absl import app, flags

from tfdet import cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
flags.DEFINE_string("cli_test_raise", "", "what the test CLI's main raises")


class Stopped(Exception):
    exit_status = 143


ERRORS = {"usage": app.UsageError("--x and --y do not go together; give one."),
          "value": ValueError("config.train.batch_size must be >= 1, got 0."),
          "missing": FileNotFoundError(2, "No such file or directory", "/no/such.json"),
          "key": KeyError("id"), "interrupt": KeyboardInterrupt(),
          "stopped": Stopped("stopped by SIGTERM at step 7; saved ckpt-7.\nsecond line"),
          "oom": tf.errors.ResourceExhaustedError(None, None, "OOM when allocating tensor"),
          "graph": tf.errors.InvalidArgumentError(
              None, None, 'Graph execution error:\n\nDetected at node X defined at (most recent call last):\n  File '
              '"a.py", line 1, in <module>\n\nindices[0] = 4 is not in [0, 3)\n\t [[{{node GatherV2}}]] [Op:f_1]')}


def main(argv):
    del argv
    kind = flags.FLAGS.cli_test_raise
    if kind == "exit":
        sys.exit(3)
    if kind:
        raise ERRORS[kind]
    print("done")


def run(capsys, *args):
    """(exit status, stdout, stderr) of cli.run(main) with these flags, in this process."""
    flags.FLAGS.unparse_flags()
    with pytest.raises(SystemExit) as exit_info:
        cli.run(main, prog="tool.py", argv=["tool.py", *args])
    out = capsys.readouterr()
    return exit_info.value.code or 0, out.out, out.err


@pytest.mark.parametrize("args,status,message", [
    (["--cli_test_raise=usage"], 2, "tool.py: error: --x and --y do not go together; give one."),
    (["--cli_test_raise=value"], 1, "tool.py: error: config.train.batch_size must be >= 1, got 0."),
    (["--cli_test_raise=missing"], 1, "tool.py: error: No such file or directory: /no/such.json"),
    (["--cli_test_raise=key"], 1, "tool.py: error: KeyError: 'id' (unexpected; rerun with --debug to see where it "
                                  "happened, and please report it)"),
    (["--cli_test_raise=interrupt"], 130, "tool.py: error: interrupted (Ctrl-C)."),
    (["--cli_test_raise=stopped"], 143, "tool.py: error: stopped by SIGTERM at step 7; saved ckpt-7."),
    (["--cli_test_raise=oom"], 1, "tool.py: error: OOM when allocating tensor"),
    (["--cli_test_raise=graph"], 1, "tool.py: error: indices[0] = 4 is not in [0, 3)"),
    (["--no_such_flag"], 2, "tool.py: error: Unknown command line flag 'no_such_flag' (pass --helpshort to see the "
                            "flags)"),
    (["--cli_test_raise"], 2, "tool.py: error: Missing value for flag --cli_test_raise (pass --helpshort to see the "
                              "flags)"),
])
def test_one_line_and_status(capsys, args, status, message):
    code, _, err = run(capsys, *args)
    assert (code, err.strip()) == (status, message)


def test_success_and_sys_exit_pass_through(capsys):
    assert run(capsys) == (0, "done\n", "")
    assert run(capsys, "--cli_test_raise=exit")[0] == 3


def test_debug_shows_the_traceback():
    script = ("import sys; from tfdet import cli\n"
              "def main(argv): raise ValueError('config.train.batch_size must be >= 1, got 0.')\n"
              "cli.run(main)\n")
    env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="3")
    out = subprocess.run([sys.executable, "-c", script, "--debug"], capture_output=True, text=True, env=env,
                         timeout=300)
    assert out.returncode == 1
    assert "Traceback (most recent call last)" in out.stderr
    assert "ValueError: config.train.batch_size must be >= 1, got 0." in out.stderr
