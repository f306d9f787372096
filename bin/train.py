"""Trains a detector: `.venv/bin/python bin/train.py --config=configs/mask_rcnn.py:tiny --workdir=/tmp/run`.

  --config=FILE[:ARG]        a Python file with get_config(arg) -> ml_collections.ConfigDict
  --config.train.base_lr=0.01  override any field (unknown fields are refused)
  --workdir=DIR              checkpoints (DIR/checkpoints, resumed automatically), TensorBoard (DIR/tensorboard)
  --strategy=one_device|mirrored|multi_worker|tpu   (multi_worker reads TF_CONFIG)
  --mixed_precision=float32|mixed_float16|mixed_bfloat16

Errors are one line (--debug: the traceback): exit status 2 for a bad flag or --config, 1 for a bad
config value, unusable data or folders, a NaN loss (the last good checkpoint is kept) or an unreadable
checkpoint. Ctrl-C / SIGTERM save a checkpoint after the current step and exit 130 / 143; rerun the same
command to resume.
"""

import _cpu_kernels  # noqa: F401  (first, before TensorFlow: oneDNN on unless TF_ENABLE_ONEDNN_OPTS is set)
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # configs/, tests/ importable
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow is imported (by tfdet below)

from absl import app, flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from tfdet import cli  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file (path[:arg]).", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Folder for checkpoints and summaries (resumed when present).")
_STRATEGY = flags.DEFINE_enum("strategy", "one_device", ["one_device", "mirrored", "multi_worker", "tpu"],
                              "tf.distribute strategy.")
_PRECISION = flags.DEFINE_enum("mixed_precision", "float32", ["float32", "mixed_float16", "mixed_bfloat16"],
                               "Keras dtype policy (mixed_float16 adds dynamic loss scaling).")
_DEVICES = flags.DEFINE_list("devices", None, "mirrored/one_device: devices to use (default: all local GPUs).")
_TPU = flags.DEFINE_string("tpu", "", "tpu: TPU name or address.")
_VERBOSE = flags.DEFINE_enum("verbose", "1", ["0", "1", "2"],
                             "0 silent, 1 progress bar with ETA, 2 a line every train.log_every steps (log files).")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    from tfdet.engine import strategy, train

    dist = strategy.build_strategy(_STRATEGY.value, devices=_DEVICES.value, tpu=_TPU.value)
    train.train(_CONFIG.value, _WORKDIR.value, strategy=dist, mixed_precision=_PRECISION.value,
                verbose=int(_VERBOSE.value))


if __name__ == "__main__":
    cli.run(main, config_flag=_CONFIG)
