"""Run as a script (tests/engine/test_distribution.py does, in a fresh process): splits the CPU into two
logical devices and trains TinyRPN for a few steps with the same config and global batch on one device
and under a 2-replica MirroredStrategy; prints JSON with the largest weight differences.

argv: shapes_dir workdir_root clip_norm [precision]. Runs: "one" (1 device), "two" (2 replicas), "buggy" (2 replicas
with each replica's loss NOT divided by the replica count: the classic bug, a negative control)."""

import json
import os
import sys

import tensorflow as tf

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

import numpy as np  # noqa: E402

import tfdet  # noqa: E402,F401
from tests.engine import tiny_config  # noqa: E402
from tfdet.engine import step, train  # noqa: E402
from tfdet.modeling.detectors import build_detector  # noqa: E402


def run(name, strategy, devices, root, shapes_dir, clip_norm, precision):
    config = tiny_config.get_config()
    config.data.root = shapes_dir
    config.data.flip_prob = 0.0
    config.train.update(total_steps=3, checkpoint_every=0, clip_norm=clip_norm, base_lr=0.02)
    model = train.train(config, os.path.join(root, name), strategy=strategy, devices=devices, verbose=0,
                        mixed_precision=precision)
    replicas_agree = True
    for v in model.trainable_variables:
        copies = getattr(v.value, "values", None)
        if copies and len(copies) > 1:
            replicas_agree &= all(np.array_equal(copies[0].numpy(), c.numpy()) for c in copies[1:])
    return [np.asarray(w) for w in model.trainable_variables], replicas_agree


def max_diff(a, b):
    return float(max(np.max(np.abs(x - y)) for x, y in zip(a, b)))


def main(shapes_dir, root, clip_norm, precision="float32"):
    clip_norm = float(clip_norm)
    one, _ = run("one", "one_device", ["/cpu:0"], root, shapes_dir, clip_norm, precision)
    two, agree = run("two", "mirrored", ["/cpu:0", "/cpu:1"], root, shapes_dir, clip_norm, precision)
    step.replica_loss_scale = lambda: 1.0  # the classic bug: replica losses summed, not averaged
    buggy, _ = run("buggy", "mirrored", ["/cpu:0", "/cpu:1"], root, shapes_dir, clip_norm, precision)
    import keras
    keras.utils.set_random_seed(0)
    init = build_detector(tiny_config.get_config().model)
    initial = [np.asarray(w) for w in init.trainable_variables]
    print("RESULT " + json.dumps({"one_vs_two": max_diff(one, two), "one_vs_buggy": max_diff(one, buggy),
                                  "change": max_diff(one, initial), "replicas_agree": bool(agree)}))


if __name__ == "__main__":
    main(*sys.argv[1:])
