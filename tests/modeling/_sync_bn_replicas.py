"""Run as a script (tests/modeling/test_sync_bn.py does, in a fresh process): splits the CPU into two
logical devices, runs one training-mode forward of a norm layer from tfdet.modeling.conv_norm under a
2-replica MirroredStrategy (half the batch per replica) and on one device over the whole batch, and
prints a JSON with the largest differences of outputs and moving statistics."""

import json
import sys

import tensorflow as tf

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

import numpy as np  # noqa: E402

import tfdet  # noqa: E402,F401
from tfdet.modeling.conv_norm import make_norm  # noqa: E402


def main(norm):
    rng = np.random.default_rng(0)
    # the two halves have different statistics, so per-replica moments differ from the global ones
    x = np.concatenate([rng.normal(-1.0, 0.5, size=(2, 5, 6, 8)), rng.normal(2.0, 3.0, size=(2, 5, 6, 8))])
    x = tf.constant(x.astype("float32"))

    single = make_norm(norm, "bn")
    single.build(x.shape)
    expected = single(x, training=True).numpy()

    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    assert strategy.num_replicas_in_sync == 2
    with strategy.scope():
        replicated = make_norm(norm, "bn")
        replicated.build(x.shape)
    halves = strategy.experimental_distribute_values_from_function(
        lambda ctx: x[2 * ctx.replica_id_in_sync_group:2 * ctx.replica_id_in_sync_group + 2])

    @tf.function
    def step(inputs):
        return strategy.run(lambda t: replicated(t, training=True), args=(inputs,))

    got = np.concatenate([t.numpy() for t in strategy.experimental_local_results(step(halves))])
    result = {"output": float(np.abs(got - expected).max())}
    for name in ("moving_mean", "moving_variance"):
        values = [v.numpy() for v in strategy.experimental_local_results(getattr(replicated, name))]
        reference = getattr(single, name).numpy()
        result[name] = float(max(np.abs(v - reference).max() for v in values))
    print(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1])
