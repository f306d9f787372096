"""Optimizers, learning-rate schedules and precision policies from the `train` config block.

Weight decay follows mmdetection: its SGD is torch.optim.SGD(weight_decay=wd), which adds wd * w to the
gradient of every parameter that has one (conv and fc weights, biases, and the gamma/beta of trainable
norm layers alike; frozen BN has none) *before* momentum, i.e. L2 regularisation coupled to momentum.
Keras' SGD `weight_decay` is decoupled (w -= lr * wd * w after momentum), which decays ~10x less at
momentum 0.9, so for "sgd" the engine's train step adds wd * w itself (`l2_weight_decay`) and the
Keras optimizer gets none. The step adds it after clipping, as torch does (clip_grad_norm_ runs
before optimizer.step, which adds the decay). "adamw" is decoupled by definition (torch AdamW == keras AdamW) and uses
the optimizer's own `weight_decay`.

Keras' SGD folds the learning rate into the momentum buffer (m = 0.9 m - lr g; w += m) where torch
scales the buffer at each step (b = 0.9 b + g; w -= lr b): identical at a constant learning rate, while
after a step decay Keras' old momentum fades over ~10 steps instead of shrinking at once.

Gradient clipping (`clip_norm`, global norm, mmdetection's grad_clip max_norm) is applied by the train
step to the gradients summed over replicas (Keras' own clipnorm would clip each replica's partial
gradient), so it is not set on the Keras optimizer either.
"""

import keras
import tensorflow as tf

from tfdet.engine.settings import train_block

OPTIMIZERS = ("sgd", "adamw")
PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")


@keras.saving.register_keras_serializable(package="tfdet")
class WarmupStepDecay(keras.optimizers.schedules.LearningRateSchedule):
    """mmcv's step policy with linear warmup, by iteration (the optimizer's update count, from 0):

        regular(it) = base_lr * factor ** (number of boundaries <= it)
        lr(it)      = regular(it) * (ratio + (1 - ratio) * it / warmup_steps)   for it < warmup_steps
                    = regular(it)                                               otherwise
    """

    def __init__(self, base_lr, boundaries=(), factor=0.1, warmup_steps=0, warmup_ratio=0.001):
        self.base_lr = float(base_lr)
        self.boundaries = tuple(int(b) for b in boundaries)
        if list(self.boundaries) != sorted(self.boundaries):
            raise ValueError(f"lr decay boundaries must be increasing, got {self.boundaries}.")
        self.factor, self.warmup_steps, self.warmup_ratio = float(factor), int(warmup_steps), float(warmup_ratio)

    def __call__(self, step):
        step = tf.cast(step, tf.float32)
        decays = tf.reduce_sum(tf.cast(step[None] >= tf.constant(self.boundaries, tf.float32, [len(self.boundaries)]),
                                       tf.float32))
        lr = self.base_lr * tf.pow(self.factor, decays)
        if self.warmup_steps > 0:
            progress = tf.minimum(step / self.warmup_steps, 1.0)
            lr = lr * (self.warmup_ratio + (1.0 - self.warmup_ratio) * progress)
        return lr

    def get_config(self):
        return dict(base_lr=self.base_lr, boundaries=self.boundaries, factor=self.factor,
                    warmup_steps=self.warmup_steps, warmup_ratio=self.warmup_ratio)


def lr_schedule(train, steps_per_epoch):
    """The schedule of a `train` block: decay at `decay_steps`, else at `decay_epochs` * steps_per_epoch."""
    train = train_block(train)
    steps = train.decay_steps
    if steps is None:
        steps = [int(e) * int(steps_per_epoch) for e in train.decay_epochs]
    return WarmupStepDecay(train.base_lr, steps, train.decay_factor, train.warmup_steps, train.warmup_ratio)


def build_optimizer(train, steps_per_epoch):
    """A Keras optimizer for `train.optimizer` ("sgd" by default, or "adamw") with the warmup + step
    schedule. Returns (optimizer, l2_weight_decay): the L2 coefficient the train step adds (see above)."""
    train = train_block(train)
    kind = train.optimizer
    if kind not in OPTIMIZERS:
        raise ValueError(f"train.optimizer must be one of {OPTIMIZERS}, got {kind!r}.")
    schedule = lr_schedule(train, steps_per_epoch)
    wd = float(train.weight_decay)
    if kind == "sgd":
        return keras.optimizers.SGD(schedule, momentum=train.momentum), wd
    return keras.optimizers.AdamW(schedule, weight_decay=wd, beta_1=train.beta_1,
                                  beta_2=train.beta_2, epsilon=train.epsilon), 0.0


def set_precision(policy):
    """Sets Keras' global dtype policy ("float32", "mixed_float16" or "mixed_bfloat16"). Call before the
    model is built. mixed_float16 gets dynamic loss scaling from `compile` (keras LossScaleOptimizer)."""
    if policy not in PRECISIONS:
        raise ValueError(f"--mixed_precision must be one of {PRECISIONS}, got {policy!r}.")
    keras.mixed_precision.set_global_policy(policy)
