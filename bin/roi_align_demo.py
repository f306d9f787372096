"""RoIAlign demo: crops boxes out of a synthetic image with the fused and the composite op and draws
the image (boxes outlined) above the fused crops and the composite crops, to a PNG.

    .venv/bin/python bin/roi_align_demo.py --output demo/roi_align.png
"""

import _cpu_kernels  # noqa: F401  (first, before TensorFlow: oneDNN on unless TF_ENABLE_ONEDNN_OPTS is set)
import os

from absl import app, flags
import numpy as np
import tensorflow as tf

import tfdet.ops as ops

FLAGS = flags.DEFINE_string("output", "demo/roi_align.png", "PNG file to write")
CROP = flags.DEFINE_integer("crop", 64, "output size of each crop")

BOXES = [[40, 30, 200, 150], [180, 120, 300, 230], [10, 160, 120, 235], [250, 10, 318, 70], [-20, -20, 60, 40]]


def synthetic_image(height=240, width=320):
    """A colour gradient with a few discs and squares, float32 [H, W, 3] in [0, 1]."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    image = np.stack([x / width, y / height, 0.5 * np.ones_like(x)], -1)
    for cy, cx, r, colour in [(80, 110, 40, (1, 0.2, 0.2)), (170, 240, 35, (0.2, 1, 0.3)), (200, 60, 25, (0.2, 0.3, 1))]:
        image[(y - cy) ** 2 + (x - cx) ** 2 < r * r] = colour
    image[20:60, 260:300] = (1, 1, 0)
    return image


def main(_):
    image = synthetic_image()
    boxes = tf.constant(BOXES, tf.float32)
    indices = tf.zeros([len(BOXES)], tf.int32)
    crops = {impl: ops.roi_align(image[None], boxes, indices, CROP.value, impl=impl)
             for impl in ("fused", "composite")}
    diff = float(tf.reduce_max(tf.abs(crops["fused"] - crops["composite"])))
    print(f"{len(BOXES)} crops of {CROP.value}x{CROP.value}; max |fused - composite| = {diff:.2e}")

    height, width = image.shape[:2]
    normalized = np.array(BOXES, np.float32)[:, [1, 0, 3, 2]] / [height, width, height, width]
    drawn = tf.image.draw_bounding_boxes(image[None], normalized[None], [[1.0, 1.0, 1.0]])[0].numpy()
    rows = [drawn] + [np.concatenate([np.pad(c, [[4, 4], [4, 4], [0, 0]], constant_values=1) for c in crops[impl]], 1)
                      for impl in ("fused", "composite")]
    canvas_width = max(r.shape[1] for r in rows)
    canvas = np.concatenate([np.pad(r, [[0, 8], [0, canvas_width - r.shape[1]], [0, 0]], constant_values=1)
                             for r in rows], 0)
    png = tf.io.encode_png(tf.cast(tf.clip_by_value(canvas, 0, 1) * 255, tf.uint8))
    os.makedirs(os.path.dirname(os.path.abspath(FLAGS.value)), exist_ok=True)
    tmp = FLAGS.value + ".tmp"
    tf.io.write_file(tmp, png)
    os.replace(tmp, FLAGS.value)
    print(f"wrote {FLAGS.value} (top: image and boxes; then fused crops; then composite crops)")


if __name__ == "__main__":
    app.run(main)
