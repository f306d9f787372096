"""Checks made before any data is read or any model is built, so that a bad `train` value or a folder
that cannot be written fails at once with one line, not after minutes (or at the first checkpoint).
"""

import math
import numbers
import os
import uuid

# field: (test, what it must be); fields not listed (optimizer, decay_epochs, ...) are checked where used
_RULES = {
    "batch_size": (lambda v: _int(v) and v >= 1, "an integer >= 1"),
    "epochs": (lambda v: _int(v) and v >= 0, "an integer >= 0"),
    "total_steps": (lambda v: _int(v) and v >= 0, "an integer >= 0 (0: epochs x steps_per_epoch)"),
    "steps_per_epoch": (lambda v: _int(v) and v >= 0, "an integer >= 0 (0: images // batch_size)"),
    "warmup_steps": (lambda v: _int(v) and v >= 0, "an integer >= 0"),
    "checkpoint_every": (lambda v: _int(v) and v >= 0, "an integer >= 0 (0: only at the end)"),
    "keep_checkpoints": (lambda v: _int(v) and v >= 1, "an integer >= 1"),
    "log_every": (lambda v: _int(v) and v >= 1, "an integer >= 1"),
    "seed": (lambda v: _int(v) and v >= 0, "an integer >= 0"),
    "base_lr": (lambda v: _real(v) and v > 0, "a number > 0"),
    "momentum": (lambda v: _real(v) and 0 <= v < 1, "a number in [0, 1)"),
    "beta_1": (lambda v: _real(v) and 0 <= v < 1, "a number in [0, 1)"),
    "beta_2": (lambda v: _real(v) and 0 <= v < 1, "a number in [0, 1)"),
    "epsilon": (lambda v: _real(v) and v > 0, "a number > 0"),
    "weight_decay": (lambda v: _real(v) and v >= 0, "a number >= 0"),
    "warmup_ratio": (lambda v: _real(v) and 0 < v <= 1, "a number in (0, 1]"),
    "decay_factor": (lambda v: _real(v) and v > 0, "a number > 0"),
    "clip_norm": (lambda v: _real(v) and v >= 0, "a number >= 0 (0: no clipping)"),
    "init_checkpoint": (lambda v: isinstance(v, str), "a checkpoint path, or '' (none)"),
}


def _int(value):
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _real(value):
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def check_train_block(train):
    """Raises ValueError naming the first field of the `train` block (a ConfigDict over the engine's
    defaults) whose value cannot work, and what it must be."""
    for field, (test, must) in _RULES.items():
        if field in train and not test(train[field]):
            raise ValueError(f"config.train.{field} must be {must}, got {train[field]!r}.")
    if not train.total_steps and not train.epochs:
        raise ValueError("config.train: epochs and total_steps are both 0, so there is nothing to train; set "
                         "config.train.epochs >= 1 or config.train.total_steps >= 1.")


def check_batch_size(batch_size, num_replicas):
    if batch_size % num_replicas:
        raise ValueError(f"config.train.batch_size {batch_size} must be a multiple of the {num_replicas} replicas "
                         "of the strategy (each replica gets batch_size / replicas images).")


def check_writable(folder, flag="--workdir"):
    """Creates `folder` (and its parents) when missing, then writes and deletes a probe file in it; raises
    an OSError naming the folder and what to do when that fails (a file in the way, no permission, a
    read-only or full disk). Local paths and gs:// alike (tf.io.gfile)."""
    import tensorflow as tf

    check_no_file_in_the_way(folder, flag)
    probe = os.path.join(folder, f".write-test-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        tf.io.gfile.makedirs(folder)
        with tf.io.gfile.GFile(probe, "w") as f:
            f.write("tfdet")
        tf.io.gfile.remove(probe)
    except (OSError, tf.errors.OpError) as err:
        reason = getattr(err, "strerror", None) or getattr(err, "message", None) or str(err)
        raise OSError(f"cannot write in {folder} ({reason.splitlines()[0]}); make it writable or give {flag} another "
                      "folder.") from None


def check_no_file_in_the_way(folder, flag="--workdir"):
    """Raises NotADirectoryError when `folder` or one of its parents is a file (local paths; a gs:// or
    other remote path passes)."""
    if "://" in folder:
        return
    path = os.path.abspath(folder)
    while True:
        if os.path.exists(path) and not os.path.isdir(path):
            raise NotADirectoryError(f"{path} is a file, not a folder, so {folder} cannot be created; give {flag} a "
                                     "folder path.")
        if os.path.dirname(path) == path:
            return
        path = os.path.dirname(path)
