"""Resuming training from the newest *readable* checkpoint of a folder.

A checkpoint can be damaged after it was written (a file deleted, truncated by a full disk or a bad copy,
a garbled `checkpoint` state file). TF's `latest_checkpoint` then returns nothing (training would start
again at step 0, and its CheckpointManager would overwrite the good checkpoints as it reaches their
steps) or a checkpoint whose restore fails halfway. `restore_latest` instead reads each candidate in
full, newest first, skips (and names) the unreadable ones, and rewrites the state file from the files
on disk, so that the CheckpointManager created afterwards knows every checkpoint and rotates them out
only as new ones are saved. Paths go through tf.io.gfile (local folders and gs:// alike).
"""

import os
import re

import tensorflow as tf

_NAME = re.compile(r"^ckpt-(\d+)(?:\.index|\.data-\d+-of-\d+)?$")
STATE_FILE = "checkpoint"  # tf.train.CheckpointManager's


class CheckpointError(RuntimeError):
    """No checkpoint of a training folder can be resumed from."""


def _start_over(directory):
    return (f"To start over, move {directory} away (or train into another --workdir); to resume, put a readable "
            "copy of a checkpoint back into it.")


def _step(path):
    match = _NAME.match(os.path.basename(path))
    return int(match.group(1)) if match else None


def find_checkpoints(directory):
    """{step: prefix} of every `ckpt-N` checkpoint in `directory`: its files and its state file's list."""
    paths = tf.io.gfile.glob(os.path.join(directory, "ckpt-*")) if tf.io.gfile.isdir(directory) else []
    state = tf.train.get_checkpoint_state(directory)
    paths += list(state.all_model_checkpoint_paths) if state else []
    return {_step(p): os.path.join(directory, f"ckpt-{_step(p)}") for p in paths if _step(p) is not None}


def unreadable(prefix):
    """Why the checkpoint `prefix` cannot be read in full (a short reason), or None when it can: the
    index and every tensor of the data files are read (which also verifies their checksums)."""
    if not tf.io.gfile.exists(prefix + ".index"):
        return "its .index file is missing"
    try:
        reader = tf.train.load_checkpoint(prefix)
        for name in reader.get_variable_to_shape_map():
            reader.get_tensor(name)
    except (tf.errors.OpError, ValueError, IndexError, OSError, RuntimeError) as err:
        lines = [line.strip() for line in str(err).splitlines() if line.strip()]
        return f"{type(err).__name__}: {lines[0][:200] if lines else 'unreadable'}"
    return None


def write_state(directory, prefixes):
    """Atomically writes the state file listing `prefixes` (oldest first; the last is the latest) with
    their files' times, as tf.train.CheckpointManager writes it (relative paths)."""
    times = [tf.io.gfile.stat(p + ".index").mtime_nsec / 1e9 for p in prefixes]
    lines = [f'model_checkpoint_path: "{os.path.basename(prefixes[-1])}"']
    lines += [f'all_model_checkpoint_paths: "{os.path.basename(p)}"' for p in prefixes]
    lines += [f"all_model_checkpoint_timestamps: {t!r}" for t in times]
    lines.append(f"last_preserved_timestamp: {min(times) - 1.0!r}")  # every listed one rotates out normally
    path = os.path.join(directory, STATE_FILE)
    with tf.io.gfile.GFile(path + ".tmp", "w") as f:
        f.write("\n".join(lines) + "\n")
    tf.io.gfile.rename(path + ".tmp", path, overwrite=True)


def _say(message):
    print(message, flush=True)


def restore_latest(checkpoint, directory, repair=True, log=_say):
    """Restores `checkpoint` (a tf.train.Checkpoint) from the newest readable checkpoint in `directory`.

    Returns (the path restored, or None when the folder holds no checkpoint; [(skipped path, reason)]).
    Unreadable newer checkpoints are skipped with a warning through `log`. With `repair` (the chief
    only), the state file is rewritten when it does not list exactly the checkpoints found, the restored
    one last. Raises CheckpointError when checkpoints exist but none is readable, or when the readable
    one does not fit `checkpoint` (a checkpoint of another config)."""
    state_path = os.path.join(directory, STATE_FILE)
    state = tf.train.get_checkpoint_state(directory)
    if state is None and tf.io.gfile.exists(state_path):
        log(f"tfdet.train: warning: the state file {state_path} is unreadable; using the checkpoint files.")
    found = find_checkpoints(directory)
    skipped, chosen = [], None
    for step in sorted(found, reverse=True):
        reason = unreadable(found[step])
        if reason is None:
            chosen = found[step]
            break
        skipped.append((found[step], reason))
        log(f"tfdet.train: warning: skipping the unreadable checkpoint {found[step]} ({reason}).")
    if chosen is None:
        if skipped:
            details = "; ".join(f"{os.path.basename(p)}: {r}" for p, r in skipped)
            raise CheckpointError(f"no readable checkpoint in {directory} ({details}). {_start_over(directory)}")
        return None, []
    try:
        checkpoint.restore(chosen).assert_existing_objects_matched()
    except (AssertionError, ValueError, tf.errors.OpError) as err:
        raise CheckpointError(
            f"checkpoint {chosen} does not fit the model and optimizer of this config "
            f"({str(err).splitlines()[0][:200]}); train with the config it was written with. "
            f"{_start_over(directory)}") from None
    if skipped:
        log(f"tfdet.train: warning: resuming from {chosen} instead; the skipped steps are trained and saved again.")
    bad = {p for p, _ in skipped}
    kept = [found[s] for s in sorted(found) if found[s] not in bad and tf.io.gfile.exists(found[s] + ".index")]
    listed = [os.path.join(directory, os.path.basename(p)) for p in state.all_model_checkpoint_paths] if state else []
    if repair and listed != kept:
        write_state(directory, kept)
    return chosen, skipped
