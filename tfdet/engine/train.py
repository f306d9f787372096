"""Training with `keras.Model.fit` under a tf.distribute strategy.

`train(config, workdir, ...)` builds the strategy, the detector (`tfdet.modeling.detectors.build_detector`:
`config.model.type` is a registered detector or "package.module:Class"), its Trainer (the engine's
step and the `train` block's optimizer recipe, tfdet.engine.trainer) and the tf.data input, restores the
latest checkpoint in `workdir/checkpoints` (when there is none, the weights of `train.init_checkpoint`, e.g. a
converted model to fine-tune, saved as the run's step 0), and runs `fit` until `total_steps` optimizer
updates. The `train` block's fields and defaults: tfdet.engine.settings.

Resume: the step, the learning rate (a function of the step) and the optimizer slots come from the
newest readable checkpoint (tfdet.engine.resume); the input restarts at the same position by skipping the
batches already consumed (the pipeline is deterministic given its seed: same shuffle, same augmentation),
and the samplers draw from the step (tfdet.ops.sampling.step_seeds), so a resumed run computes what an
uninterrupted one does, bit for bit (skipping re-reads the consumed records: set `data.resume` to
"reseed" to start a fresh shuffle seeded by the step instead, for very long runs). SIGINT / SIGTERM
save a checkpoint after the current step and raise interrupt.TrainingInterrupted.
"""

import math
import os

import keras
import tensorflow as tf

from tfdet.engine import callbacks as cb
from tfdet.engine import interrupt, optim, preflight, resume
from tfdet.engine.checkpoint import resolve_checkpoint, restore, training_checkpoint
from tfdet.engine.settings import TRAIN_DEFAULTS, train_block
from tfdet.engine.strategy import build_strategy, is_chief, worker_dir
from tfdet.engine.trainer import Trainer
from tfdet.modeling.detectors import build_detector
from tfdet.ops import sampling

__all__ = ["TRAIN_DEFAULTS", "train"]


def _has_tensorboard():
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        print("tfdet.train: the tensorboard package is not installed; no TensorBoard summaries "
              "(pip install tensorboard).", flush=True)
        return False
    return True


def train(config, workdir, strategy="one_device", mixed_precision="float32", devices=None, verbose=1,
          extra_callbacks=()):
    """Trains config.model on config.data with config.train; returns the Trainer (`.detector` is the trained
    model, `.optimizer` its optimizer).

    Raises cb.NonFiniteLossError when a loss turns NaN/inf (the last good checkpoint is kept)."""
    previous_policy = keras.mixed_precision.global_policy()
    optim.set_precision(mixed_precision)
    try:
        return _train(config, workdir, strategy, devices, verbose, extra_callbacks)
    finally:
        keras.mixed_precision.set_global_policy(previous_policy)  # the model keeps its own policy


def _train(config, workdir, strategy, devices, verbose, extra_callbacks):
    from tfdet.data import train_input as input_data

    train_cfg = train_block(config.get("train"))
    keras.utils.set_random_seed(train_cfg.seed)
    strategy = build_strategy(strategy, devices=devices) if isinstance(strategy, str) else strategy
    preflight.check_batch_size(train_cfg.batch_size, strategy.num_replicas_in_sync)
    ckpt_dir = os.path.join(workdir, "checkpoints")
    for folder in (workdir, worker_dir(ckpt_dir, strategy)):  # before anything is read or built
        preflight.check_writable(folder)
    source = input_data.TrainInput(config.get("data") or {}, train_cfg.batch_size, train_cfg.seed)
    if any(config.model.get(head) is not None for head in ("roi", "retina")):  # heads with a class per category
        source.check_num_classes(config.model.num_classes)
    steps_per_epoch = int(train_cfg.steps_per_epoch) or max(1, source.num_images // train_cfg.batch_size)
    total_steps = int(train_cfg.total_steps) or int(train_cfg.epochs) * steps_per_epoch

    specs = {}
    with strategy.scope():
        model = build_detector(config.model)
        trainer = Trainer(model, train_cfg, steps_per_epoch, element_spec=lambda: specs.get("train"))
        trainer.build_optimizer_variables()
        checkpoint = training_checkpoint(model, trainer.optimizer)
    iterations = trainer.optimizer.iterations
    chief = is_chief(strategy)
    latest, _ = resume.restore_latest(checkpoint, ckpt_dir, repair=chief)
    if latest:
        print(f"tfdet.train: resumed from {latest} at step {int(iterations.numpy())}", flush=True)
    manager = tf.train.CheckpointManager(checkpoint, worker_dir(ckpt_dir, strategy), train_cfg.keep_checkpoints)
    if not latest and train_cfg.init_checkpoint:  # a resumed run never reads it
        init = resolve_checkpoint(train_cfg.init_checkpoint)
        restore(model, init)  # every weight by path; a checkpoint of another config is a ValueError
        manager.save(checkpoint_number=0)  # a resume reads the run's own checkpoints, not the init file
        print(f"tfdet.train: initialised from {init} (config.train.init_checkpoint), saved as step 0", flush=True)
    start = int(iterations.numpy())
    if start >= total_steps:
        print(f"tfdet.train: already at step {start} of {total_steps}; nothing to do.", flush=True)
        return trainer

    def dataset_fn(ctx):
        ds = source.dataset(ctx, start)
        specs["train"] = ds.element_spec
        return ds

    dataset = strategy.distribute_datasets_from_function(dataset_fn)
    checkpointer = cb.CheckpointEvery(manager, iterations, train_cfg.checkpoint_every, chief=chief)
    callbacks = [cb.StopOnNonFiniteLoss(iterations, checkpointer), checkpointer, cb.StopAtStep(iterations, total_steps),
                 cb.LearningRateLogger(trainer.optimizer), *extra_callbacks]
    if verbose == 2:  # one line every log_every steps instead of Keras' per-epoch line
        callbacks.append(cb.StepLogger(iterations, total_steps, train_cfg.log_every))
    if chief and _has_tensorboard():
        callbacks.append(keras.callbacks.TensorBoard(os.path.join(workdir, "tensorboard"),
                                                     update_freq=int(train_cfg.log_every)))
    multi_worker = isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)  # saving is collective there
    with sampling.step_seeds(train_cfg.seed, iterations), interrupt.stop_requests(enabled=not multi_worker) as stop:
        callbacks.append(cb.SaveOnStopRequest(stop, checkpointer))
        trainer.fit(dataset, epochs=math.ceil(total_steps / steps_per_epoch), initial_epoch=start // steps_per_epoch,
                    steps_per_epoch=steps_per_epoch, callbacks=callbacks, verbose=1 if verbose == 1 else 0,
                    shuffle=False)
    return trainer
