"""Training with `keras.Model.fit` under a tf.distribute strategy (DESIGN.md decision 8).

`train(config, workdir, ...)` builds the strategy, the model (`config.model.type`: a registered detector
or "package.module:Class"; constructed as `Class(config.model)`), the optimizer and the tf.data input,
restores the latest checkpoint in `workdir/checkpoints`, and runs `fit` until `total_steps` optimizer
updates. The `train` block (defaults in TRAIN_DEFAULTS):

  batch_size     global batch (split across replicas)       base_lr, momentum, weight_decay, optimizer
  epochs         length of the run in epochs of the data    total_steps: overrides epochs when > 0
  steps_per_epoch  0 = images in the train split // batch_size
  warmup_steps, warmup_ratio, decay_epochs | decay_steps, decay_factor   (see tfdet.engine.optim)
  clip_norm      global-norm gradient clipping (0 = off)
  checkpoint_every  save every N steps (and at the end); keep_checkpoints: how many to keep
  log_every      TensorBoard update frequency in steps      seed: Keras / data seed

Resume: the step, the learning rate (a function of the step) and the optimizer slots come from the
newest readable checkpoint (tfdet.engine.resume); the input restarts at the same position by skipping the
batches already consumed (the pipeline is deterministic given its seed: same shuffle, same augmentation),
and the samplers draw from the step (tfdet.ops.sampling.step_seeds), so a resumed run computes what an
uninterrupted one does, bit for bit (skipping re-reads the consumed records: set `data.resume` to
"reseed" to start a fresh shuffle seeded by the step instead, for very long runs). SIGINT / SIGTERM
save a checkpoint after the current step and raise interrupt.TrainingInterrupted.
"""

import importlib
import math
import os

import keras
import ml_collections
import tensorflow as tf

from tfdet.engine import callbacks as cb
from tfdet.engine import interrupt, optim, preflight, resume, step
from tfdet.engine.checkpoint import training_checkpoint
from tfdet.engine.strategy import build_strategy, is_chief, worker_dir
from tfdet.ops import sampling

TRAIN_DEFAULTS = dict(batch_size=2, optimizer="sgd", base_lr=0.02, momentum=0.9, weight_decay=1e-4, beta_1=0.9,
                      beta_2=0.999, epsilon=1e-8, epochs=12, total_steps=0, steps_per_epoch=0, warmup_steps=500,
                      warmup_ratio=0.001, decay_epochs=(8, 11), decay_steps=None, decay_factor=0.1, clip_norm=0.0,
                      checkpoint_every=500, keep_checkpoints=3, log_every=50, seed=0)


def _block(config, name, defaults):
    """config[name] over `defaults`, refusing unknown keys (a typo must not be silently ignored)."""
    block = config.get(name) or {}
    block = block.to_dict() if hasattr(block, "to_dict") else dict(block)
    unknown = set(block) - set(defaults)
    if unknown:
        raise ValueError(f"config.{name}: unknown field(s) {sorted(unknown)}; known: {sorted(defaults)}.")
    return ml_collections.ConfigDict({**defaults, **block})


def model_class(type_name):
    """The detector class for `type_name`: "package.module:Class", or a name in
    tfdet.modeling.detectors.DETECTORS."""
    if ":" in type_name:
        module, _, attr = type_name.partition(":")
        try:
            return getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as err:
            raise ValueError(f"config.model.type {type_name!r}: cannot import {attr} from {module} ({err}).") from err
    try:
        from tfdet.modeling.detectors import DETECTORS
    except ImportError:
        DETECTORS = {}
    if type_name not in DETECTORS:
        raise ValueError(f"config.model.type: unknown detector {type_name!r}; known: {sorted(DETECTORS)} or "
                         "'package.module:Class'.")
    return DETECTORS[type_name]


def build_model(model_config):
    model = model_class(model_config.type)(model_config)
    if not model.built:
        model.build(None)
    return model


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
    """Trains config.model on config.data with config.train; returns the trained model.

    Raises cb.NonFiniteLossError when a loss turns NaN/inf (the last good checkpoint is kept)."""
    previous_policy = keras.mixed_precision.global_policy()
    optim.set_precision(mixed_precision)
    try:
        return _train(config, workdir, strategy, devices, verbose, extra_callbacks)
    finally:
        keras.mixed_precision.set_global_policy(previous_policy)  # the model keeps its own policy


