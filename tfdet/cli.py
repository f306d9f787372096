"""What the absl CLIs in bin/ share: one error handler. Each script ends with

    if __name__ == "__main__":
        cli.run(main, config_flag=_CONFIG)        # or cli.run(main) without a --config flag

and every failure becomes one line `<script>: error: <what is wrong and what to do>` on stderr, with
exit status 2 for a usage error (a bad flag or --config, `app.UsageError`) and 1 for a runtime error;
`--debug` shows the traceback instead. Messages come from the exceptions: raise them with text that
names the input at fault and the fix (ValueError for a bad value, FileNotFoundError / OSError for files,
app.UsageError for flag combinations). An exception may carry `exit_status` (e.g. 130 / 143 for a
training run stopped by SIGINT / SIGTERM after saving a checkpoint).
"""

import os
import sys

from absl import app, flags

USAGE, RUNTIME = 2, 1


def fail(prog, message, status):
    print(f"{prog}: error: {message}", file=sys.stderr, flush=True)
    sys.exit(status)


def config_flags_parser(config_flag, prog):
    """An `app.run(..., flags_parser=...)` parser that reports a bad flag or --config (missing file, error
    in the file, unknown --config.x.y override) as one line `prog: error: ...` and exit status 2.
    `config_flag` may be None (a script without --config)."""

    def parse(argv):
        overrides = [a.split("=")[0] for a in argv[1:] if a.startswith("--config.")]
        try:
            rest = flags.FLAGS(argv)
            if config_flag is not None and config_flag.value is not None:
                config_flag.value.to_dict()  # config_flags defers a load failure to the first use
        except (KeyError, AttributeError) as err:
            fail(prog, f"unknown config field {err} in the overrides {overrides}: every --config.x.y must name a "
                 "field of the config file.", USAGE)
        except flags.Error as err:
            lines = [line.strip() for line in str(err).splitlines() if line.strip()]
            if len(lines) > 2:  # a traceback of the config file: its first and last lines say it
                lines = [lines[0], lines[-1]]
            fail(prog, " ".join(lines) + " (pass --helpshort to see the flags)", USAGE)
        except (OSError, ImportError, SyntaxError, ValueError, TypeError) as err:
            fail(prog, f"cannot load the --config file: {' '.join(str(err).split())}", USAGE)
        return rest

    return parse


def one_line(err):
    """The first line of an exception's message (TensorFlow appends graph context on later lines)."""
    if isinstance(err, OSError) and err.filename is not None and err.strerror:
        return f"{err.strerror}: {err.filename}"
    lines = [line.strip() for line in str(getattr(err, "message", None) or err).splitlines() if line.strip()]
    if _is_tf_error(err):  # "Graph execution error: Detected at node ... File ...", then the message, then [[node]]
        files = [i for i, line in enumerate(lines) if line.startswith('File "')]
        lines = [line for line in lines[files[-1] + 1 if files else 0:] if not line.startswith("[[")] or lines
    return lines[0] if lines else type(err).__name__


def _is_tf_error(err):
    tf = sys.modules.get("tensorflow")
    return tf is not None and isinstance(err, tf.errors.OpError)


def describe(err):
    """(exit status, one-line message) for an exception that ended a CLI."""
    if isinstance(err, app.UsageError):
        return USAGE, one_line(err)
    if isinstance(err, KeyboardInterrupt):
        return 130, "interrupted (Ctrl-C)."
    status = getattr(err, "exit_status", None)
    if isinstance(status, int):
        return status, one_line(err)
    if isinstance(err, (OSError, ValueError, RuntimeError, FloatingPointError, MemoryError)) or _is_tf_error(err):
        return RUNTIME, one_line(err)
    # Anything else (KeyError, TypeError, ...) is not written for people: say so and how to see more.
    return RUNTIME, (f"{type(err).__name__}: {one_line(err)} (unexpected; rerun with --debug to see where it "
                     "happened, and please report it)")


def run(main, config_flag=None, prog=None, argv=None):
    """absl `app.run(main)` with the shared error handling (see the module docstring); `argv` defaults
    to sys.argv."""
    prog = prog or os.path.basename(sys.argv[0])
    if "debug" not in flags.FLAGS:
        flags.DEFINE_bool("debug", False, "show the Python traceback of an error instead of one line")

    def guarded(argv):
        try:
            return main(argv)
        except SystemExit:
            raise
        except BaseException as err:  # noqa: B902 (Ctrl-C too: one line, no traceback)
            if flags.FLAGS.debug:
                raise
            status, message = describe(err)
            fail(prog, message, status)

    app.run(guarded, argv=argv, flags_parser=config_flags_parser(config_flag, prog))
