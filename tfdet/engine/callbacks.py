"""Keras callbacks the engine adds to `fit()`: checkpoints that survive a kill, a stop on a non-finite
loss that keeps the last good checkpoint, a stop at the planned step, a checkpoint and a stop on SIGINT /
SIGTERM, and the learning rate in the logs.
"""

import datetime
import math
import shutil
import time

import keras
import numpy as np
import tensorflow as tf

from tfdet.engine.interrupt import TrainingInterrupted


class NonFiniteLossError(FloatingPointError):
    """Training produced a NaN or infinite loss."""


def all_finite(variables):
    """True when every float variable holds only finite values."""
    checks = [tf.reduce_all(tf.math.is_finite(tf.convert_to_tensor(v))) for v in variables
              if tf.as_dtype(v.dtype).is_floating]
    return all(bool(c) for c in checks)


class CheckpointEvery(keras.callbacks.Callback):
    """Saves `checkpoint` (a tf.train.Checkpoint of model and optimizer) through a CheckpointManager every
    `every` optimizer steps and at the end, numbered by the step. The manager writes the data files
    first and then atomically replaces the `checkpoint` state file, so a kill mid-save leaves the previous
    checkpoint as the latest. A state with non-finite weights is never saved.

    Under multi-worker training every worker must save (variables are read collectively); workers other
    than the chief write into a private folder that is deleted afterwards.
    """

    def __init__(self, manager, step_variable, every, chief=True):
        super().__init__()
        self.manager, self.step_variable, self.every, self.chief = manager, step_variable, int(every), chief
        self.last_saved = None
        self.failed = False

    def save(self):
        step = int(self.step_variable.numpy())
        if step == self.last_saved or self.failed:
            return
        if not all_finite(self.model.weights):
            self.failed = True
            raise NonFiniteLossError(f"step {step}: the weights are not finite; the checkpoint was not written. "
                                     f"Last good checkpoint: {self.manager.latest_checkpoint}.")
        self.manager.save(checkpoint_number=step)
        self.last_saved = step

    def on_train_batch_end(self, batch, logs=None):
        if self.every > 0 and int(self.step_variable.numpy()) % self.every == 0:
            self.save()

    def on_train_end(self, logs=None):
        self.save()
        if not self.chief:
            shutil.rmtree(self.manager.directory, ignore_errors=True)


class StopOnNonFiniteLoss(keras.callbacks.Callback):
    """Raises NonFiniteLossError naming the step, the losses and the last good checkpoint as soon as a
    logged loss is NaN or infinite. Put it before CheckpointEvery so the bad state is never saved."""

    def __init__(self, step_variable, checkpointer=None):
        super().__init__()
        self.step_variable, self.checkpointer = step_variable, checkpointer

    def on_train_batch_end(self, batch, logs=None):
        logs = logs or {}
        values = {k: np.asarray(v) for k, v in logs.items()}
        bad = {k: float(v) for k, v in values.items() if v.size == 1 and not math.isfinite(float(v))}
        if bad:
            latest = None
            if self.checkpointer is not None:
                self.checkpointer.failed = True
                latest = self.checkpointer.manager.latest_checkpoint
            raise NonFiniteLossError(
                f"non-finite loss at step {int(self.step_variable.numpy())}: {bad}. Training stopped; the last "
                f"good checkpoint is {latest or 'none (no checkpoint was written yet)'}. Lower the learning "
                "rate, lengthen the warmup or set train.clip_norm, then rerun to resume from it.")


class StopAtStep(keras.callbacks.Callback):
    """Ends training once the optimizer has made `total_steps` updates (resumed runs start mid-epoch)."""

    def __init__(self, step_variable, total_steps):
        super().__init__()
        self.step_variable, self.total_steps = step_variable, int(total_steps)

    def on_train_batch_end(self, batch, logs=None):
        if int(self.step_variable.numpy()) >= self.total_steps:
            self.model.stop_training = True


class SaveOnStopRequest(keras.callbacks.Callback):
    """After the step during which a stop was requested (`requests.signum` set, see
    tfdet.engine.interrupt), saves a checkpoint through `checkpointer` and raises TrainingInterrupted
    naming it. Put it after CheckpointEvery and StopAtStep."""

    def __init__(self, requests, checkpointer):
        super().__init__()
        self.requests, self.checkpointer = requests, checkpointer

    def on_train_batch_end(self, batch, logs=None):
        if self.requests.signum is None or self.model.stop_training:  # the last step: training ends anyway
            return
        self.checkpointer.save()
        step = int(self.checkpointer.step_variable.numpy())
        raise TrainingInterrupted(f"stopped by {self.requests.name} at step {step}; saved "
                                  f"{self.checkpointer.manager.latest_checkpoint}. Run the same command again to "
                                  "resume from it.", self.requests.signum)


class LearningRateLogger(keras.callbacks.Callback):
    """Adds `lr` (the learning rate of the next update) to the batch and epoch logs."""

    def __init__(self, optimizer):
        super().__init__()
        self.optimizer = optimizer

    def _add(self, logs):
        if logs is not None:
            logs["lr"] = float(np.asarray(self.optimizer.learning_rate))

    def on_train_batch_end(self, batch, logs=None):
        self._add(logs)

    def on_epoch_end(self, epoch, logs=None):
        self._add(logs)


class StepLogger(keras.callbacks.Callback):
    """One line every `every` steps (for logs written to files, where a progress bar is useless):
    `step 120/9000  loss 1.2345  rpn_cls 0.1234 ...  lr 0.02  0.45 s/step  ETA 1:06:36`."""

    def __init__(self, step_variable, total_steps, every, print_fn=print):
        super().__init__()
        self.step_variable, self.total_steps, self.every = step_variable, int(total_steps), max(1, int(every))
        self.print_fn = print_fn
        self._mark = None

    def on_train_begin(self, logs=None):
        self._mark = (time.monotonic(), int(self.step_variable.numpy()))

    def on_train_batch_end(self, batch, logs=None):
        step = int(self.step_variable.numpy())
        if step % self.every and step < self.total_steps:
            return
        now, (then, then_step) = time.monotonic(), self._mark
        per_step = (now - then) / max(1, step - then_step)
        self._mark = (now, step)
        values = "  ".join(f"{k} {float(np.mean(v)):.4g}" for k, v in sorted((logs or {}).items()))
        eta = datetime.timedelta(seconds=round(per_step * (self.total_steps - step)))
        self.print_fn(f"step {step}/{self.total_steps}  {values}  {per_step:.3g} s/step  ETA {eta}", flush=True)
