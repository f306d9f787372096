"""TF Model Garden (tf-models-official) Mask R-CNN R50-FPN inference on CPU, for a side-by-side ratio with
benchmarks.detector_bench. Not a tfdet dependency: it runs in a side environment, e.g.

    python3 -m venv /tmp/tfm && /tmp/tfm/bin/pip install tf-models-official==2.20.0   (TF 2.20, tf-keras)
    python -m benchmarks.detector_bench --model-garden-python=/tmp/tfm/bin/python

which runs this file with that Python and adds its row. Alone: `/tmp/tfm/bin/python
benchmarks/model_garden_bench.py [--repeats 3]` prints {"infer": s, "rss": MiB, "size": [h, w]}.

The model is Model Garden's `maskrcnn_resnetfpn_coco` experiment (ResNet-50, FPN P2-P6, 3 anchors per
location, 1000 test proposals, 100 detections, 91 classes) with random weights, called as its
serving module calls it (`model.call(images, image_shape, anchor_boxes, training=False)`, inside a
tf.function). Its input must be a multiple of 2**max_level = 64: one 832 x 1344 image holding an
800 x 1333 valid region (tfdet's benchmark pads the same image to 800 x 1344, 4% fewer pixels).
"""

import argparse
import json
import os
import resource
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tf_keras  # noqa: E402
from official.vision.configs import maskrcnn as maskrcnn_cfg  # noqa: E402
from official.vision.modeling import factory  # noqa: E402
from official.vision.ops import anchor  # noqa: E402

PADDED, VALID = (832, 1344), (800, 1333)


def build():
    params = maskrcnn_cfg.maskrcnn_resnetfpn_coco().task.model
    params.input_size = [*PADDED, 3]
    model = factory.build_maskrcnn(tf_keras.layers.InputSpec(shape=[None, *PADDED, 3]), params)
    anchors = anchor.build_anchor_generator(min_level=params.min_level, max_level=params.max_level,
                                            num_scales=params.anchor.num_scales,
                                            aspect_ratios=params.anchor.aspect_ratios,
                                            anchor_size=params.anchor.anchor_size)(image_size=PADDED)
    anchors = {level: tf.expand_dims(boxes, 0) for level, boxes in anchors.items()}
    images = tf.constant(np.random.default_rng(0).uniform(-2, 2, (1, *PADDED, 3)), tf.float32)
    shape = tf.constant([VALID], tf.float32)

    @tf.function
    def infer():
        return model.call(images=images, image_shape=shape, anchor_boxes=anchors, training=False)

    return lambda: tf.nest.map_structure(lambda t: t.numpy() if hasattr(t, "numpy") else t, infer())


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    infer = build()
    infer()  # trace and warm up
    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        infer()
        times.append(time.perf_counter() - start)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    print(json.dumps({"infer": float(np.median(times)), "rss": rss, "size": list(PADDED),
                      "tensorflow": tf.__version__}))


if __name__ == "__main__":
    main()
