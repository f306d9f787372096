"""What the absl CLIs in bin/ share: turning ml_collections config_flags' deferred errors into one line."""

import sys

from absl import flags


def config_flags_parser(config_flag, prog):
    """An `app.run(..., flags_parser=...)` parser that reports a bad --config (missing file, error in the
    file, unknown --config.x.y override) as one line `prog: error: ...` and exit status 2."""

    def fail(message):
        print(f"{prog}: error: {message}", file=sys.stderr, flush=True)
        sys.exit(2)

    def parse(argv):
        overrides = [a.split("=")[0] for a in argv[1:] if a.startswith("--config.")]
        try:
            rest = flags.FLAGS(argv)
            if config_flag.value is not None:
                config_flag.value.to_dict()  # config_flags defers a load failure to the first use
        except (KeyError, AttributeError) as err:
            fail(f"unknown config field {err} in the overrides {overrides}: every --config.x.y must name a field "
                 "of the config file.")
        except flags.Error as err:
            lines = [line.strip() for line in str(err).splitlines() if line.strip()]
            if len(lines) > 2:  # a traceback of the config file: its first and last lines say it
                lines = [lines[0], lines[-1]]
            fail(" ".join(lines) + "\nPass --helpshort to see the flags.")
        except (OSError, ImportError, SyntaxError, ValueError, TypeError) as err:
            fail(f"cannot load the --config file: {' '.join(str(err).split())}")
        return rest

    return parse
