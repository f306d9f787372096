"""Child process of tests/test_cpu_kernels.py: the demo's seeded tiny Mask R-CNN (configs/mask_rcnn.py:tiny)
trained from scratch on its first batches, twice (re-seeded, rebuilt), with whatever
TF_ENABLE_ONEDNN_OPTS this process has. Saves to an .npz, per run r: "r/loss/<name>" and "r/grad/<index>"
of the first step, "r/totals" the total loss of each of the `steps` steps.

    python tests/_kernel_steps.py OUT.npz STEPS
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from tensorflow.python.util import _pywrap_util_port  # noqa: E402

from configs import mask_rcnn  # noqa: E402
from tfdet.data import train_input as input_data  # noqa: E402
from tfdet.engine import optim  # noqa: E402
from tfdet.engine.settings import train_block  # noqa: E402
from tfdet.modeling.detectors import build_detector  # noqa: E402


def run(steps):
    config = mask_rcnn.get_config("tiny")
    cfg = train_block(config.train)
    keras.utils.set_random_seed(cfg.seed)
    source = input_data.TrainInput(config.data, cfg.batch_size, cfg.seed)
    model = build_detector(config.model)
    optimizer, _ = optim.build_optimizer(cfg, max(1, source.num_images // cfg.batch_size))
    batches = iter(source.dataset())

    @tf.function
    def step(batch):
        with tf.GradientTape() as tape:
            losses = model.compute_losses(batch, training=True)
            total = tf.add_n(list(losses.values()))
        grads = tape.gradient(total, model.trainable_variables)
        optimizer.apply(grads, model.trainable_variables)
        return losses, grads

    losses, grads = step(next(batches))
    result = {f"loss/{k}": v.numpy() for k, v in losses.items()}
    result.update({f"grad/{i:03d}": g.numpy() for i, g in enumerate(grads) if g is not None})  # paths differ in run 2
    totals = [sum(float(v) for v in losses.values())]
    totals += [sum(float(v) for v in step(next(batches))[0].values()) for _ in range(steps - 1)]
    result["totals"] = np.array(totals)
    return result


def main(out, steps):
    result = {"onednn": _pywrap_util_port.IsMklEnabled()}
    for r in range(2):
        result.update({f"{r}/{k}": v for k, v in run(steps).items()})
    np.savez(out, **result)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