def _train(config, workdir, strategy, devices, verbose, extra_callbacks):
    from tfdet.engine import data as input_data

    train_cfg = _block(config, "train", TRAIN_DEFAULTS)
    preflight.check_train_block(train_cfg)
    keras.utils.set_random_seed(train_cfg.seed)
    strategy = build_strategy(strategy, devices=devices) if isinstance(strategy, str) else strategy
    preflight.check_batch_size(train_cfg.batch_size, strategy.num_replicas_in_sync)
    ckpt_dir = os.path.join(workdir, "checkpoints")
    for folder in (workdir, worker_dir(ckpt_dir, strategy)):  # before anything is read or built
        preflight.check_writable(folder)
    source = input_data.TrainInput(config.get("data") or {}, train_cfg.batch_size, train_cfg.seed)
    steps_per_epoch = int(train_cfg.steps_per_epoch) or max(1, source.num_images // train_cfg.batch_size)
    total_steps = int(train_cfg.total_steps) or int(train_cfg.epochs) * steps_per_epoch

    with strategy.scope():
        model = build_model(config.model)
        optimizer, l2 = optim.build_optimizer(train_cfg, steps_per_epoch)
        model.compile(optimizer=optimizer)
        specs = {}
        step.install(model, step.StepOptions(l2_weight_decay=l2, clip_norm=float(train_cfg.clip_norm)),
                     element_spec=lambda: specs.get("train"))
        model.optimizer.build(model.trainable_variables)
        # Keras' fit() under a strategy "symbolically builds" the model on a batch it takes from the training
        # iterator (so the first batch is never trained on, and a resumed run would be one batch off) and
        # MEAN-reduces it across replicas (which fails on bool / int batch entries). The model and the optimizer
        # are built above, so that step has nothing to do: skip it.
        model._maybe_symbolic_build = lambda *args, **kwargs: None
        checkpoint = training_checkpoint(model, model.optimizer)
    iterations = model.optimizer.iterations
    chief = is_chief(strategy)
    latest, _ = resume.restore_latest(checkpoint, ckpt_dir, repair=chief)
    if latest:
        print(f"tfdet.train: resumed from {latest} at step {int(iterations.numpy())}", flush=True)
    manager = tf.train.CheckpointManager(checkpoint, worker_dir(ckpt_dir, strategy), train_cfg.keep_checkpoints)
    start = int(iterations.numpy())
    if start >= total_steps:
        print(f"tfdet.train: already at step {start} of {total_steps}; nothing to do.", flush=True)
        return model

    def dataset_fn(ctx):
        ds = source.dataset(ctx, start)
        specs["train"] = ds.element_spec
        return ds

    dataset = strategy.distribute_datasets_from_function(dataset_fn)
    checkpointer = cb.CheckpointEvery(manager, iterations, train_cfg.checkpoint_every, chief=chief)
    callbacks = [cb.StopOnNonFiniteLoss(iterations, checkpointer), checkpointer, cb.StopAtStep(iterations, total_steps),
                 cb.LearningRateLogger(model.optimizer), *extra_callbacks]
    if verbose == 2:  # one line every log_every steps instead of Keras' per-epoch line
        callbacks.append(cb.StepLogger(iterations, total_steps, train_cfg.log_every))
    if chief and _has_tensorboard():
        callbacks.append(keras.callbacks.TensorBoard(os.path.join(workdir, "tensorboard"),
                                                     update_freq=int(train_cfg.log_every)))
    multi_worker = isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)  # saving is collective there
    with sampling.step_seeds(train_cfg.seed, iterations), interrupt.stop_requests(enabled=not multi_worker) as stop:
        callbacks.append(cb.SaveOnStopRequest(stop, checkpointer))
        model.fit(dataset, epochs=math.ceil(total_steps / steps_per_epoch), initial_epoch=start // steps_per_epoch,
                  steps_per_epoch=steps_per_epoch, callbacks=callbacks, verbose=1 if verbose == 1 else 0,
                  shuffle=False)
    return model
