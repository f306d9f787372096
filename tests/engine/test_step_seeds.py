"""tfdet.ops.sampling.step_seeds: inside the scope, `sample` without a seed draws a pure function of
(seed, step value, replica, call rank in the traced step), the same in any trace of the step; outside it
draws from the global generator as before."""

import os
import subprocess
import sys

import numpy as np
import tensorflow as tf

from tfdet.ops import sampling

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LABELS = tf.constant([[1, 0] * 50, [0, 1] * 50], tf.int32)  # 50 positives and 50 negatives per image


def draws(step_value, seed=7, calls=2):
    """The sampled masks of `calls` sample() calls in one freshly traced tf.function at `step_value`."""
    step = tf.Variable(step_value, dtype=tf.int64)

    @tf.function
    def fn():
        return [sampling.sample(LABELS, 8, 0.5).mask for _ in range(calls)]

    with sampling.step_seeds(seed, step):
        return [m.numpy() for m in fn()]


def test_draws_are_a_function_of_seed_and_step():
    first, again = draws(3), draws(3)  # two traces, two variables: the same draws
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    assert all(m.sum() == 16 for m in first)  # 8 per image
    assert not np.array_equal(first[0], first[1])  # two calls in one step differ
    assert not np.array_equal(first[0], draws(4)[0])  # another step differs
    assert not np.array_equal(first[0], draws(3, seed=8)[0])  # another seed differs
    assert not np.array_equal(first[0][0], first[0][1])  # the two images of a batch differ


def test_the_step_is_read_when_the_op_runs():
    step = tf.Variable(3, dtype=tf.int64)

    @tf.function
    def fn():
        return sampling.sample(LABELS, 8, 0.5).mask

    with sampling.step_seeds(7, step):
        at3 = fn().numpy()
        step.assign(4)
        at4 = fn().numpy()  # the same trace, a new step value
    assert np.array_equal(at3, draws(3, calls=1)[0])
    assert np.array_equal(at4, draws(4, calls=1)[0])


def test_an_explicit_seed_wins_and_outside_the_scope_nothing_changes():
    seed = tf.constant([1, 2], tf.int64)
    with sampling.step_seeds(7, tf.Variable(3, dtype=tf.int64)):
        inside = sampling.sample(LABELS, 8, 0.5, seed=seed).mask.numpy()
    assert np.array_equal(inside, sampling.sample(LABELS, 8, 0.5, seed=seed).mask.numpy())
    assert not sampling._STEP_SEEDS
    stateful = [sampling.sample(LABELS, 8, 0.5).mask.numpy() for _ in range(4)]
    assert any(not np.array_equal(stateful[0], m) for m in stateful[1:])  # the global generator moves on


_MIRRORED = """
import numpy as np, tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from tfdet.ops import sampling
labels = tf.constant([[1, 0] * 50], tf.int32)

def run():
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    with strategy.scope():
        step = tf.Variable(5, dtype=tf.int64)
    @tf.function
    def fn():
        return strategy.run(lambda: sampling.sample(labels, 8, 0.5).mask)
    with sampling.step_seeds(0, step):
        return [t.numpy() for t in strategy.experimental_local_results(fn())]

a, b = run(), run()
print("SAME", all(np.array_equal(x, y) for x, y in zip(a, b)), "REPLICAS_DIFFER", not np.array_equal(*a))
"""


def test_replicas_draw_differently_and_reproducibly():
    out = subprocess.run([sys.executable, "-c", _MIRRORED], cwd=ROOT, capture_output=True, text=True, timeout=300,
                         env=dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="2"))
    assert "SAME True REPLICAS_DIFFER True" in out.stdout, out.stdout[-2000:] + out.stderr[-3000:]
