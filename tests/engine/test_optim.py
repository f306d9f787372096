"""Schedules and optimizer semantics against NumPy references written from mmcv / torch.optim."""

import keras
import ml_collections
import numpy as np
import pytest
import tensorflow as tf

from tfdet.engine import optim, step


def mmcv_lr(it, base, boundaries, factor, warmup, ratio):
    """mmcv StepLrUpdaterHook (by iteration) with linear warmup."""
    regular = base * factor ** sum(it >= b for b in boundaries)
    if it < warmup:
        k = (1 - it / warmup) * (1 - ratio)
        return regular * (1 - k)
    return regular


@pytest.mark.parametrize("warmup,boundaries", [(500, (800, 1100)), (0, (3,)), (10, ())])
def test_schedule_matches_mmcv(warmup, boundaries):
    schedule = optim.WarmupStepDecay(0.02, boundaries, 0.1, warmup, 0.001)
    for it in [0, 1, 5, 9, 10, 250, 499, 500, 799, 800, 1099, 1100, 5000]:
        np.testing.assert_allclose(float(schedule(it)), mmcv_lr(it, 0.02, boundaries, 0.1, warmup, 0.001), rtol=1e-6)
    restored = optim.WarmupStepDecay.from_config(schedule.get_config())
    assert float(restored(123)) == float(schedule(123))


def test_schedule_from_epochs():
    train = ml_collections.ConfigDict(dict(base_lr=0.1, decay_epochs=(2, 3), warmup_steps=0))
    schedule = optim.lr_schedule(train, steps_per_epoch=10)
    assert schedule.boundaries == (20, 30)
    np.testing.assert_allclose([float(schedule(s)) for s in (19, 20, 30)], [0.1, 0.01, 0.001], rtol=1e-6)


def test_bad_options():
    with pytest.raises(ValueError, match="train.optimizer"):
        optim.build_optimizer(ml_collections.ConfigDict(dict(optimizer="lamb", base_lr=0.1)), 10)
    with pytest.raises(ValueError, match="increasing"):
        optim.WarmupStepDecay(0.1, (5, 3))
    with pytest.raises(ValueError, match="mixed_precision"):
        optim.set_precision("float8")


class Quadratic(keras.Model):
    """loss = 0.5 * sum((w - target)^2 * scale) for a single weight vector: gradient known in closed form."""

    def __init__(self, init, scale):
        super().__init__()
        self.w = self.add_weight(shape=(len(init),), initializer=keras.initializers.Constant(init), name="w")
        self.scale = tf.constant(scale, tf.float32)

    def compute_losses(self, batch, training=False):
        return {"quad": 0.5 * tf.reduce_sum(tf.square(self.w - batch) * self.scale)}


def _sgd_run(wd, clip, steps=3):
    init, scale, target = np.array([1.0, -2.0, 3.0]), np.array([1.0, 2.0, 0.5]), np.array([0.5, 0.5, 0.5])
    model = Quadratic(init, scale)
    train = ml_collections.ConfigDict(dict(optimizer="sgd", base_lr=0.1, momentum=0.9, weight_decay=wd,
                                           warmup_steps=0, decay_steps=()))
    optimizer, l2 = optim.build_optimizer(train, 10)
    model.compile(optimizer=optimizer)
    options = step.StepOptions(l2_weight_decay=l2, clip_norm=clip)
    for _ in range(steps):
        step.train_step(model, tf.constant(target, tf.float32), options)
    # torch.optim.SGD(lr, momentum, weight_decay) with torch.nn.utils.clip_grad_norm_ before the step
    w, buf = init.copy(), None
    for _ in range(steps):
        g = (w - target) * scale
        if clip:
            g = g * min(1.0, clip / (np.linalg.norm(g) + 1e-6))
        g = g + wd * w
        buf = g if buf is None else 0.9 * buf + g
        w = w - 0.1 * buf
    return np.asarray(model.w), w


@pytest.mark.parametrize("wd,clip", [(0.0, 0.0), (0.1, 0.0), (0.0, 0.5), (0.1, 0.5)])
def test_sgd_matches_torch_sgd(wd, clip):
    ours, reference = _sgd_run(wd, clip)
    np.testing.assert_allclose(ours, reference, rtol=1e-5, atol=1e-6)


def test_clipping_differs_from_no_clipping():
    # negative control for the case above: clipping at 0.5 does change the result
    ours, _ = _sgd_run(0.0, 0.5)
    unclipped, _ = _sgd_run(0.0, 0.0)
    assert np.max(np.abs(ours - unclipped)) > 1e-2


def test_adamw_is_decoupled():
    train = ml_collections.ConfigDict(dict(optimizer="adamw", base_lr=0.001, weight_decay=0.05, warmup_steps=0))
    optimizer, l2 = optim.build_optimizer(train, 10)
    assert isinstance(optimizer, keras.optimizers.AdamW) and l2 == 0.0 and optimizer.weight_decay == 0.05
